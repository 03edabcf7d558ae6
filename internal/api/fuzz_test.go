package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// bodyTypes are the request bodies the API decodes.
var bodyTypes = []func() any{
	func() any { return new(apiv1.SpawnRequest) },
	func() any { return new(apiv1.ReadyRequest) },
	func() any { return new(apiv1.HeartbeatRequest) },
	func() any { return new(apiv1.ModelAddRequest) },
}

// FuzzDecode feeds arbitrary bytes to the strict decoder of every request
// body type. Invariant: no panic; a refusal is 400 INVALID_REQUEST or 413
// BODY_TOO_LARGE in the error shape; an acceptance is one JSON object and
// nothing else.
func FuzzDecode(f *testing.F) {
	for i, b := range []string{
		`{"model_ref":"file:/m/x.gguf","backend":"cpu","device":0,"env":{"A":"b"},"labels":{"k":"v"},"settings":{"idle_timeout":"1s"}}`,
		`{"worker_id":"worker-1","url":"http://127.0.0.1:8081","model_ref":"hf:a/b","backend":"cpu","device":0}`,
		`{"worker_id":"worker-1","timestamp":"2024-01-01T00:00:00Z","health_status":"healthy","state":"idle","slots_total":4,"slots_available":3,"progress":{"done":1,"total":2}}`,
		`{"ref":"hf:org/x","path":"/m/x.gguf"}`,
		`{"model_ref":1}`, `{} {}`, `{"bogus":1}`, `[]`, `null`, ``, `{"device":1e999}`, "{\"model_ref\":\"\xff\"}",
	} {
		f.Add(uint8(i), []byte(b))
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		v := bodyTypes[int(kind)%len(bodyTypes)]()
		r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		w := httptest.NewRecorder()
		err := decode(w, r, v)
		if err == nil {
			dec := json.NewDecoder(bytes.NewReader(body))
			var obj json.RawMessage
			if dec.Decode(&obj) != nil || len(obj) == 0 || (obj[0] != '{' && string(obj) != "null") {
				t.Fatalf("accepted %q", body)
			}
			if _, err := dec.Token(); !errors.Is(err, io.EOF) {
				t.Fatalf("accepted trailing data in %q", body)
			}
			return
		}
		ae := toAPIError(err)
		if !(ae.Status == 400 && ae.Code == apiv1.CodeInvalidRequest) && !(ae.Status == 413 && ae.Code == apiv1.CodeBodyTooLarge) {
			t.Fatalf("decode refusal %d %s", ae.Status, ae.Code)
		}
		writeError(w, nil, err)
		errorShape(t, w.Code, w.Body.Bytes())
	})
}

// fuzzRoutes are every route of the API, with {id} standing for a fuzzed
// path segment.
var fuzzRoutes = []struct{ method, path string }{
	{"GET", "/health"}, {"GET", "/v1/health"}, {"GET", "/metrics"}, {"GET", "/v1/openapi.json"},
	{"GET", "/v1/status"}, {"POST", "/v1/workers/spawn"}, {"GET", "/v1/workers/list"},
	{"GET", "/v1/workers/{id}"}, {"POST", "/v1/workers/{id}/stop"}, {"DELETE", "/v1/workers/{id}"},
	{"POST", "/v1/workers/{id}/kill"}, {"POST", "/v1/workers/{id}/restart"}, {"GET", "/v1/workers/{id}/logs"},
	{"GET", "/v1/events"}, {"GET", "/v1/models"}, {"POST", "/v1/models"}, {"DELETE", "/v1/models"},
	{"POST", "/v1/workers/ready"}, {"POST", "/v1/heartbeat"}, {"PUT", "/v1/workers/spawn"}, {"GET", "/{id}"},
	{"PATCH", "/v1/heartbeat"}, {"OPTIONS", "/v1/workers/list"}, {"HEAD", "/v1/workers/{id}"},
	{"GET", "/v1/catalog"}, {"POST", "/v1/chat/completions"}, {"POST", "/v1/completions"}, {"POST", "/v1/embeddings"},
}

// FuzzRoutes sends arbitrary requests (route, path segment, query, auth
// header, body) to every route of a real API server over a real hive (with
// no model files, so nothing can start). Invariant: no panic, no 5xx, and
// every 4xx is the error shape {"error":{"code","message"}}.
func FuzzRoutes(f *testing.F) {
	op := newEnv(f, testToken, nil)
	dev := newEnv(f, "", nil)
	bodies := []string{
		`{"model_ref":"file:/nonexistent/x.gguf"}`,
		`{"model_ref":"hf:org/x","env":{"LD_PRELOAD":"/x.so"},"labels":{"k":"v"},"settings":{"restart":{"jitter":2}}}`,
		`{"worker_id":"worker-1","url":"http://127.0.0.1:1","model_ref":"hf:a","backend":"cpu","device":0}`,
		`{"worker_id":"worker-1","timestamp":"2024-01-01T00:00:00Z","health_status":"healthy"}`,
		`{"ref":"hf:org/x","path":"/etc/passwd"}`,
		`{`, ``,
	}
	for i := range fuzzRoutes {
		f.Add(uint8(i), uint8(i%4), "worker-1", "all=true&tail=5&follow=false&ref=hf:a", "Bearer x", []byte(bodies[i%len(bodies)]))
	}
	f.Add(uint8(7), uint8(1), "..", "tail=-1", "", []byte(nil))
	f.Add(uint8(12), uint8(1), "worker-1", "tail=99999999999999999999&follow=maybe", "", []byte(nil))
	f.Add(uint8(16), uint8(1), "", "ref=hf:..%01", "", []byte(nil))
	f.Fuzz(func(t *testing.T, route, mode uint8, seg, query, auth string, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		e := op
		if mode&4 != 0 {
			e = dev
		}
		r := &http.Request{
			Method: rt.method,
			URL:    &url.URL{Path: strings.ReplaceAll(rt.path, "{id}", seg), RawQuery: query},
			Proto:  "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:        http.Header{"Content-Type": {"application/json"}},
			Body:          io.NopCloser(bytes.NewReader(body)),
			ContentLength: int64(len(body)),
			Host:          "127.0.0.1:9200",
			RemoteAddr:    "127.0.0.1:40000",
		}
		switch mode & 3 {
		case 1:
			r.Header.Set("Authorization", "Bearer "+testToken)
		case 2:
			r.Header["Authorization"] = []string{auth}
		case 3:
			r.Header["Authorization"] = []string{"Bearer " + auth}
		}
		ctx := context.Background()
		if rt.path == "/v1/events" || strings.Contains(query, "follow") {
			// A stream that is let in ends at once.
			c, cancel := context.WithCancel(ctx)
			cancel()
			ctx = c
		}
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r.WithContext(ctx))
		switch {
		case w.Code >= 500:
			t.Fatalf("%s %q ?%q: %d %s", rt.method, r.URL.Path, query, w.Code, w.Body)
		case w.Code >= 400:
			d := errorShape(t, w.Code, w.Body.Bytes())
			if w.Code == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without WWW-Authenticate")
			}
			if !utf8.ValidString(d.Message) {
				t.Fatalf("message is not UTF-8: %q", d.Message)
			}
		case w.Code >= 300:
			// The mux's redirect to a cleaned path.
			if loc := w.Header().Get("Location"); loc == "" {
				t.Fatalf("%d without Location", w.Code)
			}
		}
		if w.Code < 300 && e == op && mode&3 != 1 && !isPublic(r.URL.Path) {
			t.Fatalf("%s %s answered %d without the operator token (mode %d auth %q)", rt.method, rt.path, w.Code, mode, auth)
		}
		if n := len(e.hive.List(true)); n != 0 {
			t.Fatalf("a fuzzed request created a worker")
		}
	})
}

func isPublic(p string) bool {
	switch p {
	case "/health", "/v1/health", "/v1/openapi.json":
		return true
	}
	return false
}
