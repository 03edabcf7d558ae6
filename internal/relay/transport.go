package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Transport is the relay's round tripper to the next hop (a hive's
// workers, a queen's hives): HTTP/1.1 over kept-alive connections, the
// request written and the answer's head read in the calling goroutine.
// net/http's Transport runs two goroutines per connection and hands every
// request and answer between them and the caller over channels: under load
// those hand-offs (and the wake-ups of idle threads they cause) were a
// sixth of the hive's CPU per proxied request, which on a machine whose
// cores the client and the worker share is added latency.
//
// A request whose context ends (the client went away) closes its
// connection at once: the next hop sees the cancel. A connection goes back
// to the pool only after its answer was read to the end. URLs other than
// http:// go through Fallback (net/http's Transport unless set).
type Transport struct {
	dialer      net.Dialer
	maxIdle     int           // kept-alive connections per address
	idleTimeout time.Duration // an idle connection older than this is closed
	// Fallback carries what is not plain http:// (an https:// hive URL).
	Fallback http.RoundTripper

	mu        sync.Mutex
	idle      map[string][]*wconn // by host:port, most recently used last
	lastSweep time.Time
	closed    bool
}

// wconn is one connection to the next hop.
type wconn struct {
	c    net.Conn
	cr   countReader // what br reads through
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time // when it went idle
}

// New returns a Transport whose dials time out after dialTimeout.
func New(dialTimeout time.Duration) *Transport {
	return &Transport{
		dialer:      net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		maxIdle:     1024,
		idleTimeout: 90 * time.Second,
		idle:        map[string][]*wconn{},
	}
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, _, err := t.Do(req)
	return resp, err
}

// Do sends req and returns the answer with its head read; reused tells
// whether it went out on a kept-alive connection (one the next hop may
// have dropped since: a failure on it says nothing about the hop being
// down). An in-memory body (bytes.Reader, strings.Reader, io.NopCloser of
// one) leaves with the head in one write.
//
// A pooled connection that went idle under freshIdle ago is used without
// the peek that checks it is still open (a syscall per request, 1–5 % of
// the CPU of a relay under load); if the hop had closed it after all (it
// restarted, or its own idle timeout), the exchange fails before any byte
// of an answer and the request, whose body can be read again, goes once
// more on a new connection.
func (t *Transport) Do(req *http.Request) (resp *http.Response, reused bool, err error) {
	if req.URL.Scheme != "http" {
		if req.URL.Scheme == "https" {
			fb := t.Fallback
			if fb == nil {
				fb = http.DefaultTransport
			}
			resp, err := fb.RoundTrip(req)
			return resp, false, err
		}
		return nil, false, fmt.Errorf("relay: URL scheme %q is not http or https", req.URL.Scheme)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	wc, reused, checked, err := t.get(ctx, addr, true)
	if err != nil {
		return nil, false, err
	}
	read := wc.cr.n
	resp, err = t.exchange(req, wc, addr)
	if err == nil || !reused || checked || wc.cr.n != read || ctx.Err() != nil {
		return resp, reused, err
	}
	again := *req // a round tripper must not change the request it was given
	switch {
	case req.Body == nil || req.Body == http.NoBody:
	case req.GetBody != nil:
		if again.Body, err = req.GetBody(); err != nil {
			return nil, reused, err
		}
	default:
		return nil, reused, err // the body is gone: not sent again
	}
	if wc, _, _, err = t.get(ctx, addr, false); err != nil {
		return nil, false, err
	}
	resp, err = t.exchange(&again, wc, addr)
	return resp, false, err
}

// exchange writes req on wc and reads the answer's head.
func (t *Transport) exchange(req *http.Request, wc *wconn, addr string) (*http.Response, error) {
	ctx := req.Context()
	// The client going away closes the connection, whatever it is doing:
	// writing, waiting for the head, or (through the body) streaming.
	stop := context.AfterFunc(ctx, func() { wc.c.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		wc.c.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	// The head and an in-memory body leave in one write.
	switch b := req.Body.(type) {
	case memBody:
		writeRequest(wc.bw, req, b.b)
	case nil:
		writeRequest(wc.bw, req, nil)
	default:
		if b == http.NoBody {
			writeRequest(wc.bw, req, nil)
		} else if err := req.Write(wc.bw); err != nil {
			return fail(err)
		}
	}
	if err := wc.bw.Flush(); err != nil {
		return fail(err)
	}
	for {
		resp, err := readResponse(wc.br, req)
		if errors.Is(err, errUnusual) {
			resp, err = http.ReadResponse(wc.br, req)
		}
		if err != nil {
			return fail(err)
		}
		// 1xx answers (100 Continue) are informational: the final one
		// follows. 101 is not for inference routes.
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return fail(errors.New("relay: the next hop switched protocols"))
		}
		if resp.StatusCode >= 200 {
			resp.Body = &wbody{t: t, wc: wc, src: resp.Body, stop: stop, addr: addr, keep: !resp.Close && !req.Close}
			return resp, nil
		}
	}
}

// freshIdle is how long a pooled connection is used without checking it is
// still open: under a hop's keep-alive timeout (llama-server's is 5 s, Go
// servers' none), so a close by the hop in that time is a restart or a
// crash, which the redial in Do covers.
const freshIdle = time.Second

// get returns a kept-alive connection to addr (pooled: from the pool when
// there is one) or a new one (reused false); checked tells whether a
// pooled one was seen to be still open.
func (t *Transport) get(ctx context.Context, addr string, pooled bool) (wc *wconn, reused, checked bool, err error) {
	for pooled {
		t.mu.Lock()
		list := t.idle[addr]
		n := len(list)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		wc := list[n-1]
		list[n-1] = nil
		t.idle[addr] = list[:n-1]
		t.mu.Unlock()
		if time.Since(wc.used) < freshIdle && wc.br.Buffered() == 0 {
			return wc, true, false, nil
		}
		if wc.open() {
			return wc, true, true, nil
		}
		wc.c.Close()
	}
	c, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, false, err
	}
	wc = &wconn{c: c, bw: bufio.NewWriterSize(c, 4<<10)}
	wc.cr.r = c
	wc.br = bufio.NewReaderSize(&wc.cr, 4<<10)
	return wc, false, false, nil
}

// open reports whether an idle connection is still usable: the next hop
// has not closed it (a restarted or stopped worker, or its own idle
// timeout) and sent nothing unasked. One non-blocking peek, no wait.
func (wc *wconn) open() bool {
	if wc.br.Buffered() > 0 {
		return false
	}
	sc, ok := wc.c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = n < 0 && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK))
		return true
	})
	return err == nil && alive
}

// put returns a connection whose answer was read to the end to the pool.
func (t *Transport) put(addr string, wc *wconn) {
	now := time.Now()
	wc.used = now
	t.mu.Lock()
	if t.closed || len(t.idle[addr]) >= t.maxIdle {
		t.mu.Unlock()
		wc.c.Close()
		return
	}
	t.idle[addr] = append(t.idle[addr], wc)
	var stale []*wconn
	if now.Sub(t.lastSweep) > t.idleTimeout/4 {
		t.lastSweep = now
		stale = t.sweepLocked(now)
	}
	t.mu.Unlock()
	for _, s := range stale {
		s.c.Close()
	}
}

// sweepLocked takes the connections idle longer than idleTimeout out of the
// pool (the oldest are first in each list) and returns them to be closed.
func (t *Transport) sweepLocked(now time.Time) []*wconn {
	var stale []*wconn
	for addr, list := range t.idle {
		i := 0
		for i < len(list) && now.Sub(list[i].used) > t.idleTimeout {
			i++
		}
		if i == 0 {
			continue
		}
		stale = append(stale, list[:i]...)
		if i == len(list) {
			delete(t.idle, addr)
		} else {
			t.idle[addr] = append([]*wconn(nil), list[i:]...)
		}
	}
	return stale
}

// CloseIdle closes the idle connections to addr (host:port; "" for every
// address): a worker that ended leaves none behind.
func (t *Transport) CloseIdle(addr string) {
	t.mu.Lock()
	var all []*wconn
	for a, list := range t.idle {
		if addr == "" || a == addr {
			all = append(all, list...)
			delete(t.idle, a)
		}
	}
	t.mu.Unlock()
	for _, wc := range all {
		wc.c.Close()
	}
}

// Close closes every idle connection and keeps none from then on.
func (t *Transport) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.CloseIdle("")
}

// wbody is an answer's body: read to the end, its connection goes back to
// the pool; closed before that (the client went away, or the relay failed),
// the connection is closed, which the next hop sees as the cancel.
type wbody struct {
	t    *Transport
	wc   *wconn
	src  io.ReadCloser
	stop func() bool
	addr string
	keep bool
	done bool
}

func (b *wbody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.src.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

// Close does not drain what is left (net/http's body would, up to 256 KiB,
// from a hop still streaming): it closes the connection.
func (b *wbody) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *wbody) finish(complete bool) {
	b.done = true
	if !b.stop() { // the context ended: the connection is closed already
		complete = false
	}
	if complete && b.keep {
		b.t.put(b.addr, b.wc)
		return
	}
	b.wc.c.Close()
}

// countReader counts the bytes read from a connection: a failed exchange
// that read none got no answer at all.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
