package supervisor

import (
	"log/slog"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

// A silent server that loaded for seconds was noticed up to a second late:
// the readiness back-off doubled to 1 s. SPEC §6 now wants 25 ms at first,
// backing off to readiness.max_interval (50 ms), counted between probe
// starts however long the answers take.
func TestReadinessBackoffStopsAtMaxIntervalNotOneSecond(t *testing.T) {
	now := time.Unix(1000, 0)
	w := newWorker(Deps{Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }},
		record.Spec{ID: "w", Settings: config.DefaultSettings(), Profile: config.Profile{Protocol: config.ProtocolHTTP}})
	o := newOwner(w)
	o.readyProbeDelay = config.ReadinessFirstInterval.D()
	var gaps []time.Duration
	for range 8 {
		o.readyProbeAt = now
		now = now.Add(3 * time.Millisecond) // the probe's answer took 3 ms
		o.nextReadinessProbe()
		gaps = append(gaps, o.readyProbeDelay)
		if !o.readyProbe.armed {
			t.Fatal("next readiness probe not scheduled")
		}
	}
	o.readyProbe.stop()
	if gaps[0] > 40*time.Millisecond {
		t.Fatalf("second gap %s: the first probes should come about every 25 ms", gaps[0])
	}
	for i, g := range gaps {
		if g > 50*time.Millisecond {
			t.Fatalf("gap %d is %s, above readiness.max_interval 50ms (gaps %v)", i, g, gaps)
		}
	}
	if last := gaps[len(gaps)-1]; last != 50*time.Millisecond {
		t.Fatalf("back-off settles at %s, want 50ms (gaps %v)", last, gaps)
	}

	// A profile's own max_interval is honoured.
	w.spec.Profile.Readiness.MaxInterval = config.Duration(30 * time.Millisecond)
	for range 8 {
		o.nextReadinessProbe()
	}
	o.readyProbe.stop()
	if o.readyProbeDelay != 30*time.Millisecond {
		t.Fatalf("with max_interval 30ms the back-off settles at %s", o.readyProbeDelay)
	}
}

// SPEC §3: a liveness probe is skipped while the worker's heartbeats are
// fresh and healthy, and a skipped probe counts as a success.
func TestLivenessProbeSkippedWhileHeartbeatsFreshAndHealthy(t *testing.T) {
	now := time.Unix(1000, 0)
	s := config.DefaultSettings()
	s.Heartbeat.Interval = config.Duration(time.Second)
	s.Heartbeat.Timeout = config.Duration(30 * time.Second)
	w := newWorker(Deps{Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }},
		record.Spec{ID: "w", Settings: s, Profile: config.Profile{Protocol: config.ProtocolRbee}})
	o := newOwner(w)
	hb := now
	o.cur = apiv1.WorkerInfo{ID: "w", PID: 42, Port: 1, State: state.Idle, LastHeartbeat: &hb, FailedHealthChecks: 2}
	o.hbHealthy = true

	o.healthTick()
	o.health.stop()
	if o.probing {
		t.Fatal("probed although a fresh heartbeat said healthy")
	}
	if o.cur.FailedHealthChecks != 0 {
		t.Fatalf("a skipped probe left %d failures counted", o.cur.FailedHealthChecks)
	}

	for _, c := range []struct {
		name    string
		age     time.Duration
		healthy bool
	}{{"stale heartbeat", 2500 * time.Millisecond, true}, {"degraded heartbeat", 0, false}} {
		hb := now.Add(-c.age)
		o.cur.LastHeartbeat, o.hbHealthy = &hb, c.healthy
		o.healthTick()
		o.health.stop()
		if !o.probing {
			t.Fatalf("%s: no probe", c.name)
		}
		o.onProbe(<-o.probeRes) // port 1 refuses: a failure, counted
		o.wg.Wait()
	}
	if o.cur.FailedHealthChecks != 2 {
		t.Fatalf("failures %d, want 2", o.cur.FailedHealthChecks)
	}
}

// Twenty idle workers woke the hive sixty times per 30 s for their health
// probes (each at its own random moment); the probe times now fall on a
// shared grid, so they share a handful of wake-ups — at the default 10 s
// interval, one per interval (a 5 s grid still gave two, and the runtime's
// spinning after each wake-up was a fifth of an idle hive's CPU).
func TestHealthProbesOfManyWorkersShareWakeups(t *testing.T) {
	base := time.Unix(1000, 123456789)
	s := config.DefaultSettings()
	s.Health.Interval = config.Duration(10 * time.Second)
	slots := map[time.Time]bool{}
	for i := range 20 {
		now := base.Add(time.Duration(i) * 377 * time.Millisecond)
		w := newWorker(Deps{Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }},
			record.Spec{ID: "w", Settings: s, Profile: config.Profile{Protocol: config.ProtocolHTTP}})
		o := newOwner(w)
		for _, d := range []time.Duration{3 * time.Second, 10 * time.Second} {
			o.armHealth(d)
			o.health.stop()
			at := now.Add(d)
			due := now.Add(o.health.last)
			if due.Before(at) || due.Sub(at) > 10*time.Second {
				t.Fatalf("worker %d: probe due %s after %s, asked %s", i, due.Sub(now), d, d)
			}
			slots[due] = true
		}
	}
	// The workers' times span 7.5 s; 3 s and 10 s later, on a 10 s grid,
	// they fall on two instants (a 5 s grid gave four).
	if len(slots) > 2 {
		t.Fatalf("40 probe times fell on %d distinct instants; want them on a shared 10 s grid", len(slots))
	}
	for due := range slots {
		if due.Truncate(10*time.Second) != due {
			t.Fatalf("probe due at %s, off the 10 s grid", due)
		}
	}
}
