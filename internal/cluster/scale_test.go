package cluster

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/testutil/etcdtest"
)

// TestScaleHundredHivesTenWorkersConvergeAndStayQuiet writes what 100
// hives with 10 workers each write, under 100 real leases into the real
// etcd, and reports the view's convergence, its memory, the latency of one
// change reaching the view, and the writes per hive at steady state.
func TestScaleHundredHivesTenWorkersConvergeAndStayQuiet(t *testing.T) {
	const hives, workers = 100, 10
	e := etcdtest.Start(t)
	cli := client(t, e)
	prefix := e.Prefix("s")
	var runtimeBefore runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&runtimeBefore)
	v := NewView(client(t, e), prefix, nil)
	defer v.Close()

	fakes := make([]*fakeHive, hives)
	regs := make([]*Registrar, hives)
	start := time.Now()
	for i := range fakes {
		f := &fakeHive{free: 8 << 30, workers: map[string]WorkerRecord{}}
		for j := 0; j < workers; j++ {
			f.set(WorkerRecord{ID: fmt.Sprintf("w%d", j), Model: "m", State: "idle", MaxConcurrency: 4})
		}
		fakes[i] = f
		regs[i] = NewRegistrar(RegistrarOptions{Client: cli, Prefix: prefix, Node: fmt.Sprintf("h%03d", i), LeaseTTL: 10 * time.Second,
			Hive: f.hive, Workers: f.list, CapacityEvery: 500 * time.Millisecond})
		regs[i].Start()
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, r := range regs {
			r.Close(ctx)
		}
	}()
	waitView(t, v, 20*time.Second, "100 hives x 10 workers", func(hs []Hive) bool {
		n := 0
		for _, h := range hs {
			n += len(h.Workers)
		}
		return len(hs) == hives && n == hives*workers
	})
	t.Logf("converged: %d hives, %d workers in the view %s after the first registrar started", hives, hives*workers, time.Since(start).Round(time.Millisecond))
	var runtimeAfter runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&runtimeAfter)
	t.Logf("heap of this process (view + 100 registrars + embedded etcd) grew by %.1f MiB",
		float64(int64(runtimeAfter.HeapAlloc)-int64(runtimeBefore.HeapAlloc))/(1<<20))

	// One change on one hive: how long until the view has it.
	var lat []time.Duration
	for i := 0; i < 40; i++ {
		f, r := fakes[i%hives], regs[i%hives]
		st := "busy"
		if i%2 == 1 {
			st = "idle"
		}
		node := fmt.Sprintf("h%03d", i%hives)
		f.set(WorkerRecord{ID: "w0", Model: "m", State: st, InFlight: 1 - i%2, MaxConcurrency: 4})
		r.Trigger()
		lat = append(lat, waitView(t, v, 15*time.Second, "change", func(hs []Hive) bool { return workerState(hs, node, "w0") == st }))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99 := lat[len(lat)*99/100]
	t.Logf("a change reaches the view: median %s, p99 %s (n=%d)", lat[len(lat)/2].Round(time.Microsecond), p99.Round(time.Microsecond), len(lat))
	// The target is 100 ms (SPEC §12): a figure of the benchmark
	// (hivebench --only queen), not asserted here, where a loaded 2-core CI
	// machine makes each write wait for etcd's fsync.

	// Steady state: four capacity intervals, nothing changes, no write.
	// Writes are counted by the registrars (a shared external etcd has
	// other writers, so its revision does not count ours).
	rev := func() int64 {
		var n int64
		for _, r := range regs {
			n += r.Writes()
		}
		return n
	}
	before := rev()
	time.Sleep(2 * time.Second) // a window to count writes in
	w := rev() - before
	t.Logf("steady state: %d writes by %d hives in 4 capacity intervals (%.2f per hive per interval)", w, hives, float64(w)/hives/4)
	if float64(w)/hives/4 > 1 {
		t.Errorf("%d writes in a steady state, want at most one per hive per capacity interval", w)
	}
}
