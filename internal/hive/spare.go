package hive

import (
	"sync"

	"github.com/google/uuid"

	"github.com/rbee/rbee-hive/internal/cgroup"
)

// The spare: the id of the next worker, with its cgroup made ahead of
// need (cgroup.Manager.Reserve), so that a spawn — a front-door cold start
// above all — does not wait for the cgroup's mkdirs (a few hundred
// microseconds, milliseconds in the tail). The spawn that takes the spare's
// id writes the limits into those directories before its process starts,
// as into new ones. A new spare is made in the background once a spawn has
// its worker (or gave up), and after Recover; Shutdown and Detach remove
// it, and a hive that dies with one leaves it to the next hive's orphan
// cleanup.
type spare struct {
	mu      sync.Mutex
	id      string // reserved, not yet taken; "" none
	filling bool   // a Reserve is under way
	closed  bool   // shutting down: no more spares
	off     bool   // Reserve failed (no cgroup access): not tried again
	wg      sync.WaitGroup
}

func newWorkerID() string { return "worker-" + uuid.NewString() }

// workerID returns the id for a new worker: the spare's, whose cgroup
// exists already, when there is one (spared), else a new one.
func (h *Hive) workerID() (id string, spared bool) {
	s := &h.spare
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id == "" {
		return newWorkerID(), false
	}
	id, s.id = s.id, ""
	s.wg.Add(1) // closeSpare waits for spawned
	return id, true
}

// spawned ends a spawn that took the spare's id: when the spawn gave up
// before its worker created the cgroup, the reserved directories go. Then
// a new spare is made.
func (h *Hive) spawned(id string, spared bool) {
	if spared {
		if err := h.cgroups.Unreserve(id); err != nil {
			h.log.Warn("Removing an unused spare cgroup failed", "cgroup", id, "error", err)
		}
		h.spare.wg.Done()
	}
	h.refillSpare()
}

// refillSpare makes a new spare in the background when there is none.
func (h *Hive) refillSpare() {
	if h.cgroups == nil || h.cgroups.Mode() == cgroup.ModeNone {
		return
	}
	s := &h.spare
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id != "" || s.filling || s.closed || s.off {
		return
	}
	s.filling = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		id := newWorkerID()
		err := h.cgroups.Reserve(id)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.filling = false
		switch {
		case err != nil:
			s.off = true
			h.log.Info("No spare cgroup: each worker's cgroup is made when it spawns", "error", err)
		case s.closed:
			if err := h.cgroups.Unreserve(id); err != nil {
				h.log.Warn("Removing the spare cgroup failed", "cgroup", id, "error", err)
			}
		default:
			s.id = id
		}
	}()
}

// closeSpare removes the spare, and makes no more (Shutdown, Detach).
func (h *Hive) closeSpare() {
	s := &h.spare
	s.mu.Lock()
	s.closed = true
	id := s.id
	s.id = ""
	s.mu.Unlock()
	// A Reserve under way removes its own; a spawn that took the spare
	// removes it unless its worker has it.
	s.wg.Wait()
	if id == "" {
		return
	}
	if err := h.cgroups.Unreserve(id); err != nil {
		h.log.Warn("Removing the spare cgroup failed", "cgroup", id, "error", err)
	}
}
