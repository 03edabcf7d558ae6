package supervisor

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/wallgrid"
)

// healthTick runs on the health interval while the worker is ready. The
// probe is skipped while a fresh heartbeat said healthy (SPEC §3): it is the
// same proof of life, pushed, and counts as a success.
func (o *owner) healthTick() {
	if !o.cur.State.Ready() {
		return
	}
	o.armHealth(o.s.Health.Interval.D())
	if o.heartbeatVouches() {
		if o.cur.FailedHealthChecks != 0 {
			o.cur.FailedHealthChecks = 0
			o.publish(nil)
		}
		return
	}
	if !o.probing {
		o.startProbe(probeLiveness)
	}
}

// armHealth arms the health timer to fire d from now, rounded up to the
// health grid on the wall clock, the same for every worker: the interval
// itself up to 10 s (the default), 5 s above. Workers' probes then come in
// one shared wake-up per interval rather than one each: an idle hive's CPU
// goes mostly to waking up (a wake-up of the Go runtime costs more context
// switches, and sysmon's spinning, than the probe it serves), not to the
// probes themselves. Each worker is still probed every interval; only the
// phase is rounded.
func (o *owner) armHealth(d time.Duration) {
	if d <= 0 {
		o.health.stop()
		return
	}
	now := o.now()
	at := now.Add(d)
	if g := healthGrid(o.s.Health.Interval.D()); g > 0 {
		at = wallgrid.Ceil(at, g)
	}
	o.health.arm(at.Sub(now))
}

// healthGrid is the rounding of health probe times for interval iv. Up to
// 10 s it is iv (one wake-up per interval for every worker, probed exactly
// every iv); a longer interval keeps a 5 s grid, so that its first probe is
// not up to a whole long interval late.
func healthGrid(iv time.Duration) time.Duration {
	if iv <= 10*time.Second {
		return iv
	}
	return 5 * time.Second
}

// heartbeatVouches reports whether the last heartbeat is fresh and said
// healthy. Fresh: at most two heartbeat intervals old (one late heartbeat
// still counts), and never older than heartbeat.timeout.
func (o *owner) heartbeatVouches() bool {
	hb := o.cur.LastHeartbeat
	if !o.hbHealthy || hb == nil || o.w.spec.Profile.Protocol != config.ProtocolRbee {
		return false
	}
	fresh := 2 * o.s.Heartbeat.Interval.D()
	if t := o.s.Heartbeat.Timeout.D(); t > 0 && t < fresh {
		fresh = t
	}
	return o.now().Sub(*hb) < fresh
}

// readinessMaxInterval is the profile's readiness.max_interval (its
// default when unset).
func (o *owner) readinessMaxInterval() time.Duration {
	if d := o.w.spec.Profile.Readiness.MaxInterval; d > 0 {
		return max(d.D(), config.ReadinessFirstInterval.D())
	}
	return config.DefaultReadinessMaxInterval.D()
}

// nextReadinessProbe schedules the next readiness probe of a loading
// worker. The gap between probe starts grows by a quarter from 25 ms to
// readiness.max_interval (SPEC §6); it counts from the last probe's start,
// so a slow answer does not stretch it.
func (o *owner) nextReadinessProbe() {
	o.readyProbeDelay = min(o.readyProbeDelay+o.readyProbeDelay/4, o.readinessMaxInterval())
	due := o.readyProbeAt.Add(o.readyProbeDelay)
	o.readyProbe.arm(max(due.Sub(o.now()), time.Nanosecond))
}

// startProbe runs one HTTP probe in its own goroutine; the result comes back
// on probeRes. At most one probe is in flight per worker.
func (o *owner) startProbe(kind probeKind) {
	if o.probing {
		if kind == probeReadiness {
			o.readyProbe.arm(o.readyProbeDelay)
		}
		return
	}
	if kind == probeReadiness {
		o.readyProbeAt = o.now()
	}
	o.probing = true
	prof := o.w.spec.Profile
	pp := prof.Liveness
	timeout := o.s.Health.Timeout.D()
	if prof.Protocol == config.ProtocolRbee {
		pp = config.Probe{Path: "/health", Status: http.StatusOK}
	}
	if kind == probeReadiness {
		pp = prof.Readiness.Probe
		timeout = time.Second
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	// One prober (one held connection) per incarnation's address; only the
	// probe goroutine touches it while o.probing is set.
	addr := "127.0.0.1:" + strconv.Itoa(o.cur.Port)
	if o.prober == nil || o.prober.Addr() != addr {
		o.closeProber()
		o.prober = o.d.newProber(addr)
	}
	pr, pid := o.prober, o.cur.PID
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		err := pr.Get(pp.Path, pp.Status, timeout)
		o.probeRes <- probeResult{kind: kind, pid: pid, err: err}
	}()
}

// closeProber closes the held probe connection; only while no probe is in
// flight (or after the owner's goroutines have ended).
func (o *owner) closeProber() {
	if o.prober != nil && !o.probing {
		o.prober.Close()
	}
}

// onProbe acts on a probe's result. Results from an earlier incarnation, or
// that arrive after the worker left the state they were for, are dropped.
func (o *owner) onProbe(r probeResult) {
	o.probing = false
	if r.pid != o.cur.PID {
		return
	}
	switch r.kind {
	case probeReadiness:
		if o.cur.State != state.Loading && o.cur.State != state.Spawning {
			return
		}
		if r.err == nil {
			_ = o.on(state.Event{Kind: state.EvReady}, "")
			return
		}
		if o.outputSinceProbe {
			o.outputSinceProbe = false
			o.startProbe(probeReadiness)
			return
		}
		o.nextReadinessProbe()
	case probeLiveness:
		if !o.cur.State.Ready() {
			return
		}
		if r.err == nil {
			if o.cur.FailedHealthChecks != 0 {
				o.cur.FailedHealthChecks = 0
				o.publish(nil)
			}
			return
		}
		o.cur.FailedHealthChecks++
		if m := o.d.Metrics; m != nil {
			m.HealthCheckFailed()
		}
		o.log.Warn("Health check failed", "pid", o.cur.PID, "failures", o.cur.FailedHealthChecks,
			"threshold", o.s.Health.FailureThreshold, "error", r.err)
		o.publish(nil)
		if o.cur.FailedHealthChecks >= o.s.Health.FailureThreshold {
			_ = o.on(state.Event{Kind: state.EvHealthFailed},
				fmt.Sprintf("%d consecutive health checks failed: %v", o.cur.FailedHealthChecks, r.err))
		}
	}
}
