package supervisor

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
)

// Front-door requests make a worker busy while any runs, whatever its own
// heartbeats say; the end of the last one is its last activity, and the
// idle timeout counts from there (the llama-server case: a worker that
// never reports its own state was idled out while answering requests).
func TestRequestsKeepAWorkerBusyAndTheIdleTimeoutCountsFromTheLastEnd(t *testing.T) {
	p := startSleeper(t)
	rec := recordOf(p, state.Idle)
	rec.Spec.Settings.IdleTimeout = config.Duration(400 * time.Millisecond)
	rec.Spec.Settings.Heartbeat.Timeout = 0
	a := adopt(t, testDeps(t), rec)
	if !a.Alive() {
		t.Fatalf("not adopted: %s", a.Why())
	}
	a.Start()
	w := a.Worker()
	ctx := context.Background()
	var ends []func()
	for i := 0; i < 2; i++ {
		end, err := w.BeginRequest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, end)
	}
	if st := w.Info().State; st != state.Busy {
		t.Fatalf("state %s with requests running", st)
	}
	// The worker's own report of idle does not end requests that run
	// through the front door.
	if err := w.Heartbeat(ctx, &apiv1.HeartbeatRequest{WorkerID: w.ID(), HealthStatus: "healthy", State: "idle"}); err != nil {
		t.Fatal(err)
	}
	// Longer than the idle timeout: a busy worker is not idled out.
	time.Sleep(600 * time.Millisecond)
	if st := w.Info().State; st != state.Busy {
		t.Fatalf("state %s after an idle heartbeat with requests running", st)
	}
	ends[0]()
	if st := w.Info().State; st != state.Busy {
		t.Fatalf("state %s with one request still running", st)
	}
	ends[1]()
	end := time.Now()
	info := w.Info()
	if info.State != state.Idle || info.LastActivity == nil || info.LastActivity.Before(end.Add(-50*time.Millisecond)) {
		t.Fatalf("after the last request: %s, last_activity %v (ended %v)", info.State, info.LastActivity, end)
	}
	info = waitState(t, w, 5*time.Second, state.Terminated)
	if took := info.EndedAt.Sub(end); info.Reason != state.IdleTimeout || took < 350*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("ended %s %s after the last request", info.Reason, took)
	}
	if _, err := w.BeginRequest(ctx); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("BeginRequest on an ended worker: %v", err)
	}
}

// A request whose client went away while BeginRequest was on its way to
// the owner (its context cancelled) got an error back although the owner
// had opened a span for it: nobody ended that span, and the worker stayed
// busy for good, never idled out.
func TestBeginRequestWithACancelledContextLeavesNoSpanOpen(t *testing.T) {
	p := startSleeper(t)
	rec := recordOf(p, state.Idle)
	rec.Spec.Settings.IdleTimeout = config.Duration(300 * time.Millisecond)
	rec.Spec.Settings.Heartbeat.Timeout = 0
	a := adopt(t, testDeps(t), rec)
	if !a.Alive() {
		t.Fatalf("not adopted: %s", a.Why())
	}
	a.Start()
	w := a.Worker()
	// The owner is in its loop.
	end, err := w.BeginRequest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	end()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Each try races the send to the owner and its answer against the
	// done context; any that opened a span and lost the answer leaks it.
	for i := 0; i < 50; i++ {
		if end, err := w.BeginRequest(ctx); err == nil {
			end()
		}
		runtime.Gosched()
	}
	info := waitState(t, w, 5*time.Second, state.Idle, state.Terminated)
	info = waitState(t, w, 5*time.Second, state.Terminated)
	if info.Reason != state.IdleTimeout {
		t.Fatalf("ended %s, want idle_timeout", info.Reason)
	}
}
