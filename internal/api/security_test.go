package api

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

const testToken = "s3cr3t-operator-token-0123456789abcdef"

func TestOperatorAuthRules(t *testing.T) {
	e := newEnv(t, testToken, nil)
	cases := []struct {
		name   string
		auth   []string // Authorization header values; nil: none
		status int
		code   string
	}{
		{"missing", nil, 401, apiv1.CodeMissingAPIKey},
		{"wrong", []string{"Bearer wrong-token"}, 401, apiv1.CodeInvalidAPIKey},
		{"prefix of the token", []string{"Bearer " + testToken[:10]}, 401, apiv1.CodeInvalidAPIKey},
		{"token plus a suffix", []string{"Bearer " + testToken + "x"}, 401, apiv1.CodeInvalidAPIKey},
		{"lowercase bearer", []string{"bearer " + testToken}, 401, apiv1.CodeInvalidAPIKey},
		{"uppercase BEARER", []string{"BEARER " + testToken}, 401, apiv1.CodeInvalidAPIKey},
		{"no scheme", []string{testToken}, 401, apiv1.CodeInvalidAPIKey},
		{"basic scheme", []string{"Basic " + testToken}, 401, apiv1.CodeInvalidAPIKey},
		{"empty header", []string{""}, 401, apiv1.CodeInvalidAPIKey},
		{"empty token", []string{"Bearer "}, 401, apiv1.CodeInvalidAPIKey},
		{"blank token", []string{"Bearer    "}, 401, apiv1.CodeInvalidAPIKey},
		{"control character", []string{"Bearer " + testToken[:5] + "\x01" + testToken[5:]}, 401, apiv1.CodeInvalidAPIKey},
		{"tab inside", []string{"Bearer " + testToken[:5] + "\t" + testToken[5:]}, 401, apiv1.CodeInvalidAPIKey},
		{"DEL", []string{"Bearer " + testToken + "\x7f"}, 401, apiv1.CodeInvalidAPIKey},
		{"NUL", []string{"Bearer " + testToken + "\x00"}, 401, apiv1.CodeInvalidAPIKey},
		{"over-long", []string{"Bearer " + testToken + strings.Repeat("A", MaxAuthHeaderBytes)}, 401, apiv1.CodeInvalidAPIKey},
		{"two headers", []string{"Bearer " + testToken, "Bearer " + testToken}, 401, apiv1.CodeInvalidAPIKey},
		{"right", []string{"Bearer " + testToken}, 200, ""},
		{"right, surrounding blanks trimmed", []string{"Bearer   " + testToken + "  "}, 200, ""},
	}
	// Every operator route answers the same way before doing anything.
	routes := []struct{ method, path string }{
		{"GET", "/v1/workers/list"}, {"POST", "/v1/workers/spawn"}, {"GET", "/v1/workers/worker-x"},
		{"POST", "/v1/workers/worker-x/stop"}, {"DELETE", "/v1/workers/worker-x"}, {"POST", "/v1/workers/worker-x/kill"},
		{"POST", "/v1/workers/worker-x/restart"}, {"GET", "/v1/workers/worker-x/logs"}, {"GET", "/v1/events"},
		{"GET", "/v1/models"}, {"POST", "/v1/models"}, {"DELETE", "/v1/models"}, {"GET", "/v1/status"}, {"GET", "/metrics"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hdr := http.Header{}
			if c.auth != nil {
				hdr["Authorization"] = c.auth
			}
			if c.status == 200 {
				w := e.do("GET", "/v1/workers/list", nil, hdr)
				if w.Code != 200 {
					t.Fatalf("list with the right token: %d %s", w.Code, w.Body)
				}
				return
			}
			for _, rt := range routes {
				w := e.do(rt.method, rt.path, strings.NewReader(`{}`), hdr)
				d := errorShape(t, w.Code, w.Body.Bytes())
				if w.Code != c.status || d.Code != c.code {
					t.Fatalf("%s %s: %d %s, want %d %s", rt.method, rt.path, w.Code, d.Code, c.status, c.code)
				}
				if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Fatalf("%s %s: WWW-Authenticate %q", rt.method, rt.path, got)
				}
				if strings.Contains(w.Body.String(), testToken) {
					t.Fatalf("the response echoes the token: %s", w.Body)
				}
			}
		})
	}
}

func TestHealthIsPublic(t *testing.T) {
	e := newEnv(t, testToken, nil)
	for _, p := range []string{"/health", "/v1/health"} {
		w := e.do("GET", p, nil, nil)
		if w.Code != 200 || !strings.Contains(w.Body.String(), `"status":"alive"`) {
			t.Fatalf("%s: %d %s", p, w.Code, w.Body)
		}
	}
}

func TestMetricsAuth(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "rbee_up 1") })
	// Not public (the daemon's choice off loopback without metrics_public).
	e := newEnv(t, testToken, func(o *Options) { o.Metrics = metrics })
	if w := e.do("GET", "/metrics", nil, nil); w.Code != 401 {
		t.Fatalf("private metrics without a token: %d", w.Code)
	}
	if w := e.do("GET", "/metrics", nil, http.Header{"Authorization": {"Bearer " + testToken}}); w.Code != 200 {
		t.Fatalf("private metrics with the token: %d", w.Code)
	}
	// Public (loopback, or metrics_public: true).
	e = newEnv(t, testToken, func(o *Options) { o.Metrics = metrics; o.MetricsPublic = true })
	if w := e.do("GET", "/metrics", nil, nil); w.Code != 200 || !strings.Contains(w.Body.String(), "rbee_up") {
		t.Fatalf("public metrics: %d %s", w.Code, w.Body)
	}
}

// The operator token is never written to the log; rejected tokens appear
// only as a 6-character fingerprint.
func TestTokenNeverLogged(t *testing.T) {
	e := newEnv(t, testToken, nil)
	wrong := "wrong-token-that-must-not-be-logged"
	for _, tok := range []string{wrong, testToken} {
		e.do("GET", "/v1/workers/list", nil, http.Header{"Authorization": {"Bearer " + tok}})
		e.do("POST", "/v1/heartbeat", strings.NewReader(`{"worker_id":"worker-x","timestamp":"2024-01-01T00:00:00Z","health_status":"healthy"}`),
			http.Header{"Authorization": {"Bearer " + tok}})
	}
	log := e.logBuf.String()
	if strings.Contains(log, testToken) || strings.Contains(log, wrong) {
		t.Fatalf("a token reached the log:\n%s", log)
	}
	if fp := Fingerprint(wrong); len(fp) != 6 || !strings.Contains(log, "fingerprint="+fp) {
		t.Fatalf("rejected token not logged by its fingerprint %q:\n%s", fp, log)
	}
}

// Dev mode (no operator token) is open to local clients only: a request
// from a web page (Origin) or addressed to a non-loopback host name (DNS
// rebinding) is refused, in every mode for Origin.
func TestBrowserRequestsAreRefused(t *testing.T) {
	dev := newEnv(t, "", nil)
	for _, host := range []string{"127.0.0.1:9200", "localhost:9200", "[::1]:9200", "LOCALHOST", "127.0.0.2"} {
		if w := dev.do("GET", "/v1/workers/list", nil, http.Header{"Host": {host}}); w.Code != 200 {
			t.Fatalf("dev mode, Host %s: %d %s", host, w.Code, w.Body)
		}
	}
	for _, host := range []string{"evil.example:9200", "127.0.0.1.evil.example", "", "0.0.0.0:9200", "10.0.0.1"} {
		w := dev.do("POST", "/v1/workers/spawn", strings.NewReader(`{}`), http.Header{"Host": {host}})
		if d := errorShape(t, w.Code, w.Body.Bytes()); w.Code != 403 || d.Code != apiv1.CodeForbidden {
			t.Fatalf("dev mode, Host %q: %d %s", host, w.Code, d.Code)
		}
	}
	op := newEnv(t, testToken, nil)
	auth := "Bearer " + testToken
	if w := op.do("GET", "/v1/workers/list", nil, http.Header{"Host": {"hive.example:9200"}, "Authorization": {auth}}); w.Code != 200 {
		t.Fatalf("with a token any Host is fine: %d", w.Code)
	}
	for _, e := range []*testEnv{dev, op} {
		for _, origin := range []string{"https://evil.example", "null", "http://127.0.0.1:9201", "http://localhost:9200"} {
			w := e.do("POST", "/v1/workers/spawn", strings.NewReader(`{}`), http.Header{"Origin": {origin}, "Authorization": {auth}})
			if d := errorShape(t, w.Code, w.Body.Bytes()); w.Code != 403 || d.Code != apiv1.CodeForbidden {
				t.Fatalf("Origin %q: %d %s", origin, w.Code, d.Code)
			}
		}
	}
}

// The browser guard admits a request whose Origin is the hive's own (the
// web console) and only those: scheme, host and port equal to where the
// request was sent; dev mode still checks the Host against rebinding.
func TestBrowserGuardAdmitsOnlyTheHivesOwnOrigin(t *testing.T) {
	dev := newEnv(t, "", nil)
	op := newEnv(t, testToken, nil)
	auth := http.Header{"Authorization": {"Bearer " + testToken}}
	cases := []struct {
		host, origin string
		dev, op      int // status in dev mode and with a token
	}{
		{"127.0.0.1:9200", "http://127.0.0.1:9200", 200, 200},
		{"localhost:9200", "http://LocalHost:9200", 200, 200},
		{"[::1]:9200", "http://[::1]:9200", 200, 200},
		{"localhost", "http://localhost", 200, 200},
		{"localhost:80", "http://localhost", 200, 200},
		{"localhost", "http://localhost:80", 200, 200},
		{"hive.example:9200", "http://hive.example:9200", 403, 200}, // dev mode: not loopback (rebinding)
		{"127.0.0.1:9200", "https://127.0.0.1:9200", 403, 403},      // other scheme
		{"127.0.0.1:9200", "http://127.0.0.1:9201", 403, 403},       // other port
		{"127.0.0.1:9200", "http://127.0.0.1", 403, 403},            // default port 80
		{"127.0.0.1:9200", "http://localhost:9200", 403, 403},       // other host name, same address
		{"127.0.0.1:9200", "http://evil.example", 403, 403},
		{"127.0.0.1:9200", "null", 403, 403},
		{"127.0.0.1:9200", "", 403, 403},
		{"127.0.0.1:9200", "http://", 403, 403},
		{"127.0.0.1:9200", "http://127.0.0.1:9200/", 403, 403},
		{"127.0.0.1:9200", "http://user@127.0.0.1:9200", 403, 403},
		{"127.0.0.1:9200", "http://127.0.0.1:9200.evil.example", 403, 403},
		{"127.0.0.1:9200", "http://127.0.0.1:+9200", 403, 403},
		{"127.0.0.1:9200", "127.0.0.1:9200", 403, 403},
		{"hive.example:9200", "http://evil.example:9200", 403, 403},
	}
	for _, c := range cases {
		for _, m := range []struct {
			e    *testEnv
			want int
		}{{dev, c.dev}, {op, c.op}} {
			hdr := http.Header{"Host": {c.host}, "Origin": {c.origin}, "Authorization": auth["Authorization"]}
			w := m.e.do("GET", "/v1/workers/list", nil, hdr)
			if w.Code != m.want {
				t.Errorf("Host %q Origin %q (token %v): %d %s, want %d", c.host, c.origin, m.e == op, w.Code, w.Body, m.want)
			}
			if w.Code == 403 {
				errorShape(t, w.Code, w.Body.Bytes())
			}
		}
	}
	// Two Origin headers: refused even if one is right.
	w := op.do("GET", "/v1/workers/list", nil, http.Header{"Origin": {"http://127.0.0.1:9200", "http://evil.example"}, "Authorization": auth["Authorization"]})
	if w.Code != 403 {
		t.Fatalf("two Origin headers: %d", w.Code)
	}
	// Requests a browser marks as coming from another origin, without an
	// Origin (markup such as <img src>), are refused; navigations to the
	// console are not, nor are requests from the console itself.
	for _, c := range []struct {
		path, site, mode string
		want             int
	}{
		{"/v1/workers/list", "cross-site", "no-cors", 403},
		{"/v1/workers/list", "same-site", "no-cors", 403},
		{"/v1/events", "cross-site", "no-cors", 403},
		{"/v1/workers/list", "cross-site", "navigate", 403},
		{"/v1/workers/list", "same-origin", "cors", 200},
		{"/v1/workers/list", "none", "navigate", 200},
		{"/ui/", "cross-site", "navigate", 200},
		{"/ui/console.js", "cross-site", "no-cors", 403},
		{"/ui/", "same-origin", "navigate", 200},
	} {
		hdr := http.Header{"Sec-Fetch-Site": {c.site}, "Sec-Fetch-Mode": {c.mode}, "Authorization": auth["Authorization"]}
		if w := op.do("GET", c.path, nil, hdr); w.Code != c.want {
			t.Errorf("GET %s, Sec-Fetch-Site %s, mode %s: %d, want %d", c.path, c.site, c.mode, w.Code, c.want)
		}
	}
	// Same origin still needs the token.
	w = op.do("GET", "/v1/workers/list", nil, http.Header{"Origin": {"http://127.0.0.1:9200"}})
	if w.Code != 401 {
		t.Fatalf("same origin without a token: %d", w.Code)
	}
}

// Every route that reads a body refuses one over MaxBodyBytes with 413.
func TestBodyLimitOnEveryBodyRoute(t *testing.T) {
	e := newEnv(t, "", nil)
	big := `{"worker_id":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	for _, p := range []string{"/v1/workers/spawn", "/v1/workers/ready", "/v1/heartbeat", "/v1/models"} {
		w := e.do("POST", p, strings.NewReader(big), nil)
		if d := errorShape(t, w.Code, w.Body.Bytes()); w.Code != 413 || d.Code != apiv1.CodeBodyTooLarge {
			t.Fatalf("%s: %d %s", p, w.Code, d.Code)
		}
	}
	// Exactly at the limit is read (and then judged on its content).
	atLimit := `{"model_ref":"hf:x"}` + strings.Repeat(" ", MaxBodyBytes-len(`{"model_ref":"hf:x"}`))
	if w := e.do("POST", "/v1/workers/spawn", strings.NewReader(atLimit), nil); w.Code == 413 {
		t.Fatalf("a body of exactly %d bytes was refused", MaxBodyBytes)
	}
}

// Rules of SPEC §4 validation not covered by the e2e table
// (e2e TestValidationErrorsNameTheField), checked in-process.
func TestSpawnValidationRules(t *testing.T) {
	e := newEnv(t, "", nil)
	model := filepath.Join(e.models, "tiny.gguf")
	if err := os.WriteFile(model, []byte("weights"), 0o600); err != nil {
		t.Fatal(err)
	}
	outsideDir := t.TempDir()
	outside := filepath.Join(outsideDir, "secret.gguf")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A symlinked directory inside the root that points out of it.
	if err := os.Symlink(outsideDir, filepath.Join(e.models, "linkdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(e.models, "link.gguf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(e.models, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	ref := `"model_ref":"file:` + model + `"`
	labels33 := make([]string, 33)
	for i := range labels33 {
		labels33[i] = fmt.Sprintf(`"k%d":"v"`, i)
	}
	cases := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"model_ref control char", `{"model_ref":"hf:org/a\u0001b"}`, 400, "INVALID_MODEL_REF"},
		{"model_ref newline", `{"model_ref":"hf:org/a\nb"}`, 400, "INVALID_MODEL_REF"},
		{"model_ref non-ASCII", `{"model_ref":"hf:org/modèle"}`, 400, "INVALID_MODEL_REF"},
		{"model_ref shell", `{"model_ref":"hf:org/$(reboot)"}`, 400, "INVALID_MODEL_REF"},
		{"model_ref dotdot after colon", `{"model_ref":"file:..:x"}`, 400, "INVALID_MODEL_REF"},
		{"model_ref file dotdot", `{"model_ref":"file:` + e.models + `/../models.json"}`, 400, "INVALID_MODEL_REF"},
		{"model_ref file relative", `{"model_ref":"file:tiny.gguf"}`, 400, "INVALID_MODEL_REF"},
		{"model_ref upper-case provider", `{"model_ref":"HF:org/x"}`, 400, "INVALID_MODEL_REF"},
		{"file ref through a symlinked dir", `{"model_ref":"file:` + e.models + `/linkdir/secret.gguf"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"model_path symlink escape", `{` + ref + `,"model_path":"` + e.models + `/link.gguf"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"model_path through a symlinked dir", `{` + ref + `,"model_path":"` + e.models + `/linkdir/secret.gguf"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"model_path dotdot out of the root", `{` + ref + `,"model_path":"` + e.models + `/../models.json"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"model_path relative", `{` + ref + `,"model_path":"tiny.gguf"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"model_path NUL", `{` + ref + `,"model_path":"` + model + `\u0000"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"model_path /etc/passwd", `{` + ref + `,"model_path":"/etc/passwd"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"model_path the root itself", `{` + ref + `,"model_path":"` + e.models + `"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"model_path a directory", `{` + ref + `,"model_path":"` + e.models + `/sub"}`, 404, "MODEL_NOT_FOUND"},
		{"model_path missing inside the root", `{` + ref + `,"model_path":"` + e.models + `/nope.gguf"}`, 404, "MODEL_NOT_FOUND"},
		{"missing outside the root is not an oracle", `{` + ref + `,"model_path":"/nonexistent/x.gguf"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"backend shell", `{` + ref + `,"backend":"cpu;reboot"}`, 400, "INVALID_BACKEND"},
		{"device too large", `{` + ref + `,"device":1024}`, 400, "INVALID_DEVICE"},
		{"device huge", `{` + ref + `,"device":1e30}`, 400, "INVALID_REQUEST"},
		{"env reserved", `{` + ref + `,"env":{"RBEE_WORKER_TOKEN":"x"}}`, 400, "ENV_NOT_ALLOWED"},
		{"env operator token", `{` + ref + `,"env":{"RBEE_API_TOKEN":"x"}}`, 400, "ENV_NOT_ALLOWED"},
		{"env LD_LIBRARY_PATH", `{` + ref + `,"env":{"LD_LIBRARY_PATH":"/tmp"}}`, 400, "ENV_NOT_ALLOWED"},
		{"env CUDA injection", `{` + ref + `,"env":{"CUDA_INJECTION64_PATH":"/tmp/x.so"}}`, 400, "ENV_NOT_ALLOWED"},
		{"env value too long", `{` + ref + `,"env":{"A":"` + strings.Repeat("v", 33<<10) + `"}}`, 400, "INVALID_ENV"},
		{"env value not a string", `{` + ref + `,"env":{"A":1}}`, 400, "INVALID_REQUEST"},
		{"labels too many", `{` + ref + `,"labels":{` + strings.Join(labels33, ",") + `}}`, 400, "INVALID_LABELS"},
		{"label value too long", `{` + ref + `,"labels":{"k":"` + strings.Repeat("v", 257) + `"}}`, 400, "INVALID_LABELS"},
		{"label control char", `{` + ref + `,"labels":{"k":"a\u001bb"}}`, 400, "INVALID_LABELS"},
		{"label bidi override", `{` + ref + `,"labels":{"k":"a\u202eb"}}`, 400, "INVALID_LABELS"},
		{"settings absurd duration", `{` + ref + `,"settings":{"ready_timeout":"25h"}}`, 400, "INVALID_SETTINGS"},
		{"settings overflowing duration", `{` + ref + `,"settings":{"ready_timeout":"9999999999h"}}`, 400, "INVALID_SETTINGS"},
		{"settings negative nested", `{` + ref + `,"settings":{"health":{"interval":"-5s"}}}`, 400, "INVALID_SETTINGS"},
		{"settings failure_threshold", `{` + ref + `,"settings":{"health":{"failure_threshold":1000000}}}`, 400, "INVALID_SETTINGS"},
		{"settings jitter", `{` + ref + `,"settings":{"restart":{"jitter":2}}}`, 400, "INVALID_SETTINGS"},
		{"settings max_failures zero", `{` + ref + `,"settings":{"restart":{"max_failures":0}}}`, 400, "INVALID_SETTINGS"},
		{"settings policy", `{` + ref + `,"settings":{"restart":{"policy":"sometimes"}}}`, 400, "INVALID_SETTINGS"},
		{"settings cpu_max", `{` + ref + `,"settings":{"limits":{"cpu_max":1e9}}}`, 400, "INVALID_SETTINGS"},
		{"settings memory too small", `{` + ref + `,"settings":{"limits":{"memory_max_bytes":1}}}`, 400, "INVALID_SETTINGS"},
		{"settings nofile negative", `{` + ref + `,"settings":{"limits":{"nofile":-1}}}`, 400, "INVALID_SETTINGS"},
		{"settings pids huge", `{` + ref + `,"settings":{"limits":{"pids_max":99999999999}}}`, 400, "INVALID_SETTINGS"},
		{"settings wrong type", `{` + ref + `,"settings":{"stop_timeout":10}}`, 400, "INVALID_SETTINGS"},
		{"settings not an object", `{` + ref + `,"settings":[1]}`, 400, "INVALID_SETTINGS"},
		{"settings unknown profile", `{` + ref + `,"settings":{"profile":"nope"}}`, 400, "INVALID_PROFILE"},
		{"trailing data", `{` + ref + `} {}`, 400, "INVALID_REQUEST"},
		{"not an object", `[]`, 400, "INVALID_REQUEST"},
		{"empty body", ``, 400, "INVALID_REQUEST"},
		{"duplicate key", `{"model_ref":"hf:a","model_ref":"hf:b\u0001"}`, 400, "INVALID_MODEL_REF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := e.do("POST", "/v1/workers/spawn", strings.NewReader(c.body), nil)
			d := errorShape(t, w.Code, w.Body.Bytes())
			if w.Code != c.status || d.Code != c.code {
				t.Fatalf("got %d %s (%s), want %d %s", w.Code, d.Code, d.Message, c.status, c.code)
			}
			// A refusal never reveals where a symlink points.
			if c.code == "MODEL_PATH_NOT_ALLOWED" && strings.Contains(d.Message, outside) && !strings.Contains(c.body, outside) {
				t.Fatalf("message reveals the symlink target: %s", d.Message)
			}
		})
	}
	if n := len(e.hive.List(true)); n != 0 {
		t.Fatalf("rejected spawns left %d workers", n)
	}
	// The catalog refuses the same escapes.
	for _, p := range []string{e.models + "/link.gguf", e.models + "/linkdir/secret.gguf", "/etc/passwd", e.models + "/../models.json"} {
		w := e.do("POST", "/v1/models", strings.NewReader(`{"ref":"hf:org/x","path":"`+p+`"}`), nil)
		if d := errorShape(t, w.Code, w.Body.Bytes()); w.Code != 400 || d.Code != "MODEL_PATH_NOT_ALLOWED" {
			t.Fatalf("catalog add %s: %d %s", p, w.Code, d.Code)
		}
	}
	for _, q := range []string{"hf:../x", "hf:a%01b", "nope", ""} {
		w := e.do("DELETE", "/v1/models?ref="+q, nil, nil)
		if d := errorShape(t, w.Code, w.Body.Bytes()); w.Code != 400 || d.Code != "INVALID_MODEL_REF" {
			t.Fatalf("catalog remove %q: %d %s", q, w.Code, d.Code)
		}
	}
}

func TestPathAndQueryValidation(t *testing.T) {
	e := newEnv(t, "", nil)
	cases := []struct {
		method, target string
		status         int
		code           string
	}{
		{"GET", "/v1/workers/" + strings.Repeat("a", 257), 400, "INVALID_WORKER_ID"},
		{"GET", "/v1/workers/a.b", 400, "INVALID_WORKER_ID"},
		{"GET", "/v1/workers/a%00b", 400, "INVALID_WORKER_ID"},
		{"POST", "/v1/workers/a%20b/kill", 400, "INVALID_WORKER_ID"},
		{"GET", "/v1/workers/list?all=maybe", 400, "INVALID_REQUEST"},
		{"GET", "/v1/workers/worker-nope", 404, "WORKER_NOT_FOUND"},
		{"POST", "/v1/workers/ready", 400, "INVALID_REQUEST"},
		{"POST", "/v1/heartbeat", 400, "INVALID_REQUEST"},
		{"GET", "/nope", 404, "NOT_FOUND"},
	}
	for _, c := range cases {
		w := e.do(c.method, c.target, strings.NewReader(`{"bogus":1}`), nil)
		if d := errorShape(t, w.Code, w.Body.Bytes()); w.Code != c.status || d.Code != c.code {
			t.Fatalf("%s %s: %d %s, want %d %s", c.method, c.target, w.Code, d.Code, c.status, c.code)
		}
	}
	// Worker callbacks need a worker token, in dev mode too.
	for _, p := range []string{"/v1/workers/ready", "/v1/heartbeat"} {
		body := `{"worker_id":"worker-x","timestamp":"2024-01-01T00:00:00Z","health_status":"healthy"}`
		if p == "/v1/workers/ready" {
			body = `{"worker_id":"worker-x","url":"http://127.0.0.1:1","model_ref":"hf:a","backend":"cpu","device":0}`
		}
		w := e.do("POST", p, strings.NewReader(body), nil)
		if w.Code != 404 {
			t.Fatalf("%s for an unknown worker: %d", p, w.Code)
		}
	}
}

// A client may hold at most MaxStreamsPerClient streams; the next is 429
// TOO_MANY_STREAMS, and closing one frees its place. Over real connections.
func TestStreamsBoundPerClient(t *testing.T) {
	e := newEnv(t, "", nil)
	ts := httptest.NewServer(e.srv)
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(ctx context.Context) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/v1/events", nil)
		return ts.Client().Do(req)
	}
	var cancels []context.CancelFunc
	var bodies []*http.Response
	for i := range MaxStreamsPerClient {
		sctx, scancel := context.WithCancel(ctx)
		resp, err := open(sctx)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream %d: %v %v", i+1, err, resp)
		}
		// The stream is counted once its first line has arrived.
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		cancels = append(cancels, scancel)
		bodies = append(bodies, resp)
	}
	resp, err := open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 512)
	n, _ := resp.Body.Read(body)
	resp.Body.Close()
	if d := errorShape(t, resp.StatusCode, body[:n]); resp.StatusCode != 429 || d.Code != apiv1.CodeTooManyStreams {
		t.Fatalf("stream %d: %d %s", MaxStreamsPerClient+1, resp.StatusCode, d.Code)
	}
	// Other requests still work while the streams are open.
	if r, err := ts.Client().Get(ts.URL + "/v1/workers/list"); err != nil || r.StatusCode != 200 {
		t.Fatalf("list while streams are open: %v %v", err, r)
	} else {
		r.Body.Close()
	}
	cancels[0]()
	bodies[0].Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		sctx, scancel := context.WithCancel(ctx)
		r, err := open(sctx)
		if err == nil && r.StatusCode == 200 {
			cancels[0], bodies[0] = scancel, r
			break
		}
		if r != nil {
			r.Body.Close()
		}
		scancel()
		if time.Now().After(deadline) {
			t.Fatalf("a freed stream place was not reusable: %v %v", err, r)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, c := range cancels {
		c()
		bodies[i].Body.Close()
	}
}

// Found by FuzzDecode: json.Decoder.More reports false before a stray "}"
// or "]", so `{...}}` passed the trailing-data check.
func TestDecodeRefusesStrayClosingDelimiter(t *testing.T) {
	e := newEnv(t, "", nil)
	for _, b := range []string{`{"model_ref":"hf:a"}}`, `{"model_ref":"hf:a"}]`, `{"model_ref":"hf:a"} x`, `{"model_ref":"hf:a"}{}`} {
		w := e.do("POST", "/v1/workers/spawn", strings.NewReader(b), nil)
		if d := errorShape(t, w.Code, w.Body.Bytes()); w.Code != 400 || d.Code != apiv1.CodeInvalidRequest {
			t.Fatalf("%s: %d %s", b, w.Code, d.Code)
		}
	}
	// Trailing white space is fine.
	if w := e.do("POST", "/v1/workers/spawn", strings.NewReader("{\"model_ref\":\"hf:a\"}\n\t "), nil); w.Code != 404 {
		t.Fatalf("trailing blanks: %d %s", w.Code, w.Body)
	}
}

// The console is mounted at /ui/, public (it holds no data; the API calls it
// makes need the token), with its security headers; only GET reaches it.
func TestConsoleIsMountedAtUI(t *testing.T) {
	e := newEnv(t, testToken, nil)
	w := e.do("GET", "/ui/", nil, nil)
	if w.Code != 200 || !strings.Contains(w.Body.String(), "console.js") {
		t.Fatalf("GET /ui/: %d %s", w.Code, w.Body)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("GET /ui/: CSP %q", csp)
	}
	if w := e.do("GET", "/ui", nil, nil); w.Code != 301 || w.Header().Get("Location") != "/ui/" {
		t.Fatalf("GET /ui: %d %q", w.Code, w.Header().Get("Location"))
	}
	if w := e.do("POST", "/ui/", strings.NewReader("x"), nil); w.Code != 405 {
		t.Fatalf("POST /ui/: %d", w.Code)
	}
	// Dev mode answers a rebound host name for the page as for the API.
	dev := newEnv(t, "", nil)
	if w := dev.do("GET", "/ui/", nil, http.Header{"Host": {"evil.example"}}); w.Code != 403 {
		t.Fatalf("dev mode, GET /ui/ with a foreign Host: %d", w.Code)
	}
}
