package supervisor

// The end of an incarnation's tree: making sure no process is left and
// removing its cgroup. The common case is quick (the reaped process was the
// last one; one rmdir per hierarchy) and is done inline. What may take a
// while — waiting up to 5 s for a cgroup or process group to empty after
// SIGKILL, retrying an rmdir the kernel refuses for a moment — runs in a
// helper goroutine, so the owner keeps serving heartbeats, probes and
// reads; the helper's end comes back to the owner as an event
// (helperFinished), which then goes on. Lifecycle requests (stop, kill,
// restart, detach) that arrive meanwhile wait until then: they act on the
// state the cleanup leads to, as they did when the owner waited.

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/cgroup"
)

// treeWait bounds the wait for a killed tree to be gone.
const treeWait = 5 * time.Second

// testHoldCleanup, when set (tests), sends every tree cleanup to the helper
// and is called there first: a test holds the cleanup as long as it likes.
var testHoldCleanup func()

// lifecycle reports whether requests of kind k change the worker's
// lifecycle (and so wait for a cleanup under way).
func (k reqKind) lifecycle() bool {
	return k == reqStop || k == reqKill || k == reqRestart || k == reqDetach
}

// runHelper runs work in a helper goroutine and then, back in the owner,
// then. One helper at a time.
func (o *owner) runHelper(work func(), then func()) {
	if o.helperDone != nil {
		panic("supervisor: a cleanup helper is already running")
	}
	done := make(chan struct{})
	o.helperDone, o.afterHelper = done, then
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer close(done)
		work()
	}()
}

// helperFinished runs in the owner when the helper is done: what was to
// follow, then the requests that waited (unless another cleanup started).
func (o *owner) helperFinished() {
	then := o.afterHelper
	o.helperDone, o.afterHelper = nil, nil
	then()
	for len(o.deferred) > 0 && o.helperDone == nil && !o.finished {
		r := o.deferred[0]
		o.deferred = o.deferred[1:]
		r.reply <- o.handle(r)
	}
}

// cleanupTree makes sure no process of the worker's tree is left: SIGKILL to
// the group and the cgroup, and wait (bounded) until the cgroup (without
// one, the process group) is empty; then it closes the process handle and
// calls then. The cgroup's directories are removed later (removeCgroup),
// after the end has been announced: rmdir is not part of the stop.
func (o *owner) cleanupTree(then func()) {
	p, g := o.proc, o.cg
	if p != nil && p.GroupAlive() {
		_ = p.SignalGroup(syscall.SIGKILL)
	}
	// Usually the reaped process was the last one: one read of each
	// hierarchy's cgroup.procs (or one kill(-pgid, 0)) says so.
	left := false
	if g != nil {
		pids, err := g.Pids()
		left = err != nil || len(pids) > 0
	} else if p != nil {
		left = p.GroupAlive()
	}
	done := func() {
		if o.proc != nil {
			o.proc.Close()
			o.proc = nil
		}
		then()
	}
	hold := testHoldCleanup
	if !left && hold == nil {
		done()
		return
	}
	log := o.log.With("pid", o.cur.PID)
	o.runHelper(func() {
		if hold != nil {
			hold()
		}
		if left {
			waitTreeGone(p, g, log)
		}
	}, done)
}

// waitTreeGone kills what is left of a tree and waits, bounded, until it is
// gone. It runs in the helper; it uses p and g only through their
// concurrency-safe methods.
func waitTreeGone(p proc, g *cgroup.Group, log *slog.Logger) {
	if g != nil {
		_ = g.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), treeWait)
		defer cancel()
		if err := g.WaitEmpty(ctx); err != nil {
			log.Error("Worker cgroup not empty after kill", "error", err)
		}
		return
	}
	// No cgroup: nothing notifies the end of a process group, so look
	// again, 1 ms at first, less often the longer it takes.
	deadline := time.Now().Add(treeWait)
	for d := time.Millisecond; p.GroupAlive(); d = min(2*d, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			log.Error("Worker process group still alive after SIGKILL", "pgid", p.ident().PGID)
			return
		}
		_ = p.SignalGroup(syscall.SIGKILL)
		time.Sleep(d)
	}
}

// removeCgroup removes the worker's cgroup, then calls then. One rmdir per
// hierarchy is done inline; when the kernel refuses one for a moment
// (EBUSY: the last exited process not yet let go of), the retries (up to
// 1 s) run in the helper.
func (o *owner) removeCgroup(then func()) {
	g := o.cg
	if g == nil {
		then()
		return
	}
	o.cg = nil
	err := g.RemoveNow()
	if err == nil || !errors.Is(err, syscall.EBUSY) {
		if err != nil {
			o.log.Warn("Removing worker cgroup failed", "error", err)
		}
		then()
		return
	}
	log := o.log
	o.runHelper(func() {
		if err := g.Remove(); err != nil {
			log.Warn("Removing worker cgroup failed", "error", err)
		}
	}, then)
}
