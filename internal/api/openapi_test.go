package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/rbee/rbee-hive/internal/api"
	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/client"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// registerSSE lets the validator read event streams as text.
var registerSSE = sync.OnceFunc(func() {
	openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder)
})

func loadDoc(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPIDocument())
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc := loadDoc(t)
	if doc.OpenAPI[:2] != "3." {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
	if n := doc.Paths.Len(); n < 15 {
		t.Errorf("%d paths", n)
	}
}

// TestOpenAPICoversEveryRoute: each route the server registers is an
// operation of the document, and the document has no operation the server
// lacks.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	doc := loadDoc(t)
	src, err := os.ReadFile("server.go")
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]bool{}
	for _, m := range regexp.MustCompile(`s\.handle\("([A-Z]+) (/[^"]*)"`).FindAllStringSubmatch(string(src), -1) {
		routes[m[1]+" "+m[2]] = true
	}
	for _, p := range apiv1.InferenceRoutes { // handled in a loop
		routes["POST "+p] = true
	}
	if len(routes) < 15 {
		t.Fatalf("found only %d routes in server.go", len(routes))
	}
	ops := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			ops[method+" "+path] = true
		}
	}
	for r := range routes {
		if !ops[r] {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for o := range ops {
		if !routes[o] {
			t.Errorf("openapi.json has %s, which the server does not serve", o)
		}
	}
}

const token = "operator-secret-token"

// checker sends requests to a real daemon and validates each request and
// response against the document; it remembers which (operation, status)
// pairs were seen.
type checker struct {
	t      *testing.T
	h      *hivetest.Hive
	doc    *openapi3.T
	router routers.Router
	seen   map[string]map[int]bool // "METHOD /path/{template}" → statuses
}

type call struct {
	method, path string
	body         any    // marshalled as JSON unless []byte or string
	tok          string // bearer token; "" for none
	header       http.Header
	want         int
	code         string // expected error code, if any
	badRequest   bool   // the request itself breaks the document (on purpose)
	stream       bool   // read only the first chunk of the body
}

func (c *checker) do(cl call) (int, []byte) {
	t := c.t
	t.Helper()
	var body []byte
	switch b := cl.body.(type) {
	case nil:
	case []byte:
		body = b
	case string:
		body = []byte(b)
	default:
		body, _ = json.Marshal(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, cl.method, c.h.URL+cl.path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.tok != "" {
		req.Header.Set("Authorization", "Bearer "+cl.tok)
	}
	for k, vs := range cl.header {
		req.Header[k] = vs
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s %s: not in the document: %v", cl.method, cl.path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
	if !cl.badRequest {
		vreq := req.Clone(ctx)
		vreq.Body = io.NopCloser(bytes.NewReader(body))
		in.Request = vreq
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			t.Errorf("%s %s: request does not match the document: %v", cl.method, cl.path, err)
		}
		in.Request = req
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", cl.method, cl.path, err)
	}
	defer resp.Body.Close()
	var rb []byte
	if cl.stream {
		buf := make([]byte, 4096)
		n, _ := bufio.NewReader(resp.Body).Read(buf)
		rb = buf[:n]
	} else {
		rb, _ = io.ReadAll(resp.Body)
	}
	if resp.StatusCode != cl.want {
		t.Errorf("%s %s: status %d, want %d: %s", cl.method, cl.path, resp.StatusCode, cl.want, rb)
	}
	if cl.code != "" {
		var eb apiv1.ErrorBody
		if json.Unmarshal(rb, &eb) != nil || eb.Error.Code != cl.code {
			t.Errorf("%s %s: body %s, want code %s", cl.method, cl.path, rb, cl.code)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
		Header: resp.Header, Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	out.SetBodyBytes(rb)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		t.Errorf("%s %s → %d: response does not match the document: %v\nbody: %s", cl.method, cl.path, resp.StatusCode, err, clip(rb))
	}
	key := cl.method + " " + route.Path
	if c.seen[key] == nil {
		c.seen[key] = map[int]bool{}
	}
	c.seen[key][resp.StatusCode] = true
	return resp.StatusCode, rb
}

func clip(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "…"
	}
	return string(b)
}

func waitState(t *testing.T, cl *client.Client, id, st string) *apiv1.WorkerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := cl.WaitFor(ctx, id, 10*time.Millisecond, func(i *apiv1.WorkerInfo) bool { return string(i.State) == st })
	if err != nil {
		t.Fatalf("worker %s never %s: %v", id, st, err)
	}
	return info
}

func workerToken(t *testing.T, pid int) string {
	t.Helper()
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "RBEE_WORKER_TOKEN="); ok {
			return v
		}
	}
	t.Fatalf("worker %d has no RBEE_WORKER_TOKEN", pid)
	return ""
}

// TestOpenAPIMatchesServer calls every operation of the document on a real
// daemon (with an operator token), for its success and its error answers,
// and validates each request and response (status, headers, body) against
// the document. A response field the document does not know fails too
// (response objects are additionalProperties: false).
func TestOpenAPIMatchesServer(t *testing.T) {
	registerSSE()
	doc := loadDoc(t)
	gw := hivetest.GenericWorker(t)
	h := hivetest.Start(t, hivetest.Options{Env: []string{"RBEE_API_TOKEN=" + token},
		Config: "profiles:\n  gen:\n    command: [" + gw + `, --port, "{port}", --model, "{model}"]` +
			"\nmodels:\n  m1: {model_ref: file:stories260K.gguf, profile: gen}\n"})
	doc.Servers = openapi3.Servers{{URL: h.URL}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	c := &checker{t: t, h: h, doc: doc, router: router, seen: map[string]map[int]bool{}}
	cl := client.New(h.URL, token)
	ctx := context.Background()

	// Public routes.
	c.do(call{method: "GET", path: "/health", want: 200})
	c.do(call{method: "GET", path: "/v1/health", want: 200})
	c.do(call{method: "GET", path: "/metrics", want: 200})
	_, served := c.do(call{method: "GET", path: "/v1/openapi.json", want: 200})
	if !bytes.Equal(served, api.OpenAPIDocument()) {
		t.Error("/v1/openapi.json does not serve the embedded document")
	}

	// Auth.
	c.do(call{method: "GET", path: "/v1/status", want: 401, code: "MISSING_API_KEY"})
	c.do(call{method: "GET", path: "/v1/status", tok: "wrong", want: 401, code: "INVALID_API_KEY"})
	c.do(call{method: "GET", path: "/v1/status", tok: token, want: 200})

	// Spawn and its errors.
	spawn := apiv1.SpawnRequest{ModelRef: h.Ref, Labels: map[string]string{"team": "a"},
		Settings: json.RawMessage(`{"stop_timeout":"5s","health":{"interval":"1s"}}`)}
	_, b := c.do(call{method: "POST", path: "/v1/workers/spawn", tok: token, body: spawn, want: 201})
	var sr apiv1.SpawnResponse
	if err := json.Unmarshal(b, &sr); err != nil {
		t.Fatal(err)
	}
	waitState(t, cl, sr.WorkerID, "idle")
	c.do(call{method: "POST", path: "/v1/workers/spawn", tok: token, body: `{"model_ref":`, want: 400, code: "INVALID_REQUEST", badRequest: true})
	c.do(call{method: "POST", path: "/v1/workers/spawn", tok: token, body: `{"model_ref":"file:/x","nope":1}`, want: 400, code: "INVALID_REQUEST", badRequest: true})
	c.do(call{method: "POST", path: "/v1/workers/spawn", tok: token, body: apiv1.SpawnRequest{ModelRef: "file:" + h.Models + "/missing.gguf"}, want: 404, code: "MODEL_NOT_FOUND"})
	c.do(call{method: "POST", path: "/v1/workers/spawn", tok: token, body: apiv1.SpawnRequest{ModelRef: "file:/etc/hostname"}, want: 400, code: "MODEL_PATH_NOT_ALLOWED"})
	c.do(call{method: "POST", path: "/v1/workers/spawn", tok: token, body: apiv1.SpawnRequest{ModelRef: "hf:org/unknown"}, want: 404, code: "MODEL_NOT_FOUND"})
	c.do(call{method: "POST", path: "/v1/workers/spawn", tok: token, body: bytes.Repeat([]byte(" "), api.MaxBodyBytes+10), want: 413, code: "BODY_TOO_LARGE", badRequest: true})
	c.do(call{method: "POST", path: "/v1/workers/spawn", want: 401, code: "MISSING_API_KEY", body: spawn})

	// Reading workers.
	c.do(call{method: "GET", path: "/v1/workers/list", tok: token, want: 200})
	c.do(call{method: "GET", path: "/v1/workers/list?all=true", tok: token, want: 200})
	c.do(call{method: "GET", path: "/v1/workers/list?all=maybe", tok: token, want: 400, badRequest: true})
	_, b = c.do(call{method: "GET", path: "/v1/workers/" + sr.WorkerID, tok: token, want: 200})
	var wi apiv1.WorkerInfo
	if err := json.Unmarshal(b, &wi); err != nil || wi.Stats == nil {
		t.Errorf("GET worker: %v, stats %v", err, wi.Stats)
	}
	c.do(call{method: "GET", path: "/v1/workers/worker-nope", tok: token, want: 404, code: "WORKER_NOT_FOUND"})
	c.do(call{method: "GET", path: "/v1/workers/bad.id", tok: token, want: 400, badRequest: true})
	c.do(call{method: "GET", path: "/v1/workers/" + sr.WorkerID + "/logs?tail=5", tok: token, want: 200})
	c.do(call{method: "GET", path: "/v1/workers/" + sr.WorkerID + "/logs?tail=-1", tok: token, want: 400, code: "INVALID_TAIL", badRequest: true})
	c.do(call{method: "GET", path: "/v1/workers/worker-nope/logs", tok: token, want: 404})
	c.do(call{method: "GET", path: "/v1/events", tok: token, want: 200, stream: true})
	c.do(call{method: "GET", path: "/v1/events", want: 401})

	// The worker's own calls, with its own token.
	wtok := workerToken(t, wi.PID)
	c.do(call{method: "POST", path: "/v1/heartbeat", tok: wtok, want: 200, body: apiv1.HeartbeatRequest{
		WorkerID: sr.WorkerID, Timestamp: time.Now().Format(time.RFC3339Nano), HealthStatus: "healthy", State: "idle"}})
	c.do(call{method: "POST", path: "/v1/heartbeat", tok: wtok, want: 400, badRequest: true, body: apiv1.HeartbeatRequest{
		WorkerID: sr.WorkerID, Timestamp: "yesterday", HealthStatus: "healthy"}})
	c.do(call{method: "POST", path: "/v1/heartbeat", tok: token, want: 401, code: "INVALID_API_KEY", body: apiv1.HeartbeatRequest{
		WorkerID: sr.WorkerID, Timestamp: time.Now().Format(time.RFC3339Nano), HealthStatus: "healthy"}})
	c.do(call{method: "POST", path: "/v1/heartbeat", tok: wtok, want: 404, code: "WORKER_NOT_FOUND", body: apiv1.HeartbeatRequest{
		WorkerID: "worker-nope", Timestamp: time.Now().Format(time.RFC3339Nano), HealthStatus: "healthy"}})
	ready := apiv1.ReadyRequest{WorkerID: sr.WorkerID, URL: wi.URL, ModelRef: wi.ModelRef, Backend: "cpu"}
	c.do(call{method: "POST", path: "/v1/workers/ready", tok: wtok, want: 409, code: "INVALID_STATE", body: ready})
	c.do(call{method: "POST", path: "/v1/workers/ready", want: 401, code: "MISSING_API_KEY", body: ready})
	c.do(call{method: "POST", path: "/v1/workers/ready", tok: wtok, want: 404, body: apiv1.ReadyRequest{WorkerID: "worker-nope"}})
	c.do(call{method: "POST", path: "/v1/workers/ready", tok: wtok, want: 400, badRequest: true, body: `{"worker_id":1}`})

	// The ready callback's 200: a worker that never readies itself is made
	// ready with its own token.
	silent, err := cl.Spawn(ctx, &apiv1.SpawnRequest{ModelRef: h.Ref, Env: map[string]string{"LLMW_FAKE_NEVER_READY": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	silentInfo := waitState(t, cl, silent.WorkerID, "loading")
	c.do(call{method: "POST", path: "/v1/workers/ready", tok: workerToken(t, silentInfo.PID), want: 200,
		body: apiv1.ReadyRequest{WorkerID: silent.WorkerID, URL: silentInfo.URL, ModelRef: h.Ref, Backend: "cpu"}})
	waitState(t, cl, silent.WorkerID, "idle")

	// Restart, stop, kill.
	c.do(call{method: "POST", path: "/v1/workers/" + sr.WorkerID + "/restart", tok: token, want: 202})
	c.do(call{method: "POST", path: "/v1/workers/worker-nope/restart", tok: token, want: 404})
	waitState(t, cl, sr.WorkerID, "idle")
	c.do(call{method: "POST", path: "/v1/workers/" + sr.WorkerID + "/stop", tok: token, want: 202})
	c.do(call{method: "POST", path: "/v1/workers/" + sr.WorkerID + "/stop", tok: token, want: 202}) // idempotent
	waitState(t, cl, sr.WorkerID, "terminated")
	c.do(call{method: "POST", path: "/v1/workers/" + sr.WorkerID + "/restart", tok: token, want: 409, code: "INVALID_STATE"})
	c.do(call{method: "GET", path: "/v1/workers/" + sr.WorkerID, tok: token, want: 200}) // ended: exit facts, last lines
	c.do(call{method: "GET", path: "/v1/workers/" + sr.WorkerID + "/logs?follow=true", tok: token, want: 200})
	c.do(call{method: "DELETE", path: "/v1/workers/" + silent.WorkerID, tok: token, want: 202})
	c.do(call{method: "DELETE", path: "/v1/workers/worker-nope", tok: token, want: 404})
	c.do(call{method: "POST", path: "/v1/workers/" + silent.WorkerID + "/kill", tok: token, want: 202})
	c.do(call{method: "POST", path: "/v1/workers/worker-nope/kill", tok: token, want: 404})
	c.do(call{method: "POST", path: "/v1/workers/worker-nope/stop", tok: token, want: 404})
	waitState(t, cl, silent.WorkerID, "terminated")
	c.do(call{method: "GET", path: "/v1/workers/list?all=true", tok: token, want: 200}) // ended workers in the list

	// The catalog.
	c.do(call{method: "GET", path: "/v1/catalog", tok: token, want: 200})
	c.do(call{method: "POST", path: "/v1/models", tok: token, want: 201, body: apiv1.ModelAddRequest{Ref: "hf:org/tiny", Path: h.Model}})
	c.do(call{method: "GET", path: "/v1/catalog", tok: token, want: 200})

	// The front door.
	c.do(call{method: "GET", path: "/v1/models", tok: token, want: 200})
	c.do(call{method: "POST", path: "/v1/chat/completions", tok: token, want: 200, body: map[string]any{"model": "m1", "messages": []any{}}})
	c.do(call{method: "POST", path: "/v1/chat/completions", tok: token, want: 200, stream: true, body: map[string]any{"model": "m1", "stream": true}})
	c.do(call{method: "POST", path: "/v1/completions", tok: token, want: 200, body: map[string]any{"model": "m1", "prompt": "x"}})
	c.do(call{method: "POST", path: "/v1/embeddings", tok: token, want: 200, body: map[string]any{"model": "m1", "input": "x"}})
	c.do(call{method: "POST", path: "/v1/embeddings", tok: token, want: 404, code: "MODEL_NOT_FOUND", body: map[string]any{"model": "nope"}})
	c.do(call{method: "POST", path: "/v1/completions", tok: token, want: 400, code: "INVALID_REQUEST", body: "[1]", badRequest: true})
	c.do(call{method: "GET", path: "/v1/models", want: 401, code: "MISSING_API_KEY"})
	c.do(call{method: "POST", path: "/v1/models", tok: token, want: 404, code: "MODEL_NOT_FOUND", body: apiv1.ModelAddRequest{Ref: "hf:org/gone", Path: h.Models + "/gone.gguf"}})
	c.do(call{method: "POST", path: "/v1/models", tok: token, want: 400, body: apiv1.ModelAddRequest{Ref: "no-provider", Path: h.Model}})
	c.do(call{method: "DELETE", path: "/v1/models?ref=hf:org/tiny", tok: token, want: 200})
	c.do(call{method: "DELETE", path: "/v1/models?ref=hf:org/tiny", tok: token, want: 404, code: "MODEL_NOT_FOUND"})
	c.do(call{method: "DELETE", path: "/v1/models?ref=no-provider", tok: token, want: 400, code: "INVALID_MODEL_REF"})

	// What a browser sends on behalf of a web page is refused on every route.
	origin := http.Header{"Origin": {"https://evil.example"}}
	c.do(call{method: "POST", path: "/v1/workers/spawn", tok: token, body: spawn, header: origin, want: 403, code: "FORBIDDEN"})
	c.do(call{method: "GET", path: "/health", header: origin, want: 403, code: "FORBIDDEN"})

	// Every operation of the document was called, and answered with a
	// success at least once.
	var missing []string
	for _, path := range doc.Paths.InMatchingOrder() {
		for method := range doc.Paths.Value(path).Operations() {
			key := method + " " + path
			ok := false
			for st := range c.seen[key] {
				ok = ok || st < 300
			}
			if !ok {
				missing = append(missing, fmt.Sprintf("%s (seen %v)", key, c.seen[key]))
			}
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("operation never answered with success: %s", m)
	}
}
