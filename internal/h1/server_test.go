package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// served is what a handler saw of a request.
type served struct {
	via    string // "h1" or "net/http"
	method string
	path   string
	host   string
	body   string
	header http.Header
	remote string
}

type testServer struct {
	s    *Server
	addr string
	seen chan served
	done chan error

	mu     sync.Mutex
	states []string
}

// startServer runs a Server on loopback whose fast handler is h (nil: an
// echo of the request) and whose fallback answers "fallback".
func startServer(t *testing.T, h http.HandlerFunc, opts ...func(*Server)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String(), seen: make(chan served, 64), done: make(chan error, 1)}
	record := func(via string, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ts.seen <- served{via: via, method: r.Method, path: r.URL.Path, host: r.Host, body: string(b), header: r.Header, remote: r.RemoteAddr}
	}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			record("h1", r)
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "h1 %s", r.URL.Path)
		}
	}
	var via sync.Map
	fb := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			record("net/http", r)
			fmt.Fprint(w, "fallback")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	state := func(c net.Conn, st http.ConnState) {
		if u, ok := c.(interface{ NetConn() net.Conn }); ok {
			c = u.NetConn()
			via.Store(c, true)
		}
		ts.mu.Lock()
		ts.states = append(ts.states, st.String())
		ts.mu.Unlock()
	}
	fb.ConnState = state
	ts.s = &Server{
		Handler: h, Routes: []string{"/v1/chat/completions", "/v1/completions"}, Fallback: fb,
		ConnState: state, ReadHeaderTimeout: 2 * time.Second, IdleTimeout: 10 * time.Second,
	}
	for _, o := range opts {
		o(ts.s)
	}
	go func() { ts.done <- ts.s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-ts.done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ts
}

func (ts *testServer) dial(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func (ts *testServer) next(t *testing.T) served {
	t.Helper()
	select {
	case s := <-ts.seen:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no request reached a handler within 5s")
	}
	return served{}
}

func post(path, body string, extra ...string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: hive.test\r\nContent-Type: application/json\r\n" +
		strings.Join(extra, "") + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
}

func readResp(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// A POST to a route is served by the lean server: the handler sees the
// request as net/http would give it, and requests follow each other on
// one kept-alive connection; anything else on that connection, from then
// on, is net/http's.
func TestRoutesServedHereAndTheRestHandedToNetHTTP(t *testing.T) {
	ts := startServer(t, nil)
	c, br := ts.dial(t)
	for i := 0; i < 3; i++ {
		body := fmt.Sprintf(`{"model":"m","n":%d}`, i)
		if _, err := io.WriteString(c, post("/v1/chat/completions", body, "X-Trace: a\r\nx-trace: b\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, got := readResp(t, br)
		if resp.StatusCode != 200 || got != "h1 /v1/chat/completions" || resp.ContentLength != int64(len(got)) {
			t.Fatalf("answer %d %q (length %d)", resp.StatusCode, got, resp.ContentLength)
		}
		if resp.Header.Get("Date") == "" || resp.Header.Get("Content-Type") != "text/plain" {
			t.Fatalf("answer headers %v", resp.Header)
		}
		s := ts.next(t)
		if s.via != "h1" || s.method != "POST" || s.host != "hive.test" || s.body != body ||
			strings.Join(s.header.Values("X-Trace"), ",") != "a,b" || s.header.Get("Content-Type") != "application/json" ||
			s.remote != c.LocalAddr().String() {
			t.Fatalf("request %d seen as %+v", i, s)
		}
	}
	if _, err := io.WriteString(c, "GET /v1/models HTTP/1.1\r\nHost: hive.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, got := readResp(t, br); got != "fallback" {
		t.Fatalf("GET answered %q", got)
	}
	if s := ts.next(t); s.via != "net/http" || s.path != "/v1/models" {
		t.Fatalf("GET seen as %+v", s)
	}
	// The connection is net/http's now, a route included.
	if _, err := io.WriteString(c, post("/v1/completions", "{}")); err != nil {
		t.Fatal(err)
	}
	if _, got := readResp(t, br); got != "fallback" {
		t.Fatalf("POST after the hand-over answered %q", got)
	}
	ts.next(t)
}

// What the lean server does not read by its strict subset goes to
// net/http unchanged, which answers it by its own rules.
func TestUnusualRequestsGoToNetHTTP(t *testing.T) {
	ts := startServer(t, nil)
	for _, tc := range []struct{ name, req, status string }{
		{"chunked body", "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", "200"},
		{"expect continue", "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}", "200"},
		{"HTTP/1.0", "POST /v1/chat/completions HTTP/1.0\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}", "200"},
		{"query", "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}", "200"},
		{"other path", "POST /v1/embeddings HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}", "200"},
		{"no length", "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\n\r\n", "200"},
		{"bare LF", "POST /v1/chat/completions HTTP/1.1\nHost: h\nContent-Length: 2\n\n{}", "200"},
		{"two lengths", "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "400"},
		{"signed length", "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: +2\r\n\r\n{}", "400"},
		{"no host", "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", "400"},
		{"folded line", "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\n{}", "200"},
		{"control byte", "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nX-A: \x01\r\nContent-Length: 2\r\n\r\n{}", "400"},
		{"space in name", "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nX A: 1\r\nContent-Length: 2\r\n\r\n{}", "400"},
		{"head over the buffer", "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("a", bufSize) + "\r\nContent-Length: 2\r\n\r\n{}", "200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := ts.dial(t)
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			for err == nil && resp.StatusCode == http.StatusContinue {
				resp, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := fmt.Sprint(resp.StatusCode); got != tc.status {
				t.Fatalf("status %s, want %s (net/http's)", got, tc.status)
			}
			if tc.status == "200" {
				if s := ts.next(t); s.via != "net/http" {
					t.Fatalf("served by %s", s.via)
				}
			}
		})
	}
}

// An answer that flushes goes out chunk by chunk: the client reads the
// first before the handler writes the second; one of unknown length that
// outgrows the buffer is chunked, one that ends within it has its length.
func TestStreamedAnswerLeavesChunkByChunk(t *testing.T) {
	second := make(chan struct{})
	ts := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/chat/completions":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: 1\n\n")
			w.(http.Flusher).Flush()
			<-second
			io.WriteString(w, "data: 2\n\n")
		default:
			w.Write([]byte(strings.Repeat("x", 3*bufSize)))
		}
	})
	c, br := ts.dial(t)
	io.WriteString(c, post("/v1/chat/completions", "{}"))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("transfer encoding %v", resp.TransferEncoding)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: 1\n" {
		t.Fatalf("first chunk %q %v", line, err)
	}
	close(second)
	rest, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasSuffix(string(rest), "data: 2\n\n") {
		t.Fatalf("rest %q", rest)
	}
	io.WriteString(c, post("/v1/completions", "{}"))
	resp, got := readResp(t, br)
	if len(got) != 3*bufSize || len(resp.TransferEncoding) == 0 {
		t.Fatalf("big answer: %d bytes, transfer encoding %v", len(got), resp.TransferEncoding)
	}
}

// The client closing its connection cancels the running request's
// context, as net/http does: a request that waits on a worker ends.
func TestClientLeavingCancelsTheRequest(t *testing.T) {
	started, ended := make(chan struct{}), make(chan error, 1)
	ts := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		close(started)
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(10 * time.Second):
			ended <- errors.New("not cancelled within 10s")
		}
	})
	c, _ := ts.dial(t)
	io.WriteString(c, post("/v1/chat/completions", `{"model":"m"}`))
	<-started
	time.Sleep(20 * time.Millisecond) // past watchAfter: the watch is running
	t0 := time.Now()
	c.Close()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("cancelled %s after the client left", d)
	}
}

// A request that leaves its body unread, or a handler that panics, does
// not take the server down: the next connection is served.
func TestPanicAndUnreadBodyCloseOnlyTheirConnection(t *testing.T) {
	ts := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Do") {
		case "panic":
			panic("handler bug")
		case "abort":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "12345")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "ok")
	})
	for _, do := range []string{"panic", "abort"} {
		c, br := ts.dial(t)
		io.WriteString(c, post("/v1/chat/completions", "{}", "X-Do: "+do+"\r\n"))
		if resp, err := http.ReadResponse(br, nil); err == nil {
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Fatalf("%s: a complete answer", do)
			}
		}
	}
	c, br := ts.dial(t)
	big := strings.Repeat("b", maxDrain+1)
	io.WriteString(c, post("/v1/chat/completions", "{}")+post("/v1/chat/completions", big))
	for i := 0; i < 2; i++ {
		if _, got := readResp(t, br); got != "ok" {
			t.Fatalf("answer %d: %q", i, got)
		}
	}
	// Closed (with the unread bytes: a reset).
	if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection with %d unread bytes not closed: %v", len(big), err)
	}
}

// Shutdown closes idle connections at once and lets a running request
// finish; Serve then returns ErrServerClosed (checked by the cleanup).
func TestShutdownClosesIdleAndWaitsForActive(t *testing.T) {
	release := make(chan struct{})
	ts := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Wait") != "" {
			<-release
		}
		io.WriteString(w, "done")
	})
	idle, ibr := ts.dial(t)
	io.WriteString(idle, post("/v1/chat/completions", "{}"))
	readResp(t, ibr)
	busy, bbr := ts.dial(t)
	io.WriteString(busy, post("/v1/chat/completions", "{}", "X-Wait: 1\r\n"))
	shut := make(chan error, 1)
	deadline := time.Now().Add(5 * time.Second)
	for ts.s.openConns() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- ts.s.Shutdown(ctx)
	}()
	if _, err := ibr.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	resp, got := readResp(t, bbr)
	if got != "done" || !resp.Close {
		t.Fatalf("running request: %q, close %v", got, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// A client that sends part of a head and stops is cut at the header
// timeout.
func TestSlowHeadIsCutAtTheHeaderTimeout(t *testing.T) {
	ts := startServer(t, nil, func(s *Server) { s.ReadHeaderTimeout = 200 * time.Millisecond })
	c, br := ts.dial(t)
	io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\n")
	t0 := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read: %v", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("cut after %s", d)
	}
}

// The connection-state hooks see every connection from new to closed, the
// handed-over ones as the accepted connection (NetConn).
func TestConnStateHooks(t *testing.T) {
	ts := startServer(t, nil)
	c, br := ts.dial(t)
	io.WriteString(c, post("/v1/chat/completions", "{}"))
	readResp(t, br)
	io.WriteString(c, post("/v1/chat/completions", "{}", "Connection: close\r\n"))
	resp, _ := readResp(t, br)
	if !resp.Close {
		t.Fatal("Connection: close not answered in kind")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts.mu.Lock()
		got := strings.Join(ts.states, ",")
		ts.mu.Unlock()
		if got == "new,active,idle,active,closed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("states %s", got)
		}
		time.Sleep(time.Millisecond)
	}
}

// The write timeout counts from the request's head; a handler that streams
// lifts it (http.ResponseController), one that does not is cut.
func TestWriteTimeoutAndItsLifting(t *testing.T) {
	ts := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Lift") != "" {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		}
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(400 * time.Millisecond)
		io.WriteString(w, "data: 2\n\n")
	}, func(s *Server) { s.WriteTimeout = 200 * time.Millisecond })
	for _, lift := range []bool{true, false} {
		c, br := ts.dial(t)
		extra := ""
		if lift {
			extra = "X-Lift: 1\r\n"
		}
		io.WriteString(c, post("/v1/chat/completions", "{}", extra))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if complete := err == nil && strings.HasSuffix(string(b), "data: 2\n\n"); complete != lift {
			t.Fatalf("lifted %v: body %q, %v", lift, b, err)
		}
	}
}
