package state

// The lifecycle as a pure function: what an event does to a worker in a
// given state (SPEC §2). The supervisor's owner decides with Decide, then
// enters the step; it never moves a worker any other way.

import (
	"errors"
	"fmt"
	"strings"
)

// EventKind is something that happens to a worker: a request, a timer, the
// process's end.
type EventKind int

const (
	// EvStarted: the process started (spawning → loading).
	EvStarted EventKind = iota
	// EvStartFailed: the process could not be started (spawning → failed,
	// spawn_failed).
	EvStartFailed
	// EvReady: the ready callback, or a readiness probe answered
	// (spawning/loading → idle).
	EvReady
	// EvBusy: a request began (idle → busy; busy stays busy).
	EvBusy
	// EvIdle: the last running request ended (busy → idle; idle stays idle
	// and its idle clock restarts).
	EvIdle
	// EvHeartbeat: a heartbeat arrived; accepted while a process may run.
	EvHeartbeat
	// EvStop: a graceful stop asked, for an asked Reason.
	EvStop
	// EvKill: a forced stop asked, for an asked Reason.
	EvKill
	// EvRestart: a restart asked through the API.
	EvRestart
	// EvStallTimeout: no loading progress within ready_stall_timeout.
	EvStallTimeout
	// EvReadyTimeout: not ready within ready_timeout (the hard cap).
	EvReadyTimeout
	// EvHeartbeatTimeout: no heartbeat within heartbeat.timeout.
	EvHeartbeatTimeout
	// EvIdleTimeout: idle for idle_timeout.
	EvIdleTimeout
	// EvHealthFailed: health.failure_threshold consecutive probes failed.
	EvHealthFailed
	// EvStopTimeout: the graceful stop's stop_timeout ran out.
	EvStopTimeout
	// EvExited: the process is gone and its tree cleaned up. Reason is the
	// failure it means when nobody asked (exited, crashed, oom_killed,
	// spawn_failed); in stopping the stop's own reason decides.
	EvExited
	// EvRetry: the restart policy allows another try (failed → backoff).
	EvRetry
	// EvBackoffDue: the restart delay is over (backoff → spawning).
	EvBackoffDue
)

// EventKinds lists every event kind.
var EventKinds = []EventKind{EvStarted, EvStartFailed, EvReady, EvBusy, EvIdle, EvHeartbeat, EvStop, EvKill,
	EvRestart, EvStallTimeout, EvReadyTimeout, EvHeartbeatTimeout, EvIdleTimeout, EvHealthFailed, EvStopTimeout,
	EvExited, EvRetry, EvBackoffDue}

var eventNames = [...]string{"started", "start_failed", "ready", "busy", "idle", "heartbeat", "stop", "kill",
	"restart", "stall_timeout", "ready_timeout", "heartbeat_timeout", "idle_timeout", "health_failed",
	"stop_timeout", "exited", "retry", "backoff_due"}

func (k EventKind) String() string {
	if k >= 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is one event, with the reason it carries (EvStop, EvKill: the asked
// reason; EvExited: the failure; EvRetry: the failure being retried).
type Event struct {
	Kind   EventKind
	Reason Reason
}

// Action is what a step asks of the owner beyond entering its state (what
// entering a state always does — its timers, an end's cleanup — is the
// owner's enter, not an action).
type Action uint8

const (
	// ActGracefulStop: ask the worker to stop (shutdown request or stop
	// signal); SIGKILL when stop_timeout runs out.
	ActGracefulStop Action = 1 << iota
	// ActForceKill: SIGKILL the whole tree now.
	ActForceKill
	// ActStartProcess: start a new incarnation.
	ActStartProcess
	// ActCountRestart: the new incarnation is a restart (restart_count + 1).
	ActCountRestart
	// ActRestartIdleClock: last_activity is now; the idle timeout counts
	// from here.
	ActRestartIdleClock
)

var actionNames = []string{"graceful_stop", "force_kill", "start_process", "count_restart", "restart_idle_clock"}

// Has reports whether a includes b.
func (a Action) Has(b Action) bool { return a&b != 0 }

func (a Action) String() string {
	var s []string
	for i, n := range actionNames {
		if a&(1<<i) != 0 {
			s = append(s, n)
		}
	}
	return strings.Join(s, "|")
}

// Current is what Decide needs of a worker: its state and, while stopping
// or ended, the reason.
type Current struct {
	State  State
	Reason Reason
}

// Step is the outcome of an event: the state to enter (To equal to the
// current state: it stays), the reason the move carries, and the actions.
type Step struct {
	To      State
	Reason  Reason
	Actions Action
}

// ErrRefused is returned (wrapped in *RefusedError) for an event the
// worker's state does not allow. It is also an ErrInvalidTransition.
var ErrRefused = errors.New("event refused")

// RefusedError names the refused event and the state it came in.
type RefusedError struct {
	From  State
	Event Event
	Why   string // set when the event itself is malformed
}

func (e *RefusedError) Error() string {
	msg := fmt.Sprintf("event %s refused in state %s", e.Event.Kind, e.From)
	if e.Event.Reason != None {
		msg = fmt.Sprintf("event %s (%s) refused in state %s", e.Event.Kind, e.Event.Reason, e.From)
	}
	if e.Why != "" {
		msg += ": " + e.Why
	}
	return msg
}

// Is makes a refusal both ErrRefused and ErrInvalidTransition.
func (e *RefusedError) Is(target error) bool {
	return target == ErrRefused || target == ErrInvalidTransition
}

// Decide returns what ev does to a worker in cur, or a *RefusedError. It is
// pure: the same input gives the same step; every move it returns is one
// Check allows.
func Decide(cur Current, ev Event) (Step, error) {
	st := cur.State
	refuse := func(why string) (Step, error) {
		return Step{}, &RefusedError{From: st, Event: ev, Why: why}
	}
	stay := func(a Action) (Step, error) { return Step{To: st, Reason: cur.Reason, Actions: a}, nil }
	to := func(s State, r Reason, a Action) (Step, error) { return Step{To: s, Reason: r, Actions: a}, nil }
	starting := st == Spawning || st == Loading

	switch ev.Kind {
	case EvStarted:
		if st == Spawning {
			return to(Loading, None, 0)
		}
	case EvStartFailed:
		if st == Spawning {
			return to(Failed, SpawnFailed, 0)
		}
	case EvReady:
		if starting {
			return to(Idle, None, 0)
		}
	case EvBusy:
		switch st {
		case Idle:
			return to(Busy, None, 0)
		case Busy:
			return stay(0)
		}
	case EvIdle:
		switch st {
		case Busy:
			return to(Idle, None, ActRestartIdleClock)
		case Idle:
			return stay(ActRestartIdleClock)
		}
	case EvHeartbeat:
		if st.Live() {
			return stay(0)
		}
	case EvStop, EvKill:
		if !ev.Reason.Asked() {
			return refuse("a stop must carry an asked reason")
		}
		stop := ActGracefulStop
		if ev.Kind == EvKill {
			stop = ActForceKill
		}
		switch {
		case starting || st.Ready():
			return to(Stopping, ev.Reason, stop)
		case st == Stopping:
			// Idempotent; a kill escalates. A person's stop wins over a
			// restart under way: the worker ends instead of starting again.
			r := cur.Reason
			if r == Restarting {
				r = ev.Reason
			}
			return Step{To: Stopping, Reason: r, Actions: stop & ActForceKill}, nil
		case st == Backoff:
			return to(ev.Reason.End(), ev.Reason, 0) // the pending restart is cancelled
		case st.Ended():
			return stay(0) // idempotent
		}
	case EvRestart:
		switch {
		case starting || st.Ready():
			return to(Stopping, Restarting, ActGracefulStop)
		case st == Backoff:
			return to(Spawning, Restarting, ActStartProcess|ActCountRestart)
		}
	case EvStallTimeout, EvReadyTimeout:
		if starting {
			return to(Stopping, ReadyTimeout, ActForceKill)
		}
	case EvHeartbeatTimeout:
		if st.Ready() {
			return to(Stopping, HeartbeatTimeout, ActForceKill)
		}
	case EvIdleTimeout:
		if st == Idle {
			return to(Stopping, IdleTimeout, ActGracefulStop)
		}
	case EvHealthFailed:
		if st.Ready() {
			return to(Stopping, HealthCheckFailed, ActGracefulStop)
		}
	case EvStopTimeout:
		if st == Stopping {
			return stay(ActForceKill)
		}
	case EvExited:
		switch {
		case st == Stopping && cur.Reason == Restarting:
			return to(Spawning, Restarting, ActStartProcess|ActCountRestart)
		case st == Stopping && cur.Reason != None:
			return to(cur.Reason.End(), cur.Reason, 0)
		case st == Stopping:
			return refuse("a stop without a reason")
		case starting || st.Ready():
			if ev.Reason.End() != Failed || ev.Reason == None || ev.Reason == Restarting {
				return refuse("an unasked exit must carry a failure reason")
			}
			return to(Failed, ev.Reason, 0)
		}
	case EvRetry:
		if st == Failed {
			return to(Backoff, cur.Reason, 0)
		}
	case EvBackoffDue:
		if st == Backoff {
			return to(Spawning, Restarting, ActStartProcess|ActCountRestart)
		}
	default:
		return refuse("unknown event")
	}
	return refuse("")
}
