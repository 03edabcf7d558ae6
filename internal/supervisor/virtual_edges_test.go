package supervisor

import (
	"context"
	"errors"
	"slices"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

// adoptVirtual resumes worker "w1" recorded in state st with a live fake
// process, as Adoption.Start does after a verified Adopt.
func adoptVirtual(t *testing.T, s config.Settings, prof config.Profile, wd *world, st state.State) *Worker {
	return adoptVirtualWith(t, s, prof, wd, st, nil)
}

// adoptVirtualWith is adoptVirtual with prep applied to the owner first
// (what Adopt restores from the record).
func adoptVirtualWith(t *testing.T, s config.Settings, prof config.Profile, wd *world, st state.State, prep func(o *owner)) *Worker {
	t.Helper()
	d, _ := virtualDeps(t, wd)
	spec := record.Spec{ID: "w1", ProfileName: "test", Settings: s, Profile: prof, Argv: []string{"/fake/worker"}}
	if err := d.Ports.Reserve(61000, "w1"); err != nil {
		t.Fatal(err)
	}
	p, _ := wd.start(process.Spec{})
	w := newWorker(d, spec)
	o := newOwner(w)
	now := time.Now()
	o.cur = apiv1.WorkerInfo{ID: "w1", Port: 61000, URL: workerURL(61000), State: st, PID: p.ident().PID,
		StartedAt: &now, Labels: map[string]string{}}
	o.proc, o.wlog = p, wd.log
	if prep != nil {
		prep(o)
	}
	a := &Adoption{w: w, o: o, alive: true, resume: o.resume}
	a.store()
	a.Start()
	t.Cleanup(func() {
		_ = w.Kill(context.Background(), state.Killed)
		<-w.Done()
	})
	return w
}

// The real owner, driven through requests, timers and process exits, takes
// every edge of SPEC §2's table, and no other; nothing it is asked along
// the way is refused.
func TestVirtualOwnerTakesEveryEdge(t *testing.T) {
	taken := map[[2]state.State]bool{}
	record := func(wd *world) {
		wd.mu.Lock()
		defer wd.mu.Unlock()
		for _, ev := range wd.events {
			if ev.From != "" {
				taken[[2]state.State{ev.From, ev.To}] = true
			}
		}
	}
	ctx := context.Background()
	s := quietSettings()
	s.ReadyStallTimeout = config.Duration(time.Minute)
	s.Restart = config.Restart{Policy: config.RestartAlways, BaseDelay: config.Duration(time.Second),
		MaxDelay: config.Duration(time.Second), MaxFailures: 100, Window: config.Duration(time.Hour)}
	never := s
	never.Restart.Policy = config.RestartNever
	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	want := func(t *testing.T, w *Worker, st state.State) {
		t.Helper()
		if got := settle(w); got != st {
			t.Fatalf("state %s, want %s", got, st)
		}
	}
	scenarios := []struct {
		name string
		run  func(t *testing.T, wd *world)
	}{
		{"start error", func(t *testing.T, wd *world) {
			wd.startErr = errors.New("exec: no such file")
			w, _, err := startVirtual(t, never, rbeeProfile, wd)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			want(t, w, state.Failed) // spawning → failed
		}},
		{"busy crash, backoff, idle crash, stop in backoff", func(t *testing.T, wd *world) {
			w, _ := virtualWorker(t, s, rbeeProfile, wd)
			must(t, w.Ready(ctx, &apiv1.ReadyRequest{})) // spawning → loading → idle
			end := begin(t, w)                           // idle → busy
			end()                                        // busy → idle
			begin(t, w)
			want(t, w, state.Busy)
			wd.proc().crash() // busy → failed → backoff
			want(t, w, state.Backoff)
			time.Sleep(2 * time.Second) // backoff → spawning → loading
			want(t, w, state.Loading)
			must(t, w.Ready(ctx, &apiv1.ReadyRequest{}))
			want(t, w, state.Idle)
			wd.proc().crash() // idle → failed → backoff
			want(t, w, state.Backoff)
			must(t, w.Stop(ctx, state.Stopped)) // backoff → terminated
			want(t, w, state.Terminated)
		}},
		{"restart asked, stop while busy", func(t *testing.T, wd *world) {
			w, _ := virtualWorker(t, never, httpProfile, wd) // graceful stops by signal
			must(t, w.Ready(ctx, &apiv1.ReadyRequest{}))
			must(t, w.Restart(ctx)) // idle → stopping → spawning (SIGTERM obeyed)
			want(t, w, state.Loading)
			must(t, w.Heartbeat(ctx, &apiv1.HeartbeatRequest{HealthStatus: "healthy"}))
			must(t, w.Ready(ctx, &apiv1.ReadyRequest{}))
			begin(t, w)
			must(t, w.Stop(ctx, state.Stopped)) // busy → stopping → terminated
			want(t, w, state.Terminated)
		}},
		{"stall, then crash while loading", func(t *testing.T, wd *world) {
			w, _ := virtualWorker(t, s, rbeeProfile, wd)
			time.Sleep(time.Minute) // loading → stopping → failed → backoff
			want(t, w, state.Backoff)
			time.Sleep(time.Second)
			want(t, w, state.Loading)
			wd.proc().crash() // loading → failed
			want(t, w, state.Backoff)
			must(t, w.Kill(ctx, state.Killed))
		}},
		{"adopted while spawning, then ready", func(t *testing.T, wd *world) {
			w := adoptVirtual(t, never, rbeeProfile, wd, state.Spawning)
			must(t, w.Ready(ctx, &apiv1.ReadyRequest{})) // spawning → idle
			want(t, w, state.Idle)
		}},
		{"adopted while spawning, then stopped", func(t *testing.T, wd *world) {
			w := adoptVirtual(t, never, rbeeProfile, wd, state.Spawning)
			must(t, w.Kill(ctx, state.Killed)) // spawning → stopping
			want(t, w, state.Terminated)
		}},
		{"adopted idle, heartbeats stop", func(t *testing.T, wd *world) {
			hb := never
			hb.Heartbeat.Timeout = config.Duration(30 * time.Second)
			w := adoptVirtual(t, hb, rbeeProfile, wd, state.Idle)
			time.Sleep(30 * time.Second) // idle → stopping → failed
			want(t, w, state.Failed)
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				wd := &world{}
				sc.run(t, wd)
				synctest.Wait()
				record(wd)
				if r := wd.metrics.refusals(); len(r) > 0 {
					t.Errorf("refused along the way: %v", r)
				}
			})
		})
	}
	var missing []string
	for from, tos := range state.Transitions() {
		for _, to := range tos {
			if !taken[[2]state.State{from, to}] {
				missing = append(missing, string(from)+" → "+string(to))
			}
			delete(taken, [2]state.State{from, to})
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("edges never taken: %v", missing)
	}
	for e := range taken {
		t.Errorf("edge %s → %s taken but not in the table", e[0], e[1])
	}
}

// An adopted stop goes on where it was: a graceful one gets what is left of
// stop_timeout (the request sent again), a forced one — recorded Forced from
// the start, whatever its reason — is SIGKILLed at once.
func TestVirtualAdoptedStopGoesOn(t *testing.T) {
	for _, forced := range []bool{false, true} {
		t.Run(map[bool]string{false: "graceful", true: "forced"}[forced], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := quietSettings()
				s.StopTimeout = config.Duration(10 * time.Second)
				wd := &world{ignoreTerm: true}
				t0 := time.Now()
				w := adoptVirtualWith(t, s, httpProfile, wd, state.Stopping, func(o *owner) {
					o.cur.Reason = state.Stopped
					o.stopReason, o.stopAsked, o.stopForce = state.Stopped, t0.Add(-4*time.Second), forced
				})
				settle(w)
				p := wd.proc()
				if forced {
					if sigs := p.got(); !slices.Equal(sigs, []syscall.Signal{syscall.SIGKILL}) || !p.Exit().At.Equal(t0) {
						t.Fatalf("signals %v at %s, want SIGKILL at once", sigs, p.Exit().At.Sub(t0))
					}
				} else {
					time.Sleep(6*time.Second - time.Millisecond)
					if st := settle(w); st != state.Stopping {
						t.Fatalf("state %s before the rest of the grace", st)
					}
					time.Sleep(time.Millisecond)
					settle(w)
					if sigs := p.got(); !slices.Equal(sigs, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}) {
						t.Fatalf("signals %v, want SIGTERM again, then SIGKILL", sigs)
					}
					if d := p.Exit().At.Sub(t0); d != 6*time.Second {
						t.Fatalf("SIGKILL %s after adoption, want the 6 s left of the grace", d)
					}
				}
				if info := w.Info(); info.State != state.Terminated || info.Reason != state.Stopped {
					t.Fatalf("ended %s/%s", info.State, info.Reason)
				}
				if r := wd.metrics.refusals(); len(r) > 0 {
					t.Fatalf("refused: %v", r)
				}
			})
		})
	}
}

// begin begins a front-door request on w and returns its end.
func begin(t *testing.T, w *Worker) func() {
	t.Helper()
	end, err := w.BeginRequest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return end
}
