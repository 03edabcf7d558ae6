package hive

import (
	"os"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/stats"
)

// A listing must not wait for measuring every worker: once a background
// refresh has measured a worker, List serves its numbers from there, and a
// worker the refresh has not seen (new PID) is measured inline at once.
func TestListStatsServedFromBackgroundRefresh(t *testing.T) {
	l := newListStats(nil)
	defer l.close()
	inline := stats.New(stats.Options{})
	me := &apiv1.WorkerInfo{ID: "worker-me", PID: os.Getpid(), State: state.Idle}
	ended := &apiv1.WorkerInfo{ID: "worker-ended", PID: os.Getpid(), State: state.Terminated}

	out := l.fill([]*apiv1.WorkerInfo{me, ended}, inline)
	if out[0].Stats == nil || out[0].Stats.RSSBytes <= 0 {
		t.Fatalf("a worker not yet refreshed must be measured inline, got %+v", out[0].Stats)
	}
	if out[1].Stats != nil || out[1] != ended {
		t.Fatal("an ended worker must be passed through without stats")
	}
	if me.Stats != nil {
		t.Fatal("fill modified its input")
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		cached, ok := l.byID[me.ID]
		running := l.running
		l.mu.Unlock()
		if ok && !running {
			out = l.fill([]*apiv1.WorkerInfo{me}, inline)
			if out[0].Stats != cached.Stats {
				t.Fatal("a refreshed worker's stats must come from the refresh")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background refresh did not record the worker within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A restart (new PID) is not served the old process's numbers.
	again := *me
	again.PID = os.Getppid()
	out = l.fill([]*apiv1.WorkerInfo{&again}, inline)
	l.mu.Lock()
	old := l.byID[me.ID]
	l.mu.Unlock()
	if out[0].Stats == nil || (old != nil && old.PID != again.PID && out[0].Stats == old.Stats) {
		t.Fatal("a worker with a new PID must be measured again")
	}
}

// close waits for a running refresh and starts no other.
func TestListStatsCloseWaitsAndStops(t *testing.T) {
	l := newListStats(nil)
	inline := stats.New(stats.Options{})
	me := &apiv1.WorkerInfo{ID: "worker-me", PID: os.Getpid(), State: state.Idle}
	l.fill([]*apiv1.WorkerInfo{me}, inline)
	l.close()
	l.mu.Lock()
	l.at = time.Time{}
	l.mu.Unlock()
	l.fill([]*apiv1.WorkerInfo{me}, inline)
	l.mu.Lock()
	running := l.running
	l.mu.Unlock()
	if running {
		t.Fatal("a refresh started after close")
	}
}
