package supervisor

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

// minRearm is the shortest delay a timer re-armed at adoption gets when its
// deadline passed while the hive was down: the action (idle stop, forced
// kill, restart) happens at once, but after the adopted owner is running.
const minRearm = 50 * time.Millisecond

// diedWhileDown is the detail of a worker whose process was gone when the
// hive came back.
const diedWhileDown = "died while the hive was down"

// Adoption is a worker re-created from the record of an earlier hive: its
// process verified (or found gone), not yet supervised. The hive collects
// every adoption first, so that it knows which processes and cgroups are
// accounted for before it kills orphans, and then calls Start on each.
// Methods are safe for concurrent use; Start must be called once.
type Adoption struct {
	w      *Worker
	o      *owner
	resume func() // runs first in the owner goroutine; nil for an ended worker
	alive  bool   // a live process was verified and is now held
	pid    int
	pgid   int
	cg     *cgroup.Group
	why    string // why the process was not adopted, when !alive and the worker was live
}

// Adopt re-creates the worker rec describes, for a hive that starts on the
// state an earlier hive left. It blocks only for a few /proc and cgroup
// reads; it starts no goroutine and sends no signal (Start does the rest).
//
// By the recorded state:
//
//   - terminated, failed: the worker is kept visible as it ended (retention);
//     nothing runs for it.
//   - spawning, loading, idle, busy, stopping: the process is verified with
//     process.Adopt (boot id + PID + start time, before and after opening a
//     pidfd) and, where the worker had a cgroup, by finding the PID in it.
//     A PID that now names another process is never touched. When verified,
//     supervision resumes in the recorded state with the same PID, port,
//     token, restart count and history, and the same log file; timers are
//     re-armed from the recorded times (idle timer from last_activity, ready
//     cap from started_at, stop escalation from when the stop was asked) or
//     from now (stall clock, heartbeat staleness, health probes). Otherwise
//     the worker is recorded failed/crashed ("died while the hive was down";
//     oom_killed when its cgroup says so) and the restart policy applies; a
//     worker that was stopping ends as asked; a first start the hive died in
//     the middle of (spawning, never started before) ends spawn_failed and is
//     not restarted, since nobody was ever told of it.
//   - backoff: the pending restart is re-armed for the recorded time (at once
//     if that has passed).
//
// An adopted process is not a child of this hive: its exit is seen through
// the pidfd at once, with an unknown exit status (Exit.Known false; OOM from
// the cgroup when it has one), and it is reaped by its real parent (PID 1 or
// a subreaper), not here — until then it is a zombie, which no verification
// mistakes for a live worker.
//
// A restart (from backoff, or by policy) uses the recorded spec: the
// profile and settings the worker was spawned with, not the new hive's
// config.
//
// Adopt fails only when the worker's log cannot be opened; nothing has been
// taken then (the hive treats the process as an orphan).
func Adopt(d Deps, rec *record.Record) (*Adoption, error) {
	spec := rec.Spec
	spec.ID = rec.Info.ID
	spec.Token = ""
	w := newWorker(d, spec)
	o := newOwner(w)
	o.cur = rec.Info
	if o.cur.Labels == nil {
		o.cur.Labels = map[string]string{}
	}
	o.tokenHash, o.hist = rec.TokenHash, rec.History
	if o.cur.StartedAt != nil {
		o.spawnedAt = *o.cur.StartedAt
	}
	a := &Adoption{w: w, o: o}

	lg, real, err := d.openLog(filepath.Join(d.LogDir, spec.ID+".log"))
	if err != nil {
		return nil, fmt.Errorf("adopt %s: open worker log: %w", spec.ID, err)
	}
	o.wlog, w.wlog = lg, real
	st := o.cur.State
	if st.Ended() {
		// Kept for the retention window. The log stays readable by path;
		// nothing watches it.
		lg.Close()
		a.store()
		return a, nil
	}

	// Hold the port (ours while alive; for a restart, startProcess checks
	// it is still free and takes another one if not).
	if err := d.Ports.Reserve(o.cur.Port, spec.ID); err != nil {
		w.log.Warn("Recorded port is held by another worker", "port", o.cur.Port, "error", err)
	}
	if st == state.Backoff {
		a.resume = func() {
			o.backoffUntil = rec.BackoffUntil
			o.resume()
			o.log.Info("Worker adopted in backoff", "restart_in", o.backoffUntil.Sub(o.now()).String(),
				"restart_count", o.cur.RestartCount)
		}
		a.store()
		return a, nil
	}

	p, g, why := verify(d, rec)
	if p != nil {
		a.alive, a.pid, a.pgid, a.cg = true, p.PID, p.PGID, g
		o.proc, o.cg = realProc{p}, g
		a.resume = func() {
			o.log.Info("Worker adopted", "pid", o.cur.PID, "state", o.cur.State, "port", o.cur.Port,
				"restart_count", o.cur.RestartCount, "cgroup", o.cg != nil)
			if o.cur.State == state.Stopping {
				o.stopReason, o.stopDetail, o.stopAsked, o.stopForce = o.cur.Reason, o.cur.Detail, rec.StopAsked, rec.Forced
				if o.stopAsked.IsZero() {
					o.stopAsked = o.now()
				}
			}
			o.resume()
		}
		a.store()
		return a, nil
	}
	a.why = why
	// The process is gone. Its cgroup, if one is left, is this worker's to
	// clean up (and may tell an OOM kill).
	oom := false
	if rec.Cgroup && usable(d.Cgroups) {
		if g, err := d.Cgroups.Open(spec.ID); err == nil {
			a.cg, o.cg = g, g
			if k, err := g.OOMKilled(); err == nil && k {
				oom = true
			}
		}
	}
	a.resume = func() { o.resumeGone(why, oom) }
	a.store()
	return a, nil
}

func usable(m *cgroup.Manager) bool { return m != nil && m.Mode() != cgroup.ModeNone }

// verify proves rec's process is still the one recorded, and returns a
// handle on it (and its cgroup), or why it cannot be adopted. It never
// signals anything.
func verify(d Deps, rec *record.Record) (*process.Proc, *cgroup.Group, string) {
	pid := rec.Info.PID
	if pid <= 0 || rec.StartTime == 0 || rec.BootID == "" {
		return nil, nil, "no process was recorded"
	}
	p, err := process.Adopt(pid, rec.StartTime, rec.BootID)
	switch {
	case errors.Is(err, process.ErrGone):
		return nil, nil, "process is gone"
	case errors.Is(err, process.ErrNotSame):
		return nil, nil, fmt.Sprintf("PID %d now names another process (left untouched)", pid)
	case err != nil:
		return nil, nil, "cannot verify the process: " + err.Error()
	}
	if !rec.Cgroup || !usable(d.Cgroups) {
		// Without the worker's cgroup as proof, the process must carry the
		// hive's marker (SPEC §7): a record with the right start time of an
		// unrelated process must not get that process adopted (and later
		// killed).
		if rec.Spec.Marker == "" || !process.HasEnv(pid, "RBEE_HIVE_MARKER", rec.Spec.Marker) {
			p.Close()
			return nil, nil, fmt.Sprintf("PID %d does not carry this hive's marker: another process (left untouched)", pid)
		}
		return p, nil, ""
	}
	g, err := d.Cgroups.Open(rec.Info.ID)
	if err != nil {
		p.Close()
		return nil, nil, "the worker's cgroup is missing: " + err.Error()
	}
	pids, err := g.Pids()
	if err != nil || !slices.Contains(pids, pid) {
		p.Close()
		return nil, nil, fmt.Sprintf("process %d is not in the worker's cgroup", pid)
	}
	return p, g, ""
}

// store publishes the adopted snapshot without an event (nothing changed).
func (a *Adoption) store() {
	snap := a.o.cur
	a.w.info.Store(&snap)
	a.w.rec.Store(a.o.record(&snap))
}

// Worker returns the adopted worker. Register it before Start so that its
// callbacks find it.
func (a *Adoption) Worker() *Worker { return a.w }

// Alive reports whether a live process was verified and is now held.
func (a *Adoption) Alive() bool { return a.alive }

// PID returns the adopted process's PID and process group; 0, 0 unless
// Alive.
func (a *Adoption) PID() (pid, pgid int) { return a.pid, a.pgid }

// Why says why a worker that was live is not adopted ("process is gone",
// "PID 123 now names another process…"); "" when Alive or the worker was
// not live.
func (a *Adoption) Why() string { return a.why }

// CgroupID returns the id of the worker cgroup this worker will manage (its
// live process's, or a dead one's to clean up); "" when none.
func (a *Adoption) CgroupID() string {
	if a.cg == nil {
		return ""
	}
	return a.cg.ID()
}

// CgroupPids returns the processes in the adopted worker's cgroup (nil
// without one).
func (a *Adoption) CgroupPids() []int {
	if a.cg == nil || !a.alive {
		return nil
	}
	pids, _ := a.cg.Pids()
	return pids
}

// Start resumes supervision: the owner goroutine starts (a worker that ended
// gets none; its Done is closed). It does not block.
func (a *Adoption) Start() {
	if a.resume == nil {
		close(a.w.done)
		return
	}
	go a.o.loop(a.resume)
}

// resume enters the recorded state again, in the owner goroutine: its
// timers from the recorded times (a deadline that passed while the hive was
// down fires after minRearm), and a stop under way goes on (enter.go).
func (o *owner) resume() {
	o.floor = minRearm
	o.enter("", state.Step{To: o.cur.State, Reason: o.cur.Reason}, state.Event{}, "")
	o.floor = time.Nanosecond
}

// resumeGone records a worker whose process died while the hive was down,
// cleans up what is left of it (its cgroup), and applies the restart policy
// (or, if it was stopping, ends it as asked). Runs in the owner goroutine.
func (o *owner) resumeGone(why string, oom bool) {
	now := o.now()
	o.cur.Exit = &apiv1.Exit{Known: false, OOMKilled: oom, At: now}
	o.log.Warn("Worker died while the hive was down", "pid", o.cur.PID, "state", o.cur.State,
		"why", why, "oom_killed", oom)
	reason := state.Crashed
	if oom {
		reason = state.OOMKilled
	}
	if o.cur.State == state.Stopping {
		// Restarting starts again; any other stop ends as asked.
		o.stopReason, o.stopDetail, o.stopAsked = o.cur.Reason, o.cur.Detail, now
		o.cleanupTree(func() {
			_ = o.on(state.Event{Kind: state.EvExited, Reason: reason}, o.stopDetail)
		})
		return
	}
	if o.cur.State == state.Spawning && o.cur.RestartCount == 0 {
		// The hive died while starting the first process: the spawn was
		// never acknowledged, so nobody expects this worker; it is not
		// restarted (whatever it started was killed as an orphan).
		o.noRestart = true
		_ = o.on(state.Event{Kind: state.EvExited, Reason: state.SpawnFailed}, "the hive died while starting the worker")
		return
	}
	_ = o.on(state.Event{Kind: state.EvExited, Reason: reason}, diedWhileDown)
}
