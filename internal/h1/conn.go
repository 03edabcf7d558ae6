package h1

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// conn is one accepted connection while it is served here.
type conn struct {
	s      *Server
	rw     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	ctx    context.Context
	remote string

	mu   sync.Mutex // idle against Shutdown's closeIfIdle
	idle atomic.Bool

	// The watch for the client leaving (see arm).
	wmu    sync.Mutex
	wstate uint8
	wabort bool
	wtimer *time.Timer
	wdone  chan struct{}
	cancel context.CancelFunc // the current request's

	wdl time.Time // the write deadline set on rw
}

// States of the watch.
const (
	watchNone    uint8 = iota // not armed (no request, or its body is not read yet)
	watchArmed                // starts at watchAfter; may go to running or none
	watchRunning              // a read waits on the connection; stop aborts it
)

// aLongTimeAgo is a deadline in the past: a read waiting on it returns.
var aLongTimeAgo = time.Unix(1, 0)

func (c *conn) serve(base context.Context) {
	handedOff := false
	defer func() {
		if e := recover(); e != nil && e != http.ErrAbortHandler && c.s.Log != nil {
			buf := make([]byte, 16<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.s.Log.Error("Panic serving a request", "remote", c.remote, "panic", fmt.Sprint(e), "stack", string(buf))
		}
		if !handedOff {
			c.stopWatch()
			c.rw.Close()
			if c.s.ConnState != nil {
				c.s.ConnState(c.rw, http.StateClosed)
			}
		}
		c.s.forget(c)
	}()
	c.br = bufio.NewReaderSize(c.rw, bufSize)
	c.bw = bufio.NewWriterSize(c.rw, bufSize)
	c.remote = c.rw.RemoteAddr().String()
	ctx := context.WithValue(base, http.LocalAddrContextKey, c.rw.LocalAddr())
	if c.s.ConnContext != nil {
		ctx = c.s.ConnContext(ctx, c.rw)
	}
	// The requests' contexts hang off one of the connection's own: each
	// request's registers with it, not with the server-wide parent whose
	// lock every connection would share.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.ctx = ctx
	for first := true; ; first = false {
		start := time.Now()
		if first {
			c.deadline(start, c.s.ReadHeaderTimeout)
		} else {
			if !c.goIdle() {
				return
			}
			c.deadline(start, c.s.IdleTimeout)
		}
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		if !first {
			c.mu.Lock()
			c.idle.Store(false)
			c.mu.Unlock()
			start = time.Now()
			// A head that came whole (the usual case) needs no timer of
			// its own: no read waits for it.
			if !c.headBuffered() {
				c.deadline(start, c.s.ReadHeaderTimeout)
			}
		}
		n, err := HeadLength(c.br)
		if err != nil {
			return
		}
		var r *http.Request
		if n > 0 {
			head, _ := c.br.Peek(n)
			r = c.s.parse(head)
		}
		if r == nil {
			handedOff = c.handOff()
			return
		}
		_, _ = c.br.Discard(n)
		if c.s.ConnState != nil {
			c.s.ConnState(c.rw, http.StateActive)
		}
		if !c.serveRequest(r, start) {
			return
		}
	}
}

// deadline sets the read deadline d after now (none when d is 0).
func (c *conn) deadline(now time.Time, d time.Duration) {
	var t time.Time
	if d > 0 {
		t = now.Add(d)
	}
	_ = c.rw.SetReadDeadline(t)
}

// goIdle marks the connection idle between requests; false when the
// server is shutting down (the connection is to be closed).
func (c *conn) goIdle() bool {
	c.mu.Lock()
	c.idle.Store(true)
	c.mu.Unlock()
	if c.s.shutting.Load() {
		return false
	}
	if c.s.ConnState != nil {
		c.s.ConnState(c.rw, http.StateIdle)
	}
	return true
}

// closeIfIdle closes the connection if it waits for a request.
func (c *conn) closeIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idle.Load() {
		c.rw.Close()
	}
}

// handOff gives the connection, from the request whose head is buffered,
// to Fallback.
func (c *conn) handOff() bool {
	_ = c.rw.SetReadDeadline(time.Time{})
	_ = c.setWriteDeadline(time.Time{})
	return c.s.handoff.give(&replayConn{Conn: c.rw, br: c.br})
}

// headBuffered reports whether the end of a head is already buffered.
func (c *conn) headBuffered() bool {
	buf, _ := c.br.Peek(c.br.Buffered())
	return headEnd(buf) != 0
}

// setWriteDeadline sets the connection's write deadline unless it is set
// to t already (a handler that streams lifts it on every request).
func (c *conn) setWriteDeadline(t time.Time) error {
	if t.Equal(c.wdl) {
		return nil
	}
	c.wdl = t
	return c.rw.SetWriteDeadline(t)
}

// maxHeaderLines bounds the header lines of a request read here.
const maxHeaderLines = 100

// parse reads a request head (its last line blank, every line ending in
// CRLF) into a request, or returns nil when the request is not one to
// serve here: anything but a POST over HTTP/1.1 to one of Routes without
// a query, one Host and one Content-Length of digits, and no
// Transfer-Encoding, Expect, Upgrade or folded or malformed line.
func (s *Server) parse(head []byte) *http.Request {
	eol := bytes.IndexByte(head, '\n')
	line := head[:eol]
	rest, ok := bytes.CutPrefix(line, []byte("POST "))
	if !ok {
		return nil
	}
	target, ok := bytes.CutSuffix(rest, []byte(" HTTP/1.1\r"))
	if !ok || !s.isRoute(target) {
		return nil
	}
	hs := string(head[eol+1:]) // one allocation for every name and value
	lines := strings.Count(hs, "\n") - 1
	if lines > maxHeaderLines {
		return nil
	}
	h := make(http.Header, lines+2)
	vals := make([]string, lines)
	var host string
	hosts, lengths := 0, 0
	length := int64(-1)
	closing := false
	for i := 0; ; i++ {
		k, v, rest, end, ok := HeaderLine(hs)
		if !ok {
			return nil
		}
		if end {
			break
		}
		hs = rest
		switch k {
		case "Content-Length":
			lengths++
			n, ok := ParseContentLength(v)
			if !ok {
				return nil
			}
			length = n
		case "Host":
			hosts++
			host = v
		case "Transfer-Encoding", "Expect", "Upgrade":
			return nil
		case "Connection":
			closing = closing || httpguts.HeaderValuesContainsToken([]string{v}, "close")
		}
		vals[i] = v
		if old, ok := h[k]; ok {
			h[k] = append(old, v)
		} else {
			h[k] = vals[i : i+1 : i+1]
		}
	}
	if hosts != 1 || lengths != 1 || !httpguts.ValidHostHeader(host) {
		return nil
	}
	path := string(target)
	return &http.Request{
		Method:        http.MethodPost,
		URL:           &url.URL{Path: path},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: length,
		Host:          host,
		RequestURI:    path,
		Close:         closing,
	}
}

// serveRequest runs the handler for r (its head read at start) and writes
// the end of its answer; false when the connection is to be closed.
func (c *conn) serveRequest(r *http.Request, start time.Time) (keep bool) {
	// The body's reads are timed only if it has not all come with the
	// head: by ReadTimeout from the head's start, or not at all (the
	// head's or the idle wait's deadline is not the body's, as in
	// net/http); the write deadline is set when the head goes out (see
	// response.wdl).
	if int64(c.br.Buffered()) < r.ContentLength {
		c.deadline(start, c.s.ReadTimeout)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	c.wmu.Lock()
	c.cancel = cancel
	c.wmu.Unlock()
	b := &body{c: c, n: r.ContentLength}
	if b.n == 0 {
		b.done = true
	}
	r.Body = b
	r.RemoteAddr = c.remote
	r = r.WithContext(ctx)
	w := &response{c: c, req: r, header: make(http.Header, 8), cl: -1}
	if d := c.s.WriteTimeout; d > 0 {
		w.wdl = time.Now().Add(d)
	}
	defer func() {
		cancel()
		c.stopWatch()
	}()
	if b.done {
		c.arm()
	}
	c.s.Handler.ServeHTTP(w, r)
	cancel()
	c.stopWatch()
	keep = w.finish()
	b.closed = true
	if !keep || r.Close || b.n > 0 && !b.drain() {
		return false
	}
	return true
}

// arm starts the watch for the client leaving: at watchAfter from now, a
// read on the connection waits; its end (the client closed or reset the
// connection) cancels the request. Called once the body is read: nothing
// else reads the connection until the request ends.
func (c *conn) arm() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wstate != watchNone {
		return
	}
	c.wstate = watchArmed
	if c.wtimer == nil {
		c.wtimer = time.AfterFunc(watchAfter, c.watch)
	} else {
		c.wtimer.Reset(watchAfter)
	}
}

func (c *conn) watch() {
	c.wmu.Lock()
	if c.wstate != watchArmed {
		c.wmu.Unlock()
		return
	}
	c.wstate = watchRunning
	done := make(chan struct{})
	c.wdone = done
	cancel := c.cancel
	// The request's body is read: its read deadline does not apply to
	// the wait (set under the lock: stopWatch's abort comes after it).
	_ = c.rw.SetReadDeadline(time.Time{})
	c.wmu.Unlock()
	_, err := c.br.Peek(1)
	c.wmu.Lock()
	aborted := c.wabort
	c.wmu.Unlock()
	if err != nil && !aborted {
		cancel() // the client closed or reset the connection
	}
	close(done)
}

// stopWatch ends the watch: a waiting read is aborted and waited for.
func (c *conn) stopWatch() {
	c.wmu.Lock()
	switch c.wstate {
	case watchArmed:
		c.wtimer.Stop() // a watch that fires anyway finds watchNone
	case watchRunning:
		c.wabort = true
		done := c.wdone
		c.wmu.Unlock()
		_ = c.rw.SetReadDeadline(aLongTimeAgo)
		<-done
		c.wmu.Lock()
		c.wabort = false
	}
	c.wstate = watchNone
	c.wmu.Unlock()
}

// body is a request's body: its Content-Length bytes from the connection.
type body struct {
	c      *conn
	n      int64 // left to read
	done   bool
	closed bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.c.br.Read(p)
	b.n -= int64(n)
	if b.n == 0 {
		b.done = true
		b.c.arm()
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *body) Close() error { return nil }

// maxDrain is how much of a body the handler did not read is read and
// dropped to keep the connection (as net/http's 256 KiB).
const maxDrain = 256 << 10

// drain reads what the handler left of the body; false when it is more
// than maxDrain or the read fails (the connection is closed instead).
func (b *body) drain() bool {
	if b.n > maxDrain {
		return false
	}
	n, err := b.c.br.Discard(int(b.n))
	b.n -= int64(n)
	return err == nil && b.n == 0
}
