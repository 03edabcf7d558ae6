// Package process is the one place in rbee-hive that creates, watches and
// signals operating-system processes: the single spawn recipe (own process
// group, optional cgroup, fixed stdio, pidfd from clone) and a handle, Proc,
// that reports a process's exit without polling and without a blocked thread.
//
// Nothing else in the hive forks, waits for or signals processes.
//
// Exit detection: every Proc holds a pidfd. The pidfd is non-blocking and
// registered with the Go runtime's network poller, so one parked goroutine per
// process (not one OS thread) waits for it to become readable, which the
// kernel makes happen the moment the process exits. For a process started by
// Start, that goroutine then reaps it with wait4 and records the exit code or
// signal; for an adopted process (Adopt) the exit is recorded as unknown.
//
// Signals: Signal goes through pidfd_send_signal, so it can never reach a
// process that merely reuses the PID. SignalGroup uses kill(-pgid); see its
// doc for the (narrow) guarantee it gives.
//
// Orphans: a process whose parent dies is re-parented to PID 1, which on
// some hosts never reaps. BecomeSubreaper makes this process their new
// parent instead, and a Reaper (StartReaper) reaps every exited child that
// no Proc owns, without ever taking a Proc's exit status.
//
// Programs that Start with Spec.JoinProcs or Spec.Nofile set are stopped by
// the kernel right after their exec (ptrace) while Start joins them to their
// cgroups and sets the limit (traced.go). Where ptrace is denied they are
// launched through a shim instead: the current executable re-executed with a
// private first argument. Every binary that starts such processes
// (cmd/rbee-hive, and the test binaries of packages that do) must call
// LauncherMain first thing in main (or TestMain).
package process

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rbee/rbee-hive/internal/procstat"
)

// Sentinel errors. Errors returned by this package wrap them; test with
// errors.Is.
var (
	// ErrGone: the process (or, for SignalGroup, every process of the group)
	// no longer exists.
	ErrGone = errors.New("process gone")
	// ErrNotSame: the PID now names a different process than the one
	// recorded (other boot, other start time), or never named it.
	ErrNotSame = errors.New("not the same process")
	// ErrClosed: the Proc was closed; it no longer signals anything.
	ErrClosed = errors.New("process handle closed")
	// ErrNotLeader: SignalGroup was asked of a process that does not lead
	// its own process group (possible only for an adopted process), or whose
	// group is the caller's own.
	ErrNotLeader = errors.New("process does not lead its own process group")
	// ErrInvalidSpec: Start was given a Spec it cannot run (relative path…).
	ErrInvalidSpec = errors.New("invalid process spec")
)

// Spec says how to start one process. The zero value is not runnable: Path is
// required.
type Spec struct {
	// Path is the absolute path of the program to execute. Required. No
	// PATH search is done.
	Path string
	// Args is the full argv, including argv[0]. Nil or empty means
	// []string{Path}.
	Args []string
	// Env is the complete environment, "KEY=VALUE" each. Nil means an empty
	// environment (the parent's environment is never inherited implicitly).
	Env []string
	// Dir is the working directory. Empty means the caller's.
	Dir string
	// Stdout and Stderr become the child's fds 1 and 2 (the hive passes an
	// O_APPEND log file; never a pipe to the hive). Nil means /dev/null.
	// They may be the same file. Start does not keep or close them.
	// Stdin is always /dev/null.
	Stdout, Stderr *os.File
	// CgroupFD, when > 0, is an open cgroup v2 directory fd: the child is
	// created directly inside that cgroup (clone3 CLONE_INTO_CGROUP), so it
	// never runs a single instruction outside it. 0 or negative: none.
	CgroupFD int
	// JoinProcs lists cgroup v1 "cgroup.procs" files the process joins
	// before the target program runs its first instruction (at the exec
	// stop, or through the launcher shim where ptrace is denied).
	JoinProcs []string
	// JoinAfter lists cgroup v1 "cgroup.procs" files the process is moved
	// into right after its exec, from the outside and without stopping
	// it: for cgroups that only account (no limit to enforce), so the
	// program's first instructions, or a child it forks at once, may run
	// outside them. Start opens the files (a missing one fails it) and
	// returns; the moves finish in the background (Proc.Joined), so they
	// cost the start nothing (JoinProcs stops the program until it has
	// joined).
	JoinAfter []string
	// Nofile, when > 0, sets RLIMIT_NOFILE (soft and hard) of the target
	// program before it runs (like JoinProcs). 0 means inherited (Go's
	// original soft limit).
	Nofile uint64
	// Credential, when not nil, is the user and groups the program runs
	// as (set after the cgroup joins and the rlimit, before exec). Nil:
	// this process's own.
	Credential *syscall.Credential
}

// usesLauncher reports whether the start needs the exec stop or the shim.
func (s Spec) usesLauncher() bool { return len(s.JoinProcs) > 0 || s.Nofile > 0 }

// Exit is how a process ended. The zero value means "not ended yet".
type Exit struct {
	// Known is true when the code or signal below is known: always for a
	// process started by Start (this process reaped it), never for an
	// adopted one (its parent reaps it, and only the parent learns how it
	// ended).
	Known bool
	// Code is the exit status when the process called exit; nil when it
	// was killed by a signal or when !Known.
	Code *int
	// Signal is the signal that killed the process; 0 when it exited
	// normally or when !Known.
	Signal syscall.Signal
	// CoreDumped is true when the killing signal produced a core dump.
	CoreDumped bool
	// At is when the exit was observed (within a millisecond or so of the
	// actual exit).
	At time.Time
	// Rusage is the resource usage of the process and its waited-for
	// children; nil when !Known.
	Rusage *syscall.Rusage
}

// String describes the exit for logs: "exit code 3", "signal killed",
// "exited (status unknown)".
func (e Exit) String() string {
	switch {
	case !e.Known:
		return "exited (status unknown)"
	case e.Code != nil:
		return "exit code " + strconv.Itoa(*e.Code)
	default:
		s := "signal " + e.Signal.String()
		if e.CoreDumped {
			s += " (core dumped)"
		}
		return s
	}
}

func exitFromStatus(ws syscall.WaitStatus, ru *syscall.Rusage, at time.Time) Exit {
	e := Exit{Known: true, At: at, Rusage: ru}
	switch {
	case ws.Exited():
		c := ws.ExitStatus()
		e.Code = &c
	case ws.Signaled():
		e.Signal = ws.Signal()
		e.CoreDumped = ws.CoreDump()
	}
	return e
}

// Proc is a handle on one process, identified for good by its pidfd and by
// (PID, StartTime, BootID). Create it with Start or Adopt; release it with
// Close. The exported fields are set once at creation and must not be
// modified. All methods are safe for concurrent use.
type Proc struct {
	// PID is the process id.
	PID int
	// PGID is the process group id. For a started process it equals PID.
	PGID int
	// StartTime is the process start time in clock ticks since boot
	// (/proc/PID/stat field 22). With BootID and PID it names the process
	// uniquely; record all three to Adopt it later.
	StartTime uint64
	// BootID identifies the boot the process runs in.
	BootID string
	// Child is true when this process started it (and so reaps it and
	// knows its exit status).
	Child bool

	file *os.File        // the pidfd, non-blocking, registered with the poller
	rc   syscall.RawConn // file's RawConn

	done    chan struct{} // closed once the exit is recorded in exit
	exit    Exit
	stopped chan struct{} // closed when the watch goroutine has returned

	joined  chan struct{} // closed once the JoinAfter cgroups are joined; nil: none
	joinErr error         // set before joined is closed

	closeOnce sync.Once
	closeErr  error
	closedMu  sync.RWMutex
	closed    bool
}

// Done returns a channel closed the moment the process has exited (and, for
// a child, been reaped). It is never closed if Close is called first.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exit returns how the process ended. It is the zero Exit until Done is
// closed. It does not block.
func (p *Proc) Exit() Exit {
	select {
	case <-p.done:
		return p.exit
	default:
		return Exit{}
	}
}

// Exited reports whether Done is closed.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process itself (not its group) through its pidfd,
// so it can never reach another process that reuses the PID. It returns an
// error wrapping ErrGone once the process has exited, ErrClosed after Close.
// It does not block.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("process: signal %d %v: %w", p.PID, sig, ErrGone)
	}
	p.closedMu.RLock()
	defer p.closedMu.RUnlock()
	if p.closed {
		return fmt.Errorf("process: signal %d %v: %w", p.PID, sig, ErrClosed)
	}
	var serr error
	if err := p.rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), sig, nil, 0)
	}); err != nil {
		return fmt.Errorf("process: signal %d %v: %w", p.PID, sig, ErrClosed)
	}
	if errors.Is(serr, syscall.ESRCH) {
		return fmt.Errorf("process: signal %d %v: %w", p.PID, sig, ErrGone)
	}
	if serr != nil {
		return fmt.Errorf("process: signal %d %v: %w", p.PID, sig, serr)
	}
	return nil
}

// SignalGroup sends sig to every process in the process group the process
// leads (kill(-PGID, sig)), including after the leader itself has exited
// while other members remain. It returns an error wrapping ErrGone when the
// group has no member left (ESRCH), ErrClosed after Close, and ErrNotLeader
// when the process is not the leader of its group or its group is the
// caller's own. It does not block.
//
// Reach: only the group. A descendant that called setsid or setpgid has left
// it and is not signalled; the cgroup (cgroup.kill) is what covers those.
//
// Safety: while the leader is unreaped (Done not closed) its PID, and so the
// group id, cannot be reused. After Done the id stays reserved only while
// some member remains. Once the group has emptied SignalGroup normally gets
// ESRCH (ErrGone); in theory, after a full wrap-around of the PID counter,
// an unrelated process could by then hold the same number as its own group
// id. So callers stop signalling the group once it returns ErrGone or
// GroupAlive reports false.
func (p *Proc) SignalGroup(sig syscall.Signal) error {
	p.closedMu.RLock()
	defer p.closedMu.RUnlock()
	if p.closed {
		return fmt.Errorf("process: signal group %d %v: %w", p.PGID, sig, ErrClosed)
	}
	if p.PGID <= 1 || p.PGID != p.PID || p.PGID == syscall.Getpgrp() {
		return fmt.Errorf("process: signal group %d of %d %v: %w", p.PGID, p.PID, sig, ErrNotLeader)
	}
	err := syscall.Kill(-p.PGID, sig)
	if errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("process: signal group %d %v: %w", p.PGID, sig, ErrGone)
	}
	if err != nil {
		return fmt.Errorf("process: signal group %d %v: %w", p.PGID, sig, err)
	}
	return nil
}

// GroupAlive reports whether any process is left in the process group
// (kill(-PGID, 0) succeeds). A leader that has exited but is not yet reaped
// still counts; for a started process that window ends when Done closes.
// It does not block.
func (p *Proc) GroupAlive() bool {
	if p.PGID <= 1 {
		return false
	}
	err := syscall.Kill(-p.PGID, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Close stops watching the process and releases the pidfd. It is idempotent
// and returns when the watching goroutine has ended. Close does not signal
// the process. Call it after Done: the exit status of a child that exits
// after Close is lost — a running Reaper reaps it; without one it stays a
// zombie until the hive exits.
func (p *Proc) Close() error {
	p.closeOnce.Do(func() {
		p.closedMu.Lock()
		p.closed = true
		p.closedMu.Unlock()
		p.closeErr = p.file.Close() // wakes the watcher's RawConn.Read
		<-p.stopped
	})
	return p.closeErr
}

// String is "pid 123" for logs.
func (p *Proc) String() string { return "pid " + strconv.Itoa(p.PID) }

// newProc wraps pidfd (taking ownership) and starts the watch goroutine.
func newProc(pid, pgid int, startTime uint64, bootID string, child bool, pidfd int, join []*os.File) (*Proc, error) {
	if err := syscall.SetNonblock(pidfd, true); err != nil {
		closeAll(join)
		syscall.Close(pidfd)
		return nil, fmt.Errorf("process: pidfd of %d: set non-blocking: %w", pid, err)
	}
	f := os.NewFile(uintptr(pidfd), "pidfd:"+strconv.Itoa(pid))
	rc, err := f.SyscallConn()
	if err != nil {
		closeAll(join)
		f.Close()
		return nil, fmt.Errorf("process: pidfd of %d: %w", pid, err)
	}
	p := &Proc{
		PID: pid, PGID: pgid, StartTime: startTime, BootID: bootID, Child: child,
		file: f, rc: rc,
		done: make(chan struct{}), stopped: make(chan struct{}),
	}
	if len(join) > 0 {
		p.joined = make(chan struct{})
		go p.joinAfter(join)
	}
	go p.watch()
	return p, nil
}

// openJoinAfter opens spec.JoinAfter's files for writing, so that a missing
// cgroup, or one the hive may not write, fails the start at once. The
// writes themselves are left to Proc.joinAfter: moving a process into a v1
// cgroup waits for an RCU grace period (about 5 ms on a VM), which Start
// would otherwise add to every worker's start.
func openJoinAfter(files []string) ([]*os.File, error) {
	var out []*os.File
	for _, procs := range files {
		f, err := os.OpenFile(procs, os.O_WRONLY, 0)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("join cgroup %s: %w", procs, err)
		}
		out = append(out, f)
	}
	return out, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// joinAfter moves the started child into the accounting cgroups whose
// cgroup.procs files are open in fs, in the background; a move that fails
// kills the child (Start would have failed). The child cannot be reaped
// before this ends (watch waits for it), so its PID cannot have been
// reused.
func (p *Proc) joinAfter(fs []*os.File) {
	defer close(p.joined)
	spid := []byte(strconv.Itoa(p.PID))
	for _, f := range fs {
		_, err := f.Write(spid)
		f.Close()
		if err != nil && !errors.Is(err, syscall.ESRCH) && p.joinErr == nil { // ESRCH: it has exited already
			p.joinErr = fmt.Errorf("join cgroup %s: %w", f.Name(), err)
		}
	}
	if p.joinErr != nil {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
	}
}

// Joined returns a channel closed once the process has been moved into the
// accounting cgroups of Spec.JoinAfter (at once when there were none).
// JoinErr says whether that failed (the process was then killed).
func (p *Proc) Joined() <-chan struct{} {
	if p.joined == nil {
		return closedChan
	}
	return p.joined
}

// JoinErr is the error of the background cgroup join, once Joined is
// closed; nil before.
func (p *Proc) JoinErr() error {
	select {
	case <-p.Joined():
		return p.joinErr
	default:
		return nil
	}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// watch is the one goroutine per Proc that observes the exit. It parks in the
// network poller until the pidfd is readable, records the exit and closes
// done; or returns without closing done when Close closes the pidfd first.
//
// For a child, the watcher is what keeps a Reaper away from it: when watch
// returns, the child has been reaped here or (Close) given up, and it is
// untracked so that a Reaper reaps it once it exits.
func (p *Proc) watch() {
	defer close(p.stopped)
	if p.Child {
		defer untrackChild(p.PID)
	}
	if p.joined != nil {
		<-p.joined // no reap (which frees the PID) while a join may still write it
	}
	var ex Exit
	err := p.rc.Read(func(fd uintptr) bool {
		var ok bool
		ok, ex = p.check(int(fd))
		return ok
	})
	if err != nil {
		if p.isClosed() {
			return
		}
		// The pidfd could not be registered with the poller (pidfds are
		// pollable since Linux 5.3). Fall back to a blocking poll, which
		// costs a thread, rather than lose the exit.
		if !p.pollBlocking(&ex) {
			return
		}
	}
	p.exit = ex
	close(p.done)
}

// pollBlocking waits for the exit with blocking poll(2) calls, bounded so a
// Close is noticed. It reports false when Close ended the wait.
func (p *Proc) pollBlocking(ex *Exit) bool {
	for !p.isClosed() {
		var ok bool
		err := p.rc.Control(func(fd uintptr) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			_, _ = unix.Poll(pfd, 100)
			ok, *ex = p.check(int(fd))
		})
		if err != nil {
			return false
		}
		if ok {
			return true
		}
	}
	return false
}

func (p *Proc) isClosed() bool {
	p.closedMu.RLock()
	defer p.closedMu.RUnlock()
	return p.closed
}

// check reports whether the process has exited, and if so how. For a child
// it reaps it (wait4 WNOHANG: safe, an unreaped PID cannot be reused).
func (p *Proc) check(pidfd int) (bool, Exit) {
	if p.Child {
		var ws syscall.WaitStatus
		var ru syscall.Rusage
		for {
			wpid, err := syscall.Wait4(p.PID, &ws, syscall.WNOHANG, &ru)
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case err != nil:
				// ECHILD: someone else reaped it. It is gone; how is unknown.
				return true, Exit{At: time.Now()}
			case wpid == 0:
				return false, Exit{}
			default:
				return true, exitFromStatus(ws, &ru, time.Now())
			}
		}
	}
	pfd := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, 0)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || n == 0 || pfd[0].Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLERR) == 0 {
			return false, Exit{}
		}
		return true, Exit{At: time.Now()}
	}
}

// Start starts the process spec describes, in a new process group whose id
// is its PID, with a pidfd obtained atomically from clone, and returns its
// handle. It blocks until the target program has been executed or has
// failed to start (for a launcher start, until the shim has exec'd it). When
// the program cannot be started, Start returns an error naming spec.Path
// (wrapping the errno, so errors.Is(err, fs.ErrNotExist) works) and leaves
// no process behind. Safe for concurrent use.
//
// The child gets exactly fds 0, 1 and 2: to guarantee it, Start marks every
// descriptor >= 3 of the calling process close-on-exec (see
// closeOnExecInherited; Go's own descriptors already are).
//
// The child has no parent-death signal: it survives a crash of the hive,
// which re-adopts it later (Adopt).
func Start(spec Spec) (*Proc, error) {
	if !filepath.IsAbs(spec.Path) {
		return nil, fmt.Errorf("process: start %q: path must be absolute: %w", spec.Path, ErrInvalidSpec)
	}
	if spec.Dir != "" {
		// Checked here only for a clearer message: the child's chdir
		// failure would come back as a bare errno.
		if fi, err := os.Stat(spec.Dir); err != nil {
			return nil, fmt.Errorf("process: start %s: dir: %w", spec.Path, err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("process: start %s: dir %s: %w", spec.Path, spec.Dir, syscall.ENOTDIR)
		}
	}
	bootID, err := BootID()
	if err != nil {
		return nil, fmt.Errorf("process: start %s: %w", spec.Path, err)
	}
	argv0, argv := spec.Path, spec.Args
	if len(argv) == 0 {
		argv = []string{spec.Path}
	}

	if err := closeOnExecInherited(); err != nil {
		return nil, fmt.Errorf("process: start %s: %w", spec.Path, err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("process: start %s: %w", spec.Path, err)
	}
	defer devnull.Close()
	files := []*os.File{devnull, devnull, devnull}
	if spec.Stdout != nil {
		files[1] = spec.Stdout
	}
	if spec.Stderr != nil {
		files[2] = spec.Stderr
	}

	// Joins and limits at the exec stop where ptrace is allowed (traced.go);
	// else through the launcher shim.
	fellBack := false
	if spec.usesLauncher() && !traceDenied.Load() {
		p, err := startTraced(spec, argv, files, bootID)
		if !errors.Is(err, errTraceUnusable) {
			return p, err
		}
		fellBack = true
	}

	// The launcher reports failure on fd 3 (a close-on-exec pipe: EOF with
	// no data means the target program was exec'd).
	var statusR *os.File
	if spec.usesLauncher() {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("process: start %s: %w", spec.Path, err)
		}
		statusR = r
		defer r.Close()
		defer w.Close()
		files = append(files, w)
		lo := launchOptions{Path: spec.Path, JoinProcs: spec.JoinProcs, Nofile: spec.Nofile, StatusFD: 3}
		if c := spec.Credential; c != nil {
			lo.Cred = &launchCred{Uid: c.Uid, Gid: c.Gid, Groups: append([]uint32{}, c.Groups...)}
		}
		enc, err := encodeLaunch(lo)
		if err != nil {
			return nil, fmt.Errorf("process: start %s: %w", spec.Path, err)
		}
		self, err := os.Executable()
		if err != nil {
			self = "rbee-launch"
		}
		// /proc/self/exe, resolved in the forked child, is this very binary
		// even if the file on disk has since been replaced or deleted.
		argv0 = "/proc/self/exe"
		argv = append([]string{self, launchArg, enc, "--"}, argv...)
	}

	pidfd := -1
	sys := &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd}
	if spec.CgroupFD > 0 {
		sys.UseCgroupFD = true
		sys.CgroupFD = spec.CgroupFD
	}
	if spec.Credential != nil && !spec.usesLauncher() {
		// The launcher shim must stay privileged for its cgroup joins and
		// rlimit; it drops to the credential itself.
		sys.Credential = spec.Credential
	}
	var pid int
	// The child is tracked (so a Reaper leaves it to us) from before the
	// fork until its owner has reaped it: see "Ordering" in reaper.go.
	beginStart()
	// The child is forked from this thread and inherits its no_new_privs:
	// set it here (idempotent, one-way, harmless to the hive, which never
	// execs anything to gain privileges), so no worker can gain privileges
	// through a set-user-ID program (SPEC §14). Go offers no SysProcAttr
	// field for it, and AllThreadsSyscall is unavailable with cgo.
	runtime.LockOSThread()
	nnpErr := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	err = withFDs(files, nil, func(fds []uintptr) error {
		var serr error
		pid, _, serr = syscall.StartProcess(argv0, argv, &syscall.ProcAttr{
			Dir:   spec.Dir,
			Env:   append([]string(nil), spec.Env...),
			Files: fds,
			Sys:   sys,
		})
		return serr
	})
	runtime.UnlockOSThread()
	if err != nil {
		pid = 0 // no child (Go's fork code reaped a failed one itself)
	}
	endStart(pid)
	if err == nil && nnpErr != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		reap(pid)
		untrackChild(pid)
		if pidfd >= 0 {
			syscall.Close(pidfd)
		}
		return nil, fmt.Errorf("process: start %s: set no_new_privs: %w", spec.Path, nnpErr)
	}
	if err != nil {
		if spec.CgroupFD > 0 {
			return nil, fmt.Errorf("process: start %s (into cgroup fd %d): %w", spec.Path, spec.CgroupFD, err)
		}
		return nil, fmt.Errorf("process: start %s: %w", spec.Path, err)
	}
	if pidfd < 0 {
		return nil, noPidfd(spec.Path, pid) // kernel without CLONE_PIDFD (< 5.2): we refuse to run blind
	}
	abort := func(cause error) (*Proc, error) { return nil, abortStart(spec.Path, pid, pidfd, cause) }
	if statusR != nil {
		files[3].Close() // our copy of the write end, so EOF comes on exec
		if err := readLaunchStatus(statusR); err != nil {
			return abort(err)
		}
	}
	p, err := finishStart(&spec, pid, pidfd, bootID)
	if err != nil {
		return nil, err
	}
	if fellBack {
		traceDenied.Store(true) // the shim worked where ptrace did not
	}
	return p, nil
}

// finishStart ends a start (plain or traced) once the child runs the
// worker: it opens the cgroups to join afterwards, reads the child's start
// time and makes its Proc. On an error the child is killed and reaped.
func finishStart(spec *Spec, pid, pidfd int, bootID string) (*Proc, error) {
	join, err := openJoinAfter(spec.JoinAfter)
	if err != nil {
		return nil, abortStart(spec.Path, pid, pidfd, err)
	}
	st, err := readStat(pid)
	if err != nil {
		closeAll(join)
		return nil, abortStart(spec.Path, pid, pidfd, err) // cannot happen for an unreaped child; be safe
	}
	p, err := newProc(pid, pid, st.StartTime, bootID, true, pidfd, join)
	if err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL) // pidfd is gone; the PID is still ours (unreaped)
		reap(pid)
		untrackChild(pid)
		return nil, fmt.Errorf("process: start %s: %w", spec.Path, err)
	}
	return p, nil
}

// closeOnExecInherited marks every descriptor >= 3 of this process
// close-on-exec. Go opens all of its own descriptors that way already; what
// this catches is descriptors the hive itself inherited without the flag
// (from a shell, a supervisor, a test runner), which would otherwise leak
// into every worker. Descriptors meant for a child are dup'd into place in
// the child and are not affected.
func closeOnExecInherited() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil || !errors.Is(err, syscall.ENOSYS) && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	// Linux < 5.11: one descriptor at a time.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= 3 {
			syscall.CloseOnExec(fd)
		}
	}
	return nil
}

// reap waits (blocking) for child pid, which must be exiting.
func reap(pid int) {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if !errors.Is(err, syscall.EINTR) {
			return
		}
	}
}

// withFDs calls fn with the raw descriptors of files, holding a reference on
// each (RawConn.Control) so none can be closed meanwhile, and without
// switching them to blocking mode as (*os.File).Fd would.
func withFDs(files []*os.File, fds []uintptr, fn func([]uintptr) error) error {
	if len(files) == 0 {
		return fn(fds)
	}
	rc, err := files[0].SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		ferr = withFDs(files[1:], append(fds, fd), fn)
	}); err != nil {
		return err
	}
	return ferr
}

// launchStatusTimeout bounds how long Start waits for the shim to exec the
// target. The shim only writes a few small files and calls setrlimit.
const launchStatusTimeout = 30 * time.Second

// readLaunchStatus reads the shim's status pipe to EOF. Nothing means the
// target was exec'd; otherwise the shim reported its failure.
func readLaunchStatus(r *os.File) error {
	if err := r.SetReadDeadline(time.Now().Add(launchStatusTimeout)); err != nil {
		return err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("launcher: reading status: %w", err)
	}
	if len(b) == 0 {
		return nil
	}
	return parseLaunchStatus(b)
}

// Adopt returns a handle on a running process this process did not start
// (typically a worker left by a previous hive run), after verifying it is
// the same process that was recorded:
//
//  1. the current boot id equals bootID, and /proc/pid/stat's start time
//     equals startTime — otherwise ErrNotSame; no such process, or only its
//     zombie, — ErrGone;
//  2. a pidfd is opened (pidfd_open);
//  3. the start time is read again, closing the race in which the process
//     exited and its PID was reused between 1 and 2.
//
// The process is never signalled or otherwise touched. Its exit is reported
// with Known false: its parent, not this process, reaps it. Adopt never
// reaps, even when pid happens to be a child of this process. It does not
// block. Safe for concurrent use.
func Adopt(pid int, startTime uint64, bootID string) (*Proc, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("process: adopt %d: %w", pid, ErrNotSame)
	}
	cur, err := BootID()
	if err != nil {
		return nil, fmt.Errorf("process: adopt %d: %w", pid, err)
	}
	if cur != bootID {
		return nil, fmt.Errorf("process: adopt %d: recorded in boot %s, this is boot %s: %w", pid, bootID, cur, ErrNotSame)
	}
	verify := func() (procstat.Stat, error) {
		st, err := readStat(pid)
		if err != nil {
			return st, fmt.Errorf("process: adopt %d: %w", pid, err)
		}
		if st.StartTime != startTime {
			return st, fmt.Errorf("process: adopt %d: start time %d, recorded %d: %w", pid, st.StartTime, startTime, ErrNotSame)
		}
		if st.Dead() {
			return st, fmt.Errorf("process: adopt %d: exited (state %c): %w", pid, st.State, ErrGone)
		}
		return st, nil
	}
	st, err := verify()
	if err != nil {
		return nil, err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, syscall.ESRCH) {
		return nil, fmt.Errorf("process: adopt %d: %w", pid, ErrGone)
	}
	if err != nil {
		return nil, fmt.Errorf("process: adopt %d: pidfd_open: %w", pid, err)
	}
	if _, err := verify(); err != nil {
		syscall.Close(pidfd)
		return nil, err
	}
	return newProc(pid, st.PGRP, startTime, bootID, false, pidfd, nil)
}

// noPidfd kills and reaps a child the kernel gave no pidfd for and says
// why the start failed.
func noPidfd(path string, pid int) error {
	_ = syscall.Kill(pid, syscall.SIGKILL)
	reap(pid)
	untrackChild(pid)
	return fmt.Errorf("process: start %s: kernel gave no pidfd: %w", path, syscall.ENOSYS)
}

// abortStart kills (through its pidfd: a stopped tracee too), reaps and
// forgets a child whose start failed after the clone, and wraps cause.
func abortStart(path string, pid, pidfd int, cause error) error {
	_ = unix.PidfdSendSignal(pidfd, syscall.SIGKILL, nil, 0)
	reap(pid)
	untrackChild(pid)
	syscall.Close(pidfd)
	return fmt.Errorf("process: start %s: %w", path, cause)
}
