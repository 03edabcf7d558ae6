package supervisor

// The end of an incarnation: graceful stop, escalation to SIGKILL over the
// whole tree, exit handling, the restart decision, and tree cleanup.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/policy"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/state"
)

// stopLifecycleTimers disarms every timer that could start another action.
func (o *owner) stopLifecycleTimers() {
	for _, t := range []*timer{&o.stall, &o.readyCap, &o.hbStale, &o.idle, &o.health, &o.readyProbe, &o.backoff} {
		t.stop()
	}
}

// beginStop enters stopping for reason: the graceful request (or SIGKILL
// when force), then the stop timer (enter.go, driveStop).
func (o *owner) beginStop(reason state.Reason, detail string, force bool) {
	from := o.cur.State
	o.stopReason, o.stopDetail, o.stopAsked, o.forced, o.stopForce = reason, detail, o.now(), false, force
	o.cur.Detail = detail
	o.transition(state.Stopping, reason)
	o.armTimers(from, state.Stopping)
	o.log.Info("Shutting down "+o.w.spec.ID, "pid", o.cur.PID, "reason", reason, "force", force)
	o.driveStop(false)
}

// askGracefulStop asks the worker to stop: an rbee worker by POST
// /v1/shutdown (in a goroutine; the stop signal if that fails), any other
// by its profile's stop signal to the process group.
func (o *owner) askGracefulStop() {
	prof := o.w.spec.Profile
	sig := prof.StopSig()
	if prof.Protocol == config.ProtocolRbee {
		o.wg.Add(1)
		go o.requestShutdown(o.proc, o.cur.PID, o.cur.URL, sig)
		return
	}
	o.log.Info("Sending stop signal", "pid", o.cur.PID, "signal", sigName(sig), "reason", o.stopReason)
	o.signalTree(sig)
}

// requestShutdown asks an rbee worker to drain and exit; when the request
// cannot be delivered it falls back to the stop signal. Runs in its own
// goroutine; it only touches p through its concurrency-safe methods.
func (o *owner) requestShutdown(p proc, pid int, url string, sig syscall.Signal) {
	defer o.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/shutdown", nil)
	resp, err := o.d.Client.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 300 {
			o.log.Info("Graceful shutdown requested", "pid", pid, "via", "POST /v1/shutdown")
			return
		}
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	o.log.Info("Shutdown request failed, sending stop signal", "pid", pid, "error", err, "signal", sigName(sig))
	if err := p.SignalGroup(sig); err != nil && !errors.Is(err, process.ErrGone) {
		_ = p.Signal(sig)
	}
}

// signalTree sends sig to the worker's process group.
func (o *owner) signalTree(sig syscall.Signal) {
	if o.proc == nil {
		return
	}
	if err := o.proc.SignalGroup(sig); err != nil && !errors.Is(err, process.ErrGone) {
		o.log.Warn("Signal to process group failed", "pid", o.cur.PID, "signal", sigName(sig), "error", err)
		_ = o.proc.Signal(sig)
	}
}

// forceKill SIGKILLs the whole tree: the process group and the cgroup.
func (o *owner) forceKill() {
	if o.forced {
		return
	}
	o.forced = true
	o.stopT.stop()
	if m := o.d.Metrics; m != nil {
		m.ForceKill()
	}
	o.signalTree(syscall.SIGKILL)
	if o.cg != nil {
		if err := o.cg.Kill(); err != nil {
			o.log.Warn("cgroup kill failed", "pid", o.cur.PID, "error", err)
		}
	}
}

// onExit handles the death of the worker's main process.
func (o *owner) onExit() {
	o.procDone = true
	ex := o.proc.Exit()
	facts := &apiv1.Exit{Code: ex.Code, Signal: int(ex.Signal), Known: ex.Known, At: ex.At}
	if o.cg != nil {
		if oom, err := o.cg.OOMKilled(); err == nil && oom {
			facts.OOMKilled = true
		}
	}
	o.cur.Exit = facts
	o.log.Info("Worker process exited", "pid", o.cur.PID, "exit", ex.String(), "signal", int(ex.Signal),
		"oom_killed", facts.OOMKilled, "state", o.cur.State)

	reason := state.Crashed
	switch {
	case facts.OOMKilled:
		reason = state.OOMKilled
	case ex.Known && ex.Code != nil && *ex.Code == 0:
		reason = state.Exited
	}

	if o.cur.State == state.Stopping {
		// `terminated` promises the whole tree is gone (no grandchild
		// survives a stop), so the tree is checked first — in the common
		// case one read per hierarchy finds the cgroup empty — and the
		// cgroup's removal comes after the announcement. Stop latency
		// ends when the process was reaped. The stop timer has nothing
		// left to escalate: the cleanup SIGKILLs whatever is left of the
		// tree itself, and a worker that obeyed is not a force kill.
		o.stopT.stop()
		o.cleanupTree(func() {
			if m := o.d.Metrics; m != nil {
				m.StopLatency(ex.At.Sub(o.stopAsked))
			}
			o.log.Info("Worker terminated", "pid", o.cur.PID, "reason", o.stopReason,
				"after", ex.At.Sub(o.stopAsked).String(), "forced", o.forced)
			o.endGrace(nil)
			// Restarting (a restart asked) starts again; any other
			// reason ends the worker as asked.
			_ = o.on(state.Event{Kind: state.EvExited, Reason: reason}, o.stopDetail)
		})
		return
	}

	detail := "process " + ex.String()
	if o.firstStart != nil {
		o.wlog.Sync()
		o.cur.LastLines = o.wlog.Tail(10)
		if facts.OOMKilled {
			detail += " (OOM-killed)"
		}
		o.noRestart = true // nobody was told of this worker yet: the spawn request fails
		_ = o.on(state.Event{Kind: state.EvExited, Reason: state.SpawnFailed}, detail+" within the start grace")
		o.endGrace(&SpawnError{Exit: facts, LastLine: o.cur.LastLines})
		return
	}
	_ = o.on(state.Event{Kind: state.EvExited, Reason: reason}, detail)
}

// finish ends the current incarnation for reason (entering terminated or
// failed from state from): it records the end state (first, so a crash is
// announced at once), makes sure the whole tree is gone, and then either
// goes to backoff (the restart policy, decided here: the failure that
// spends the restart budget ends crash_loop) or ends the worker.
func (o *owner) finish(from state.State, reason state.Reason, detail string) {
	mayRestart := !o.noRestart
	o.noRestart = false
	if o.wlog != nil {
		o.wlog.Sync()
		o.cur.LastLines = o.wlog.Tail(20)
	}
	// now is the end's time: ended_at, the event's time (within
	// microseconds) and the start of a restart delay.
	now := o.now()
	end := reason.End()
	var dec policy.Decision
	if end == state.Failed && mayRestart {
		dec = policy.Decide(o.s.Restart, o.hist, reason, now, rand.Float64())
		o.hist = dec.Next
		if dec.CrashLoop {
			detail = dec.Reason
			reason = state.CrashLoop
		}
	}
	o.cur.Detail = detail
	o.cur.EndedAt = &now
	o.cur.Reason = reason
	if o.proc == nil && !dec.Restart {
		// The tree is already gone (a stop cleaned it up): free the port
		// before announcing the end, so a spawn that follows the event
		// can have it.
		o.d.Ports.Release(o.cur.Port, o.w.spec.ID)
	}
	o.transition(end, reason)
	o.armTimers(from, end)
	if m := o.d.Metrics; m != nil {
		m.Ended(reason)
	}
	o.log.Info("Worker ended", "pid", o.cur.PID, "state", end, "reason", reason, "detail", detail)
	o.cleanupTree(func() {
		o.removeCgroup(func() {
			if !dec.Restart {
				o.release()
				return
			}
			o.log.Info("Restarting worker", "pid", o.cur.PID, "reason", reason, "delay", dec.Delay.String(), "policy", dec.Reason)
			o.backoffUntil = now.Add(max(dec.Delay, time.Nanosecond)) // recorded by the transition (adoption)
			_ = o.on(state.Event{Kind: state.EvRetry, Reason: reason}, "")
		})
	})
}

// endFromBackoff ends a worker waiting to restart: a stop cancels the
// pending restart at once.
func (o *owner) endFromBackoff(reason state.Reason) {
	now := o.now()
	o.cur.EndedAt = &now
	o.cur.Reason = reason
	o.cur.Detail = "stopped during backoff; restart cancelled"
	o.d.Ports.Release(o.cur.Port, o.w.spec.ID) // no process: free it before the event
	o.transition(reason.End(), reason)
	o.armTimers(state.Backoff, reason.End())
	if m := o.d.Metrics; m != nil {
		m.Ended(reason)
	}
	o.release()
}

// restartNow enters spawning from state from: the next incarnation, with
// the same id.
func (o *owner) restartNow(from state.State, step state.Step) {
	o.armTimers(from, state.Spawning) // a restart asked during backoff: the timer must not start another
	// The last incarnation's cgroup goes first; the new one gets a fresh
	// cgroup of the same name.
	o.removeCgroup(func() {
		if step.Actions.Has(state.ActCountRestart) {
			now := o.now()
			o.cur.RestartCount++
			o.cur.LastRestart = &now
			if m := o.d.Metrics; m != nil {
				m.Restarted()
			}
		}
		o.transition(state.Spawning, step.Reason)
		if step.Actions.Has(state.ActStartProcess) {
			o.startIncarnation()
		}
	})
}
