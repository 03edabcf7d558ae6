package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/testutil/etcdtest"
)

// fakeHive is the state a registrar publishes.
type fakeHive struct {
	mu      sync.Mutex
	free    int64
	workers map[string]WorkerRecord
}

func (f *fakeHive) hive() HiveRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return HiveRecord{URL: "http://127.0.0.1:1", Version: "test", Models: []string{"m"},
		Capacity: Capacity{CPUs: 1, MemoryTotal: 1 << 30, MemoryFree: f.free}}
}

func (f *fakeHive) list() []WorkerRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []WorkerRecord{}
	for _, w := range f.workers {
		out = append(out, w)
	}
	return out
}

func (f *fakeHive) set(w WorkerRecord) {
	f.mu.Lock()
	f.workers[w.ID] = w
	f.mu.Unlock()
}

func client(t *testing.T, e *etcdtest.Etcd) *clientv3.Client {
	t.Helper()
	cli, err := NewClient(e.Endpoints, config.ClusterTLS{}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// waitView waits until cond holds for the view's snapshot.
func waitView(t *testing.T, v *View, d time.Duration, what string, cond func([]Hive) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(d)
	for {
		ch := v.Changed()
		if cond(v.Snapshot()) {
			return time.Since(start)
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			view := fmt.Sprintf("%+v", v.Snapshot())
			if len(view) > 2000 {
				view = view[:2000] + " …"
			}
			t.Fatalf("view: %s not seen within %s: %s", what, d, view)
		}
	}
}

func workerState(hs []Hive, node, id string) string {
	for _, h := range hs {
		if h.Node != node {
			continue
		}
		for _, w := range h.Workers {
			if w.ID == id {
				return w.State
			}
		}
	}
	return ""
}

func TestRegistrarWritesChangesSoonAndNothingWhenSteady(t *testing.T) {
	// Revisions count the writes here: an etcd of this test's own.
	e := etcdtest.StartEmbedded(t)
	f := &fakeHive{free: 512 << 20, workers: map[string]WorkerRecord{}}
	f.set(WorkerRecord{ID: "w1", Model: "m", State: "loading", MaxConcurrency: 1})
	cli := client(t, e)
	// Each transaction is one etcd revision: the revision counts writes.
	rev := func() int64 {
		resp, err := cli.Get(context.Background(), "/t/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	r := NewRegistrar(RegistrarOptions{Client: cli, Prefix: "/t/", Node: "a", LeaseTTL: 2 * time.Second,
		Hive: f.hive, Workers: f.list, CapacityEvery: 100 * time.Millisecond})
	r.Start()
	v := NewView(client(t, e), "/t/", nil)
	defer v.Close()
	waitView(t, v, 5*time.Second, "w1 loading", func(hs []Hive) bool { return workerState(hs, "a", "w1") == "loading" })

	f.set(WorkerRecord{ID: "w1", Model: "m", State: "idle", MaxConcurrency: 1})
	r.Trigger()
	if d := waitView(t, v, 2*time.Second, "w1 idle", func(hs []Hive) bool { return workerState(hs, "a", "w1") == "idle" }); d > 150*time.Millisecond {
		t.Errorf("a change took %s to reach the view (want within 100 ms plus the watch)", d)
	}
	// A change without a trigger (in_flight) is polled.
	f.set(WorkerRecord{ID: "w1", Model: "m", State: "idle", InFlight: 1, MaxConcurrency: 1})
	waitView(t, v, 2*time.Second, "in_flight 1", func(hs []Hive) bool {
		return len(hs) == 1 && len(hs[0].Workers) == 1 && hs[0].Workers[0].InFlight == 1
	})
	// Many changes at once go out in one transaction.
	before := rev()
	for i := 0; i < 50; i++ {
		f.set(WorkerRecord{ID: "x" + string(rune('A'+i)), Model: "m", State: "idle", MaxConcurrency: 1})
	}
	r.Trigger()
	waitView(t, v, 2*time.Second, "51 workers", func(hs []Hive) bool { return len(hs) == 1 && len(hs[0].Workers) == 51 })
	if n := rev() - before; n > 2 {
		t.Errorf("50 new workers took %d transactions, want 1 (2 if a poll split them)", n)
	}
	// Steady state: capacity rebuilt every 100 ms, nothing changed, no write.
	before = rev()
	time.Sleep(600 * time.Millisecond) // a window to count writes in, not a wait for a condition
	if n := rev() - before; n != 0 {
		t.Errorf("%d writes in a steady state, want 0", n)
	}
	// Capacity that changed is written.
	f.mu.Lock()
	f.free = 256 << 20
	f.mu.Unlock()
	waitView(t, v, 2*time.Second, "memory_free", func(hs []Hive) bool { return len(hs) == 1 && hs[0].Capacity.MemoryFree == 256<<20 })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.Close(ctx)
	waitView(t, v, time.Second, "hive gone after revoke", func(hs []Hive) bool { return len(hs) == 0 })
}

func TestRegistrarRegistersAgainWithCurrentStateAfterEtcdRestart(t *testing.T) {
	e := etcdtest.StartEmbedded(t) // stopped and restarted
	f := &fakeHive{free: 512 << 20, workers: map[string]WorkerRecord{}}
	f.set(WorkerRecord{ID: "w1", Model: "m", State: "idle", MaxConcurrency: 1})
	r := NewRegistrar(RegistrarOptions{Client: client(t, e), Prefix: "/t/", Node: "a", LeaseTTL: 2 * time.Second,
		Hive: f.hive, Workers: f.list})
	r.Start()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r.Close(ctx)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for r.Lease() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	first := r.Lease()
	if first == 0 {
		t.Fatal("not registered")
	}
	e.Stop()
	// While etcd is away the hive's state changes.
	f.set(WorkerRecord{ID: "w2", Model: "m", State: "busy", InFlight: 1, MaxConcurrency: 1})
	f.mu.Lock()
	delete(f.workers, "w1")
	f.mu.Unlock()
	deadline = time.Now().Add(5 * time.Second)
	for r.Lease() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r.Lease() != 0 {
		t.Fatal("the registrar did not notice the lease was lost")
	}
	e.Restart()
	v := NewView(client(t, e), "/t/", nil)
	defer v.Close()
	waitView(t, v, 10*time.Second, "w2 busy, w1 gone", func(hs []Hive) bool {
		return workerState(hs, "a", "w2") == "busy" && workerState(hs, "a", "w1") == ""
	})
	// Registered under a new lease (a keepalive stream that reconnects
	// slowly right after the restart may cost one more re-registration).
	deadline = time.Now().Add(5 * time.Second)
	for (r.Lease() == 0 || r.Lease() == first) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if l := r.Lease(); l == first || l == 0 {
		t.Errorf("lease %x after the restart, want a new one (old %x)", l, first)
	}
}

func TestViewListsAgainAfterCompaction(t *testing.T) {
	e := etcdtest.StartEmbedded(t) // stopped and restarted
	cli := client(t, e)
	ctx := context.Background()
	if _, err := cli.Put(ctx, HiveKey("/t/", "a"), `{"node":"a","url":"http://x"}`); err != nil {
		t.Fatal(err)
	}
	v := NewView(client(t, e), "/t/", nil)
	defer v.Close()
	waitView(t, v, 5*time.Second, "hive a", func(hs []Hive) bool { return len(hs) == 1 })
	// Cut the view's watch off (etcd gone), write and compact meanwhile,
	// then bring etcd back: the watch's revision is compacted.
	e.Stop()
	e.Restart()
	var rev int64
	for i := 0; i < 5; i++ {
		resp, err := cli.Put(ctx, HiveKey("/t/", "b"), `{"node":"b","url":"http://y"}`)
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	if _, err := cli.Delete(ctx, HiveKey("/t/", "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, rev+1); err != nil {
		t.Fatal(err)
	}
	waitView(t, v, 10*time.Second, "b only", func(hs []Hive) bool { return len(hs) == 1 && hs[0].Node == "b" })
}

// etcd sends a watch that is behind by more than 1000 revisions its events
// in batches of 1000 revisions, each with the header revision of the whole
// store: the view took that header for what it had seen, so a watch
// restarted after such a batch (a leader change, any watch error) resumed
// past the events of the batches not yet read, and never saw them.
func TestViewWatchRestartedAfterACatchUpBatchMissesNoEvent(t *testing.T) {
	e := etcdtest.StartEmbedded(t) // counts revisions
	cli := client(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := cli.Put(ctx, HiveKey("/t/", "a"), `{"node":"a","url":"http://x"}`)
	if err != nil {
		t.Fatal(err)
	}
	listed := resp.Header.Revision
	// 1200 revisions under the prefix, one worker key each.
	const n = 1200
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 16 {
				if _, err := cli.Put(ctx, WorkerKey("/t/", "a", fmt.Sprintf("w%04d", i)), `{"model":"m","state":"idle"}`); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	// A view listed at `listed` whose watch got the first catch-up batch.
	v := &View{cli: cli, prefix: "/t/", log: discard(nil), hives: map[string]HiveRecord{"a": {Node: "a", URL: "http://x"}},
		workers: map[string]map[string]WorkerRecord{}, rev: listed, synced: true, changed: make(chan struct{})}
	wctx, wcancel := context.WithCancel(ctx)
	first, ok := <-cli.Watch(wctx, "/t/", clientv3.WithPrefix(), clientv3.WithRev(listed+1))
	wcancel()
	if !ok || first.Err() != nil || len(first.Events) == 0 {
		t.Fatalf("first watch response: %v %v", ok, first.Err())
	}
	if len(first.Events) == n {
		t.Fatalf("etcd sent all %d events in one response: the test no longer sees a catch-up batch", n)
	}
	v.apply(first)
	if last := first.Events[len(first.Events)-1].Kv.ModRevision; v.Revision() != last {
		t.Errorf("view revision %d after a batch ending at revision %d (header %d)", v.Revision(), last, first.Header.Revision)
	}
	// The watch restarts (as after a watch error): every worker arrives.
	done := make(chan struct{})
	go func() { defer close(done); v.watch(ctx) }()
	defer func() { cancel(); <-done }()
	waitView(t, v, 10*time.Second, fmt.Sprintf("all %d workers after the restart", n), func(hs []Hive) bool {
		return len(hs) == 1 && len(hs[0].Workers) == n
	})
}

// stopOnTxn stops etcd when the registrar's first transaction is about to
// go out: etcd goes away between a registration's lease grant and its
// commit.
type stopOnTxn struct {
	clientv3.KV
	once    sync.Once
	e       *etcdtest.Etcd
	stopped chan struct{}
}

func (s *stopOnTxn) Txn(ctx context.Context) clientv3.Txn {
	s.once.Do(func() {
		s.e.Stop()
		close(s.stopped)
	})
	return s.KV.Txn(ctx)
}

// A registration whose commit failed revoked its fresh lease with no
// deadline: with etcd gone, the registrar's loop waited for etcd to come
// back, and Close (the hive's shutdown) with it.
func TestRegistrarCloseDoesNotHangWhenEtcdWentAwayDuringARegistration(t *testing.T) {
	e := etcdtest.StartEmbedded(t) // stopped
	cli := client(t, e)
	kv := &stopOnTxn{KV: cli.KV, e: e, stopped: make(chan struct{})}
	cli.KV = kv
	f := &fakeHive{free: 512 << 20, workers: map[string]WorkerRecord{}}
	r := NewRegistrar(RegistrarOptions{Client: cli, Prefix: "/t/", Node: "a", LeaseTTL: 2 * time.Second,
		Hive: f.hive, Workers: f.list})
	r.Start()
	select {
	case <-kv.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the registrar sent no transaction")
	}
	closed := make(chan struct{})
	began := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r.Close(ctx)
		close(closed)
	}()
	select {
	case <-closed:
		t.Logf("Close took %s with etcd gone", time.Since(began).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Error("Close still waiting 10 s after etcd went away during a registration")
		e.Restart() // lets it end
		<-closed
	}
}

// failTxn fails the registrar's transactions from the nth on, while etcd
// is up (a commit that timed out under load), and says when it first did.
type failTxn struct {
	clientv3.KV
	mu     sync.Mutex
	n      int
	failed chan struct{}
}

func (f *failTxn) Txn(ctx context.Context) clientv3.Txn {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n > 0 {
		return f.KV.Txn(ctx)
	}
	if f.n == 0 {
		close(f.failed)
	}
	return f.KV.Txn(canceled)
}

var canceled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// A write that failed dropped the lease without a word to etcd: a hive
// shut down before it registered again left its keys behind until the
// lease expired, and queens routed to it meanwhile.
func TestRegistrarCloseRevokesALeaseDroppedAfterAFailedWrite(t *testing.T) {
	e := etcdtest.Start(t)
	prefix := e.Prefix("t")
	cli := client(t, e)
	kv := &failTxn{KV: cli.KV, n: 2, failed: make(chan struct{})} // the registration's commit goes through
	cli.KV = kv
	f := &fakeHive{free: 512 << 20, workers: map[string]WorkerRecord{}}
	f.set(WorkerRecord{ID: "w1", Model: "m", State: "idle", MaxConcurrency: 1})
	r := NewRegistrar(RegistrarOptions{Client: cli, Prefix: prefix, Node: "a", LeaseTTL: 30 * time.Second,
		Hive: f.hive, Workers: f.list})
	r.Start()
	v := NewView(client(t, e), prefix, nil)
	defer v.Close()
	waitView(t, v, 5*time.Second, "w1 idle", func(hs []Hive) bool { return workerState(hs, "a", "w1") == "idle" })
	f.set(WorkerRecord{ID: "w1", Model: "m", State: "busy", MaxConcurrency: 1})
	r.Trigger()
	select {
	case <-kv.failed:
	case <-time.After(5 * time.Second):
		t.Fatal("the registrar wrote nothing after a change")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.Close(ctx)
	waitView(t, v, 3*time.Second, "hive a gone after Close", func(hs []Hive) bool { return len(hs) == 0 })
}
