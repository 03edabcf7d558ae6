package supervisor

// Decide, then enter. Every event that may move a worker (a request, a
// timer, the process's end) goes through on: the pure state.Decide says
// what it does, and enter carries the step out — the state change, the
// timers that belong to the new state, the actions. A refused event is
// logged and counted and changes nothing. Adoption resumes a recorded
// worker through the same enter.

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
)

// on decides what ev does to the worker and enters the step. detail says
// why, in words, where the step may end or stop the worker.
func (o *owner) on(ev state.Event, detail string) error {
	from := o.cur.State
	step, err := state.Decide(state.Current{State: from, Reason: o.cur.Reason}, ev)
	if err != nil {
		o.refused(from, ev.Kind.String(), err)
		return err
	}
	o.enter(from, step, ev, detail)
	return nil
}

// refused logs and counts a refused event or move.
func (o *owner) refused(from state.State, what string, err error) {
	o.log.Warn("Refused", "state", from, "event", what, "error", err)
	if m := o.d.Metrics; m != nil {
		m.RefusedTransition(from, what)
	}
}

// enter carries out step, decided in state from. from "" resumes an adopted
// worker in the state it was recorded in (step.To): nothing moves, its
// state's timers are armed from the recorded times, and a stop under way
// goes on.
func (o *owner) enter(from state.State, step state.Step, ev state.Event, detail string) {
	to := step.To
	if from == "" {
		o.armTimers("", to)
		if to == state.Stopping {
			o.driveStop(true)
		}
		return
	}
	if to == from {
		o.stay(step, ev)
		return
	}
	switch to {
	case state.Loading:
		o.transition(state.Loading, state.None)
		o.armTimers(from, to)
		if o.firstStart != nil {
			if o.s.StartGrace <= 0 {
				o.endGrace(nil)
			} else {
				o.grace.arm(o.s.StartGrace.D())
			}
		}
	case state.Idle:
		now := o.now()
		o.cur.LastActivity = &now
		if from == state.Busy {
			o.transition(state.Idle, state.None)
			o.armTimers(from, to)
			return
		}
		o.cur.ReadyAt = &now
		o.hist.RunningSince = now
		if m := o.d.Metrics; m != nil {
			m.ReadyLatency(now.Sub(o.spawnedAt))
		}
		o.transition(state.Idle, state.None)
		o.log.Info("Worker ready", "pid", o.cur.PID, "port", o.cur.Port, "after", now.Sub(o.spawnedAt).String())
		o.armTimers(from, to)
	case state.Busy:
		o.transition(state.Busy, state.None)
		o.armTimers(from, to)
	case state.Stopping:
		o.beginStop(step.Reason, detail, step.Actions.Has(state.ActForceKill))
	case state.Spawning:
		o.restartNow(from, step)
	case state.Backoff:
		o.transition(state.Backoff, step.Reason)
		o.armTimers(from, to)
	case state.Terminated, state.Failed:
		if from == state.Backoff {
			o.endFromBackoff(step.Reason)
			return
		}
		o.finish(from, step.Reason, detail)
	}
}

// stay carries out a step that keeps the state.
func (o *owner) stay(step state.Step, ev state.Event) {
	if o.cur.State == state.Stopping && step.Reason != o.cur.Reason {
		// A person's stop wins over a restart in progress: the worker
		// ends instead of starting again.
		o.stopReason = step.Reason
		o.cur.Reason = step.Reason
		o.publishDurable()
	}
	if step.Actions.Has(state.ActForceKill) && !o.forced {
		if ev.Kind == state.EvStopTimeout {
			o.log.Warn("Worker did not respond, force-killing", "pid", o.cur.PID, "reason", o.stopReason,
				"signal", "SIGKILL", "waited", o.s.StopTimeout.String())
		} else {
			o.log.Warn("Kill asked during stop, force-killing", "pid", o.cur.PID, "signal", "SIGKILL")
		}
		o.forceKill()
	}
	if step.Actions.Has(state.ActRestartIdleClock) {
		now := o.now()
		o.cur.LastActivity = &now
		o.idle.arm(o.s.IdleTimeout.D())
		o.publish(nil)
	}
}

// armTimers stops the timers of state from and arms those of state to.
// Between idle and busy the heartbeat and health clocks run on. from ""
// (adoption) arms to's timers from the worker's recorded times; a deadline
// already past then fires after o.floor.
func (o *owner) armTimers(from, to state.State) {
	keep := from.Ready() && to.Ready()
	for _, t := range []*timer{&o.stall, &o.readyCap, &o.readyProbe, &o.idle, &o.backoff} {
		t.stop()
	}
	if to != state.Stopping {
		o.stopT.stop()
	}
	if !keep {
		o.hbStale.stop()
		o.health.stop()
	}
	now := o.now()
	switch to {
	case state.Spawning:
		if o.proc == nil {
			return // the process is being started
		}
		// An adopted process recorded while still starting is judged as
		// loading.
		fallthrough
	case state.Loading:
		o.stall.arm(o.s.ReadyStallTimeout.D())
		o.readyCap.arm(o.until(o.s.ReadyTimeout.D(), o.cur.StartedAt, now))
		if o.w.spec.Profile.Protocol == config.ProtocolHTTP {
			o.readyProbeDelay = config.ReadinessFirstInterval.D()
			o.readyProbeAt = now
			o.readyProbe.arm(o.readyProbeDelay)
		}
	case state.Idle, state.Busy:
		if to == state.Idle {
			since := o.cur.LastActivity
			if since == nil {
				since = o.cur.ReadyAt
			}
			o.idle.arm(o.until(o.s.IdleTimeout.D(), since, now))
		}
		if keep {
			return
		}
		if o.w.spec.Profile.Protocol == config.ProtocolRbee && o.s.Heartbeat.Timeout > 0 {
			o.hbStale.arm(o.s.Heartbeat.Timeout.D()) // a full timeout from now
		}
		if iv := o.s.Health.Interval.D(); iv > 0 {
			// Spread the first probe over one interval so that many
			// workers made ready together are spread over the grid's slots.
			o.armHealth(iv/2 + time.Duration(rand.Int64N(int64(iv/2)+1)))
		}
	case state.Backoff:
		// The delay counts from the failure: the tree cleanup (a cgroup
		// that takes a while to empty) is part of the wait.
		d := max(o.backoffUntil.Sub(now), o.floor)
		o.backoffUntil = now.Add(d)
		o.backoff.arm(d)
	}
}

// until is what is left of timeout counted from since (at least o.floor);
// 0 (disabled) when timeout is 0. A nil since counts from now.
func (o *owner) until(timeout time.Duration, since *time.Time, now time.Time) time.Duration {
	if timeout <= 0 {
		return 0
	}
	if since == nil {
		return timeout
	}
	return max(timeout-now.Sub(*since), o.floor)
}

// driveStop carries a stop under way on: SIGKILL at once when the stop is a
// forced one or (adopted) its grace is spent; otherwise the graceful
// request (sent again to an adopted worker: it is idempotent for a worker
// already draining) and the escalation timer for what is left of
// stop_timeout.
func (o *owner) driveStop(adopted bool) {
	pid := o.cur.PID
	if o.proc == nil || o.procDone {
		return // the exit is already being handled
	}
	left := o.s.StopTimeout.D() - o.now().Sub(o.stopAsked)
	if o.stopForce || (adopted && left <= 0) {
		if adopted {
			o.log.Warn("Continuing stop of adopted worker by force", "pid", pid, "reason", o.stopReason, "signal", "SIGKILL")
		} else {
			o.log.Warn("Force-killing worker", "pid", pid, "reason", o.stopReason, "signal", "SIGKILL")
		}
		o.forceKill()
		return
	}
	o.askGracefulStop()
	if adopted {
		o.log.Info("Continuing stop of adopted worker", "pid", pid, "reason", o.stopReason, "remaining", left.String())
	} else {
		o.log.Info(fmt.Sprintf("Waiting for graceful shutdown (%s timeout)...", o.s.StopTimeout), "pid", pid, "reason", o.stopReason)
	}
	if o.s.StopTimeout <= 0 {
		o.forceKill()
		return
	}
	// The deadline counts from the stop's start, not from here: sending
	// the request or signal took a moment already.
	o.stopT.arm(max(left, o.floor))
}
