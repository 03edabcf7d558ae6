package hive

import (
	"log/slog"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/logs"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/supervisor"
)

// endedWorker is a worker recorded terminated at endedAt, adopted as the
// hive does after a restart (no goroutine runs for it).
func endedWorker(t *testing.T, d supervisor.Deps, id string, endedAt time.Time) *supervisor.Worker {
	t.Helper()
	rec := &record.Record{Info: apiv1.WorkerInfo{ID: id, State: state.Terminated, Reason: state.Stopped, EndedAt: &endedAt}}
	a, err := supervisor.Adopt(d, rec)
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	return a.Worker()
}

// Regression: prune deleted the pruned workers' record files while holding
// the hive's lock, so a slow disk held up every listing, lookup and spawn.
func TestPruneDoesNotHoldTheHiveLockWhileDeletingRecords(t *testing.T) {
	lw, err := logs.NewWatcher(logs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lw.Close()
	d := supervisor.Deps{Logger: slog.New(slog.DiscardHandler), Logs: lw, LogDir: t.TempDir()}
	cfg := config.Default()
	cfg.Retention = config.Retention{MaxAge: config.Duration(time.Minute), MaxEntries: 1}
	h := &Hive{cfg: cfg, log: d.Logger, workers: map[string]*supervisor.Worker{}}
	now := time.Now()
	old := endedWorker(t, d, "worker-old", now.Add(-time.Hour))         // past max_age
	extra := endedWorker(t, d, "worker-extra", now.Add(-2*time.Second)) // over max_entries
	keep := endedWorker(t, d, "worker-keep", now.Add(-time.Second))     // the newest: kept
	for _, w := range []*supervisor.Worker{old, extra, keep} {
		h.workers[w.ID()] = w
	}

	deleting, release := make(chan string, 3), make(chan struct{})
	h.forgetHook = func(id string) {
		deleting <- id
		<-release // a disk that takes its time
	}
	pruned := make(chan struct{})
	go func() { h.prune(now); close(pruned) }()
	first := <-deleting

	locked := make(chan struct{})
	go func() { h.mu.Lock(); h.mu.Unlock(); close(locked) }()
	select {
	case <-locked:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the hive's lock is held while a pruned record is deleted")
	}
	h.mu.RLock()
	_, still := h.workers[first]
	h.mu.RUnlock()
	if !still {
		t.Fatalf("%s left the registry before its record was deleted: a new worker could take the id", first)
	}
	close(release)
	<-pruned
	if len(h.workers) != 1 || h.workers["worker-keep"] != keep {
		t.Fatalf("after prune the registry holds %v, want only worker-keep", h.workers)
	}
}
