package frontdoor

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
)

// fakeWorker is a Worker whose state the test sets.
type fakeWorker struct {
	id   string
	mu   sync.Mutex
	info apiv1.WorkerInfo
	done chan struct{}
}

func (w *fakeWorker) ID() string { return w.id }
func (w *fakeWorker) Info() *apiv1.WorkerInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := w.info
	return &i
}
func (w *fakeWorker) Done() <-chan struct{}                        { return w.done }
func (w *fakeWorker) Stop(context.Context, state.Reason) error     { return nil }
func (w *fakeWorker) BeginRequest(context.Context) (func(), error) { return func() {}, nil }
func (w *fakeWorker) set(st state.State)                           { w.mu.Lock(); w.info.State = st; w.mu.Unlock() }

// fakeSource is a Source that records spawns and sends the events the test
// gives it.
type fakeSource struct {
	events  chan apiv1.Event
	spawned chan *apiv1.SpawnRequest
	mu      sync.Mutex
	workers []*fakeWorker
}

func (s *fakeSource) Spawn(ctx context.Context, req *apiv1.SpawnRequest) (Worker, error) {
	s.spawned <- req
	<-ctx.Done()
	return nil, ctx.Err()
}
func (s *fakeSource) Worker(id string) (Worker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.workers {
		if w.id == id {
			return w, nil
		}
	}
	return nil, errors.New("no such worker")
}
func (s *fakeSource) LiveWorkers() []Worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Worker
	for _, w := range s.workers {
		out = append(out, w)
	}
	return out
}
func (s *fakeSource) Subscribe() (<-chan apiv1.Event, func())    { return s.events, func() {} }
func (s *fakeSource) ResolveModel(string) (string, int64, error) { return "/m.gguf", 1, nil }
func (s *fakeSource) ModelRoots() []string                       { return nil }

// A request for a model whose only worker (max_workers 1) has just been
// terminated starts a new worker at the terminated event, not once the
// hive's cleanup of the old one is over (its Done): that wait was ~1.7 ms of
// every back-to-back cold start's request → spawning.
func TestFrontDoorTerminatedWorkerFreesItsSlotAtItsEvent(t *testing.T) {
	cfg := config.Default()
	cfg.Profiles["gen"] = config.Profile{Protocol: config.ProtocolHTTP, Command: []string{"/bin/true"}, MemoryBytes: 100}
	cfg.Models = map[string]config.Model{"m": {ModelRef: "file:/m.gguf", Profile: "gen", MaxWorkers: 1}}
	cfg.MemoryBudgetBytes = 1 << 30
	old := &fakeWorker{id: "worker-old", done: make(chan struct{}),
		info: apiv1.WorkerInfo{ID: "worker-old", State: state.Idle, Labels: map[string]string{ModelLabel: "m"}}}
	src := &fakeSource{events: make(chan apiv1.Event), spawned: make(chan *apiv1.SpawnRequest, 4), workers: []*fakeWorker{old}}
	fd, err := New(Options{Source: src, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	fd.Start()
	defer func() {
		close(old.done)
		fd.Close()
	}()
	old.set(state.Stopping)
	src.events <- apiv1.Event{WorkerID: old.id, From: state.Idle, To: state.Stopping, At: time.Now()}
	old.set(state.Terminated)
	src.events <- apiv1.Event{WorkerID: old.id, From: state.Stopping, To: state.Terminated, Reason: state.Stopped, At: time.Now()}
	// The channel is unbuffered and one goroutine applies the events in
	// order: once this one is taken, the terminated one has been applied.
	src.events <- apiv1.Event{WorkerID: "worker-none", To: state.Terminated}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan error, 1)
	go func() {
		_, _, err := fd.acquire(ctx, fd.lookup("m"), "")
		got <- err
	}()
	select {
	case req := <-src.spawned:
		if req.Labels[ModelLabel] != "m" {
			t.Fatalf("spawned %v", req.Labels)
		}
	case err := <-got:
		t.Fatalf("acquire ended before any spawn: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no spawn within 5s while the terminated worker's cleanup was still under way")
	}
}
