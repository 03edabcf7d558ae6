package supervisor

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/rbee/rbee-hive/internal/probe"

	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
)

// healthTick runs on the health interval while the worker is ready.
func (o *owner) healthTick() {
	if !o.cur.State.Ready() {
		return
	}
	o.health.arm(o.s.Health.Interval.D())
	if !o.probing {
		o.startProbe(probeLiveness)
	}
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
	o.probing = true
	prof := o.w.spec.Profile
	pp := prof.Liveness
	timeout := o.s.Health.Timeout.D()
	if prof.Protocol == config.ProtocolRbee {
		pp = config.Probe{Path: "/health", Status: http.StatusOK}
	}
	if kind == probeReadiness {
		pp = prof.Readiness
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
		o.prober = probe.New(addr)
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
			o.markReady()
			return
		}
		if o.outputSinceProbe {
			o.outputSinceProbe = false
			o.startProbe(probeReadiness)
			return
		}
		o.readyProbeDelay = min(2*o.readyProbeDelay, time.Second)
		o.readyProbe.arm(o.readyProbeDelay)
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
			o.beginStop(state.HealthCheckFailed,
				fmt.Sprintf("%d consecutive health checks failed: %v", o.cur.FailedHealthChecks, r.err), false)
		}
	}
}
