// Package h1 is a lean HTTP/1.1 server for a daemon's hot routes (the
// inference routes of the hive's front door and of rbee-queen): it accepts
// the connections, serves the requests it can read by a narrow, strict
// subset of HTTP/1.1 (POST to one of Routes, a Content-Length body, nothing
// unusual in the head) itself, on the connection's goroutine, and hands any
// other request — with the rest of its connection, the bytes already read
// replayed — to a net/http Server, which answers it as it always did.
//
// Why: a proxied request cost the hive about 150 µs of CPU, of which
// net/http's server side outside the handler (the request's parsing into
// maps and a URL, a context and a goroutine per request to notice the
// client leaving, the response's chunking machinery) was about a sixth;
// on a machine whose cores the client, the hive and the worker share, CPU
// per request is added latency. Here a request is one read of its head, one header map,
// one context, and the answer leaves through one buffered writer. The
// client leaving is noticed by a read that starts only once a request has
// run for watchAfter, after its body was read (net/http starts one per
// request).
//
// The handler is the same http.Handler either way: a request served here
// is an *http.Request with its Header, Host, RemoteAddr, ContentLength and
// a body; the ResponseWriter flushes (http.Flusher, and FlushError for
// http.ResponseController) and takes write deadlines.
package h1

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves HTTP/1.1 connections; see the package comment.
type Server struct {
	// Handler serves the requests read here.
	Handler http.Handler
	// Routes are the paths (exact, no query) whose POST requests are read
	// here; every other request goes to Fallback.
	Routes []string
	// Fallback serves what is not read here; its Serve runs on a listener
	// of the connections handed to it. Its ConnState and ConnContext see
	// a connection that wraps the accepted one (NetConn returns it).
	Fallback *http.Server

	// BaseContext is the parent of every request's context; nil is
	// context.Background().
	BaseContext context.Context
	// ConnContext and ConnState are as http.Server's, called with the
	// accepted connection; nil: none.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	ConnState   func(net.Conn, http.ConnState)

	// Timeouts as http.Server's; zero is none. The head of each request
	// must arrive within ReadHeaderTimeout of its first byte, its body
	// within ReadTimeout of that, the answer be written within
	// WriteTimeout (a handler may lift it: SetWriteDeadline); a kept-alive
	// connection waits IdleTimeout for the next request.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration

	// Log gets the handler panics; nil: none.
	Log *slog.Logger

	mu       sync.Mutex
	ln       net.Listener
	handoff  *handoff
	conns    map[*conn]struct{}
	shutting atomic.Bool
	active   sync.WaitGroup // connections served here
	routes   map[string]bool
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = http.ErrServerClosed

// watchAfter is how long a request runs (after its body was read) before
// a read on its connection starts watching for the client leaving: a
// shorter request pays nothing for it; a longer one is cancelled within
// this much of the client going away.
const watchAfter = time.Millisecond

// bufSize is the size of a connection's read and write buffers: a request
// head that does not fit is handed to Fallback (whose limit applies).
const bufSize = 8 << 10

// Serve accepts connections on ln until Shutdown (then ErrServerClosed) or
// an error of ln. It runs Fallback.Serve for the connections it hands over.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.ln = ln
	s.handoff = newHandoff(ln.Addr())
	s.conns = map[*conn]struct{}{}
	s.routes = map[string]bool{}
	for _, r := range s.Routes {
		s.routes[r] = true
	}
	s.mu.Unlock()
	fbDone := make(chan struct{})
	go func() {
		defer close(fbDone)
		_ = s.Fallback.Serve(s.handoff)
	}()
	base := s.BaseContext
	if base == nil {
		base = context.Background()
	}
	var delay time.Duration
	for {
		rw, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				<-fbDone
				return ErrServerClosed
			}
			if temporary(err) {
				// As net/http: a temporary failure (EMFILE…) backs off.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			s.handoff.Close()
			<-fbDone
			return err
		}
		delay = 0
		c := &conn{s: s, rw: rw}
		s.mu.Lock()
		if s.shutting.Load() {
			s.mu.Unlock()
			rw.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.active.Add(1)
		s.mu.Unlock()
		if s.ConnState != nil {
			s.ConnState(rw, http.StateNew)
		}
		go c.serve(base)
	}
}

// temporary reports the accept errors worth retrying (the process or the
// system out of file descriptors, a connection aborted before it was
// accepted), as net/http's accept loop does.
func temporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Shutdown stops accepting, closes the idle connections, and waits for
// the requests being served (here and by Fallback, whose Shutdown it
// calls) to end, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutting.Store(true)
	ln := s.ln
	var idle []*conn
	for c := range s.conns {
		if c.idle.Load() {
			idle = append(idle, c)
		}
	}
	s.mu.Unlock()
	if ln == nil {
		return s.Fallback.Shutdown(ctx)
	}
	ln.Close()
	// No more hand-overs (Fallback may not have started to accept, and
	// then its Shutdown would not close this listener).
	s.handoff.Close()
	for _, c := range idle {
		c.closeIfIdle()
	}
	fb := make(chan error, 1)
	go func() { fb <- s.Fallback.Shutdown(ctx) }()
	done := make(chan struct{})
	go func() {
		s.active.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		<-fb
		return ctx.Err()
	}
	return <-fb
}

// isRoute reports whether a POST to path is read here.
func (s *Server) isRoute(path []byte) bool { return s.routes[string(path)] }

// forget drops a connection that closed or was handed over.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.active.Done()
}

// handoff is the listener Fallback serves: the connections handed to it.
type handoff struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoff(addr net.Addr) *handoff {
	return &handoff{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoff) Addr() net.Addr { return h.addr }

// give hands c to Fallback; false when it has stopped accepting.
func (h *handoff) give(c net.Conn) bool {
	select {
	case h.ch <- c:
		return true
	case <-h.done:
		return false
	}
}

// replayConn is a connection handed to Fallback: what was read from it
// and not yet consumed comes first.
type replayConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// NetConn returns the accepted connection (as tls.Conn's).
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// openConns is the number of connections served here.
func (s *Server) openConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
