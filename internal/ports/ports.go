// Package ports hands out worker ports: the lowest port in the hive's range
// that no live worker holds and that can really be bound right now.
package ports

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrExhausted is returned when every port in the range is held or busy.
var ErrExhausted = errors.New("no available ports")

// Allocator is safe for concurrent use. Its zero value is not usable; use New.
type Allocator struct {
	min, max int
	log      *slog.Logger

	mu   sync.Mutex
	held map[int]string // port → worker id (also while Acquire checks it)
	next int            // a hint: ports below it were all held at the last look
	// bindable checks a candidate port; Bindable, but for tests.
	bindable func(port int) bool
}

// New returns an allocator for the inclusive range [min, max].
func New(min, max int, log *slog.Logger) *Allocator {
	return &Allocator{min: min, max: max, log: log, held: map[int]string{}, next: min, bindable: Bindable}
}

// Acquire reserves the lowest free port for worker id. A port is free when
// no worker holds it and 127.0.0.1:port can be bound now. It does not block
// beyond the bind checks, and the bind checks run outside the allocator's
// lock: a candidate is reserved under the lock, checked without it, and
// kept or given back (reserve, unlock, check, commit), so concurrent
// Acquires (and Release, Holds) never wait on another one's bind.
func (a *Allocator) Acquire(id string) (int, error) {
	a.mu.Lock()
	p := max(a.min, a.next)
	for {
		for p <= a.max {
			if _, ok := a.held[p]; !ok {
				break
			}
			p++
		}
		if p > a.max {
			a.mu.Unlock()
			return 0, fmt.Errorf("%w in %d-%d", ErrExhausted, a.min, a.max)
		}
		a.held[p] = id // reserved while it is checked
		if p == a.next {
			a.next = p + 1
		}
		a.mu.Unlock()
		if a.bindable(p) {
			return p, nil
		}
		next := "none left in range"
		if p < a.max {
			next = "trying " + strconv.Itoa(p+1)
		}
		a.log.Info(fmt.Sprintf("Port %d in use, %s", p, next), "port", p, "worker_id", id)
		a.mu.Lock()
		if a.held[p] == id {
			delete(a.held, p)
			if p < a.next {
				a.next = p // the lowest free port may be bindable again later
			}
		}
		p++
	}
}

// Reserve marks port as held by id without a bind check (for a worker that
// is already running and listening, e.g. one re-adopted after a restart).
func (a *Allocator) Reserve(port int, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if other, ok := a.held[port]; ok && other != id {
		return fmt.Errorf("port %d already held by %s", port, other)
	}
	a.held[port] = id
	return nil
}

// Holds reports whether id holds port.
func (a *Allocator) Holds(port int, id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.held[port] == id
}

// Release frees port if id holds it.
func (a *Allocator) Release(port int, id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.held[port] == id {
		delete(a.held, port)
		if port < a.next {
			a.next = port
		}
	}
}

// InUse returns how many ports are held.
func (a *Allocator) InUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.held)
}

// Bindable reports whether 127.0.0.1:port can be bound right now: a TCP
// socket with SO_REUSEADDR, as a listener of the worker's would have (so a
// connection of an earlier worker in TIME_WAIT does not count), bound and
// closed at once. Four system calls: it is on the path of every spawn,
// where net.Listen added a listen(2), the poller's registration and
// getsockname for nothing.
func Bindable(port int) bool {
	if port <= 0 || port > 65535 {
		return false
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return false
	}
	return unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}) == nil
}
