package refworker

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ChildModeEnv names the environment variable that makes Main run as the
// sleeping child of LLMW_FAKE_FORK_CHILD or LLMW_FAKE_FORK_MANY instead of a
// worker. Its value is "sleep" (stay in the parent's process group) or
// "setsid" (start a new session first). The child ignores SIGTERM, SIGINT and
// SIGHUP and sleeps until it is killed.
const ChildModeEnv = "RBEE_REFWORKER_CHILD"

// childReadyFDEnv names the inherited descriptor on which a child writes one
// byte once it ignores SIGTERM, so its parent can promise that it does.
const childReadyFDEnv = "RBEE_REFWORKER_CHILD_READY_FD"

// runChild is the sleeping child. It only returns for an unknown mode.
func runChild(mode string, getenv func(string) string, stderr io.Writer) int {
	switch mode {
	case "sleep":
	case "setsid":
		if _, err := unix.Setsid(); err != nil {
			fmt.Fprintf(stderr, "fake child: setsid: %v\n", err)
		}
	default:
		fmt.Fprintf(stderr, "fake child: unknown %s=%q (want sleep or setsid)\n", ChildModeEnv, mode)
		return ExitUsage
	}
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if fd, err := strconv.Atoi(getenv(childReadyFDEnv)); err == nil && fd > 2 {
		f := os.NewFile(uintptr(fd), "ready")
		f.Write([]byte{1})
		f.Close()
	}
	tuneRuntime(func(string) string { return "" }, 1)
	for {
		time.Sleep(time.Hour)
	}
}

// childCommand re-executes this executable as a sleeping child.
func childCommand(mode string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, ChildModeEnv+"=") && !strings.HasPrefix(kv, childReadyFDEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, ChildModeEnv+"="+mode)
	return cmd, nil
}

// startChild starts the LLMW_FAKE_FORK_CHILD child, which inherits stdout
// and stderr, waits (up to 10 s) until it ignores SIGTERM, and returns its
// PID. A goroutine reaps it if it ever exits while this process lives.
func startChild(kind string, stdout, stderr io.Writer) (int, error) {
	mode := "sleep"
	if kind == "setsid" {
		mode = "setsid"
	}
	cmd, err := childCommand(mode)
	if err != nil {
		return 0, err
	}
	r, wr, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{wr} // fd 3
	cmd.Env = append(cmd.Env, childReadyFDEnv+"=3")
	err = cmd.Start()
	wr.Close()
	if err != nil {
		return 0, err
	}
	go cmd.Wait() // the child outlives the worker on purpose; this only reaps
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.Read(make([]byte, 1)); err != nil {
		return cmd.Process.Pid, fmt.Errorf("child %d did not report ready: %w", cmd.Process.Pid, err)
	}
	return cmd.Process.Pid, nil
}

// forkMany tries to start n sleeping children and reports on stdout how many
// started. Failures (EAGAIN under a pids limit, …) are counted, not fatal.
func (w *worker) forkMany(n int) {
	started, failed := 0, 0
	var firstErr error
	for range n {
		cmd, err := childCommand("sleep")
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		started++
		go cmd.Wait() // only reaps; the children are left for the hive to kill
	}
	if firstErr != nil {
		w.log.Warn("fake: some children failed to start", "failed", failed, "err", firstErr)
	}
	fmt.Fprintf(w.stdout, "fake: fork_many started=%d failed=%d\n", started, failed)
}

const allocStep = 8 << 20

// allocate maps and touches mb MiB outside the Go heap, in 8 MiB steps, and
// keeps it until the worker exits.
func (w *worker) allocate(ctx context.Context, mb int) error {
	w.log.Info(fmt.Sprintf("fake: allocating %d MiB", mb))
	left := int64(mb) << 20
	page := os.Getpagesize()
	for left > 0 && ctx.Err() == nil {
		n := min(left, allocStep)
		b, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			return fmt.Errorf("mmap %d bytes: %w", n, err)
		}
		for i := 0; i < len(b); i += page {
			b[i] = 1
		}
		w.alloc = append(w.alloc, b)
		left -= n
	}
	w.log.Info(fmt.Sprintf("fake: allocated %d MiB", mb))
	return nil
}

func (w *worker) freeAlloc() {
	for _, b := range w.alloc {
		unix.Munmap(b)
	}
	w.alloc = nil
}

// startPostReadyFakes starts the misbehaviours that begin once ready.
func (w *worker) startPostReadyFakes() {
	f := w.cfg.fake
	if f.crashAfter > 0 {
		w.goBG(func() {
			if sleepUntil(w.ctx, time.Now().Add(f.crashAfter)) == nil {
				w.requestCrash(fmt.Sprintf("%v after ready", f.crashAfter))
			}
		})
	}
	if f.exitAfter > 0 {
		w.goBG(func() {
			if sleepUntil(w.ctx, time.Now().Add(f.exitAfter)) == nil {
				select {
				case w.fatal <- exitRequest{code: ExitOK, why: fmt.Sprintf("%v after ready, unasked", f.exitAfter)}:
				default:
				}
			}
		})
	}
	if f.busyLoop {
		w.log.Info("fake: spinning a busy loop")
		w.goBG(func() {
			x := 0
			for w.ctx.Err() == nil {
				for range 1 << 20 {
					x++
				}
			}
			_ = x
		})
	}
	if f.forkMany > 0 {
		w.forkMany(f.forkMany)
	}
}

// dieBySignal makes the process die by sig, as a crash would: no core dump,
// the Go runtime's handler replaced by the default action first. It returns
// only if the process somehow survived.
func dieBySignal(sig syscall.Signal) {
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	if sig != syscall.SIGKILL {
		// struct kernel_sigaction, all zero: sa_handler = SIG_DFL.
		var act [4]uint64
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	}
	syscall.Kill(os.Getpid(), sig)
	time.Sleep(time.Second)
}
