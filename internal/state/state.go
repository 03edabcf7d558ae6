// Package state defines the worker states, the reasons a worker ends, and the
// transition table between states (SPEC §2). It is pure: no I/O, no clocks.
package state

import (
	"errors"
	"fmt"
)

// State is where a worker is in its life.
type State string

const (
	// Spawning: port reserved, process being started. Next: loading, idle
	// (an early ready callback), stopping, failed.
	Spawning State = "spawning"
	// Loading: process alive, model loading. Next: idle, stopping, failed.
	Loading State = "loading"
	// Idle: ready, serving nothing. Next: busy, stopping, failed.
	Idle State = "idle"
	// Busy: ready, serving at least one request. Next: idle, stopping, failed.
	Busy State = "busy"
	// Stopping: a stop is under way. Next: terminated, failed (when the stop
	// was caused by a failure such as a ready timeout or failed health
	// checks), spawning (a restart asked through the API: stop, then start
	// again with the same id; not drawn in SPEC §2, which is silent on it).
	Stopping State = "stopping"
	// Terminated: ended because someone asked. Terminal.
	Terminated State = "terminated"
	// Failed: ended because something went wrong. Next: backoff, when the
	// restart policy allows another try; otherwise terminal.
	Failed State = "failed"
	// Backoff: waiting out the restart delay. Next: spawning, terminated (a
	// stop during backoff).
	Backoff State = "backoff"
)

// All lists every state, in lifecycle order.
var All = []State{Spawning, Loading, Idle, Busy, Stopping, Terminated, Failed, Backoff}

// Parse returns the State named s.
func Parse(s string) (State, error) {
	for _, st := range All {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown state %q", s)
}

func (s State) String() string { return string(s) }

// Ended reports whether s is terminated or failed.
func (s State) Ended() bool { return s == Terminated || s == Failed }

// Ready reports whether a worker in s can serve requests.
func (s State) Ready() bool { return s == Idle || s == Busy }

// Live reports whether a worker in s may have a process running.
func (s State) Live() bool {
	switch s {
	case Spawning, Loading, Idle, Busy, Stopping:
		return true
	}
	return false
}

var transitions = map[State][]State{
	Spawning: {Loading, Idle, Stopping, Failed},
	Loading:  {Idle, Stopping, Failed},
	Idle:     {Busy, Stopping, Failed},
	Busy:     {Idle, Stopping, Failed},
	Stopping: {Terminated, Failed, Spawning},
	Failed:   {Backoff},
	Backoff:  {Spawning, Terminated},
}

// Transitions returns a copy of the table: for each state, the states it
// may move to.
func Transitions() map[State][]State {
	t := make(map[State][]State, len(transitions))
	for from, tos := range transitions {
		t[from] = append([]State(nil), tos...)
	}
	return t
}

// ErrInvalidTransition is returned (wrapped in *TransitionError) for a move
// the state machine does not allow.
var ErrInvalidTransition = errors.New("invalid state transition")

// TransitionError names the refused move.
type TransitionError struct{ From, To State }

func (e *TransitionError) Error() string {
	return fmt.Sprintf("invalid state transition %s → %s", e.From, e.To)
}

func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// Check returns nil when from → to is allowed, else a *TransitionError.
func Check(from, to State) error {
	for _, s := range transitions[from] {
		if s == to {
			return nil
		}
	}
	return &TransitionError{From: from, To: to}
}

// Reason says why a worker ended (or is ending).
type Reason string

const (
	None Reason = ""
	// Ending in terminated: someone asked.
	Stopped      Reason = "stopped"
	Killed       Reason = "killed"
	IdleTimeout  Reason = "idle_timeout"
	HiveShutdown Reason = "hive_shutdown"
	// Evicted: stopped by the front door to make room for another model's
	// worker (SPEC §10).
	Evicted Reason = "evicted"
	// Ending in failed: something went wrong.
	Exited            Reason = "exited"
	Crashed           Reason = "crashed"
	OOMKilled         Reason = "oom_killed"
	ReadyTimeout      Reason = "ready_timeout"
	HealthCheckFailed Reason = "health_check_failed"
	HeartbeatTimeout  Reason = "heartbeat_timeout"
	SpawnFailed       Reason = "spawn_failed"
	CrashLoop         Reason = "crash_loop"
	// Restarting is carried by the failed → backoff and backoff → spawning
	// events; it never ends a worker.
	Restarting Reason = "restarting"
)

// Reasons lists every reason that can end a worker.
var Reasons = []Reason{Stopped, Killed, IdleTimeout, HiveShutdown, Evicted, Exited, Crashed,
	OOMKilled, ReadyTimeout, HealthCheckFailed, HeartbeatTimeout, SpawnFailed, CrashLoop}

func (r Reason) String() string { return string(r) }

// ParseReason returns the Reason named s.
func ParseReason(s string) (Reason, error) {
	for _, r := range Reasons {
		if string(r) == s {
			return r, nil
		}
	}
	if s == string(Restarting) {
		return Restarting, nil
	}
	return "", fmt.Errorf("unknown reason %q", s)
}

// Asked reports whether r is a reason someone asked for (it ends in
// terminated, and never leads to a restart).
func (r Reason) Asked() bool {
	switch r {
	case Stopped, Killed, IdleTimeout, HiveShutdown, Evicted:
		return true
	}
	return false
}

// End returns the terminal state a worker ending for r goes to.
func (r Reason) End() State {
	if r.Asked() {
		return Terminated
	}
	return Failed
}
