package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/hive"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testEnv is an API server over a real hive in a temporary state directory,
// served in-process.
type testEnv struct {
	srv    *Server
	hive   *hive.Hive
	state  string
	models string // the default model root
	logBuf *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newEnv starts a hive (no workers) and an API server with operator token
// tok ("" for dev mode). The hive shuts down at cleanup.
func newEnv(t testing.TB, tok string, mod func(*Options)) *testEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "rbee-api-test-")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.MemoryReserveBytes = -1
	cfg.Ports = config.Ports{Min: 41000, Max: 41010}
	buf := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := hive.New(cfg, hive.Options{Logger: log, HiveURL: "http://127.0.0.1:1"})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	o := Options{Hive: h, Logger: log, Token: tok}
	if mod != nil {
		mod(&o)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		os.RemoveAll(dir)
	})
	return &testEnv{srv: New(o), hive: h, state: dir, models: filepath.Join(dir, "models"), logBuf: buf}
}

// do serves one request in-process. Host is a loopback address unless the
// caller set another.
func (e *testEnv) do(method, target string, body io.Reader, hdr http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, body)
	r.Host = "127.0.0.1:9200"
	r.RemoteAddr = "127.0.0.1:40000"
	for k, vs := range hdr {
		if k == "Host" {
			r.Host = vs[0]
			continue
		}
		r.Header[k] = vs
	}
	w := httptest.NewRecorder()
	e.srv.ServeHTTP(w, r)
	return w
}

// errorShape decodes a 4xx/5xx body, failing the test unless it is the one
// error shape {"error":{"code","message"}} with nothing else.
func errorShape(t testing.TB, status int, body []byte) apiv1.ErrorDetail {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || len(raw) != 1 || raw["error"] == nil {
		t.Fatalf("status %d: body is not the error shape: %q", status, body)
	}
	dec := json.NewDecoder(bytes.NewReader(raw["error"]))
	dec.DisallowUnknownFields()
	var d apiv1.ErrorDetail
	if err := dec.Decode(&d); err != nil || d.Code == "" || d.Message == "" {
		t.Fatalf("status %d: error detail %q: %v", status, raw["error"], err)
	}
	for _, c := range d.Code {
		if !(c >= 'A' && c <= 'Z' || c == '_') {
			t.Fatalf("status %d: code %q is not SCREAMING_SNAKE", status, d.Code)
		}
	}
	return d
}
