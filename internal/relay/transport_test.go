package relay

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts the connections a test server accepted.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func newCountingServer(t *testing.T, h http.Handler, connState ...func(net.Conn, http.ConnState)) (*httptest.Server, *countingListener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = cl
	if len(connState) > 0 {
		srv.Config.ConnState = connState[0]
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, cl
}

func post(t *testing.T, tr http.RoundTripper, ctx context.Context, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return tr.RoundTrip(req)
}

// The transport keeps one connection per sequential client and
// relays the body and the answer unchanged.
func TestTransportReusesConnections(t *testing.T) {
	srv, cl := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo", r.Header.Get("X-Test"))
		_, _ = w.Write(append([]byte("got "), b...))
	}))
	tr := New(5 * time.Second)
	defer tr.Close()
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/x", strings.NewReader(`{"model":"m"}`))
		req.Header.Set("X-Test", "yes")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != `got {"model":"m"}` || resp.Header.Get("X-Echo") != "yes" {
			t.Fatalf("answer %q, X-Echo %q", b, resp.Header.Get("X-Echo"))
		}
	}
	if n := cl.n.Load(); n != 1 {
		t.Fatalf("%d connections for 5 sequential requests, want 1", n)
	}
}

// A kept-alive connection the worker has closed (its idle timeout, a
// restart) does not fail the next request: used within a second of going
// idle, the request goes again on a new connection; the hop sees it once.
func TestTransportRecoversFromAConnectionTheWorkerClosed(t *testing.T) {
	var mu sync.Mutex
	var conns []net.Conn
	var seen atomic.Int64
	srv, cl := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		_, _ = io.WriteString(w, "ok")
	}), func(c net.Conn, st http.ConnState) {
		if st == http.StateIdle {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	tr := New(5 * time.Second)
	defer tr.Close()
	get := func() {
		t.Helper()
		resp, err := post(t, tr, context.Background(), srv.URL, "x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok" {
			t.Fatalf("answer %q", b)
		}
	}
	get()
	// The server closes its side of the idle connection.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(conns)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection never went idle")
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	conns[0].Close()
	mu.Unlock()
	// Wait for the FIN to arrive on the pooled connection.
	tr.mu.Lock()
	wc := tr.idle[srv.Listener.Addr().String()][0]
	tr.mu.Unlock()
	for wc.open() {
		if time.Now().After(deadline) {
			t.Fatal("the closed connection still looks open")
		}
		time.Sleep(time.Millisecond)
	}
	get()
	if n := cl.n.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the closed one replaced)", n)
	}
	if n := seen.Load(); n != 2 {
		t.Fatalf("the hop saw %d requests, want 2", n)
	}
}

// A client that goes away mid-stream closes the connection to the worker
// at once (the worker's request context ends), and the connection is not
// pooled.
func TestTransportCancelClosesWorkerConnection(t *testing.T) {
	cancelled := make(chan struct{})
	srv, _ := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(cancelled)
	}))
	tr := New(5 * time.Second)
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := post(t, tr, ctx, srv.URL, "x")
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: 1\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	cancel()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the worker did not see the cancel within 5s")
	}
	resp.Body.Close()
	tr.mu.Lock()
	n := len(tr.idle)
	tr.mu.Unlock()
	if n != 0 {
		t.Fatalf("a cancelled connection was pooled")
	}
}

// A body closed before its end (the relay to the client failed) closes
// the connection rather than draining a stream that may not end.
func TestTransportCloseBeforeEndDoesNotDrain(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, _ := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	tr := New(5 * time.Second)
	defer tr.Close()
	resp, err := post(t, tr, context.Background(), srv.URL, "x")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		resp.Body.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a stream that had not ended")
	}
}

// Idle connections to a worker that ended are closed with CloseIdle, and
// ones idle past the timeout by the sweep.
func TestTransportClosesIdleConnections(t *testing.T) {
	srv, _ := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	tr := New(5 * time.Second)
	defer tr.Close()
	resp, err := post(t, tr, context.Background(), srv.URL, "x")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	addr := srv.Listener.Addr().String()
	tr.mu.Lock()
	n := len(tr.idle[addr])
	stale := tr.sweepLocked(time.Now().Add(tr.idleTimeout + time.Second))
	tr.mu.Unlock()
	if n != 1 || len(stale) != 1 {
		t.Fatalf("pooled %d, swept %d; want 1 and 1", n, len(stale))
	}
	stale[0].c.Close()
	resp, err = post(t, tr, context.Background(), srv.URL, "x")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	tr.CloseIdle(addr)
	tr.mu.Lock()
	n = len(tr.idle[addr])
	tr.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d idle connections after CloseIdle", n)
	}
}

// The hop-by-hop headers, and those the Connection header names, are not
// relayed; the rest are, less the ones the caller skips.
func TestCopyHeaderDropsHopByHop(t *testing.T) {
	src := http.Header{
		"Connection":        {"keep-alive, X-Private"},
		"X-Private":         {"1"},
		"Keep-Alive":        {"timeout=5"},
		"Transfer-Encoding": {"chunked"},
		"Authorization":     {"Bearer client"},
		"Content-Type":      {"application/json"},
		"X-Request-Id":      {"r1"},
	}
	dst := http.Header{}
	CopyHeader(dst, src, "Authorization")
	want := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"r1"}}
	if len(dst) != len(want) || dst.Get("Content-Type") != "application/json" || dst.Get("X-Request-Id") != "r1" {
		t.Fatalf("copied %v, want %v", dst, want)
	}
}

func TestTargetJoinsPathAndQuery(t *testing.T) {
	for _, c := range []struct{ base, in, want string }{
		{"http://h:1", "/v1/chat/completions", "http://h:1/v1/chat/completions"},
		{"http://h:1/", "/v1/x?a=1", "http://h:1/v1/x?a=1"},
		{"http://h:1/pre", "/v1/x", "http://h:1/pre/v1/x"},
		{"http://h:1/pre/?k=v", "/v1/x?a=1", "http://h:1/pre/v1/x?k=v&a=1"},
	} {
		b, _ := url.Parse(c.base)
		in, _ := url.Parse(c.in)
		if got := Target(b, in).String(); got != c.want {
			t.Errorf("Target(%s, %s) = %s, want %s", c.base, c.in, got, c.want)
		}
	}
}

// An event stream is relayed chunk by chunk: the client reads the first
// event before the next hop writes the second.
func TestWriteResponseFlushesEachChunkOfAStream(t *testing.T) {
	second := make(chan struct{})
	hop, _ := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-second:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: 2\n\n")
	}))
	tr := New(5 * time.Second)
	defer tr.Close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _ := url.Parse(hop.URL)
		resp, _, err := tr.Do(NewRequest(r.Context(), "POST", Target(u, r.URL), http.Header{}, []byte("x")))
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		if _, err := WriteResponse(w, resp); err != nil {
			panic(http.ErrAbortHandler)
		}
	}))
	defer front.Close()
	type read struct {
		resp *http.Response
		rd   *bufio.Reader
		line string
		err  error
	}
	first := make(chan read, 1)
	go func() {
		resp, err := http.Post(front.URL+"/v1/chat/completions", "application/json", strings.NewReader("x"))
		if err != nil {
			first <- read{err: err}
			return
		}
		rd := bufio.NewReader(resp.Body)
		l, err := rd.ReadString('\n')
		first <- read{resp, rd, l, err}
	}()
	var r read
	select {
	case r = <-first:
	case <-time.After(5 * time.Second):
		close(second)
		t.Fatal("the first event was not relayed before the second was written (held in a buffer)")
	}
	if r.resp != nil {
		defer r.resp.Body.Close()
	}
	if r.err != nil || r.line != "data: 1\n" {
		close(second)
		t.Fatalf("first line %q, %v", r.line, r.err)
	}
	resp, rd := r.resp, r.rd
	close(second)
	rest, _ := io.ReadAll(rd)
	if string(rest) != "\ndata: 2\n\n" {
		t.Fatalf("rest %q", rest)
	}
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
}

// A pooled connection idle for a second or more is peeked at before use:
// one the hop closed is dropped and a new one dialled (not reused).
func TestTransportPeeksAtAConnectionIdleOverASecond(t *testing.T) {
	var mu sync.Mutex
	var conns []net.Conn
	srv, cl := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), func(c net.Conn, st http.ConnState) {
		if st == http.StateIdle {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	tr := New(5 * time.Second)
	defer tr.Close()
	resp, err := post(t, tr, context.Background(), srv.URL, "x")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(conns)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection never went idle")
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	conns[0].Close()
	mu.Unlock()
	addr := srv.Listener.Addr().String()
	tr.mu.Lock()
	wc := tr.idle[addr][0]
	wc.used = time.Now().Add(-2 * freshIdle)
	tr.mu.Unlock()
	for wc.open() {
		if time.Now().After(deadline) {
			t.Fatal("the closed connection still looks open")
		}
		time.Sleep(time.Millisecond)
	}
	got, reused, _, err := tr.get(context.Background(), addr, true)
	if err != nil {
		t.Fatal(err)
	}
	defer got.c.Close()
	if reused || got == wc {
		t.Fatalf("reused %v, same %v: want a new connection", reused, got == wc)
	}
	for cl.n.Load() != 2 { // the server's accept may come after the dial returns
		if time.Now().After(deadline) {
			t.Fatalf("%d connections accepted, want 2", cl.n.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// A request whose connection was new is not sent again when the hop
// closes it without an answer (it may have acted on it): the error goes
// to the caller, and the hop saw the request once.
func TestTransportDoesNotResendOnANewConnection(t *testing.T) {
	var seen atomic.Int64
	srv, _ := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		_, _ = io.ReadAll(r.Body)
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	tr := New(5 * time.Second)
	defer tr.Close()
	if _, err := post(t, tr, context.Background(), srv.URL, "x"); err == nil {
		t.Fatal("no error from a hop that closed without answering")
	}
	if n := seen.Load(); n != 1 {
		t.Fatalf("the hop saw the request %d times, want 1", n)
	}
}
