// Package policy decides whether a failed worker is restarted, and after how
// long (SPEC §3 "restart policy"). It is pure: it takes the policy, the
// worker's failure history, the reason it ended, the current time and a
// random number, and returns a Decision. The caller does the waiting and the
// restarting, and keeps the History (Decision.Next is the history to keep).
//
// Which reasons restart:
//
//   - Asked reasons (stopped, killed, idle_timeout, hive_shutdown) never
//     restart, whatever the policy.
//   - Policy "never" restarts nothing.
//   - Policy "on-failure" restarts every failure reason except exited (exit
//     code 0 without being asked): a worker that chose to exit cleanly is
//     left ended. It does restart crashed, oom_killed, ready_timeout,
//     health_check_failed, heartbeat_timeout and spawn_failed.
//   - Policy "always" restarts exited too.
//   - spawn_failed is treated like crashed. A spawn that fails on the first
//     try is not restarted because the API caller got the error — the caller
//     simply does not call Decide then. A spawn that fails during a restart
//     attempt is a failure like any other and counts towards max_failures.
//   - crash_loop, restarting and unknown reasons never restart.
//
// Counting: failures older than the window are forgotten; all failures are
// forgotten once the worker had been running healthily for reset_after when
// it failed. The failure that brings the count of remembered failures
// (itself included) to max_failures ends the worker in crash_loop, so
// max_failures 3 allows two restarts. Otherwise the restart waits
// base_delay × 2ⁿ, capped at max_delay, ± jitter, where n is the number of
// failures remembered before this one.
package policy

import (
	"fmt"
	"math"
	"time"

	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
)

// Failure is one failure of a worker.
type Failure struct {
	At     time.Time    `json:"at"`     // when the worker ended
	Reason state.Reason `json:"reason"` // why
}

// History is what the policy remembers about one worker. The zero value is a
// worker that has never failed and is not running. It marshals to JSON with
// snake_case keys, so a supervisor may persist it with the worker.
type History struct {
	// Failures are the failures still counted, oldest first. Forget drops
	// the ones outside the window, or all of them after reset_after of
	// healthy running.
	Failures []Failure `json:"failures,omitempty"`
	// Restarts is how many restarts the policy has granted over the
	// worker's whole life (WorkerInfo.restart_count). It only labels
	// decisions; it is never reset and does not drive the delay.
	Restarts int `json:"restarts"`
	// RunningSince is when the current healthy run started (the worker
	// became ready); zero if the worker is not running or never became
	// ready.
	RunningSince time.Time `json:"running_since,omitzero"`
}

// Decision is what the policy says to do about one failure.
type Decision struct {
	// Restart is true when the worker goes to backoff and is spawned again
	// after Delay.
	Restart bool
	// Delay is how long to wait before the restart; 0 when Restart is false.
	Delay time.Duration
	// CrashLoop is true when this failure spent the restart budget: the
	// worker ends failed/crash_loop.
	CrashLoop bool
	// Reason is a readable sentence for the log and the event, e.g.
	// "restart 2 after crashed: waiting 4.1s (base 1s × 2^2 = 4s, ±20% jitter)".
	Reason string
	// Next is the history to keep: the input history with expired failures
	// forgotten, this failure appended, Restarts incremented when Restart
	// is true, and RunningSince cleared.
	Next History
}

// defaultPolicy is what an empty Restart.Policy means.
const defaultPolicy = config.RestartOnFailure

// uncapped bounds the delay when MaxDelay is zero, so that 2ⁿ cannot
// overflow into nonsense.
const uncapped = 24 * time.Hour

// Decide returns what to do about a worker that ended for reason at now,
// given its history h. rnd is a random number in [0, 1) used for the jitter
// (values outside are clamped), passed in so Decide stays pure and testable.
//
// Zero values in r: an empty Policy means on-failure; MaxFailures < 1 means
// 1 (every failure is a crash loop); Window 0 means failures never expire by
// age; ResetAfter 0 means healthy running never resets the count; MaxDelay 0
// means no cap (bounded at 24h); Jitter 0 means an exact delay. Decide does
// not block and is safe for concurrent use; it does not modify h.
func Decide(r config.Restart, h History, reason state.Reason, now time.Time, rnd float64) Decision {
	policy := r.Policy
	if policy == "" {
		policy = defaultPolicy
	}
	h = Forget(r, h, now)
	next := History{
		Failures: append(append([]Failure(nil), h.Failures...), Failure{At: now, Reason: reason}),
		Restarts: h.Restarts,
	}
	no := func(why string) Decision { return Decision{Reason: why, Next: next} }

	switch {
	case reason.Asked():
		return no(fmt.Sprintf("%s was asked for: never restarted", reason))
	case !restartable(reason):
		return no(fmt.Sprintf("%s is not restarted", orNone(reason)))
	}
	switch policy {
	case config.RestartNever:
		return no(fmt.Sprintf("policy never: %s is not restarted", reason))
	case config.RestartOnFailure:
		if reason == state.Exited {
			return no("policy on-failure: a clean exit (exited) is not restarted")
		}
	case config.RestartAlways:
	default:
		return no(fmt.Sprintf("unknown restart policy %q: %s is not restarted", policy, reason))
	}

	maxFailures := max(r.MaxFailures, 1)
	count := len(next.Failures)
	if count >= maxFailures {
		within := "within " + r.Window.D().String()
		if r.Window <= 0 {
			within = "since the count was last reset"
		}
		return Decision{
			CrashLoop: true,
			Reason: fmt.Sprintf("crash loop: %d failures %s (max_failures %d), last %s",
				count, within, maxFailures, reason),
			Next: next,
		}
	}

	n := len(h.Failures)
	base, capped := backoff(r.BaseDelay.D(), r.MaxDelay.D(), n)
	jitter := r.Jitter
	if math.IsNaN(jitter) || jitter < 0 {
		jitter = 0
	}
	jitter = min(jitter, 1)
	if math.IsNaN(rnd) || rnd < 0 {
		rnd = 0
	}
	rnd = min(rnd, math.Nextafter(1, 0))
	delay := time.Duration(float64(base) * (1 + jitter*(2*rnd-1)))
	if delay < 0 {
		delay = 0
	}
	next.Restarts++
	why := fmt.Sprintf("restart %d after %s: waiting %s (base %s × 2^%d", next.Restarts, reason,
		delay.Round(time.Millisecond), r.BaseDelay, n)
	if capped {
		why += fmt.Sprintf(", capped at %s", base)
	} else if n > 0 {
		why += fmt.Sprintf(" = %s", base)
	}
	if jitter > 0 {
		why += fmt.Sprintf(", ±%g%% jitter", jitter*100)
	}
	why += ")"
	return Decision{Restart: true, Delay: delay, Reason: why, Next: next}
}

// backoff returns base × 2ⁿ capped at maxDelay (or at 24h when maxDelay is
// 0), and whether the cap applied. It cannot overflow.
func backoff(base, maxDelay time.Duration, n int) (time.Duration, bool) {
	limit := maxDelay
	if limit <= 0 {
		limit = uncapped
	}
	d := max(base, 0)
	if d > limit {
		return limit, true
	}
	for range n {
		if d > limit/2 {
			return limit, true
		}
		d *= 2
	}
	return d, false
}

// Forget returns h without the failures the policy no longer counts at now:
//
//  1. If the worker has been running healthily since RunningSince for at
//     least ResetAfter (RunningSince + ResetAfter <= now), every failure is
//     forgotten.
//  2. Otherwise failures at or before now − Window are dropped (a failure
//     exactly Window old no longer counts).
//
// Restarts and RunningSince are kept. ResetAfter 0 disables step 1, Window 0
// disables step 2. Forget does not modify h's slice. It does not block and is
// safe for concurrent use.
func Forget(r config.Restart, h History, now time.Time) History {
	if r.ResetAfter > 0 && !h.RunningSince.IsZero() && !h.RunningSince.Add(r.ResetAfter.D()).After(now) {
		h.Failures = nil
		return h
	}
	if r.Window <= 0 {
		return h
	}
	cutoff := now.Add(-r.Window.D())
	kept := make([]Failure, 0, len(h.Failures))
	for _, f := range h.Failures {
		if f.At.After(cutoff) {
			kept = append(kept, f)
		}
	}
	if len(kept) == 0 {
		kept = nil
	}
	h.Failures = kept
	return h
}

// restartable reports whether r is a failure a policy may restart.
func restartable(r state.Reason) bool {
	switch r {
	case state.Exited, state.Crashed, state.OOMKilled, state.ReadyTimeout,
		state.HealthCheckFailed, state.HeartbeatTimeout, state.SpawnFailed:
		return true
	}
	return false
}

func orNone(r state.Reason) string {
	if r == state.None {
		return "an empty reason"
	}
	return string(r)
}
