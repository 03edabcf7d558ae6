package frontdoor

import (
	"context"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
)

// A worker that has just become ready, its ready event not applied yet, is
// still the cold start its request waits for: a plan made in that moment
// (any other model's request ending plans the queues again) must not start
// a second worker for the same single request.
func TestColdStartNotDoubledWhileTheReadyEventIsOnItsWay(t *testing.T) {
	cfg := config.Default()
	cfg.Profiles["gen"] = config.Profile{Protocol: config.ProtocolHTTP, Command: []string{"/bin/true"}, MemoryBytes: 100}
	cfg.Models = map[string]config.Model{
		"m":     {ModelRef: "file:/m.gguf", Profile: "gen", MaxWorkers: 2},
		"other": {ModelRef: "file:/m.gguf", Profile: "gen", MaxWorkers: 1},
	}
	cfg.MemoryBudgetBytes = 1 << 30
	loading := &fakeWorker{id: "worker-loading", done: make(chan struct{}),
		info: apiv1.WorkerInfo{ID: "worker-loading", State: state.Loading, Labels: map[string]string{ModelLabel: "m"}}}
	other := &fakeWorker{id: "worker-other", done: make(chan struct{}),
		info: apiv1.WorkerInfo{ID: "worker-other", State: state.Idle, Labels: map[string]string{ModelLabel: "other"}}}
	src := &fakeSource{events: make(chan apiv1.Event), spawned: make(chan *apiv1.SpawnRequest, 4), workers: []*fakeWorker{loading, other}}
	fd, err := New(Options{Source: src, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	fd.Start()
	defer func() {
		close(loading.done)
		close(other.done)
		fd.Close()
	}()
	m := fd.lookup("m")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		s   *slot
		err error
	}
	got := make(chan result, 1)
	go func() {
		s, _, err := fd.acquire(ctx, m, "")
		got <- result{s, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fd.mu.Lock()
		n := len(m.queue)
		fd.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request did not queue")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case req := <-src.spawned:
		t.Fatalf("spawned %v while a worker of m was loading for the one request", req.Labels)
	default:
	}

	// The loading worker is ready in the hive; its event is on its way.
	// Meanwhile a request of another model ends.
	loading.set(state.Idle)
	s, _, err := fd.acquire(ctx, fd.lookup("other"), "")
	if err != nil || s.id != other.id {
		t.Fatalf("other: %v %v", s, err)
	}
	fd.release(s)
	select {
	case req := <-src.spawned:
		t.Fatalf("a second cold start (%v) for one request whose worker is ready, its event not applied yet", req.Labels)
	case <-time.After(300 * time.Millisecond):
	}
	src.events <- apiv1.Event{WorkerID: loading.id, From: state.Loading, To: state.Idle, At: time.Now()}
	select {
	case r := <-got:
		if r.err != nil || r.s.id != loading.id {
			t.Fatalf("acquire: %v %v", r.s, r.err)
		}
		fd.release(r.s)
	case <-time.After(5 * time.Second):
		t.Fatal("the request was not given the worker that became ready")
	}
}
