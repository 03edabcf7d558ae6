package api

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// IdleUnauthenticated is how long an idle connection that has not
// authenticated is kept open (SPEC §14).
const IdleUnauthenticated = 10 * time.Second

// Conns bounds the API's connections (SPEC §14): at most max open; once
// fewer than a reserve (max/8, at least 8) are left, a new connection is on
// probation — it is closed after its first request unless that request
// authenticated (an operator or worker token), so unauthenticated clients
// cannot take the last slots; an idle connection that has not
// authenticated is closed after IdleUnauthenticated. Wire it with
// Listener, ConnContext and ConnState. Safe for concurrent use.
type Conns struct {
	max, reserve int
	log          *slog.Logger
	refused      rateLog

	mu   sync.Mutex
	open map[net.Conn]*connInfo
}

type connInfo struct {
	authed    atomic.Bool
	probation bool
	timer     *time.Timer // closes the idle unauthenticated connection
}

type connKey struct{}

// NewConns returns a bound of max connections; max < 16 means 16.
func NewConns(limit int, log *slog.Logger) *Conns {
	if limit < 16 {
		limit = 16
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Conns{max: limit, reserve: max(8, limit/8), log: log, open: map[net.Conn]*connInfo{}}
}

// Listener wraps ln: a connection beyond the bound is closed at once.
func (c *Conns) Listener(ln net.Listener) net.Listener { return &connsListener{Listener: ln, c: c} }

type connsListener struct {
	net.Listener
	c *Conns
}

func (l *connsListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := l.c
		c.mu.Lock()
		n := len(c.open)
		if n >= c.max {
			c.mu.Unlock()
			conn.Close()
			c.refused.warn(c.log, "Refused a connection: max_connections reached", "max_connections", c.max)
			continue
		}
		c.open[conn] = &connInfo{probation: n >= c.max-c.reserve}
		c.mu.Unlock()
		return conn, nil
	}
}

// ConnContext is http.Server.ConnContext: it lets a handler mark its
// connection authenticated (markAuthenticated).
func (c *Conns) ConnContext(ctx context.Context, conn net.Conn) context.Context {
	c.mu.Lock()
	ci := c.open[conn]
	c.mu.Unlock()
	if ci == nil {
		return ctx
	}
	return context.WithValue(ctx, connKey{}, ci)
}

// ConnState is http.Server.ConnState.
func (c *Conns) ConnState(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ci := c.open[conn]
	if ci == nil {
		return
	}
	switch st {
	case http.StateActive:
		if ci.timer != nil {
			ci.timer.Stop()
			ci.timer = nil
		}
	case http.StateIdle:
		if ci.authed.Load() {
			return
		}
		if ci.probation {
			conn.Close()
			return
		}
		if ci.timer == nil {
			ci.timer = time.AfterFunc(IdleUnauthenticated, func() {
				if !ci.authed.Load() {
					conn.Close()
				}
			})
		}
	case http.StateHijacked, http.StateClosed:
		if ci.timer != nil {
			ci.timer.Stop()
		}
		delete(c.open, conn)
	}
}

// Open returns the number of open connections.
func (c *Conns) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.open)
}

// markAuthenticated records that r's connection presented a valid token.
func markAuthenticated(r *http.Request) {
	if ci, ok := r.Context().Value(connKey{}).(*connInfo); ok {
		ci.authed.Store(true)
	}
}

// rateLog writes at most one line a second; the next line says how many
// were left out (SPEC §14: rejected-token lines are rate-limited).
type rateLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *rateLog) warn(log *slog.Logger, msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.last) < time.Second {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	log.Warn(msg, args...)
}
