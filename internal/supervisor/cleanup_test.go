package supervisor

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

// holdCleanups makes every tree cleanup wait in its helper until the
// returned release is called; entered receives once per cleanup.
func holdCleanups(t *testing.T) (entered chan struct{}, release func()) {
	entered = make(chan struct{}, 4)
	gate := make(chan struct{})
	testHoldCleanup = func() {
		entered <- struct{}{}
		<-gate
	}
	released := false
	release = func() {
		if !released {
			released = true
			close(gate)
		}
	}
	t.Cleanup(func() { release(); testHoldCleanup = nil })
	return entered, release
}

func startScript(t *testing.T, d Deps, id, script string, restart config.RestartPolicy) *Worker {
	t.Helper()
	s := config.Default().Defaults
	s.Health.Interval, s.IdleTimeout, s.StartGrace = 0, 0, 0
	s.StopTimeout = config.Duration(5 * time.Second)
	s.Restart.Policy = restart
	s.Restart.BaseDelay, s.Restart.MaxDelay = config.Duration(time.Hour), config.Duration(time.Hour) // a restart stays in backoff
	spec := record.Spec{ID: id, ProfileName: "generic", Settings: s,
		Profile: config.Profile{Protocol: config.ProtocolHTTP, StopSignal: "SIGTERM",
			Readiness: config.ReadinessProbe{Probe: config.Probe{Path: "/health", Status: 200}}},
		Argv: []string{"/bin/sh", "-c", script}}
	port, err := d.Ports.Acquire(id)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Start(d, spec, port, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = w.Kill(context.Background(), state.Killed)
		<-w.Done()
	})
	return w
}

// Regression: cleanupTree waited for the tree (up to 5 s) on the owner
// goroutine, so a worker whose tree was slow to go answered nothing — not
// even a heartbeat — meanwhile. The wait runs in a helper now; `terminated`
// still comes only once the tree is gone.
func TestSlowTreeCleanupDoesNotBlockTheOwner(t *testing.T) {
	entered, release := holdCleanups(t)
	w := startScript(t, testDeps(t), "worker-slowtree", "exec sleep 60", config.RestartNever)
	waitState(t, w, 5*time.Second, state.Loading)
	if err := w.Stop(context.Background(), state.Stopped); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no tree cleanup after the stop")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Heartbeat(ctx, &apiv1.HeartbeatRequest{HealthStatus: "healthy"}); err != nil {
		t.Fatalf("heartbeat during a tree cleanup: %v", err)
	}
	if st := w.Info().State; st != state.Stopping {
		t.Fatalf("worker is %s before its tree is gone, want stopping", st)
	}
	kill := request{kind: reqKill, reason: state.Killed, reply: make(chan error, 1)}
	w.reqs <- kill // received by the owner before the cleanup ends
	release()
	info := waitState(t, w, 5*time.Second, state.Terminated)
	if info.Reason != state.Stopped {
		t.Fatalf("ended %s, want stopped", info.Reason)
	}
	// The worker ended with the cleanup: the kill finds it ended, which
	// Worker.Kill reports as done.
	if err := <-kill.reply; err != nil && !errors.Is(err, ErrEnded) {
		t.Fatalf("kill asked during the cleanup: %v", err)
	}
}

// A stop asked while a crashed worker's tree is still being cleaned up
// waits for the cleanup and then cancels the restart, as it did when the
// owner did the cleanup inline: the worker does not start again.
func TestStopDuringCrashCleanupCancelsTheRestart(t *testing.T) {
	entered, release := holdCleanups(t)
	w := startScript(t, testDeps(t), "worker-crashclean", "sleep 0.2; exit 3", config.RestartAlways)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no tree cleanup after the crash")
	}
	if st := w.Info().State; st != state.Failed {
		t.Fatalf("worker is %s during the cleanup, want failed (announced at once)", st)
	}
	stop := request{kind: reqStop, reason: state.Stopped, reply: make(chan error, 1)}
	w.reqs <- stop // received by the owner before the cleanup ends
	release()
	if err := <-stop.reply; err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("worker did not end; it is %s", w.Info().State)
	}
	if info := w.Info(); info.State != state.Terminated || info.Reason != state.Stopped || info.RestartCount != 0 {
		t.Fatalf("after stop: %s/%s restarts %d, want terminated/stopped, no restart", info.State, info.Reason, info.RestartCount)
	}
}
