package process

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rbee/rbee-hive/internal/wallgrid"
)

// Orphan reaping.
//
// A process whose parent dies is re-parented to the nearest ancestor that is
// a "child subreaper" (BecomeSubreaper), or else to PID 1. Where PID 1 never
// reaps (some containers, CI), an orphan that exits stays a zombie forever
// unless that subreaper reaps it. The Reaper does, for every child of this
// process that no Proc is responsible for.
//
// The tracked-child set below is package-level on purpose: which processes
// are this process's children, and who may wait for them, is a property of
// the whole OS process, not of any value in it. Every Start in the process
// must register with the one Reaper-visible set, or a Reaper could steal a
// Proc's exit status.
//
// Ordering (the race a Reaper must never lose):
//
//  1. Start calls beginStart (starting++) before it forks.
//  2. The fork (syscall.StartProcess) returns the child's PID; the child
//     may already have exited by then. Go's own fork code may also wait for
//     the child when exec fails.
//  3. Start calls endStart(pid): in one critical section it adds pid to
//     tracked and decrements starting.
//  4. The Proc's watcher reaps the child itself, then calls untrackChild
//     (failure paths of Start do the same after reaping).
//
// The Reaper waits for a child only while holding trackMu, and only when
// starting == 0 and the PID is not tracked. With trackMu held and no start
// in flight, every child forked by Start is either tracked (steps 3–4) or
// already reaped by its owner, so an untracked child is one no Proc will
// wait for. While a start is in flight the Reaper cannot tell a fresh child
// from an orphan, so it leaves every untracked child alone and looks again
// shortly (reaperRetry).
//
// tracked counts references: after a watcher reaps PID n and before it
// untracks n, a new Start may already have been given n again.
var (
	trackMu  sync.Mutex
	tracked  = map[int]int{} // PID → number of owners; guarded by trackMu
	starting int             // forks in flight (steps 1–3); guarded by trackMu
)

// beginStart marks a fork in flight. Every call is paired with one endStart.
func beginStart() {
	trackMu.Lock()
	starting++
	trackMu.Unlock()
}

// endStart ends a fork begun with beginStart; pid > 0 is the child it
// created, which becomes tracked until untrackChild(pid).
func endStart(pid int) {
	trackMu.Lock()
	if pid > 0 {
		tracked[pid]++
	}
	starting--
	trackMu.Unlock()
}

// untrackChild says the owner of child pid has reaped it or given it up.
func untrackChild(pid int) {
	trackMu.Lock()
	if tracked[pid] <= 1 {
		delete(tracked, pid)
	} else {
		tracked[pid]--
	}
	trackMu.Unlock()
}

// BecomeSubreaper makes this process a child subreaper
// (prctl(PR_SET_CHILD_SUBREAPER)): a descendant orphaned by the death of its
// parent (a worker's leaked grandchild) is re-parented to this process
// instead of PID 1, so a Reaper here can reap it and the hive can still see
// it. Call it once, early in main; it lasts for the life of the process and
// is not inherited by children. It does not block.
//
// It does not help with a process whose parent died before this process
// became its ancestor's subreaper — a worker left by a previous hive run is
// the child of PID 1 (or of a subreaper above the hive) for good.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("process: become child subreaper: %w", err)
	}
	return nil
}

// reaperInterval is the backstop period of a Reaper: a round runs this often
// even without SIGCHLD (signals coalesce, and a listing can miss a child
// moving between threads). Rare: every SIGCHLD runs a round, a zombie left
// for the backstop is harmless meanwhile, and an idle hive should not wake
// up (each round reads a file per thread) for nothing.
const reaperInterval = 30 * time.Second

// reaperRetry is how soon a Reaper looks again after a round that had to
// leave an exited child unreaped because a Start was in flight.
const reaperRetry = 10 * time.Millisecond

// Reaper reaps the exited children of this process that no Proc started by
// Start is responsible for: orphans re-parented here (see BecomeSubreaper)
// and children a Proc was closed on before they exited. It never waits for a
// child a live Proc watches, so Procs keep their exit status.
//
// While a Reaper runs, nothing else in the process may fork and wait for its
// own children by PID (os/exec, os.StartProcess, syscall.ForkExec): the
// Reaper would reap them first and their Wait would fail with ECHILD. In the
// hive, Start is the only spawn.
//
// Create it with StartReaper; stop it with Close. Safe for concurrent use.
type Reaper struct {
	log  *slog.Logger
	list func() ([]int, error) // this process's children

	sigs chan os.Signal
	quit chan struct{}
	done chan struct{} // closed when the goroutine has returned

	closeOnce sync.Once

	escMu  sync.Mutex
	marker [2]string // key, value: kill escapes carrying it (escaped.go); empty: none
}

// StartReaper starts a Reaper: one goroutine that, on every SIGCHLD this
// process receives and at least every couple of seconds, lists this
// process's children and reaps (wait4 WNOHANG, one PID at a time) each one
// that has exited and is not tracked by a Proc. Each reaped child is logged
// at debug level with its PID and exit status; a nil log discards them. A
// first round runs at once, reaping what exited before the Reaper started.
// It does not block. Pair it with BecomeSubreaper, which is what makes
// orphans this process's children.
func StartReaper(log *slog.Logger) (*Reaper, error) {
	return startReaper(log, reaperInterval)
}

func startReaper(log *slog.Logger, interval time.Duration) (*Reaper, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	list := childrenFromTasks
	if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children"); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("process: start reaper: %w", err)
		}
		// Kernel built without CONFIG_PROC_CHILDREN.
		list = childrenFromStat
	}
	r := &Reaper{
		log:  log,
		list: list,
		sigs: make(chan os.Signal, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go r.run(interval)
	return r, nil
}

// Close stops the Reaper and returns once its goroutine has ended. Children
// that exit afterwards are not reaped (until another Reaper runs). It is
// idempotent and safe for concurrent use.
func (r *Reaper) Close() {
	r.closeOnce.Do(func() {
		signal.Stop(r.sigs)
		close(r.quit)
	})
	<-r.done
}

func (r *Reaper) run(interval time.Duration) {
	defer close(r.done)
	// The backstop rounds fall on a wall-clock grid of the interval, as the
	// hive's health probes do, so an idle hive wakes up once for both.
	tick := time.NewTimer(wallgrid.Until(interval))
	defer tick.Stop()
	retry := time.NewTimer(time.Hour) // armed only after a deferred reap
	retry.Stop()
	defer retry.Stop()
	for {
		if r.round() {
			retry.Reset(reaperRetry)
		}
		select {
		case <-r.quit:
			return
		case <-r.sigs:
		case <-tick.C:
			tick.Reset(wallgrid.Until(interval))
		case <-retry.C:
		}
	}
}

// round is one pass: list the children, reap every exited untracked one. It
// reports whether an exited child had to be left because a Start was in
// flight (so the caller should look again soon).
func (r *Reaper) round() (again bool) {
	pids, err := r.list()
	if err != nil {
		r.log.Warn("reaper: cannot list children", "err", err)
		return false
	}
	for _, pid := range pids {
		ex, reaped, deferred := reapIfOrphan(pid)
		again = again || deferred
		if reaped {
			r.log.Debug("reaped orphan", "pid", pid, "exit", ex.String())
		} else if !deferred && r.killIfEscaped(pid) {
			again = true // reap it soon
		}
	}
	return again
}

// reapIfOrphan reaps child pid when it has exited and no Proc owns it. It
// reports how it ended and whether it was reaped; deferred is true when it
// has exited but could not be told apart from a child of a Start in flight.
func reapIfOrphan(pid int) (ex Exit, reaped, deferred bool) {
	trackMu.Lock()
	if tracked[pid] > 0 {
		trackMu.Unlock()
		return Exit{}, false, false
	}
	if starting > 0 {
		trackMu.Unlock()
		st, err := readStat(pid)
		return Exit{}, false, err == nil && st.PPID == os.Getpid() && st.Dead()
	}
	defer trackMu.Unlock()
	var ws syscall.WaitStatus
	var ru syscall.Rusage
	for {
		wpid, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, &ru)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil || wpid != pid:
			// ECHILD: not (or no longer) our child; 0: still running.
			return Exit{}, false, false
		default:
			return exitFromStatus(ws, &ru, time.Now()), true, false
		}
	}
}

// childrenFromTasks lists this process's children from
// /proc/self/task/*/children: a child belongs to the thread that forked it,
// or, for an orphan, to whichever thread it was re-parented to.
func childrenFromTasks() ([]int, error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			continue // the thread exited; its children moved to another one
		}
		for f := range bytes.FieldsSeq(b) {
			if pid, err := strconv.Atoi(string(f)); err == nil && pid > 0 {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}

// childrenFromStat lists this process's children by scanning /proc/*/stat
// for a parent PID equal to ours (slower; for kernels without
// /proc/PID/task/TID/children).
func childrenFromStat() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if st, err := readStat(pid); err == nil && st.PPID == self {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// StartCmd starts cmd (like cmd.Start) so that a running Reaper never
// reaps it: its pid is tracked from the fork on. Wait for it with WaitCmd.
// Code that runs a Reaper must start every os/exec child this way.
func StartCmd(cmd *exec.Cmd) error {
	beginStart()
	if err := cmd.Start(); err != nil {
		endStart(0)
		return err
	}
	endStart(cmd.Process.Pid)
	return nil
}

// WaitCmd waits for a command started with StartCmd and stops tracking it.
func WaitCmd(cmd *exec.Cmd) error {
	err := cmd.Wait()
	untrackChild(cmd.Process.Pid)
	return err
}

// RunCmd is StartCmd then WaitCmd, collecting combined output when
// cmd.Stdout and cmd.Stderr are unset.
func RunCmd(cmd *exec.Cmd) ([]byte, error) {
	var buf bytes.Buffer
	if cmd.Stdout == nil && cmd.Stderr == nil {
		cmd.Stdout, cmd.Stderr = &buf, &buf
	}
	if err := StartCmd(cmd); err != nil {
		return nil, err
	}
	err := WaitCmd(cmd)
	return buf.Bytes(), err
}
