package supervisor

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/logs"
	"github.com/rbee/rbee-hive/internal/ports"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

func TestMain(m *testing.M) {
	process.LauncherMain()
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// testDeps returns Deps over real services in a temp dir; ports in a high
// range the tests never bind.
func testDeps(t *testing.T) Deps {
	t.Helper()
	lw, err := logs.NewWatcher(logs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lw.Close() })
	c := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)
	return Deps{
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Ports:  ports.New(61000, 61100, nil), Logs: lw, LogDir: t.TempDir(), Client: c,
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startSleeper starts a child that sleeps (in its own process group) and
// returns this process's handle on it; cleanup kills and reaps it.
func startSleeper(t *testing.T) *process.Proc {
	t.Helper()
	p, err := process.Start(process.Spec{Path: "/bin/sleep", Args: []string{"sleep", "60"},
		Env: []string{"RBEE_HIVE_MARKER=" + testMarker}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.SignalGroup(syscall.SIGKILL)
		<-p.Done()
		p.Close()
	})
	return p
}

// testMarker is the hive marker the sleepers carry and the records name:
// adoption without a cgroup needs it (SPEC §7).
const testMarker = "adopt-test-marker"

// recordOf describes p as worker "worker-adopt" of an http profile (no
// heartbeats), in state st, with probes off.
func recordOf(p *process.Proc, st state.State) *record.Record {
	now := time.Now()
	s := config.Default().Defaults
	s.Health.Interval = 0
	s.IdleTimeout = 0
	s.StopTimeout = config.Duration(5 * time.Second)
	s.Restart.Policy = config.RestartNever
	r := &record.Record{
		Info: apiv1.WorkerInfo{ID: "worker-adopt", State: st, Port: 61000, URL: workerURL(61000),
			StartedAt: &now, ReadyAt: &now, LastActivity: &now},
		Spec: record.Spec{ID: "worker-adopt", ProfileName: "generic", Settings: s, Marker: testMarker,
			Profile: config.Profile{Protocol: config.ProtocolHTTP, StopSignal: "SIGTERM",
				Readiness: config.ReadinessProbe{Probe: config.Probe{Path: "/health", Status: 200}}},
			Argv: []string{"/bin/sleep", "60"}},
	}
	if p != nil {
		r.Info.PID, r.StartTime, r.BootID, r.PGID = p.PID, p.StartTime, p.BootID, p.PGID
	}
	return r
}

func waitState(t *testing.T, w *Worker, timeout time.Duration, want ...state.State) *apiv1.WorkerInfo {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		info := w.Info()
		for _, s := range want {
			if info.State == s {
				return info
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker is %s/%s (%s), want %v", info.State, info.Reason, info.Detail, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func adopt(t *testing.T, d Deps, rec *record.Record) *Adoption {
	t.Helper()
	a, err := Adopt(d, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = a.Worker().Kill(context.Background(), state.Killed)
		<-a.Worker().Done()
	})
	return a
}

// The idle timer of an adopted worker counts from the recorded last
// activity, not from the adoption; the stop reaches the adopted process.
func TestAdoptedIdleWorkerIdlesOutFromLastActivity(t *testing.T) {
	p := startSleeper(t)
	rec := recordOf(p, state.Idle)
	rec.Spec.Settings.IdleTimeout = config.Duration(600 * time.Millisecond)
	last := time.Now().Add(-400 * time.Millisecond)
	rec.Info.LastActivity = &last
	a := adopt(t, testDeps(t), rec)
	if !a.Alive() {
		t.Fatalf("not adopted: %s", a.Why())
	}
	if pid, pgid := a.PID(); pid != p.PID || pgid != p.PID {
		t.Fatalf("adopted pid %d pgid %d", pid, pgid)
	}
	a.Start()
	info := waitState(t, a.Worker(), 5*time.Second, state.Terminated)
	took := info.EndedAt.Sub(last)
	if info.Reason != state.IdleTimeout || took < 600*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("ended %s after %s since the last activity", info.Reason, took)
	}
	if info.Exit == nil || info.Exit.Known {
		t.Fatalf("adopted exit should be unknown: %+v", info.Exit)
	}
	<-p.Done()
	if ex := p.Exit(); ex.Signal != syscall.SIGTERM {
		t.Fatalf("adopted process ended by %s, want the stop signal", ex)
	}
}

// A record naming a PID that now belongs to another process (other start
// time) is not adopted, and that process is never signalled.
func TestAdoptNeverTouchesAProcessThatReusedThePID(t *testing.T) {
	p := startSleeper(t)
	rec := recordOf(p, state.Idle)
	rec.StartTime++
	a := adopt(t, testDeps(t), rec)
	if a.Alive() || !strings.Contains(a.Why(), "another process") {
		t.Fatalf("alive %v why %q", a.Alive(), a.Why())
	}
	a.Start()
	info := waitState(t, a.Worker(), 5*time.Second, state.Failed)
	if info.Reason != state.Crashed || info.Detail != diedWhileDown || info.Exit == nil || info.Exit.Known {
		t.Fatalf("got %s %q exit %+v", info.Reason, info.Detail, info.Exit)
	}
	<-a.Worker().Done()
	time.Sleep(50 * time.Millisecond) // a stray signal would land by now
	if p.Exited() {
		t.Fatalf("the other process was killed: %s", p.Exit())
	}
	st, _ := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/stat")
	if s := string(st); s[strings.LastIndexByte(s, ')')+2] != 'S' {
		t.Fatalf("the other process is not simply sleeping: %s", s)
	}
}

// The exit of an adopted process (not our child) is seen through its pidfd
// at once, with an unknown status.
func TestAdoptedProcessExitIsSeenAtOnce(t *testing.T) {
	p := startSleeper(t)
	a := adopt(t, testDeps(t), recordOf(p, state.Busy))
	a.Start()
	waitState(t, a.Worker(), time.Second, state.Busy)
	killed := time.Now()
	p.Signal(syscall.SIGKILL)
	info := waitState(t, a.Worker(), 2*time.Second, state.Failed)
	if d := info.Exit.At.Sub(killed); d > 200*time.Millisecond || info.Reason != state.Crashed || info.Exit.Known {
		t.Fatalf("exit seen after %s as %s %+v", d, info.Reason, info.Exit)
	}
}

// A stop whose grace ran out while the hive was down is finished by force
// at once, and ends with the asked reason.
func TestAdoptedStopPastItsGraceIsForced(t *testing.T) {
	p := startSleeper(t)
	rec := recordOf(p, state.Stopping)
	rec.Info.Reason = state.Stopped
	rec.StopAsked = time.Now().Add(-time.Hour)
	a := adopt(t, testDeps(t), rec)
	a.Start()
	info := waitState(t, a.Worker(), 2*time.Second, state.Terminated)
	if info.Reason != state.Stopped {
		t.Fatalf("ended %s", info.Reason)
	}
	<-p.Done()
	if ex := p.Exit(); ex.Signal != syscall.SIGKILL {
		t.Fatalf("process ended by %s, want SIGKILL", ex)
	}
}

// A worker in backoff whose restart came due while the hive was down is
// restarted at once: same id, a new process, restart count + 1.
func TestAdoptedBackoffPastDueRestartsAtOnce(t *testing.T) {
	rec := recordOf(nil, state.Backoff)
	rec.Info.RestartCount = 1
	rec.Info.PID = 1 // the old, dead incarnation; must not matter
	rec.BackoffUntil = time.Now().Add(-time.Second)
	d := testDeps(t)
	a := adopt(t, d, rec)
	if a.Alive() {
		t.Fatal("a backoff worker has no process to adopt")
	}
	a.Start()
	info := waitState(t, a.Worker(), 2*time.Second, state.Loading)
	if info.RestartCount != 2 || info.PID <= 1 || info.Port != 61000 {
		t.Fatalf("after restart: %+v", info)
	}
	if !d.Ports.Holds(61000, "worker-adopt") {
		t.Fatal("port not held")
	}
}

// An ended record is kept visible and nothing runs for it.
func TestAdoptEndedRecordIsRetained(t *testing.T) {
	rec := recordOf(nil, state.Failed)
	rec.Info.Reason = state.Crashed
	a := adopt(t, testDeps(t), rec)
	a.Start()
	select {
	case <-a.Worker().Done():
	case <-time.After(time.Second):
		t.Fatal("ended worker not done")
	}
	if info := a.Worker().Info(); info.State != state.Failed || info.Reason != state.Crashed {
		t.Fatalf("got %+v", info)
	}
	if err := a.Worker().Stop(context.Background(), state.Stopped); err != nil {
		t.Fatalf("stop of an ended worker: %v", err)
	}
	if a.Worker().Log() == nil || a.Worker().Log().Path() == "" {
		t.Fatal("ended worker has no log path")
	}
}

// A record without a cgroup that names a live process with its right
// start time is not adopted unless the process carries the hive's marker.
func TestAdoptionWithoutCgroupNeedsTheMarker(t *testing.T) {
	p := startSleeper(t)
	rec := recordOf(p, state.Idle)
	rec.Spec.Marker = "another-hive"
	a, err := Adopt(testDeps(t), rec)
	if err != nil {
		t.Fatal(err)
	}
	if a.Alive() || !strings.Contains(a.Why(), "marker") {
		t.Fatalf("adopted an unmarked process: alive=%v %s", a.Alive(), a.Why())
	}
	a.Start()
	<-a.Worker().Done()
	if !process.ProcessAlive(p.PID, p.StartTime) {
		t.Fatal("the unmarked process was touched")
	}
}
