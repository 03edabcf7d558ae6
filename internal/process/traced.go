package process

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The cgroup v1 joins and RLIMIT_NOFILE of a Spec are done, where ptrace is
// allowed, without the launcher shim: the child asks to be traced
// (PTRACE_TRACEME) before its exec, so the kernel stops it right after the
// exec, before the new program's first instruction; Start then writes its
// PID into the v1 cgroup.procs files and sets its limit (prlimit) from the
// outside, and lets it go (PTRACE_DETACH). The same guarantee as the shim —
// the program never runs an instruction outside its cgroups or above its
// limit — without re-executing the hive's own large binary first, whose Go
// start-up is most of what a launch costs (about 20 ms on a loaded machine
// against well under 1 ms for the stop, the writes and the detach).
//
// Where ptrace is denied (Yama ptrace_scope 3, a seccomp filter, a hive
// that is itself traced), the first such start falls back to the shim, and
// so does every later one.

// traceDenied is set once a traced start was refused while the shim worked.
var traceDenied atomic.Bool

// errTraceUnusable: the traced start was refused; use the shim.
var errTraceUnusable = errors.New("ptrace refused")

// startTraced starts spec (which uses the launcher) with the joins and the
// limit applied at the exec stop. It returns an error wrapping
// errTraceUnusable, with no process left, when the kernel refused the
// trace request.
func startTraced(spec Spec, argv []string, files []*os.File, bootID string) (*Proc, error) {
	// Every ptrace request must come from the thread that forked the
	// tracee, so the whole sequence stays on this thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	pidfd := -1
	sys := &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd, Ptrace: true}
	if spec.CgroupFD > 0 {
		sys.UseCgroupFD = true
		sys.CgroupFD = spec.CgroupFD
	}
	// The hive applies the joins and the limit from outside, so the child
	// may take the worker's credential in the fork itself.
	sys.Credential = spec.Credential
	var pid int
	beginStart()
	// no_new_privs for the child, as in Start (SPEC §14): it inherits it
	// from this (locked) thread.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		endStart(0)
		return nil, fmt.Errorf("process: start %s: set no_new_privs: %w", spec.Path, err)
	}
	err := withFDs(files, nil, func(fds []uintptr) error {
		var serr error
		pid, _, serr = syscall.StartProcess(spec.Path, argv, &syscall.ProcAttr{
			Dir:   spec.Dir,
			Env:   append([]string(nil), spec.Env...),
			Files: fds,
			Sys:   sys,
		})
		return serr
	})
	if err != nil {
		pid = 0
	}
	endStart(pid)
	switch {
	case errors.Is(err, syscall.EPERM):
		// PTRACE_TRACEME refused (or, rarely, the exec itself: the
		// shim's start then says so).
		return nil, fmt.Errorf("process: start %s: %w: %w", spec.Path, errTraceUnusable, err)
	case err != nil && spec.CgroupFD > 0:
		return nil, fmt.Errorf("process: start %s (into cgroup fd %d): %w", spec.Path, spec.CgroupFD, err)
	case err != nil:
		return nil, fmt.Errorf("process: start %s: %w", spec.Path, err)
	}
	if pidfd < 0 {
		return nil, noPidfd(spec.Path, pid)
	}
	abort := func(cause error) (*Proc, error) { return nil, abortStart(spec.Path, pid, pidfd, cause) }
	// The exec stop: SIGTRAP, delivered to the tracee right after a
	// successful exec.
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, unix.WALL, nil)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	switch {
	case err != nil:
		return abort(fmt.Errorf("wait for the exec stop: %w", err))
	case !ws.Stopped():
		// Killed before it ran (and reaped by the Wait4 above).
		return abort(fmt.Errorf("ended before it ran: %v", exitFromStatus(ws, nil, time.Now())))
	}
	// Should this hive die before the detach, the tracee dies with it
	// rather than run outside its cgroups.
	_ = unix.PtraceSetOptions(pid, unix.PTRACE_O_EXITKILL)
	spid := []byte(strconv.Itoa(pid))
	for _, procs := range spec.JoinProcs {
		if err := writeProcs(procs, spid); err != nil {
			return abort(fmt.Errorf("join cgroup %s: %w", procs, err))
		}
	}
	if n := spec.Nofile; n > 0 {
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: n}, nil); err != nil {
			return abort(fmt.Errorf("set RLIMIT_NOFILE to %d: %w", n, err))
		}
	}
	// Detach with no signal: the exec's SIGTRAP is dropped.
	if err := unix.PtraceDetach(pid); err != nil {
		return abort(fmt.Errorf("ptrace detach: %w", err))
	}
	return finishStart(&spec, pid, pidfd, bootID)
}
