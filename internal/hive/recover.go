package hive

// Durable state and recovery (SPEC §7): the registry is written to the
// store on every state change (persist, from Changed), and a hive that
// starts on a state directory an earlier hive used re-adopts that hive's
// workers and kills what it cannot account for (Recover).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/supervisor"

	"github.com/rbee/rbee-hive/internal/procstat"
)

// MarkerEnv is the environment variable every worker of a hive carries, with
// the hive's InstanceID as its value.
const MarkerEnv = "RBEE_HIVE_MARKER"

// Recovery says what Recover found and did.
type Recovery struct {
	Adopted  int // live workers whose process was verified and re-adopted
	Died     int // live workers whose process was gone (or not the same): recorded failed, restart policy applied
	Backoff  int // workers waiting to restart, re-armed
	Retained int // ended workers kept visible for the retention window
	Expired  int // ended workers past the retention window, forgotten
	Corrupt  int // state files moved aside
	// OrphanPIDs are processes carrying this hive's marker that no adopted
	// worker accounts for; each was SIGKILLed.
	OrphanPIDs []int
	// OrphanCgroups are worker cgroups under the hive's scope that no
	// worker accounts for; each was killed and removed.
	OrphanCgroups []string
	Took          time.Duration
}

// persist writes the worker's record on every state change, before the
// change is acknowledged (Changed runs synchronously in the worker's owner).
// Changes without an event (heartbeat details, health-check counts) are not
// written: a later hive re-learns them from the next heartbeat or probe.
// Idle ⇄ busy flips are not written (but a worker's last activity is, at
// most once a second: persistActivity). The steps of a start (spawning,
// loading, and the first ready state) are written without fsync: they lie
// on the path of a cold start's first byte (SPEC §10), where each fsync
// costs milliseconds on a busy disk. A crash of the hive alone keeps them
// (the page cache outlives it; SPEC §7's SIGKILLed hive loses nothing); only
// a crash of the whole machine, which takes the process with it, could
// lose them, and the loading record (the first with the process's PID) and
// the first ready record are fsynced in the background right after they
// are written, so that a worker that was loading or ready before such a
// crash is restarted by policy after it. (The store exchanges a record
// with its replacement, so nothing else starts writing it to the disk
// early: without that fsync a model that loads for minutes would have its
// loading record in the page cache only.)
//
// The spawning record is written in the background while the owner
// prepares the process (token, cgroup, log), and the owner waits for it
// before the process starts (WaitWritten): no process exists without the
// record of its start, as before, and the write (a new file: 0.3–2 ms on
// this ext4) no longer comes before that preparation.
//
// The first ready record itself is written after its event, in the
// background (persistLater): the requests waiting for the worker need not
// wait for the disk (replacing the loading record took 0.5–2 ms here when
// records were renamed over each other, see atomicfile.Replace). A hive that dies
// before that write re-adopts the worker from its loading record (PID,
// start time, port, token are all there) and finds it ready again at its
// next readiness probe: no worker is lost.
//
// The steps of a restart (failed, then backoff) are written the same way,
// each fsynced in the background right after it is written: with
// restart.base_delay 0 they lie on the path from a crash to the new
// process, where their two fsyncs were most of the hive's lead over
// supervisord's restart (which writes nothing). The only loss a machine
// crash inside those few milliseconds can cause is the crash itself going
// unrecorded: the worker is then found dead after the reboot and handled
// by its restart policy, as it would have been.
func (h *Hive) persist(w *supervisor.Worker, ev *apiv1.Event) {
	if h.store == nil {
		return
	}
	rec := w.Record()
	if rec == nil {
		return
	}
	// An idle ⇄ busy flip is not written here: it happens twice per
	// front-door request, and a restarted hive has no request running
	// through it (a worker is adopted idle; an rbee worker's next heartbeat
	// says busy if it is).
	if ev != nil && ((ev.From == state.Idle && ev.To == state.Busy) || (ev.From == state.Busy && ev.To == state.Idle)) {
		return
	}
	sync := ev == nil || !unsynced(ev)
	h.recordOrder(w.ID()).now(func() { h.put(w.ID(), rec, sync) })
}

func (h *Hive) put(id string, rec *record.Record, sync bool) {
	if err := h.store.Put(rec, sync); err != nil {
		h.log.Error("Writing worker state failed; a hive restart may not recover this change",
			"worker_id", id, "state", rec.Info.State, "error", err)
	}
}

// persistLater writes the worker's current record (its spawning state, or
// its first ready state, then fsynced) in the background, unless a later
// change of the worker has been written meanwhile (recordOrder).
func (h *Hive) persistLater(w *supervisor.Worker, fsync bool) {
	if h.store == nil {
		return
	}
	rec := w.Record()
	if rec == nil {
		return
	}
	id := w.ID()
	write := h.recordOrder(id).later()
	h.writes.Add(1)
	go func() {
		defer h.writes.Done()
		if !write(func() { h.put(id, rec, false) }) || !fsync {
			return
		}
		if err := h.store.Sync(id); err != nil {
			h.log.Warn("Writing worker state failed; a machine crash may lose this change",
				"worker_id", id, "error", err)
		}
	}()
}

// activityEvery is how often, at most, a worker's record is written for
// its last activity alone (persistActivity).
const activityEvery = time.Second

// persistActivity writes, in the background and without fsync, the record
// of a worker that has just gone from busy to idle — its last_activity,
// from which an adopted idle worker's idle timer counts — at most once per
// activityEvery. Without it the record kept the last_activity of its last
// state change (its ready time, for a worker that only ever served
// requests), and a hive restarted after a SIGKILL stopped such a worker as
// idle at once however recently it had served. The record may lag by up
// to activityEvery, by which an adopted worker may idle out early. Runs in
// the worker's owner (Changed).
func (h *Hive) persistActivity(w *supervisor.Worker) {
	if h.store == nil {
		return
	}
	o := h.recordOrder(w.ID())
	now := time.Now()
	if now.Sub(o.activityAt) < activityEvery {
		return
	}
	o.activityAt = now
	h.persistLater(w, false)
}

// recordOrder returns worker id's write order.
func (h *Hive) recordOrder(id string) *recordOrder {
	if o, ok := h.order.Load(id); ok {
		return o.(*recordOrder)
	}
	o, _ := h.order.LoadOrStore(id, &recordOrder{})
	return o.(*recordOrder)
}

// WaitWritten implements supervisor.WrittenWaiter: it returns once the
// background writes of w's records begun so far are done.
func (h *Hive) WaitWritten(w *supervisor.Worker) {
	if o, ok := h.order.Load(w.ID()); ok {
		o.(*recordOrder).pending.Wait()
	}
}

// recordOrder keeps one worker's record writes in the order of its
// changes when some are written in the background: each write takes a
// turn when its change happens (in the owner), and a background write
// whose turn has been passed by a later write is dropped (the store holds
// the newer record already, or is about to).
type recordOrder struct {
	mu      sync.Mutex
	turn    uint64         // the last turn given
	pending sync.WaitGroup // background writes not yet done (or dropped)
	// activityAt is when persistActivity last wrote the record; only the
	// worker's owner reads and writes it.
	activityAt time.Time
}

// now writes at once (put, under the lock), in its turn.
func (o *recordOrder) now(put func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.turn++
	put()
}

// later takes a turn now for a write done later: the returned function
// runs put, under the lock, unless a later turn has been taken since, and
// reports whether it did.
func (o *recordOrder) later() func(put func()) bool {
	o.mu.Lock()
	o.turn++
	mine := o.turn
	o.mu.Unlock()
	o.pending.Add(1) // only the worker's owner takes turns: never during a Wait
	return func(put func()) bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		defer o.pending.Done()
		if o.turn != mine {
			return false
		}
		put()
		return true
	}
}

// syncSoon makes the record written for ev durable in the background when
// persist wrote it without fsync as the loading step of a start or as a
// step of a restart (the first ready state of a start is fsynced by
// persistLater).
func (h *Hive) syncSoon(w *supervisor.Worker, ev *apiv1.Event) {
	if h.store == nil || !syncedSoon(ev) {
		return
	}
	id := w.ID()
	h.writes.Add(1)
	go func() {
		defer h.writes.Done()
		if err := h.store.Sync(id); err != nil {
			h.log.Warn("Writing worker state failed; a machine crash may lose this change",
				"worker_id", id, "error", err)
		}
	}()
}

// startStep reports whether ev is a step of a worker's start: to spawning
// or loading, or its first ready state.
func startStep(ev *apiv1.Event) bool {
	switch {
	case ev.To == state.Spawning, ev.To == state.Loading:
		return true
	case ev.To.Ready():
		return ev.From == state.Loading || ev.From == state.Spawning
	}
	return false
}

// firstReady reports whether ev is the first ready state of a start,
// written in the background (persistLater).
func firstReady(ev *apiv1.Event) bool { return ev.To.Ready() && startStep(ev) }

// unsynced reports whether persist writes ev's record without fsync: a
// step of a start or of a restart.
func unsynced(ev *apiv1.Event) bool { return startStep(ev) || restartStep(ev) }

// syncedSoon reports whether ev's record, written without fsync, is
// fsynced in the background right after: the loading step and the last
// step of a start (its first ready state), and each step of a restart. The
// spawning step is followed by the loading one.
func syncedSoon(ev *apiv1.Event) bool {
	return ev.To == state.Loading || ev.To.Ready() && startStep(ev) || restartStep(ev)
}

// restartStep reports whether ev may be a step of a restart: to failed
// (a restart may follow) or to backoff.
func restartStep(ev *apiv1.Event) bool { return ev.To == state.Failed || ev.To == state.Backoff }

// forget deletes a pruned worker's record.
func (h *Hive) forget(id string) {
	if h.forgetHook != nil {
		h.forgetHook(id)
		return
	}
	h.order.Delete(id)
	if h.store == nil {
		return
	}
	if err := h.store.Delete(id); err != nil {
		h.log.Warn("Deleting worker state failed", "worker_id", id, "error", err)
	}
}

// Recover re-adopts the workers recorded in the state directory by an
// earlier hive, then kills every process and cgroup of this hive that no
// worker accounts for. Call it once, after New and before the API serves
// (workers' callbacks wait in the listen backlog meanwhile). It blocks for
// the verification (a few /proc reads per worker) and for killing orphans
// (bounded by ctx and a few seconds each). Recovering never fails the hive:
// a corrupt state file is moved aside and logged, and the hive starts.
//
// The steps, in this order so that nothing recovered is mistaken for an
// orphan and no orphan survives:
//
//  1. Load the records (corrupt files are moved aside).
//  2. supervisor.Adopt each: verify the live ones (PID + start time + boot
//     id, cgroup), keep the ended ones visible, drop those past retention.
//     Nothing runs yet.
//  3. Kill orphan cgroups: worker cgroups under the hive's scope that are
//     neither an adopted worker's nor a dead worker's left to clean up.
//  4. Kill orphan processes: processes carrying this hive's marker that are
//     not an adopted process, nor in its process group, cgroup or subtree.
//     Each is verified (pidfd, start time, marker) before the SIGKILL.
//  5. Register and start the adopted workers: supervision resumes, dead
//     ones are recorded failed and restarted per policy.
func (h *Hive) Recover(ctx context.Context) (Recovery, error) {
	start := time.Now()
	var r Recovery
	if h.store == nil {
		return r, errors.New("hive: recover: no store")
	}
	recs, bad, err := h.store.Load()
	r.Corrupt = len(bad)
	if err != nil {
		// The directory is unreadable: start empty, but still clean up.
		h.log.Error("Reading the worker state failed; starting without it", "error", err)
	}
	d := h.deps()
	var adopted []*supervisor.Adoption
	for _, rec := range recs {
		id := rec.Info.ID
		if rec.Info.State.Ended() && rec.Info.EndedAt != nil && time.Since(*rec.Info.EndedAt) > h.cfg.Retention.MaxAge.D() {
			r.Expired++
			h.forget(id)
			continue
		}
		rec.Spec.HiveURL, rec.Spec.Marker = h.hiveURL, h.marker
		a, err := supervisor.Adopt(d, rec)
		if err != nil {
			h.log.Error("Cannot re-create worker; its process (if any) is treated as an orphan", "worker_id", id, "error", err)
			continue
		}
		adopted = append(adopted, a)
		switch {
		case a.Alive():
			r.Adopted++
		case rec.Info.State == state.Backoff:
			r.Backoff++
		case rec.Info.State.Ended():
			r.Retained++
		default:
			r.Died++
			if strings.Contains(a.Why(), "another process") {
				h.log.Warn("Recorded PID now belongs to another process; not touching it", "worker_id", id,
					"pid", rec.Info.PID, "why", a.Why())
			}
		}
	}

	r.OrphanCgroups = h.killOrphanCgroups(ctx, adopted)
	r.OrphanPIDs = h.killOrphanProcs(ctx, adopted)

	h.mu.Lock()
	for _, a := range adopted {
		h.workers[a.Worker().ID()] = a.Worker()
	}
	h.mu.Unlock()
	for _, a := range adopted {
		a.Start()
	}
	// The orphan cleanup is done: the first cold start's cgroup may be made.
	h.refillSpare()
	r.Took = time.Since(start)
	if len(recs) > 0 || r.Corrupt > 0 || len(r.OrphanPIDs) > 0 || len(r.OrphanCgroups) > 0 {
		h.log.Info(fmt.Sprintf("Recovered %d workers", len(adopted)), "adopted", r.Adopted, "died_while_down", r.Died,
			"backoff", r.Backoff, "retained", r.Retained, "expired", r.Expired, "corrupt_files", r.Corrupt,
			"orphan_pids", len(r.OrphanPIDs), "orphan_cgroups", len(r.OrphanCgroups), "took", r.Took.String())
	}
	return r, nil
}

// killOrphanCgroups kills and removes every worker cgroup under the hive's
// scope that no adoption manages.
func (h *Hive) killOrphanCgroups(ctx context.Context, adopted []*supervisor.Adoption) []string {
	if h.cgroups == nil {
		return nil
	}
	ids, err := h.cgroups.List()
	if err != nil {
		h.log.Warn("Listing worker cgroups failed; orphan cgroups not checked", "error", err)
		return nil
	}
	known := map[string]bool{}
	for _, a := range adopted {
		if id := a.CgroupID(); id != "" {
			known[id] = true
		}
	}
	var killed []string
	for _, id := range ids {
		if known[id] {
			continue
		}
		g, err := h.cgroups.Open(id)
		if err != nil {
			continue
		}
		pids, _ := g.Pids()
		h.log.Warn("Killing orphan worker cgroup", "cgroup", id, "pids", pids, "reason", "orphan")
		if err := g.Kill(); err != nil {
			h.log.Warn("Killing orphan cgroup failed", "cgroup", id, "error", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := g.WaitEmpty(wctx); err != nil {
			h.log.Error("Orphan cgroup not empty after kill", "cgroup", id, "error", err)
		}
		cancel()
		if err := g.Remove(); err != nil {
			h.log.Warn("Removing orphan cgroup failed", "cgroup", id, "error", err)
		}
		killed = append(killed, id)
	}
	return killed
}

// killOrphanProcs SIGKILLs every live process carrying this hive's marker
// that no adopted worker accounts for, in rounds until none is left (an
// orphan may fork while dying). It returns the PIDs killed.
func (h *Hive) killOrphanProcs(ctx context.Context, adopted []*supervisor.Adoption) []int {
	pids := map[int]bool{}
	pgids := map[int]bool{}
	inCgroup := map[int]bool{}
	for _, a := range adopted {
		if !a.Alive() {
			continue
		}
		pid, pgid := a.PID()
		pids[pid] = true
		if pgid == pid {
			pgids[pgid] = true // it leads its group: the group is its tree
		}
		for _, p := range a.CgroupPids() {
			inCgroup[p] = true
		}
	}
	owned := func(pid int) bool {
		if pids[pid] || inCgroup[pid] {
			return true
		}
		ppid, pgid, ok := parentAndGroup(pid)
		if !ok {
			return true // gone: nothing to kill
		}
		if pgids[pgid] {
			return true
		}
		for range 64 { // a descendant of an adopted worker
			if ppid <= 1 {
				return false
			}
			if pids[ppid] {
				return true
			}
			if ppid, _, ok = parentAndGroup(ppid); !ok {
				return false
			}
		}
		return false
	}
	boot, err := process.BootID()
	if err != nil {
		h.log.Error("Cannot read the boot id; orphan processes not checked", "error", err)
		return nil
	}
	self := os.Getpid()
	var killed []int
	for round := 0; round < 5 && ctx.Err() == nil; round++ {
		var procs []*process.Proc
		for _, pid := range process.FindByEnv(MarkerEnv, h.marker) {
			if pid == self || owned(pid) {
				continue
			}
			st, err := process.ReadStartTime(pid)
			if err != nil {
				continue
			}
			// Pin the process, then make sure the pinned one is the
			// marker carrier we found (not a recycled PID).
			p, err := process.Adopt(pid, st, boot)
			if err != nil {
				continue
			}
			if !hasEnv(pid, MarkerEnv+"="+h.marker) {
				p.Close()
				continue
			}
			h.log.Warn("Killing orphan worker process", "pid", pid, "reason", "orphan", "cmdline", cmdline(pid))
			if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, process.ErrGone) {
				h.log.Warn("Killing orphan failed", "pid", pid, "error", err)
			}
			procs = append(procs, p)
			killed = append(killed, pid)
		}
		if len(procs) == 0 {
			break
		}
		deadline := time.NewTimer(5 * time.Second)
		for _, p := range procs {
			select {
			case <-p.Done():
			case <-deadline.C:
			case <-ctx.Done():
			}
			p.Close()
		}
		deadline.Stop()
	}
	return killed
}

// parentAndGroup reads the parent PID and process group of pid from
// /proc/pid/stat; ok is false when the process is gone.
func parentAndGroup(pid int) (ppid, pgid int, ok bool) {
	st, err := procstat.Read("", pid)
	return st.PPID, st.PGRP, err == nil
}

func hasEnv(pid int, entry string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for e := range bytes.SplitSeq(b, []byte{0}) {
		if string(e) == entry {
			return true
		}
	}
	return false
}

func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	s := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
