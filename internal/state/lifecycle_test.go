package state

import (
	"errors"
	"testing"
)

type decideCase struct {
	cur  Current
	ev   Event
	want Step
}

func cur(s State, r Reason) Current { return Current{State: s, Reason: r} }

func ev(k EventKind, r Reason) Event { return Event{Kind: k, Reason: r} }

// allowed is every accepted (state, event), with its step. Anything not
// here must be refused (TestDecideRefusesEveryOtherEvent).
var allowed = []decideCase{
	// spawning
	{cur(Spawning, None), ev(EvStarted, None), Step{Loading, None, 0}},
	{cur(Spawning, None), ev(EvStartFailed, None), Step{Failed, SpawnFailed, 0}},
	{cur(Spawning, None), ev(EvReady, None), Step{Idle, None, 0}}, // an early ready callback
	{cur(Spawning, None), ev(EvHeartbeat, None), Step{Spawning, None, 0}},
	{cur(Spawning, None), ev(EvStop, Stopped), Step{Stopping, Stopped, ActGracefulStop}},
	{cur(Spawning, None), ev(EvKill, Killed), Step{Stopping, Killed, ActForceKill}},
	{cur(Spawning, None), ev(EvRestart, None), Step{Stopping, Restarting, ActGracefulStop}},
	{cur(Spawning, None), ev(EvStallTimeout, None), Step{Stopping, ReadyTimeout, ActForceKill}},
	{cur(Spawning, None), ev(EvReadyTimeout, None), Step{Stopping, ReadyTimeout, ActForceKill}},
	{cur(Spawning, None), ev(EvExited, Crashed), Step{Failed, Crashed, 0}},
	{cur(Spawning, None), ev(EvExited, SpawnFailed), Step{Failed, SpawnFailed, 0}},
	// loading
	{cur(Loading, None), ev(EvReady, None), Step{Idle, None, 0}},
	{cur(Loading, None), ev(EvHeartbeat, None), Step{Loading, None, 0}},
	{cur(Loading, None), ev(EvStop, Stopped), Step{Stopping, Stopped, ActGracefulStop}},
	{cur(Loading, None), ev(EvStop, HiveShutdown), Step{Stopping, HiveShutdown, ActGracefulStop}},
	{cur(Loading, None), ev(EvKill, Killed), Step{Stopping, Killed, ActForceKill}},
	{cur(Loading, None), ev(EvRestart, None), Step{Stopping, Restarting, ActGracefulStop}},
	{cur(Loading, None), ev(EvStallTimeout, None), Step{Stopping, ReadyTimeout, ActForceKill}},
	{cur(Loading, None), ev(EvReadyTimeout, None), Step{Stopping, ReadyTimeout, ActForceKill}},
	{cur(Loading, None), ev(EvExited, Crashed), Step{Failed, Crashed, 0}},
	{cur(Loading, None), ev(EvExited, Exited), Step{Failed, Exited, 0}},
	{cur(Loading, None), ev(EvExited, OOMKilled), Step{Failed, OOMKilled, 0}},
	{cur(Loading, None), ev(EvExited, SpawnFailed), Step{Failed, SpawnFailed, 0}}, // died within the start grace
	// idle
	{cur(Idle, None), ev(EvBusy, None), Step{Busy, None, 0}},
	{cur(Idle, None), ev(EvIdle, None), Step{Idle, None, ActRestartIdleClock}},
	{cur(Idle, None), ev(EvHeartbeat, None), Step{Idle, None, 0}},
	{cur(Idle, None), ev(EvStop, Stopped), Step{Stopping, Stopped, ActGracefulStop}},
	{cur(Idle, None), ev(EvStop, Evicted), Step{Stopping, Evicted, ActGracefulStop}},
	{cur(Idle, None), ev(EvKill, Killed), Step{Stopping, Killed, ActForceKill}},
	{cur(Idle, None), ev(EvRestart, None), Step{Stopping, Restarting, ActGracefulStop}},
	{cur(Idle, None), ev(EvHeartbeatTimeout, None), Step{Stopping, HeartbeatTimeout, ActForceKill}},
	{cur(Idle, None), ev(EvIdleTimeout, None), Step{Stopping, IdleTimeout, ActGracefulStop}},
	{cur(Idle, None), ev(EvHealthFailed, None), Step{Stopping, HealthCheckFailed, ActGracefulStop}},
	{cur(Idle, None), ev(EvExited, Crashed), Step{Failed, Crashed, 0}},
	// busy
	{cur(Busy, None), ev(EvBusy, None), Step{Busy, None, 0}},
	{cur(Busy, None), ev(EvIdle, None), Step{Idle, None, ActRestartIdleClock}},
	{cur(Busy, None), ev(EvHeartbeat, None), Step{Busy, None, 0}},
	{cur(Busy, None), ev(EvStop, Stopped), Step{Stopping, Stopped, ActGracefulStop}},
	{cur(Busy, None), ev(EvKill, Killed), Step{Stopping, Killed, ActForceKill}},
	{cur(Busy, None), ev(EvRestart, None), Step{Stopping, Restarting, ActGracefulStop}},
	{cur(Busy, None), ev(EvHeartbeatTimeout, None), Step{Stopping, HeartbeatTimeout, ActForceKill}},
	{cur(Busy, None), ev(EvHealthFailed, None), Step{Stopping, HealthCheckFailed, ActGracefulStop}},
	{cur(Busy, None), ev(EvExited, OOMKilled), Step{Failed, OOMKilled, 0}},
	// stopping
	{cur(Stopping, Stopped), ev(EvHeartbeat, None), Step{Stopping, Stopped, 0}},
	{cur(Stopping, Stopped), ev(EvStop, Stopped), Step{Stopping, Stopped, 0}}, // idempotent
	{cur(Stopping, Stopped), ev(EvKill, Killed), Step{Stopping, Stopped, ActForceKill}},
	{cur(Stopping, Restarting), ev(EvStop, Stopped), Step{Stopping, Stopped, 0}}, // a stop cancels the restart
	{cur(Stopping, Restarting), ev(EvKill, Killed), Step{Stopping, Killed, ActForceKill}},
	{cur(Stopping, Stopped), ev(EvStopTimeout, None), Step{Stopping, Stopped, ActForceKill}},
	{cur(Stopping, Stopped), ev(EvExited, Crashed), Step{Terminated, Stopped, 0}}, // whatever the exit
	{cur(Stopping, IdleTimeout), ev(EvExited, Exited), Step{Terminated, IdleTimeout, 0}},
	{cur(Stopping, Killed), ev(EvExited, Crashed), Step{Terminated, Killed, 0}},
	{cur(Stopping, ReadyTimeout), ev(EvExited, Crashed), Step{Failed, ReadyTimeout, 0}},
	{cur(Stopping, HealthCheckFailed), ev(EvExited, Crashed), Step{Failed, HealthCheckFailed, 0}},
	{cur(Stopping, HeartbeatTimeout), ev(EvExited, Crashed), Step{Failed, HeartbeatTimeout, 0}},
	{cur(Stopping, Restarting), ev(EvExited, Crashed), Step{Spawning, Restarting, ActStartProcess | ActCountRestart}},
	// terminated: stops are idempotent, nothing else
	{cur(Terminated, Stopped), ev(EvStop, Stopped), Step{Terminated, Stopped, 0}},
	{cur(Terminated, Stopped), ev(EvKill, Killed), Step{Terminated, Stopped, 0}},
	// failed
	{cur(Failed, Crashed), ev(EvStop, Stopped), Step{Failed, Crashed, 0}},
	{cur(Failed, Crashed), ev(EvKill, Killed), Step{Failed, Crashed, 0}},
	{cur(Failed, Crashed), ev(EvRetry, Crashed), Step{Backoff, Crashed, 0}},
	// backoff
	{cur(Backoff, Crashed), ev(EvBackoffDue, None), Step{Spawning, Restarting, ActStartProcess | ActCountRestart}},
	{cur(Backoff, Crashed), ev(EvRestart, None), Step{Spawning, Restarting, ActStartProcess | ActCountRestart}},
	{cur(Backoff, Crashed), ev(EvStop, Stopped), Step{Terminated, Stopped, 0}},
	{cur(Backoff, Crashed), ev(EvKill, Killed), Step{Terminated, Killed, 0}},
	{cur(Backoff, Crashed), ev(EvStop, HiveShutdown), Step{Terminated, HiveShutdown, 0}},
}

func TestDecideAllowedSteps(t *testing.T) {
	for _, c := range allowed {
		got, err := Decide(c.cur, c.ev)
		if err != nil {
			t.Errorf("%s/%s + %s(%s): refused: %v", c.cur.State, c.cur.Reason, c.ev.Kind, c.ev.Reason, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s/%s + %s(%s) = %+v (%s), want %+v (%s)", c.cur.State, c.cur.Reason, c.ev.Kind, c.ev.Reason,
				got, got.Actions, c.want, c.want.Actions)
		}
		if got.To != c.cur.State {
			if err := Check(c.cur.State, got.To); err != nil {
				t.Errorf("Decide returned a move Check refuses: %v", err)
			}
		}
	}
}

// Every (state, event kind) that allowed does not name is refused, whatever
// reason the event carries.
func TestDecideRefusesEveryOtherEvent(t *testing.T) {
	accepted := map[State]map[EventKind]bool{}
	for _, c := range allowed {
		if accepted[c.cur.State] == nil {
			accepted[c.cur.State] = map[EventKind]bool{}
		}
		accepted[c.cur.State][c.ev.Kind] = true
	}
	reasons := append([]Reason{None, Restarting}, Reasons...)
	for _, s := range All {
		for _, k := range EventKinds {
			if accepted[s][k] {
				continue
			}
			for _, r := range reasons {
				_, err := Decide(cur(s, Crashed), ev(k, r))
				if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrInvalidTransition) {
					t.Errorf("%s + %s(%s): want a refusal, got %v", s, k, r, err)
				}
			}
		}
	}
}

// Malformed events are refused even where their kind is accepted.
func TestDecideRefusesMalformedEvents(t *testing.T) {
	for _, c := range []struct {
		cur Current
		ev  Event
	}{
		{cur(Idle, None), ev(EvStop, Crashed)},      // a stop for a failure reason
		{cur(Idle, None), ev(EvStop, None)},         // a stop for no reason
		{cur(Loading, None), ev(EvKill, Exited)},    // a kill for a failure reason
		{cur(Idle, None), ev(EvExited, Stopped)},    // an unasked exit that says asked
		{cur(Idle, None), ev(EvExited, None)},       // an exit without a reason
		{cur(Busy, None), ev(EvExited, Restarting)}, // not a failure
		{cur(Stopping, None), ev(EvExited, Crashed)},
		{cur(Idle, None), ev(EventKind(99), None)},
	} {
		if _, err := Decide(c.cur, c.ev); !errors.Is(err, ErrRefused) {
			t.Errorf("%s + %s(%s): want a refusal, got %v", c.cur.State, c.ev.Kind, c.ev.Reason, err)
		}
	}
}

// Every edge of SPEC §2 (the transition table) is produced by some event,
// and no event produces a move the table does not have.
func TestDecideCoversEveryEdgeAndNoOther(t *testing.T) {
	produced := map[[2]State]bool{}
	reasons := append([]Reason{None, Restarting}, Reasons...)
	for _, s := range All {
		for _, cr := range reasons {
			for _, k := range EventKinds {
				for _, r := range reasons {
					step, err := Decide(cur(s, cr), ev(k, r))
					if err != nil || step.To == s {
						continue
					}
					if err := Check(s, step.To); err != nil {
						t.Errorf("%s/%s + %s(%s) → %s: %v", s, cr, k, r, step.To, err)
					}
					produced[[2]State{s, step.To}] = true
				}
			}
		}
	}
	for from, tos := range transitions {
		for _, to := range tos {
			if !produced[[2]State{from, to}] {
				t.Errorf("edge %s → %s: no event takes it", from, to)
			}
		}
	}
}

// Decide is pure: a decision depends on its input only.
func TestDecideIsDeterministic(t *testing.T) {
	for _, c := range allowed {
		a, _ := Decide(c.cur, c.ev)
		b, _ := Decide(c.cur, c.ev)
		if a != b {
			t.Fatalf("%+v + %+v: %+v then %+v", c.cur, c.ev, a, b)
		}
	}
}
