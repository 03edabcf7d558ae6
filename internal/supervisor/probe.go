package supervisor

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

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
	probe := prof.Liveness
	timeout := o.s.Health.Timeout.D()
	if prof.Protocol == config.ProtocolRbee {
		probe = config.Probe{Path: "/health", Status: http.StatusOK}
	}
	if kind == probeReadiness {
		probe = prof.Readiness
		timeout = time.Second
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	url, pid := o.cur.URL+probe.Path, o.cur.PID
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		err := httpProbe(o.d.Client, url, probe.Status, timeout)
		o.probeRes <- probeResult{kind: kind, pid: pid, err: err}
	}()
}

func httpProbe(c *http.Client, url string, want int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("status %d, want %d", resp.StatusCode, want)
	}
	return nil
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
