package hive

import (
	"sync"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// Hub fans state-change events out to subscribers. A subscriber that falls
// behind by more than its buffer is dropped (its channel is closed) rather
// than slowing the workers down; an SSE client then reconnects.
type Hub struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

// Subscription is one listener. Read events from C until it is closed.
type Subscription struct {
	C    chan apiv1.Event
	hub  *Hub
	once sync.Once
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[*Subscription]struct{}{}} }

// Subscribe adds a listener with a buffer of n events.
func (h *Hub) Subscribe(n int) *Subscription {
	s := &Subscription{C: make(chan apiv1.Event, n), hub: h}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Close removes the listener and closes C. Idempotent.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.closeLocked()
}

func (s *Subscription) closeLocked() {
	s.once.Do(func() {
		delete(s.hub.subs, s)
		close(s.C)
	})
}

// Publish sends ev to every listener without blocking.
func (h *Hub) Publish(ev apiv1.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.C <- ev:
		default:
			s.closeLocked()
		}
	}
}

// Count returns the number of listeners.
func (h *Hub) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}
