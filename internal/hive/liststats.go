package hive

import (
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/stats"
)

// listStats gives List the workers' resource stats without making a listing
// wait for them. Measuring a worker reads several /proc and cgroup files
// (about 0.3 ms each on a 2-core box), so measuring a thousand inline made
// every listing that found the cache expired take a third of a second.
//
// Instead List serves the numbers of the last refresh, and a listing that
// finds them older than stats.DefaultMaxAge starts one refresh in the
// background (never two at once). A worker the last refresh has not seen
// (new, or restarted with a new PID) is measured inline, through the hive's
// per-worker sampler; so the numbers a listing shows are at most about two
// refresh periods old, and a worker with a process always carries stats.
//
// Safe for concurrent use.
type listStats struct {
	sampler *stats.Sampler // its own: a long refresh never holds up WithStats

	mu      sync.Mutex
	byID    map[string]*apiv1.WorkerInfo // the last refresh's results (with Stats)
	at      time.Time                    // when the last refresh started
	running bool
	closed  bool
	wg      sync.WaitGroup // the refresh goroutine
}

func newListStats(cg *cgroup.Manager) *listStats {
	return &listStats{
		// The refresh measures every worker, so its own cache must not
		// hand back old numbers.
		sampler: stats.New(stats.Options{Cgroups: cg, MaxAge: -1}),
		byID:    map[string]*apiv1.WorkerInfo{},
	}
}

// fill returns infos with Stats set on each worker that has a process:
// from the last refresh when it measured the same PID, else measured now
// through inline. It may start a background refresh. It does not modify
// infos' elements.
func (l *listStats) fill(infos []*apiv1.WorkerInfo, inline *stats.Sampler) []*apiv1.WorkerInfo {
	out := make([]*apiv1.WorkerInfo, len(infos))
	var missing []int
	l.mu.Lock()
	for i, info := range infos {
		out[i] = info
		if info == nil || info.PID <= 0 || !stats.HasProcess(info.State) {
			continue
		}
		if c, ok := l.byID[info.ID]; ok && c.PID == info.PID && c.Stats != nil {
			cp := *info
			cp.Stats = c.Stats
			out[i] = &cp
			continue
		}
		missing = append(missing, i)
	}
	if !l.closed && !l.running && time.Since(l.at) >= stats.DefaultMaxAge {
		l.running = true
		l.at = time.Now()
		live := make([]*apiv1.WorkerInfo, 0, len(infos))
		for _, info := range infos {
			if info != nil && info.PID > 0 && stats.HasProcess(info.State) {
				live = append(live, info)
			}
		}
		l.wg.Add(1)
		go l.refresh(live)
	}
	l.mu.Unlock()
	if len(missing) > 0 {
		todo := make([]*apiv1.WorkerInfo, len(missing))
		for j, i := range missing {
			todo[j] = infos[i]
		}
		for j, filled := range inline.Fill(todo) {
			out[missing[j]] = filled
		}
	}
	return out
}

// refresh measures live and replaces the served numbers with the results.
func (l *listStats) refresh(live []*apiv1.WorkerInfo) {
	defer l.wg.Done()
	filled := l.sampler.Fill(live)
	byID := make(map[string]*apiv1.WorkerInfo, len(filled))
	for _, f := range filled {
		if f.Stats != nil {
			byID[f.ID] = f
		}
	}
	l.mu.Lock()
	l.byID = byID
	l.running = false
	l.mu.Unlock()
}

// close waits for a running refresh and starts no other.
func (l *listStats) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.wg.Wait()
}
