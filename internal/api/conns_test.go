package api

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// An unauthenticated connection is closed once it has been idle for the
// idle limit — counted from the end of its last request, however many it
// made before — and not while it keeps being used.
func TestIdleUnauthenticatedCountsFromTheLastRequest(t *testing.T) {
	c := NewConns(64, nil)
	c.idleUnauth = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ConnContext: c.ConnContext, ConnState: c.ConnState,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(c.Listener(ln))
	defer srv.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	get := func() error {
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.ReadAll(resp.Body)
		return err
	}
	// Used every 100 ms for a second: never idle for the limit.
	var last time.Time
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if err := get(); err != nil {
			t.Fatalf("a connection in use was closed: %v", err)
		}
		last = time.Now()
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want closed", err)
	}
	if d := time.Since(last); d < 250*time.Millisecond || d > 2*time.Second {
		t.Fatalf("closed %s after its last request, want about 300ms", d)
	}
	for deadline := time.Now().Add(5 * time.Second); c.Open() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still counted 5s after the close", c.Open())
		}
	}
}
