package supervisor

// The owner's timers on virtual time: each test runs a real owner goroutine
// in a testing/synctest bubble, on a channel-based fake process, probe and
// log (seams.go), so minutes of the lifecycle pass in milliseconds and every
// deadline is checked to the nanosecond.

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/ports"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

// world is what the fakes share: the processes started, the probes made,
// the events seen.
type world struct {
	mu         sync.Mutex
	procs      []*fakeProc
	log        *fakeLog
	healthy    bool  // probes succeed
	ignoreTerm bool  // new processes survive SIGTERM
	startErr   error // the next start fails with it
	metrics    *fakeMetrics
	probes     []probeCall
	events     []apiv1.Event
}

type probeCall struct {
	path string
	at   time.Time
}

func (wd *world) start(process.Spec) (proc, error) {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if err := wd.startErr; err != nil {
		wd.startErr = nil
		return nil, err
	}
	p := &fakeProc{pid: 1000 + len(wd.procs), done: make(chan struct{}), ignoreTerm: wd.ignoreTerm}
	wd.procs = append(wd.procs, p)
	return p, nil
}

// started returns how many processes were started.
func (wd *world) started() int {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	return len(wd.procs)
}

// proc returns the latest process.
func (wd *world) proc() *fakeProc {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	return wd.procs[len(wd.procs)-1]
}

func (wd *world) setHealthy(ok bool) {
	wd.mu.Lock()
	wd.healthy = ok
	wd.mu.Unlock()
}

// probesOf returns when each probe of path was made.
func (wd *world) probesOf(path string) []time.Time {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	var at []time.Time
	for _, p := range wd.probes {
		if p.path == path {
			at = append(at, p.at)
		}
	}
	return at
}

// eventTo returns the time of the first event into st (and false if none).
func (wd *world) eventTo(st state.State) (time.Time, state.Reason, bool) {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	for _, ev := range wd.events {
		if ev.To == st {
			return ev.At, ev.Reason, true
		}
	}
	return time.Time{}, "", false
}

// eventsTo returns the times of every event into st.
func (wd *world) eventsTo(st state.State) []time.Time {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	var at []time.Time
	for _, ev := range wd.events {
		if ev.To == st {
			at = append(at, ev.At)
		}
	}
	return at
}

// Changed implements Observer.
func (wd *world) Changed(_ *Worker, _ *apiv1.WorkerInfo, ev *apiv1.Event, _ bool) {
	if ev == nil {
		return
	}
	wd.mu.Lock()
	wd.events = append(wd.events, *ev)
	wd.mu.Unlock()
}

// fakeProc is a process that lives until a signal that ends it.
type fakeProc struct {
	pid        int
	done       chan struct{}
	ignoreTerm bool

	mu      sync.Mutex
	exit    process.Exit
	gone    bool
	signals []syscall.Signal
}

func (p *fakeProc) Done() <-chan struct{} { return p.done }

func (p *fakeProc) Exit() process.Exit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

func (p *fakeProc) Signal(sig syscall.Signal) error { return p.SignalGroup(sig) }

func (p *fakeProc) SignalGroup(sig syscall.Signal) error {
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		return process.ErrGone
	}
	p.signals = append(p.signals, sig)
	p.mu.Unlock()
	if sig == syscall.SIGKILL || (sig == syscall.SIGTERM && !p.ignoreTerm) {
		p.die(process.Exit{Known: true, Signal: sig, At: time.Now()})
	}
	return nil
}

// die ends the process with ex (once).
func (p *fakeProc) die(ex process.Exit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		return
	}
	p.gone, p.exit = true, ex
	close(p.done)
}

// crash ends the process with exit code 1.
func (p *fakeProc) crash() {
	one := 1
	p.die(process.Exit{Known: true, Code: &one, At: time.Now()})
}

func (p *fakeProc) got() []syscall.Signal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.signals)
}

func (p *fakeProc) GroupAlive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.gone
}

func (p *fakeProc) Close() error { return nil }

func (p *fakeProc) ident() procIdent {
	return procIdent{PID: p.pid, PGID: p.pid, StartTime: 1, BootID: "boot"}
}

// fakeProbe answers at once: success while the world is healthy.
type fakeProbe struct {
	wd   *world
	addr string
}

func (f *fakeProbe) Addr() string { return f.addr }

func (f *fakeProbe) Get(path string, _ int, _ time.Duration) error {
	f.wd.mu.Lock()
	defer f.wd.mu.Unlock()
	f.wd.probes = append(f.wd.probes, probeCall{path: path, at: time.Now()})
	if !f.wd.healthy {
		return errors.New("connection refused")
	}
	return nil
}

func (f *fakeProbe) Close() {}

// fakeLog is a worker log whose output the test writes.
type fakeLog struct{ changed chan struct{} }

func (l *fakeLog) Path() string { return "/dev/null" }

func (l *fakeLog) ChildFile() (*os.File, error) { return os.OpenFile(os.DevNull, os.O_WRONLY, 0) }

func (l *fakeLog) Sync() {}

func (l *fakeLog) Tail(int) []string { return nil }

func (l *fakeLog) Changed() <-chan struct{} { return l.changed }

func (l *fakeLog) Close() error { return nil }

// output is the worker writing a line.
func (l *fakeLog) output() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

var (
	httpProfile = config.Profile{Protocol: config.ProtocolHTTP, StopSignal: "SIGTERM",
		Readiness: config.ReadinessProbe{Probe: config.Probe{Path: "/ready", Status: 200}},
		Liveness:  config.Probe{Path: "/health", Status: 200}}
	rbeeProfile = config.Profile{Protocol: config.ProtocolRbee, StopSignal: "SIGTERM"}
)

// quietSettings turns off every timer; each test turns on the one it pins.
func quietSettings() config.Settings {
	s := config.DefaultSettings()
	s.StartGrace = 0
	s.ReadyStallTimeout, s.ReadyTimeout, s.IdleTimeout = 0, 0, 0
	s.Health.Interval = 0
	s.Heartbeat.Timeout = 0
	s.StopTimeout = config.Duration(10 * time.Second)
	s.Restart.Policy = config.RestartNever
	return s
}

// virtualWorker starts worker "w1" on the fakes, inside the calling
// synctest bubble; the test's cleanup kills it and waits for its owner.
func virtualWorker(t *testing.T, s config.Settings, prof config.Profile, wd *world) (*Worker, *fakeMetrics) {
	t.Helper()
	w, m, err := startVirtual(t, s, prof, wd)
	if err != nil {
		t.Fatal(err)
	}
	return w, m
}

// startVirtual is virtualWorker that returns Start's error.
func startVirtual(t *testing.T, s config.Settings, prof config.Profile, wd *world) (*Worker, *fakeMetrics, error) {
	t.Helper()
	d, m := virtualDeps(t, wd)
	spec := record.Spec{ID: "w1", ProfileName: "test", Settings: s, Profile: prof, Argv: []string{"/fake/worker"}}
	if err := d.Ports.Reserve(61000, "w1"); err != nil {
		t.Fatal(err)
	}
	w, err := Start(d, spec, 61000, nil)
	t.Cleanup(func() {
		_ = w.Kill(context.Background(), state.Killed)
		<-w.Done()
	})
	return w, m, err
}

// virtualDeps returns Deps on the fakes of wd.
func virtualDeps(t *testing.T, wd *world) (Deps, *fakeMetrics) {
	wd.log = &fakeLog{changed: make(chan struct{}, 1)}
	m := &fakeMetrics{}
	wd.metrics = m
	d := Deps{
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Ports:  ports.New(61000, 61100, nil), LogDir: t.TempDir(), Observer: wd, Metrics: m,
		seams: &seams{
			start:    wd.start,
			newProbe: func(addr string) prober { return &fakeProbe{wd: wd, addr: addr} },
			openLog:  func(string) (workerLog, error) { return wd.log, nil },
		},
	}
	return d, m
}

// settle lets the bubble run until every goroutine waits, then returns the
// worker's state.
func settle(w *Worker) state.State {
	synctest.Wait()
	return w.Info().State
}

// sleepTo sleeps until t0+d.
func sleepTo(t0 time.Time, d time.Duration) { time.Sleep(time.Until(t0.Add(d))) }

// The stall clock: a loader with no progress for ready_stall_timeout is
// stopped by force (failed/ready_timeout); output resets the clock.
func TestVirtualStallTimeout(t *testing.T) {
	for _, c := range []struct {
		name     string
		outputAt time.Duration // 0: none
		stallAt  time.Duration
	}{
		{"no output", 0, 60 * time.Second},
		{"output at 40s", 40 * time.Second, 100 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := quietSettings()
				s.ReadyStallTimeout = config.Duration(60 * time.Second)
				s.ReadyTimeout = config.Duration(30 * time.Minute)
				wd := &world{}
				t0 := time.Now()
				w, _ := virtualWorker(t, s, httpProfile, wd)
				if c.outputAt > 0 {
					sleepTo(t0, c.outputAt)
					wd.log.output() // progress: the stall clock starts again
				}
				sleepTo(t0, c.stallAt-time.Millisecond)
				if st := settle(w); st != state.Loading {
					t.Fatalf("state %s 1 ms before the stall deadline, want loading", st)
				}
				sleepTo(t0, c.stallAt)
				if st := settle(w); st != state.Failed {
					t.Fatalf("state %s at the stall deadline, want failed", st)
				}
				at, reason, _ := wd.eventTo(state.Stopping)
				if d := at.Sub(t0); d != c.stallAt || reason != state.ReadyTimeout {
					t.Fatalf("stopping (%s) after %s, want ready_timeout after %s", reason, d, c.stallAt)
				}
				if info := w.Info(); info.Reason != state.ReadyTimeout || info.Detail != "no loading progress for 1m0s" {
					t.Fatalf("ended %s (%q)", info.Reason, info.Detail)
				}
				if sigs := wd.proc().got(); !slices.Equal(sigs, []syscall.Signal{syscall.SIGKILL}) {
					t.Fatalf("signals %v, want a forced stop (SIGKILL only)", sigs)
				}
			})
		})
	}
}

// The ready cap: a loader that keeps making progress is still stopped at
// ready_timeout after its start.
func TestVirtualReadyCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := quietSettings()
		s.ReadyStallTimeout = config.Duration(60 * time.Second)
		s.ReadyTimeout = config.Duration(5 * time.Minute)
		wd := &world{}
		t0 := time.Now()
		w, _ := virtualWorker(t, s, httpProfile, wd)
		for i := 1; i < 10; i++ { // output every 30 s: never a stall
			sleepTo(t0, time.Duration(i)*30*time.Second)
			wd.log.output()
			if st := settle(w); st != state.Loading {
				t.Fatalf("state %s after %d×30 s of progress, want loading", st, i)
			}
		}
		sleepTo(t0, 5*time.Minute)
		if st := settle(w); st != state.Failed {
			t.Fatalf("state %s at the cap, want failed", st)
		}
		at, reason, _ := wd.eventTo(state.Stopping)
		if d := at.Sub(t0); d != 5*time.Minute || reason != state.ReadyTimeout {
			t.Fatalf("stopping (%s) after %s, want ready_timeout at 5m", reason, d)
		}
		if info := w.Info(); info.Detail != "not ready after 5m0s" {
			t.Fatalf("detail %q", info.Detail)
		}
	})
}

// Heartbeat staleness: a ready rbee worker whose heartbeats stop is stopped
// by force heartbeat.timeout after the last one.
func TestVirtualHeartbeatTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := quietSettings()
		s.Heartbeat.Interval = config.Duration(10 * time.Second)
		s.Heartbeat.Timeout = config.Duration(30 * time.Second)
		wd := &world{}
		t0 := time.Now()
		w, _ := virtualWorker(t, s, rbeeProfile, wd)
		ctx := context.Background()
		if err := w.Ready(ctx, &apiv1.ReadyRequest{}); err != nil {
			t.Fatal(err)
		}
		for _, at := range []time.Duration{10 * time.Second, 20 * time.Second, 45 * time.Second} {
			sleepTo(t0, at)
			if err := w.Heartbeat(ctx, &apiv1.HeartbeatRequest{HealthStatus: "healthy", State: "idle"}); err != nil {
				t.Fatal(err)
			}
		}
		sleepTo(t0, 75*time.Second-time.Millisecond)
		if st := settle(w); st != state.Idle {
			t.Fatalf("state %s 1 ms before staleness, want idle", st)
		}
		sleepTo(t0, 75*time.Second)
		if st := settle(w); st != state.Failed {
			t.Fatalf("state %s at staleness, want failed", st)
		}
		at, reason, _ := wd.eventTo(state.Stopping)
		if d := at.Sub(t0); d != 75*time.Second || reason != state.HeartbeatTimeout {
			t.Fatalf("stopping (%s) after %s, want heartbeat_timeout 30 s after the last heartbeat (75 s)", reason, d)
		}
		if sigs := wd.proc().got(); !slices.Equal(sigs, []syscall.Signal{syscall.SIGKILL}) {
			t.Fatalf("signals %v, want SIGKILL only", sigs)
		}
	})
}

// Health probes: every interval once ready; the third consecutive failure
// stops the worker (gracefully) as failed/health_check_failed.
func TestVirtualHealthChecks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := quietSettings()
		s.Health.Interval = config.Duration(10 * time.Second)
		s.Health.FailureThreshold = 3
		wd := &world{healthy: true}
		t0 := time.Now()
		w, m := virtualWorker(t, s, httpProfile, wd)
		sleepTo(t0, time.Second)
		if st := settle(w); st != state.Idle {
			t.Fatalf("state %s, want idle after the first readiness probe", st)
		}
		ready, _, _ := wd.eventTo(state.Idle)
		if d := ready.Sub(t0); d != config.ReadinessFirstInterval.D() {
			t.Fatalf("ready after %s, want the first readiness probe's %s", d, config.ReadinessFirstInterval)
		}
		sleepTo(t0, 60*time.Second)
		if st := settle(w); st != state.Idle {
			t.Fatalf("state %s after a minute of good probes", st)
		}
		good := wd.probesOf("/health")
		if len(good) < 5 || len(good) > 6 {
			t.Fatalf("%d liveness probes in the first minute, want one per 10 s", len(good))
		}
		for i := 1; i < len(good); i++ {
			if gap := good[i].Sub(good[i-1]); gap != 10*time.Second {
				t.Fatalf("probes %d and %d %s apart, want 10s", i-1, i, gap)
			}
		}
		wd.setHealthy(false)
		sleepTo(t0, 2*time.Minute)
		if st := settle(w); st != state.Terminated && st != state.Failed {
			t.Fatalf("state %s after failing probes", st)
		}
		all := wd.probesOf("/health")
		bad := all[len(good):]
		if len(bad) != 3 {
			t.Fatalf("%d failing probes before the stop, want 3", len(bad))
		}
		at, reason, _ := wd.eventTo(state.Stopping)
		if !at.Equal(bad[2]) || reason != state.HealthCheckFailed {
			t.Fatalf("stopping (%s) at %s, want health_check_failed at the third failure (%s)", reason, at.Sub(t0), bad[2].Sub(t0))
		}
		if bad[0].Sub(good[len(good)-1]) != 10*time.Second || bad[2].Sub(bad[0]) != 20*time.Second {
			t.Fatalf("failing probes at %v, want every 10 s", bad)
		}
		if info := w.Info(); info.State != state.Failed || info.Reason != state.HealthCheckFailed {
			t.Fatalf("ended %s/%s", info.State, info.Reason)
		}
		if sigs := wd.proc().got(); !slices.Equal(sigs, []syscall.Signal{syscall.SIGTERM}) {
			t.Fatalf("signals %v, want a graceful stop (SIGTERM)", sigs)
		}
		if m.n(&m.healthFails) != 3 {
			t.Fatalf("%d health failures counted", m.n(&m.healthFails))
		}
	})
}

// The idle timeout counts from the end of the last request, and stops the
// worker gracefully (terminated/idle_timeout).
func TestVirtualIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := quietSettings()
		s.IdleTimeout = config.Duration(5 * time.Minute)
		wd := &world{healthy: true}
		t0 := time.Now()
		w, _ := virtualWorker(t, s, httpProfile, wd)
		ctx := context.Background()
		sleepTo(t0, 4*time.Minute)
		end, err := w.BeginRequest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sleepTo(t0, 10*time.Minute) // busy: no idle clock
		if st := settle(w); st != state.Busy {
			t.Fatalf("state %s during a request, want busy", st)
		}
		end()
		sleepTo(t0, 15*time.Minute-time.Millisecond)
		if st := settle(w); st != state.Idle {
			t.Fatalf("state %s 1 ms before the idle deadline, want idle", st)
		}
		sleepTo(t0, 15*time.Minute)
		if st := settle(w); st != state.Terminated {
			t.Fatalf("state %s at the idle deadline, want terminated", st)
		}
		at, reason, _ := wd.eventTo(state.Stopping)
		if d := at.Sub(t0); d != 15*time.Minute || reason != state.IdleTimeout {
			t.Fatalf("stopping (%s) after %s, want idle_timeout 5m after the request ended (15m)", reason, d)
		}
		if sigs := wd.proc().got(); !slices.Equal(sigs, []syscall.Signal{syscall.SIGTERM}) {
			t.Fatalf("signals %v, want SIGTERM only", sigs)
		}
	})
}

// Back-off: each crash waits base_delay × 2ⁿ before the restart; the
// failure that reaches max_failures ends the worker crash_loop.
func TestVirtualBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := quietSettings()
		s.Restart = config.Restart{Policy: config.RestartOnFailure, BaseDelay: config.Duration(2 * time.Second),
			MaxDelay: config.Duration(time.Minute), MaxFailures: 3, Window: config.Duration(time.Hour),
			ResetAfter: config.Duration(time.Hour)}
		wd := &world{}
		t0 := time.Now()
		w, m := virtualWorker(t, s, rbeeProfile, wd)
		crashes := []time.Duration{time.Second, 5 * time.Second, 20 * time.Second}
		for _, at := range crashes {
			sleepTo(t0, at)
			wd.proc().crash()
			settle(w)
		}
		sleepTo(t0, time.Minute)
		if st := settle(w); st != state.Failed {
			t.Fatalf("state %s, want failed", st)
		}
		if info := w.Info(); info.Reason != state.CrashLoop || info.RestartCount != 2 {
			t.Fatalf("ended %s after %d restarts, want crash_loop after 2", info.Reason, info.RestartCount)
		}
		spawns := wd.eventsTo(state.Spawning)
		want := []time.Duration{0, 3 * time.Second, 9 * time.Second} // the first start; 1 s + 2 s; 5 s + 4 s
		if len(spawns) != len(want) {
			t.Fatalf("%d starts, want %d", len(spawns), len(want))
		}
		for i, at := range spawns {
			if d := at.Sub(t0); d != want[i] {
				t.Fatalf("spawning %d at %s, want %s", i, d, want[i])
			}
		}
		if m.n(&m.restarts) != 2 || wd.started() != 3 {
			t.Fatalf("%d restarts counted, %d processes started", m.n(&m.restarts), wd.started())
		}
	})
}

// A graceful stop escalates to SIGKILL exactly stop_timeout after it was
// asked; a worker that obeys the stop signal is never killed.
func TestVirtualStopEscalation(t *testing.T) {
	for _, obey := range []bool{false, true} {
		name := map[bool]string{false: "ignores SIGTERM", true: "obeys SIGTERM"}[obey]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := quietSettings()
				s.StopTimeout = config.Duration(10 * time.Second)
				wd := &world{healthy: true, ignoreTerm: !obey}
				t0 := time.Now()
				w, m := virtualWorker(t, s, httpProfile, wd)
				sleepTo(t0, time.Minute)
				if err := w.Stop(context.Background(), state.Stopped); err != nil {
					t.Fatal(err)
				}
				sleepTo(t0, 70*time.Second-time.Millisecond)
				st := settle(w)
				if obey {
					if st != state.Terminated {
						t.Fatalf("state %s after SIGTERM, want terminated", st)
					}
					sleepTo(t0, 2*time.Minute)
					settle(w)
					if sigs := wd.proc().got(); !slices.Equal(sigs, []syscall.Signal{syscall.SIGTERM}) || m.n(&m.forceKills) != 0 {
						t.Fatalf("signals %v, %d force kills: an obeying worker was killed", sigs, m.n(&m.forceKills))
					}
					return
				}
				if st != state.Stopping {
					t.Fatalf("state %s 1 ms before stop_timeout, want stopping", st)
				}
				sleepTo(t0, 70*time.Second)
				if st := settle(w); st != state.Terminated {
					t.Fatalf("state %s at stop_timeout, want terminated", st)
				}
				p := wd.proc()
				if sigs := p.got(); !slices.Equal(sigs, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}) {
					t.Fatalf("signals %v, want SIGTERM then SIGKILL", sigs)
				}
				if d := p.Exit().At.Sub(t0); d != 70*time.Second {
					t.Fatalf("SIGKILL after %s, want 10 s after the stop (70 s)", d)
				}
				if info := w.Info(); info.Reason != state.Stopped || m.n(&m.forceKills) != 1 {
					t.Fatalf("ended %s, %d force kills; want stopped, 1", info.Reason, m.n(&m.forceKills))
				}
			})
		})
	}
}

// The bug: the stop timer stayed armed while the tree's cleanup ran after
// the process had exited, and when it fired it SIGKILLed the group and the
// cgroup again and counted a force kill, though the worker had obeyed
// SIGTERM (the cleanup kills what is left by itself).
func TestVirtualStopTimerDisarmedOnceTheProcessExited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		entered, release := holdCleanups(t)
		s := quietSettings()
		s.StopTimeout = config.Duration(10 * time.Second)
		wd := &world{healthy: true}
		t0 := time.Now()
		w, m := virtualWorker(t, s, httpProfile, wd)
		sleepTo(t0, time.Minute)
		if err := w.Stop(context.Background(), state.Stopped); err != nil {
			t.Fatal(err)
		}
		<-entered
		sleepTo(t0, 2*time.Minute) // far past stop_timeout, the cleanup still held
		settle(w)
		release()
		if st := settle(w); st != state.Terminated {
			t.Fatalf("state %s after the cleanup, want terminated", st)
		}
		if sigs := wd.proc().got(); !slices.Equal(sigs, []syscall.Signal{syscall.SIGTERM}) || m.n(&m.forceKills) != 0 {
			t.Fatalf("signals %v, %d force kills: a worker that obeyed SIGTERM was force-killed during its cleanup",
				sigs, m.n(&m.forceKills))
		}
	})
}

// The start grace: a process that dies within it fails the spawn itself
// (spawn_failed, never restarted); one that dies after it is a crash.
func TestVirtualStartGrace(t *testing.T) {
	for _, c := range []struct {
		dieAt time.Duration
		spawn bool // Start fails
	}{{99 * time.Millisecond, true}, {100 * time.Millisecond, false}} {
		t.Run(c.dieAt.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := quietSettings()
				s.StartGrace = config.Duration(100 * time.Millisecond)
				s.Restart.Policy = config.RestartAlways
				wd := &world{}
				t0 := time.Now()
				go func() {
					sleepTo(t0, c.dieAt)
					wd.proc().crash()
				}()
				w, _, err := startVirtual(t, s, rbeeProfile, wd)
				var se *SpawnError
				if c.spawn != errors.As(err, &se) {
					t.Fatalf("process dead after %s: Start returned %v", c.dieAt, err)
				}
				if d := time.Since(t0); d != min(c.dieAt, 100*time.Millisecond) {
					t.Fatalf("Start returned after %s", d)
				}
				sleepTo(t0, 2*time.Second) // past the first restart's delay (base_delay 1 s)
				settle(w)
				info := w.Info()
				if c.spawn && (info.State != state.Failed || info.Reason != state.SpawnFailed || wd.started() != 1) {
					t.Fatalf("%s/%s after %d starts, want failed/spawn_failed, no restart", info.State, info.Reason, wd.started())
				}
				if !c.spawn && (info.RestartCount != 1 || wd.started() != 2) {
					t.Fatalf("%s/%s after %d starts, want a crash that restarts", info.State, info.Reason, wd.started())
				}
			})
		})
	}
}

// Requests that begin while others run join their span: the worker stays
// busy until the last of them ends, in whatever order they end, and its
// last_activity is that end. The end of a request that began before a
// crash does not make the restarted worker idle while a request of its
// own runs (it did: the owner counted requests, not incarnations, so the
// old end took the count of the new one to zero).
func TestVirtualRequestSpanEndsWithItsLastRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := quietSettings()
		s.Restart = config.Restart{Policy: config.RestartAlways, BaseDelay: config.Duration(time.Second),
			MaxDelay: config.Duration(time.Second), MaxFailures: 100, Window: config.Duration(time.Hour)}
		wd := &world{healthy: true}
		w, _ := virtualWorker(t, s, rbeeProfile, wd)
		ctx := context.Background()
		if err := w.Ready(ctx, &apiv1.ReadyRequest{}); err != nil {
			t.Fatal(err)
		}
		a, b, c := begin(t, w), begin(t, w), begin(t, w)
		if w.span.Load() == nil || w.span.Load().n.Load() != 3 {
			t.Fatalf("three requests running: span %v", w.span.Load())
		}
		a()
		c()
		time.Sleep(time.Second)
		if st := settle(w); st != state.Busy {
			t.Fatalf("state %s with a request still running, want busy", st)
		}
		b()
		if st := settle(w); st != state.Idle {
			t.Fatalf("state %s after the last request, want idle", st)
		}
		if la := w.Info().LastActivity; la == nil || !la.Equal(time.Now()) {
			t.Fatalf("last_activity %v, want the last end (%v)", la, time.Now())
		}
		old := begin(t, w)
		wd.proc().crash() // busy → failed → backoff: the span is dropped
		if st := settle(w); st != state.Backoff {
			t.Fatalf("state %s after the crash, want backoff", st)
		}
		time.Sleep(2 * time.Second) // backoff → spawning → loading
		if err := w.Ready(ctx, &apiv1.ReadyRequest{}); err != nil {
			t.Fatal(err)
		}
		now := begin(t, w)
		old()
		if st := settle(w); st != state.Busy {
			t.Fatalf("state %s after an end from before the crash, with a request running, want busy", st)
		}
		now()
		if st := settle(w); st != state.Idle {
			t.Fatalf("state %s after the last request, want idle", st)
		}
	})
}
