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
// authenticated (an operator, inference or worker token), so unauthenticated clients
// cannot take the last slots; when none is left, the oldest connection that
// has not authenticated is closed to admit the new one; an idle connection
// that has not authenticated is closed after IdleUnauthenticated. Wire it with
// Listener, ConnContext and ConnState. Safe for concurrent use.
type Conns struct {
	max, reserve int
	idleUnauth   time.Duration // IdleUnauthenticated (tests shorten it)
	log          *slog.Logger
	refused      rateLog

	mu   sync.Mutex
	open map[net.Conn]*connInfo
}

type connInfo struct {
	authed    atomic.Bool
	probation bool
	since     time.Time // accepted at
	// active: a request is being served; idleSince: when the last one
	// ended. timer checks, IdleUnauthenticated after it went idle, whether
	// it still is (and re-arms for the rest if it was used meanwhile): one
	// timer per connection, not a stop and a start per request.
	active    bool
	idleSince time.Time
	timer     *time.Timer
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
	return &Conns{max: limit, reserve: max(8, limit/8), idleUnauth: IdleUnauthenticated, log: log, open: map[net.Conn]*connInfo{}}
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
		if len(c.open) >= c.max {
			// Full: make room by closing the oldest connection that has
			// not authenticated (probation ones first), so anonymous
			// clients can never keep a token holder out; refuse the new
			// one only when every open connection has authenticated.
			victim := c.victimLocked()
			if victim == nil {
				c.mu.Unlock()
				conn.Close()
				c.refused.warn(c.log, "Refused a connection: max_connections reached", "max_connections", c.max)
				continue
			}
			if ci := c.open[victim]; ci.timer != nil {
				ci.timer.Stop()
			}
			delete(c.open, victim)
			victim.Close()
			c.refused.warn(c.log, "Closed an unauthenticated connection: max_connections reached", "max_connections", c.max)
		}
		c.open[conn] = &connInfo{probation: len(c.open) >= c.max-c.reserve, since: time.Now()}
		c.mu.Unlock()
		return conn, nil
	}
}

// victimLocked returns the connection to close to make room for a new
// one: the oldest on probation, else the oldest that has not
// authenticated; nil when every one has. c.mu is held.
func (c *Conns) victimLocked() net.Conn {
	var best net.Conn
	var bi *connInfo
	for conn, ci := range c.open {
		if ci.authed.Load() {
			continue
		}
		if bi == nil || (ci.probation && !bi.probation) ||
			(ci.probation == bi.probation && ci.since.Before(bi.since)) {
			best, bi = conn, ci
		}
	}
	return best
}

// accepted is the connection Listener accepted: conn, or the one it wraps
// (a connection the lean server of internal/h1 handed to net/http).
func accepted(conn net.Conn) net.Conn {
	if u, ok := conn.(interface{ NetConn() net.Conn }); ok {
		return u.NetConn()
	}
	return conn
}

// ConnContext is http.Server.ConnContext: it lets a handler mark its
// connection authenticated (markAuthenticated).
func (c *Conns) ConnContext(ctx context.Context, conn net.Conn) context.Context {
	conn = accepted(conn)
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
	conn = accepted(conn)
	c.mu.Lock()
	defer c.mu.Unlock()
	ci := c.open[conn]
	if ci == nil {
		return
	}
	switch st {
	case http.StateActive:
		ci.active = true
	case http.StateIdle:
		ci.active = false
		if ci.authed.Load() {
			return
		}
		if ci.probation {
			conn.Close()
			return
		}
		ci.idleSince = time.Now()
		if ci.timer == nil {
			ci.timer = time.AfterFunc(c.idleUnauth, func() { c.idleCheck(conn, ci) })
		}
	case http.StateHijacked, http.StateClosed:
		if ci.timer != nil {
			ci.timer.Stop()
		}
		delete(c.open, conn)
	}
}

// idleCheck closes conn if it has been idle without authenticating for
// idleUnauth, else looks again when it would have been.
func (c *Conns) idleCheck(conn net.Conn, ci *connInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[conn] != ci || ci.authed.Load() {
		return
	}
	next := c.idleUnauth
	if !ci.active {
		idle := time.Since(ci.idleSince)
		if idle >= c.idleUnauth {
			conn.Close()
			return
		}
		next -= idle
	}
	ci.timer.Reset(next)
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
