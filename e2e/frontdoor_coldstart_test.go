package e2e

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// The hive's Spawn returns only once start_grace is over (SPEC §3). A cold
// start must not wait for that: the front door routes the request the
// moment the worker is ready. With a start grace of a minute, a worker that
// is ready at once is answered long before the grace ends (half of it is
// the bound here: a front door that waited for Spawn would take the whole
// minute), and the hive's shutdown right after is not held up by the
// grace still running either.
func TestFrontDoorColdStartDoesNotWaitForStartGrace(t *testing.T) {
	const grace = time.Minute
	h := startFD(t, hivetest.Options{
		Settings: "  start_grace: 1m\n",
		Config: "profiles:\n" + genericProfile(t, "gen", map[string]string{"GENERIC_LOAD_MS": "20"}) +
			"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\n"})
	start := time.Now()
	code, body, _ := h.chat("m1")
	took := time.Since(start)
	if code != 200 || !strings.Contains(string(body), `"chat.completion"`) {
		t.Fatalf("cold request: %d %s", code, body)
	}
	ws := h.workersOf("m1", false)
	if len(ws) != 1 || ws[0].StartedAt == nil {
		t.Fatalf("workers %s", dump(ws))
	}
	// The answer came while the spawn call was still in its grace (which
	// began after the request arrived): within half of it.
	if took > grace/2 {
		t.Fatalf("the cold start took %s: it waited for the start grace (%s) to end", took, grace)
	}
	// The front door does not wait for the grace at shutdown either.
	stopped := time.Now()
	if err := h.Stop(grace / 2); err != nil {
		t.Fatalf("hive shutdown with a spawn in its start grace: %v\n%s", err, h.Log())
	}
	if d := time.Since(stopped); d > grace/2 {
		t.Fatalf("shutdown took %s", d)
	}
	h.Close()
}

// A cold start whose process dies within the start grace (so the hive's
// Spawn call itself fails) still fails every request waiting for it with
// 503 WORKER_FAILED naming the reason, as soon as the death is seen, not
// when the grace would have ended.
func TestFrontDoorColdStartDyingInStartGraceFailsWaiters(t *testing.T) {
	const grace = time.Minute
	h := startFD(t, hivetest.Options{
		Settings: "  start_grace: 1m\n  restart: {policy: never}\n",
		Config: "profiles:\n" + genericProfile(t, "gen", map[string]string{"GENERIC_LOAD_MS": "60000", "GENERIC_EXIT_AFTER_MS": "300"}) +
			"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\n"})
	type res struct {
		code int
		body []byte
		took time.Duration
	}
	out := make([]res, 3)
	var wg sync.WaitGroup
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
	for _, r := range out {
		e := errorOf(t, r.body)
		if r.code != 503 || e.Code != "WORKER_FAILED" || !strings.Contains(e.Message, "spawn_failed") {
			t.Fatalf("%d %+v", r.code, e)
		}
		if r.took > grace/2 {
			t.Fatalf("answered after %s: the front door waited for the start grace", r.took)
		}
	}
	ws := h.workersOf("m1", true)
	if len(ws) != 1 || ws[0].State != "failed" || ws[0].Reason != "spawn_failed" {
		t.Fatalf("workers %s", dump(ws))
	}
}

// A streamed answer that is not an event stream (Ollama's NDJSON: chunked,
// no Content-Length) is relayed chunk by chunk too: the reverse proxy
// flushes every write of a body of unknown length. (The front door used
// to flush every write of every answer; sized answers no longer are, and
// this pins that streams of unknown length still are.)
func TestFrontDoorStreamsUnsizedNonSSEChunkByChunk(t *testing.T) {
	gatef := filepath.Join(t.TempDir(), "gate")
	h := startFD(t, hivetest.Options{Config: "profiles:\n" +
		genericProfile(t, "gen", map[string]string{"GENERIC_GATE_FILE": gatef, "GENERIC_NDJSON": "1"}) +
		"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\n"})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp := h.post(ctx, "/v1/chat/completions", "", `{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" || resp.ContentLength != -1 {
		t.Fatalf("content type %q, length %d", ct, resp.ContentLength)
	}
	rd := bufio.NewReader(resp.Body)
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "{") || !strings.Contains(line, "tok0") {
		t.Fatalf("first chunk %q, %v", line, err)
	}
	if _, err := os.Stat(gatef); err == nil {
		t.Fatal("gate open before the first chunk was read")
	}
	if err := os.WriteFile(gatef, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rd)
	if err != nil || !strings.Contains(string(rest), "tok2") {
		t.Fatalf("rest %q, %v", rest, err)
	}
}
