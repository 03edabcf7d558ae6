package probe

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestGetReusesOneConnection(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.Write([]byte(`{"status":"healthy"}`))
			return
		}
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	p := New(strings.TrimPrefix(srv.URL, "http://"))
	defer p.Close()
	for range 20 {
		if err := p.Get("/health", 200, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Get("/other", 200, time.Second); err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Fatalf("wrong status accepted: %v", err)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 21 probes", n)
	}
}

// Regression guard: a server that closes idle connections must not make
// the next probe fail.
func TestGetRetriesAConnectionTheServerClosed(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.IdleTimeout = 20 * time.Millisecond
	closed := make(chan struct{}, 1)
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	defer srv.Close()
	p := New(strings.TrimPrefix(srv.URL, "http://"))
	defer p.Close()
	if err := p.Get("/", 200, time.Second); err != nil {
		t.Fatal(err)
	}
	select { // the server's idle timeout closes the kept connection
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("server did not close the idle connection")
	}
	if err := p.Get("/", 200, time.Second); err != nil {
		t.Fatalf("probe after the server closed the idle connection: %v", err)
	}
}

func TestGetTimesOutOnAHungServer(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer srv.Close()
	defer close(hang)
	p := New(strings.TrimPrefix(srv.URL, "http://"))
	defer p.Close()
	start := time.Now()
	if err := p.Get("/health", 200, 100*time.Millisecond); err == nil {
		t.Fatal("hung server passed")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("timeout took %s", d)
	}
}

func TestGetFailsWhenNothingListens(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	p := New(addr)
	if err := p.Get("/health", 200, time.Second); err == nil {
		t.Fatal("probe of a closed port passed")
	}
}
