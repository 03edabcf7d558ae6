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
	// 30 times the timeout: a probe that ignored it would hang until the
	// test ends; one CI-like run at load 7 with -race took 1.2 s.
	if d := time.Since(start); d > 3*time.Second {
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

// A slow answer is waited for, and a kept connection serves again.
func TestGetWaitsForASlowAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	p := New(strings.TrimPrefix(srv.URL, "http://"))
	defer p.Close()
	for range 2 { // the second on the kept connection
		if err := p.Get("/health", 200, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// rawServer answers every connection with resp and closes it (or, with
// keep, reads the next request on it).
func rawServer(t *testing.T, resp string) (addr string, conns *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	conns = new(atomic.Int32)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				if _, err := c.Read(buf); err != nil {
					return
				}
				c.Write([]byte(resp))
			}()
		}
	}()
	return l.Addr().String(), conns
}

// Servers that close after answering (HTTP/1.0, Connection: close,
// chunked bodies) get a new connection per probe, and their answers count.
func TestGetOnServersThatCloseOrChunk(t *testing.T) {
	for _, c := range []struct{ name, resp string }{
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"no length", "HTTP/1.1 200 OK\r\n\r\nok"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, conns := rawServer(t, c.resp)
			p := New(addr)
			defer p.Close()
			for range 3 {
				if err := p.Get("/health", 200, 2*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			if n := conns.Load(); n != 3 {
				t.Fatalf("%d connections for 3 probes", n)
			}
		})
	}
	addr, _ := rawServer(t, "garbage\r\n\r\n")
	if err := New(addr).Get("/health", 200, 2*time.Second); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("garbage answer: %v", err)
	}
	addr, _ = rawServer(t, "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
	if err := New(addr).Get("/health", 200, 2*time.Second); err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Fatalf("503 answer: %v", err)
	}
}
