package supervisor

import (
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

// fakeMetrics counts what the owner reports.
type fakeMetrics struct {
	mu                                         sync.Mutex
	spawned, forceKills, healthFails, restarts int
	ended                                      []state.Reason
	refused                                    []string
}

func (m *fakeMetrics) Spawned()                   { m.mu.Lock(); m.spawned++; m.mu.Unlock() }
func (m *fakeMetrics) ReadyLatency(time.Duration) {}
func (m *fakeMetrics) StopLatency(time.Duration)  {}
func (m *fakeMetrics) ForceKill()                 { m.mu.Lock(); m.forceKills++; m.mu.Unlock() }
func (m *fakeMetrics) HealthCheckFailed()         { m.mu.Lock(); m.healthFails++; m.mu.Unlock() }
func (m *fakeMetrics) Restarted()                 { m.mu.Lock(); m.restarts++; m.mu.Unlock() }
func (m *fakeMetrics) Ended(r state.Reason)       { m.mu.Lock(); m.ended = append(m.ended, r); m.mu.Unlock() }
func (m *fakeMetrics) RefusedTransition(from state.State, ev string) {
	m.mu.Lock()
	m.refused = append(m.refused, string(from)+"/"+ev)
	m.mu.Unlock()
}

// n reads one of m's counts.
func (m *fakeMetrics) n(p *int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return *p
}

func (m *fakeMetrics) refusals() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.refused...)
}

// A refused event is an error, counted, and changes nothing: the old owner
// applied a refused transition anyway.
func TestRefusedEventIsCountedAndNotApplied(t *testing.T) {
	m := &fakeMetrics{}
	w := newWorker(Deps{Logger: slog.New(slog.DiscardHandler), Metrics: m},
		record.Spec{ID: "w", Settings: config.DefaultSettings(), Profile: config.Profile{Protocol: config.ProtocolRbee}})
	o := newOwner(w)
	o.cur = apiv1.WorkerInfo{ID: "w", PID: 42, State: state.Idle}

	// A second ready callback: 409, nothing moves.
	err := o.handle(request{kind: reqReady})
	if !errors.Is(err, ErrInvalidState) {
		t.Fatalf("ready on an idle worker: %v", err)
	}
	// A move the table refuses, asked directly: not applied.
	o.transition(state.Backoff, state.Crashed)
	if o.cur.State != state.Idle {
		t.Fatalf("state %s after refusals, want idle", o.cur.State)
	}
	if w.Info() != nil {
		t.Fatalf("a refusal published a snapshot: %+v", w.Info())
	}
	got := m.refusals()
	if len(got) != 2 || got[0] != "idle/ready" || got[1] != "idle/move to backoff" {
		t.Fatalf("refusals counted %q", got)
	}
	for _, tm := range []*timer{&o.stall, &o.readyCap, &o.hbStale, &o.idle, &o.health, &o.stopT, &o.backoff, &o.readyProbe} {
		if tm.armed {
			t.Fatal("a refusal armed a timer")
		}
	}
}
