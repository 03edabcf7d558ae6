package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// fdHive is a test hive with a generic profile and models: config.
type fdHive struct {
	*hivetest.Hive
	t  *testing.T
	hc *http.Client
}

// genericProfile is a profile block for the generic test worker with env.
func genericProfile(t *testing.T, name string, env map[string]string) string {
	gw := hivetest.GenericWorker(t)
	var e []string
	for k, v := range env {
		e = append(e, fmt.Sprintf("%s: %q", k, v))
	}
	return fmt.Sprintf(`  %s:
    command: [%s, --port, "{port}", --model, "{model}"]
    protocol: http
    readiness: {path: /health, status: 200}
    env: {%s}
`, name, gw, strings.Join(e, ", "))
}

func startFD(t *testing.T, o hivetest.Options) *fdHive {
	t.Helper()
	h := hivetest.Start(t, o)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &fdHive{Hive: h, t: t, hc: &http.Client{Transport: tr}}
}

// post sends body to path with an optional bearer token and returns the
// response (the caller closes its body).
func (h *fdHive) post(ctx context.Context, path, tok string, body any) *http.Response {
	h.t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", h.URL+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

// chat sends a non-streaming chat completion and returns status, body and
// the port of the worker that answered.
func (h *fdHive) chat(model string) (int, []byte, string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp := h.post(ctx, "/v1/chat/completions", "", map[string]any{
		"model": model, "messages": []map[string]string{{"role": "user", "content": "hi"}}})
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header.Get("X-Generic-Port")
}

func dump(v any) string { b, _ := json.Marshal(v); return string(b) }

func errorOf(t *testing.T, b []byte) apiv1.ErrorDetail {
	t.Helper()
	var e apiv1.ErrorBody
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Code == "" {
		t.Fatalf("not an error body: %s", b)
	}
	if e.Error.Type == "" {
		t.Fatalf("front-door error without type: %s", b)
	}
	return e.Error
}

func (h *fdHive) models() apiv1.OpenAIModelList {
	h.t.Helper()
	req, _ := http.NewRequest("GET", h.URL+"/v1/models", nil)
	resp, err := h.hc.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var l apiv1.OpenAIModelList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		h.t.Fatal(err)
	}
	return l
}

// workersOf returns the live workers labelled with model.
func (h *fdHive) workersOf(model string, all bool) []*apiv1.WorkerInfo {
	h.t.Helper()
	ws, err := h.Client.List(context.Background(), all)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*apiv1.WorkerInfo
	for _, w := range ws {
		if w.Labels["rbee.model"] == model {
			out = append(out, w)
		}
	}
	return out
}

// A request for a model with no worker starts one and waits through its
// load; the next request goes to the same (now warm) worker. GET
// /v1/models shows it in OpenAI's shape.
func TestFrontDoorColdStartThenWarmRoute(t *testing.T) {
	gw := hivetest.GenericWorker(t)
	h := startFD(t, hivetest.Options{Config: fmt.Sprintf(`profiles:
  gen:
    command: [%s, --port, "{port}", --model, "{model}", --ctx, "{ctx}"]
    env: {GENERIC_LOAD_MS: "300"}
models:
  m1:
    model_ref: file:stories260K.gguf
    profile: gen
    ctx: 512
    aliases: [m-one]
`, gw)})
	if ws := h.workersOf("m1", true); len(ws) != 0 {
		t.Fatalf("workers before any request: %d", len(ws))
	}
	code, body, port1 := h.chat("m1")
	if code != 200 || !strings.Contains(string(body), `"chat.completion"`) {
		t.Fatalf("cold request: %d %s", code, body)
	}
	code, _, port2 := h.chat("m-one")
	if code != 200 || port2 != port1 || port1 == "" {
		t.Fatalf("warm request: %d on port %s, cold on %s", code, port2, port1)
	}
	// Idle once the answer has been relayed (the bookkeeping follows the
	// answer by microseconds).
	var ws []*apiv1.WorkerInfo
	hivetest.Eventually(t, 2*time.Second, func() bool { ws = h.workersOf("m1", false); return len(ws) == 1 && ws[0].State == "idle" })
	if len(ws) != 1 || ws[0].State != "idle" || ws[0].Profile != "gen" {
		t.Fatalf("workers %s", dump(ws))
	}
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ws[0].PID)); !strings.Contains(string(cmdline), "--ctx\x00512") {
		t.Fatalf("{ctx} not in argv: %q", cmdline)
	}
	l := h.models()
	if l.Object != "list" {
		t.Fatalf("object %q", l.Object)
	}
	var m1 *apiv1.OpenAIModel
	for i := range l.Data {
		if l.Data[i].ID == "m1" {
			m1 = &l.Data[i]
		}
	}
	if m1 == nil || m1.Object != "model" || m1.OwnedBy != "rbee-hive" || m1.Created == 0 || m1.Rbee.Workers["idle"] != 1 {
		t.Fatalf("models %+v", l)
	}
	// Per-model metrics.
	resp, err := h.hc.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`rbee_hive_frontdoor_requests_total{code="200",model="m1"} 2`,
		`rbee_hive_frontdoor_cold_starts_total{model="m1"} 1`,
		`rbee_hive_frontdoor_time_to_first_byte_seconds_count{model="m1"} 2`,
		`rbee_hive_frontdoor_queue_wait_seconds_count{model="m1"} 2`,
	} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// The JSON an OpenAI SDK sends (chat, streaming and not, and a legacy
// completion and an embedding) reaches the worker byte for byte, without
// the client's token, and the answers come back unchanged.
func TestFrontDoorOpenAIClientShapesPassUnchanged(t *testing.T) {
	logf := filepath.Join(t.TempDir(), "requests.log")
	h := startFD(t, hivetest.Options{
		Config: "profiles:\n" + genericProfile(t, "gen", map[string]string{"GENERIC_REQUEST_LOG": logf}) +
			"models:\n  gpt-local:\n    model_ref: file:stories260K.gguf\n    profile: gen\ninference_tokens: [inference-secret-1]\n",
	})
	bodies := []struct {
		path, body string
		chunked    bool // sent without a length: net/http reads it, not internal/h1
	}{
		// openai-python 1.x: client.chat.completions.create(model=…, messages=[…])
		{"/v1/chat/completions", `{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi"}],"model":"gpt-local","max_tokens":16,"temperature":0.2}`, false},
		// … with stream=True and stream_options
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-local","stream":true,"stream_options":{"include_usage":true}}`, false},
		// client.completions.create(model=…, prompt=…)
		{"/v1/completions", `{"model":"gpt-local","prompt":"Once upon a time","max_tokens":8}`, false},
		// client.embeddings.create(model=…, input=…)
		{"/v1/embeddings", `{"input":"hello","model":"gpt-local","encoding_format":"float"}`, false},
		// a client that streams its body (Transfer-Encoding: chunked)
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"chunked"}],"model":"gpt-local"}`, true},
	}
	for _, c := range bodies {
		req, _ := http.NewRequest("POST", h.URL+c.path, strings.NewReader(c.body))
		if c.chunked {
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader(c.body)), -1
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer inference-secret-1")
		req.Header.Set("User-Agent", "OpenAI/Python 1.54.0")
		req.Header.Set("X-Stainless-Lang", "python")
		req.Header.Set("Accept", "application/json")
		resp, err := h.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", c.path, resp.StatusCode, b)
		}
		stream := strings.Contains(c.body, `"stream":true`)
		if stream {
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Fatalf("stream content type %q", ct)
			}
			if !strings.Contains(string(b), `"chat.completion.chunk"`) || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
				t.Fatalf("stream body %q", b)
			}
		} else if !json.Valid(b) {
			t.Fatalf("%s answer is not JSON: %s", c.path, b)
		}
	}
	data, err := os.ReadFile(logf)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != len(bodies) {
		t.Fatalf("worker saw %d requests, want %d", len(lines), len(bodies))
	}
	for i, l := range lines {
		var rec struct{ Path, Body, Auth string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Path != bodies[i].path || rec.Body != bodies[i].body {
			t.Errorf("worker got %s %q, want %s %q", rec.Path, rec.Body, bodies[i].path, bodies[i].body)
		}
		if rec.Auth != "" {
			t.Errorf("the client's token reached the worker: %q", rec.Auth)
		}
	}
}

// A streamed answer is relayed chunk by chunk: the test reads the first
// chunk while the worker still holds the second (it sends it only once
// the gate file exists).
func TestFrontDoorStreamsChunkByChunk(t *testing.T) {
	gatef := filepath.Join(t.TempDir(), "gate")
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen", map[string]string{"GENERIC_GATE_FILE": gatef}) +
		"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\n"})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp := h.post(ctx, "/v1/chat/completions", "", `{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: ") || !strings.Contains(line, "tok0") {
		t.Fatalf("first chunk %q, %v", line, err)
	}
	if _, err := os.Stat(gatef); err == nil {
		t.Fatal("gate open before the first chunk was read")
	}
	if err := os.WriteFile(gatef, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rd)
	if err != nil || !strings.Contains(string(rest), "tok2") || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

// Unknown model: 404 MODEL_NOT_FOUND naming the known models, with a type;
// a body without a model is 400; one over max_inference_body_bytes is 413.
func TestFrontDoorUnknownModel(t *testing.T) {
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen", nil) +
		"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\nmax_inference_body_bytes: 4096\n"})
	code, body, _ := h.chat("nope")
	e := errorOf(t, body)
	if code != 404 || e.Code != "MODEL_NOT_FOUND" || e.Type != "not_found_error" || !strings.Contains(e.Message, "m1") {
		t.Fatalf("%d %+v", code, e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp := h.post(ctx, "/v1/chat/completions", "", `{"messages":[]}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if e := errorOf(t, b); resp.StatusCode != 400 || e.Code != "INVALID_REQUEST" {
		t.Fatalf("no model: %d %s", resp.StatusCode, b)
	}
	resp = h.post(ctx, "/v1/chat/completions", "", `{"model":"m1","prompt":"`+strings.Repeat("x", 5000)+`"}`)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if e := errorOf(t, b); resp.StatusCode != 413 || e.Code != "BODY_TOO_LARGE" {
		t.Fatalf("big body: %d %s", resp.StatusCode, b)
	}
	if ws := h.workersOf("m1", true); len(ws) != 0 {
		t.Fatalf("a refused request started a worker: %s", dump(ws))
	}
}

// min_workers are started with the hive and kept.
func TestFrontDoorMinWorkersAtStart(t *testing.T) {
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen", nil) +
		"models:\n  warm:\n    model_ref: file:stories260K.gguf\n    profile: gen\n    min_workers: 1\n    max_workers: 2\n    idle_timeout: 1s\n"})
	ok := hivetest.Eventually(t, wait, func() bool {
		ws := h.workersOf("warm", false)
		return len(ws) == 1 && ws[0].State == "idle"
	})
	if !ok {
		t.Fatalf("no min worker: %+v", h.workersOf("warm", true))
	}
	if l := h.models(); l.Data[0].Rbee.Workers["idle"] != 1 {
		t.Fatalf("models %+v", l)
	}
	// Kept: it does not idle out (its idle timeout is off).
	time.Sleep(1500 * time.Millisecond)
	if ws := h.workersOf("warm", false); len(ws) != 1 || ws[0].State != "idle" {
		t.Fatalf("min worker not kept: %+v", ws)
	}
}

// The llama-server case of the issue: a generic worker answering a request
// every 2 s with idle_timeout 5 s is busy while each runs, is never idled
// out, and is idled out 5 s after the last request ended.
func TestFrontDoorBusyIdleFromTrafficLlamaServerCase(t *testing.T) {
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "llama", map[string]string{"GENERIC_TOKEN_MS": "150"}) +
		"models:\n  llama:\n    model_ref: file:stories260K.gguf\n    profile: llama\n    idle_timeout: 5s\n"})
	var sawBusy bool
	var lastEnd time.Time
	for i := 0; i < 5; i++ {
		done := make(chan struct{})
		go func() {
			defer close(done)
			code, b, _ := h.chat("llama")
			if code != 200 {
				t.Errorf("request %d: %d %s", i, code, b)
			}
		}()
		// While the request runs (3 × 150 ms), the worker is busy.
		hivetest.Eventually(t, 2*time.Second, func() bool {
			ws := h.workersOf("llama", false)
			if len(ws) == 1 && ws[0].State == "busy" {
				sawBusy = true
				return true
			}
			return false
		})
		<-done
		lastEnd = time.Now()
		if i < 4 {
			time.Sleep(2 * time.Second)
		}
		ws := h.workersOf("llama", true)
		if len(ws) != 1 || ws[0].State.Ended() {
			t.Fatalf("after request %d: %+v", i, ws)
		}
	}
	if !sawBusy {
		t.Fatal("never saw the worker busy")
	}
	// The front door tells the worker's owner that the request ended
	// after the answer's last byte went out (the client does not wait for
	// the bookkeeping): wait for the idle state that records it. Read at
	// once, one CI run saw the busy snapshot, with the previous request's
	// last_activity.
	var ws []*apiv1.WorkerInfo
	hivetest.Eventually(t, 2*time.Second, func() bool {
		ws = h.workersOf("llama", false)
		return len(ws) == 1 && ws[0].State == "idle"
	})
	if ws[0].LastActivity == nil || ws[0].LastActivity.Before(lastEnd.Add(-time.Second)) {
		t.Fatalf("last_activity %v, last request ended %v", ws[0].LastActivity, lastEnd)
	}
	id := ws[0].ID
	end := h.WaitState(id, 15*time.Second, "terminated")
	if end.Reason != "idle_timeout" {
		t.Fatalf("ended %s/%s", end.State, end.Reason)
	}
	after := end.EndedAt.Sub(lastEnd)
	if after < 4500*time.Millisecond || after > 8*time.Second {
		t.Fatalf("idled out %s after the last request (want about 5s)", after)
	}
}

// max_concurrency 1 and one worker: a second request queues, a third finds
// the queue full (503 QUEUE_FULL, Retry-After), the second times out (503
// QUEUE_TIMEOUT) while the first still runs.
func TestFrontDoorQueueFullAndTimeout(t *testing.T) {
	gatef := filepath.Join(t.TempDir(), "gate")
	if err := os.WriteFile(gatef, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen", map[string]string{"GENERIC_GATE_FILE": gatef}) +
		"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\nqueue: {max: 1, timeout: 700ms}\n"})
	if code, b, _ := h.chat("m1"); code != 200 {
		t.Fatalf("warm-up %d %s", code, b)
	}
	os.Remove(gatef)
	first := make(chan int, 1)
	go func() { code, _, _ := h.chat("m1"); first <- code }()
	hivetest.Eventually(t, wait, func() bool { l := h.models(); return l.Data[0].Rbee.InFlight == 1 })
	second := make(chan []byte, 1)
	secondCode := make(chan int, 1)
	start := time.Now()
	go func() { code, b, _ := h.chat("m1"); secondCode <- code; second <- b }()
	hivetest.Eventually(t, wait, func() bool { l := h.models(); return l.Data[0].Rbee.Queued == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp := h.post(ctx, "/v1/chat/completions", "", `{"model":"m1","messages":[]}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if e := errorOf(t, b); resp.StatusCode != 503 || e.Code != "QUEUE_FULL" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third: %d %s (Retry-After %q)", resp.StatusCode, b, resp.Header.Get("Retry-After"))
	}
	code := <-secondCode
	b = <-second
	took := time.Since(start)
	if e := errorOf(t, b); code != 503 || e.Code != "QUEUE_TIMEOUT" {
		t.Fatalf("second: %d %s", code, b)
	}
	if took < 600*time.Millisecond || took > 5*time.Second {
		t.Fatalf("queue timeout after %s, want about 700ms", took)
	}
	select {
	case c := <-first:
		t.Fatalf("first ended (%d) before its gate opened", c)
	default:
	}
	os.WriteFile(gatef, nil, 0o600)
	if c := <-first; c != 200 {
		t.Fatalf("first %d", c)
	}
}

// Under a memory budget for two workers, a third model's cold start evicts
// the least recently used idle worker of another model, never a busy one;
// a model that can never fit is 507.
func TestFrontDoorEvictsLRUIdleNeverBusy(t *testing.T) {
	gatef := filepath.Join(t.TempDir(), "gate")
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen", nil) +
		genericProfile(t, "gated", map[string]string{"GENERIC_GATE_FILE": gatef}) + `models:
  a: {model_ref: file:stories260K.gguf, profile: gen, memory_bytes: 100}
  b: {model_ref: file:stories260K.gguf, profile: gated, memory_bytes: 100}
  c: {model_ref: file:stories260K.gguf, profile: gen, memory_bytes: 100}
  huge: {model_ref: file:stories260K.gguf, profile: gen, memory_bytes: 1000}
memory_budget_bytes: 250
`})
	if code, b, _ := h.chat("a"); code != 200 {
		t.Fatalf("a: %d %s", code, b)
	}
	// b's request is held by its gate: b stays busy.
	bDone := make(chan int, 1)
	go func() { code, _, _ := h.chat("b"); bDone <- code }()
	hivetest.Eventually(t, wait, func() bool {
		ws := h.workersOf("b", false)
		return len(ws) == 1 && ws[0].State == "busy"
	})
	if len(h.workersOf("a", false)) != 1 {
		t.Fatalf("a: %s\n%s", dump(h.workersOf("a", true)), h.Log())
	}
	aID := h.workersOf("a", false)[0].ID
	bID := h.workersOf("b", false)[0].ID
	if code, b, _ := h.chat("c"); code != 200 {
		t.Fatalf("c: %d %s", code, b)
	}
	end := h.WaitState(aID, wait, "terminated")
	if end.Reason != "evicted" {
		t.Fatalf("a ended %s/%s", end.State, end.Reason)
	}
	if info := h.Get(bID); info.State != "busy" {
		t.Fatalf("busy b is %s\n%s", info.State, h.Log())
	}
	code, body, _ := h.chat("huge")
	if e := errorOf(t, body); code != 507 || e.Code != "INSUFFICIENT_MEMORY" || !strings.Contains(e.Message, "250") {
		t.Fatalf("huge: %d %s", code, body)
	}
	// Now a again: c is the only idle worker of another model (b is busy).
	cID := h.workersOf("c", false)[0].ID
	if code, b, _ := h.chat("a"); code != 200 {
		t.Fatalf("a again: %d %s", code, b)
	}
	if end := h.WaitState(cID, wait, "terminated"); end.Reason != "evicted" {
		t.Fatalf("c ended %s/%s", end.State, end.Reason)
	}
	os.WriteFile(gatef, nil, 0o600)
	if c := <-bDone; c != 200 {
		t.Fatalf("b %d", c)
	}
}

// A worker that crashes mid-stream: the client's stream is cut with an SSE
// error event; the worker is restarted by its policy and serves the next
// request.
func TestFrontDoorCrashMidStream(t *testing.T) {
	h := startFD(t, hivetest.Options{
		// No start grace: a crash right after the cold start is a crash
		// of a running worker, restarted by its policy (within the grace
		// it would fail the spawn itself).
		Settings: "  start_grace: 0s\n  restart: {policy: on-failure, base_delay: 50ms, max_delay: 1s}\n",
		Config: "profiles:\n" + genericProfile(t, "gen", map[string]string{"GENERIC_CRASH_AFTER_CHUNKS": "1", "GENERIC_TOKEN_MS": "50"}) +
			"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\n"})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp := h.post(ctx, "/v1/chat/completions", "", `{"model":"m1","stream":true,"messages":[]}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s := string(b)
	if resp.StatusCode != 200 || !strings.Contains(s, "tok0") || !strings.Contains(s, "event: error\n") ||
		!strings.Contains(s, "WORKER_CRASHED") || strings.Contains(s, "[DONE]") {
		t.Fatalf("stream %d %q", resp.StatusCode, s)
	}
	ws := h.workersOf("m1", true)
	if len(ws) != 1 {
		t.Fatalf("workers %+v", ws)
	}
	// Restarted with the same id; a non-streaming answer does not crash.
	if code, b, _ := h.chat("m1"); code != 200 {
		t.Fatalf("after the crash: %d %s", code, b)
	}
	if info := h.Get(ws[0].ID); info.RestartCount < 1 {
		t.Fatalf("restart_count %d\n%s", info.RestartCount, h.Log())
	}
}

// A cold start that fails: every request waiting for it gets 503
// WORKER_FAILED naming the reason, at once.
func TestFrontDoorColdStartFailure(t *testing.T) {
	h := startFD(t, hivetest.Options{
		Settings: "  restart: {policy: never}\n",
		Config: "profiles:\n" + genericProfile(t, "gen", map[string]string{"GENERIC_LOAD_MS": "60000", "GENERIC_EXIT_AFTER_MS": "400"}) +
			"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\n"})
	var wg sync.WaitGroup
	type res struct {
		code int
		body []byte
		took time.Duration
	}
	out := make([]res, 3)
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			code, b, _ := h.chat("m1")
			out[i] = res{code, b, time.Since(start)}
		}()
	}
	wg.Wait()
	ws := h.workersOf("m1", true)
	if len(ws) != 1 || ws[0].State != "failed" {
		t.Fatalf("workers %+v", ws)
	}
	for _, r := range out {
		e := errorOf(t, r.body)
		// crashed while loading; or, on a machine so loaded that the start
		// grace outlasts the 400 ms, a failed spawn with the exit code.
		if r.code != 503 || e.Code != "WORKER_FAILED" || !(strings.Contains(e.Message, "crashed") || strings.Contains(e.Message, "code 4")) {
			t.Fatalf("%d %+v", r.code, e)
		}
		if r.took > 3*time.Second {
			t.Fatalf("answered after %s", r.took)
		}
	}
	if gap := ws[0].EndedAt.Sub(ws[0].StartedAt.Add(400 * time.Millisecond)); gap > 2*time.Second {
		t.Fatalf("ended %s after the exit", gap)
	}
}

// A client that goes away cancels the worker's request at once, and the
// worker is idle again.
func TestFrontDoorClientDisconnectReachesWorker(t *testing.T) {
	cancelf := filepath.Join(t.TempDir(), "cancelled")
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen",
		map[string]string{"GENERIC_TOKENS": "100", "GENERIC_TOKEN_MS": "100", "GENERIC_CANCEL_FILE": cancelf}) +
		"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\n"})
	ctx, cancel := context.WithCancel(context.Background())
	resp := h.post(ctx, "/v1/chat/completions", "", `{"model":"m1","stream":true,"messages":[]}`)
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); err != nil || !strings.Contains(line, "tok0") {
		t.Fatalf("first chunk %q %v", line, err)
	}
	cancel()
	resp.Body.Close()
	start := time.Now()
	if !hivetest.Eventually(t, 5*time.Second, func() bool { b, _ := os.ReadFile(cancelf); return len(b) > 0 }) {
		t.Fatal("the worker never saw the cancel")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("cancel reached the worker after %s", took)
	}
	ok := hivetest.Eventually(t, 5*time.Second, func() bool {
		ws := h.workersOf("m1", false)
		return len(ws) == 1 && ws[0].State == "idle"
	})
	if !ok {
		t.Fatalf("worker after the disconnect: %+v", h.workersOf("m1", true))
	}
}

// A worker that refuses the connection before any byte: the request is
// retried once on another worker.
func TestFrontDoorRefusedConnectionRetriedElsewhere(t *testing.T) {
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen", map[string]string{"GENERIC_REFUSE_AFTER": "1"}) +
		"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\n    min_workers: 2\n    max_workers: 2\n"})
	hivetest.Eventually(t, wait, func() bool {
		ws := h.workersOf("m1", false)
		return len(ws) == 2 && ws[0].State == "idle" && ws[1].State == "idle"
	})
	// Each worker answers once and then refuses connections: the first
	// request goes to one, the second to the same one (the most recently
	// used among idle workers), which refuses it: it is retried on the
	// other.
	ports := map[string]bool{}
	for i := 0; i < 2; i++ {
		code, b, port := h.chat("m1")
		if code != 200 || port == "" {
			t.Fatalf("request %d: %d %s\n%s", i, code, b, h.Log())
		}
		ports[port] = true
	}
	if len(ports) != 2 {
		t.Fatalf("answered by %v", ports)
	}
	if !strings.Contains(h.Log(), "retrying once on another") {
		t.Fatalf("no retry logged:\n%s", h.Log())
	}
}

// Auth on the inference routes: an inference token or the operator token;
// an inference token is not an operator token; browsers are refused.
func TestFrontDoorAuth(t *testing.T) {
	h := startFD(t, hivetest.Options{
		Env: []string{"RBEE_API_TOKEN=operator-secret-token"},
		Config: "profiles:\n" + genericProfile(t, "gen", nil) +
			"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\ninference_tokens: [inference-secret-1, inference-secret-2]\n"})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	body := `{"model":"m1","messages":[]}`
	for _, c := range []struct {
		tok  string
		want int
		code string
	}{
		{"", 401, "MISSING_API_KEY"},
		{"wrong", 401, "INVALID_API_KEY"},
		{"inference-secret-2", 200, ""},
		{"operator-secret-token", 200, ""},
	} {
		resp := h.post(ctx, "/v1/chat/completions", c.tok, body)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("token %q: %d %s", c.tok, resp.StatusCode, b)
		}
		if c.code != "" {
			if e := errorOf(t, b); e.Code != c.code || e.Type != "authentication_error" || resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("token %q: %s", c.tok, b)
			}
		}
	}
	get := func(path, tok string, hdr ...string) int {
		req, _ := http.NewRequest("GET", h.URL+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := h.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("/v1/models", "inference-secret-1"); c != 200 {
		t.Fatalf("models with an inference token: %d", c)
	}
	if c := get("/v1/models", ""); c != 401 {
		t.Fatalf("models without a token: %d", c)
	}
	if c := get("/v1/workers/list", "inference-secret-1"); c != 401 {
		t.Fatalf("operator route with an inference token: %d", c)
	}
	if c := get("/v1/models", "inference-secret-1", "Origin", "http://evil.example"); c != 403 {
		t.Fatalf("browser request: %d", c)
	}
}

// The reference worker (profile rbee) is started on demand like any other:
// its ready callback releases the waiting request, which is relayed to it;
// it answers with real tokens from the built-in model, streamed and not.
func TestFrontDoorColdStartsReferenceWorker(t *testing.T) {
	h := startFD(t, hivetest.Options{Config: "models:\n  ref:\n    model_ref: file:stories260K.gguf\n    ctx: 128\n"})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp := h.post(ctx, "/v1/completions", "", `{"model":"ref","prompt":"Once upon a time","max_tokens":8,"temperature":0}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil || len(out.Choices) != 1 || out.Choices[0].Text == "" {
		t.Fatalf("completion %d %s", resp.StatusCode, b)
	}
	resp = h.post(ctx, "/v1/chat/completions", "", `{"model":"ref","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"Tell me a story"}]}`)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") ||
		!strings.Contains(string(b), "data: ") || !strings.HasSuffix(strings.TrimSpace(string(b)), "data: [DONE]") {
		t.Fatalf("chat stream %d %q", resp.StatusCode, b)
	}
	var ws []*apiv1.WorkerInfo
	ok := hivetest.Eventually(t, 5*time.Second, func() bool {
		ws = h.workersOf("ref", false)
		return len(ws) == 1 && ws[0].State == "idle" && ws[0].Profile == "rbee" && ws[0].LastActivity != nil
	})
	if !ok {
		t.Fatalf("workers %s", dump(ws))
	}
}

// When only busy workers stand in the way of a cold start, the request
// waits in the queue, and is served once one of them is idle (and evicted).
func TestFrontDoorColdStartWaitsWhileOnlyBusyWorkersInTheWay(t *testing.T) {
	gatef := filepath.Join(t.TempDir(), "gate")
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen", nil) +
		genericProfile(t, "gated", map[string]string{"GENERIC_GATE_FILE": gatef}) + `models:
  a: {model_ref: file:stories260K.gguf, profile: gen, memory_bytes: 100}
  b: {model_ref: file:stories260K.gguf, profile: gated, memory_bytes: 100}
  c: {model_ref: file:stories260K.gguf, profile: gated, memory_bytes: 100}
memory_budget_bytes: 250
`})
	held := make(chan int, 2)
	for _, m := range []string{"b", "c"} {
		go func() { code, _, _ := h.chat(m); held <- code }()
		hivetest.Eventually(t, wait, func() bool {
			ws := h.workersOf(m, false)
			return len(ws) == 1 && ws[0].State == "busy"
		})
	}
	aCode := make(chan int, 1)
	go func() { code, _, _ := h.chat("a"); aCode <- code }()
	hivetest.Eventually(t, wait, func() bool { return h.models().Data[0].Rbee.Queued == 1 })
	select {
	case c := <-aCode:
		t.Fatalf("a answered %d while only busy workers stood in the way", c)
	case <-time.After(500 * time.Millisecond):
	}
	if ws := h.workersOf("a", true); len(ws) != 0 {
		t.Fatalf("a started over the budget: %s", dump(ws))
	}
	os.WriteFile(gatef, nil, 0o600)
	if c := <-aCode; c != 200 {
		t.Fatalf("a %d", c)
	}
	for i := 0; i < 2; i++ {
		if c := <-held; c != 200 {
			t.Fatalf("held request %d", c)
		}
	}
	evicted := 0
	for _, m := range []string{"b", "c"} {
		for _, w := range h.workersOf(m, true) {
			if w.Reason == "evicted" {
				evicted++
			}
		}
	}
	if evicted != 1 {
		t.Fatalf("%d workers evicted, want 1", evicted)
	}
}

// With its one worker busy (max_concurrency 1) and max_workers 2, a second
// request starts a second worker instead of queueing; both run at once.
func TestFrontDoorStartsAnotherWorkerWhenAllAreBusy(t *testing.T) {
	gatef := filepath.Join(t.TempDir(), "gate")
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gated", map[string]string{"GENERIC_GATE_FILE": gatef}) +
		"models:\n  m1: {model_ref: file:stories260K.gguf, profile: gated, max_workers: 2}\n"})
	ports := make(chan string, 2)
	for i := 0; i < 2; i++ {
		go func() { _, _, port := h.chat("m1"); ports <- port }()
		n := i + 1
		ok := hivetest.Eventually(t, wait, func() bool {
			busy := 0
			for _, w := range h.workersOf("m1", false) {
				if w.State == "busy" {
					busy++
				}
			}
			return busy == n
		})
		if !ok {
			t.Fatalf("want %d busy workers: %s", n, dump(h.workersOf("m1", true)))
		}
	}
	if l := h.models(); l.Data[0].Rbee.InFlight != 2 || l.Data[0].Rbee.Queued != 0 {
		t.Fatalf("models %+v", l.Data[0].Rbee)
	}
	os.WriteFile(gatef, nil, 0o600)
	p1, p2 := <-ports, <-ports
	if p1 == "" || p2 == "" || p1 == p2 {
		t.Fatalf("answered by %q and %q", p1, p2)
	}
}
