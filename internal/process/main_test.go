package process

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The test binary doubles as the helper programs the tests start, in the
// style of os/exec's tests: with helperEnv set it runs the named helper
// instead of the tests.
const helperEnv = "RBEE_PROCESS_TEST_HELPER"

// helpers are the helper programs. Every one must be used by some test; a
// full run fails otherwise.
var helpers = map[string]func(args []string) int{
	// exit CODE: exit with CODE.
	"exit": func(args []string) int {
		n, _ := strconv.Atoi(args[0])
		return n
	},
	// spawn PIDFILE MODE: start /bin/sleep 1000 as a child — in our process
	// group (MODE=group), in its own group (newgroup) or its own session
	// (setsid) — write its PID to PIDFILE, wait for it to end, exit 0.
	"spawn": func(args []string) int {
		pidfile, mode := args[0], args[1]
		sys := &syscall.SysProcAttr{}
		switch mode {
		case "group":
		case "newgroup":
			sys.Setpgid = true
		case "setsid":
			sys.Setsid = true
		default:
			fmt.Fprintln(os.Stderr, "spawn: bad mode", mode)
			return 2
		}
		pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "1000"}, &syscall.ProcAttr{Sys: sys})
		if err != nil {
			fmt.Fprintln(os.Stderr, "spawn:", err)
			return 2
		}
		tmp := pidfile + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return 2
		}
		if err := os.Rename(tmp, pidfile); err != nil {
			return 2
		}
		reap(pid)
		return 0
	},
	// orphan PIDFILE SECONDS: start /bin/sleep SECONDS as a child, write
	// its PID to PIDFILE and exit 0 at once, leaving it an orphan.
	"orphan": func(args []string) int {
		pidfile, secs := args[0], args[1]
		pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", secs}, &syscall.ProcAttr{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "orphan:", err)
			return 2
		}
		tmp := pidfile + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return 2
		}
		if err := os.Rename(tmp, pidfile); err != nil {
			return 2
		}
		return 0
	},
}

var (
	helpersUsedMu sync.Mutex
	helpersUsed   = map[string]bool{}
)

func TestMain(m *testing.M) {
	LauncherMain()
	if name := os.Getenv(helperEnv); name != "" {
		h, ok := helpers[name]
		if !ok {
			fmt.Fprintln(os.Stderr, "unknown helper", name)
			os.Exit(2)
		}
		os.Exit(h(os.Args[1:]))
	}
	// Orphaned descendants of the processes the tests start are reparented
	// to the test binary (PID 1 here does not reap them), so cleanups can
	// reap them and the final check can demand that none is left.
	if err := BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	flag.Parse()
	code := m.Run()
	if code == 0 {
		if left := children(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: processes left behind (children of the test binary): %v\n", left)
			code = 1
		}
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: goroutines left behind:", err)
			code = 1
		}
		if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "" {
			for name := range helpers {
				if !helpersUsed[name] {
					fmt.Fprintf(os.Stderr, "FAIL: helper %q is not used by any test\n", name)
					code = 1
				}
			}
		}
	}
	os.Exit(code)
}

// helperSpec returns a Spec that runs the named helper with args.
func helperSpec(t *testing.T, name string, args ...string) Spec {
	t.Helper()
	if _, ok := helpers[name]; !ok {
		t.Fatalf("no helper %q", name)
	}
	helpersUsedMu.Lock()
	helpersUsed[name] = true
	helpersUsedMu.Unlock()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Path: exe,
		Args: append([]string{"process-helper-" + name}, args...),
		// A race-enabled binary exiting 0 otherwise sleeps 1 s at exit.
		Env: []string{helperEnv + "=" + name, "GORACE=atexit_sleep_ms=0"},
	}
}

// children lists the PIDs whose parent is the test binary.
func children() []int {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil && st.PPID == self {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitDone waits for p's Done, failing the test after timeout.
func waitDone(t *testing.T, p *Proc, timeout time.Duration) Exit {
	t.Helper()
	select {
	case <-p.Done():
		return p.Exit()
	case <-time.After(timeout):
		t.Fatalf("%v: Done not closed after %v", p, timeout)
		return Exit{}
	}
}

// start starts spec and registers a cleanup that kills the whole group,
// waits for the exit, closes the handle and checks no zombie is left.
func start(t *testing.T, spec Spec) *Proc {
	t.Helper()
	p, err := Start(spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { cleanupProc(t, p) })
	return p
}

func cleanupProc(t *testing.T, p *Proc) {
	t.Helper()
	if p.GroupAlive() {
		_ = p.SignalGroup(syscall.SIGKILL)
	}
	_ = p.Signal(syscall.SIGKILL)
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Errorf("cleanup: %v did not exit", p)
	}
	if err := p.Close(); err != nil {
		t.Errorf("cleanup: Close: %v", err)
	}
	if p.Child {
		if st, err := readStat(p.PID); err == nil && st.StartTime == p.StartTime {
			t.Errorf("cleanup: %v left behind in state %c", p, st.State)
		}
	}
}

// killOrphan kills and reaps a process the test did not start through
// Start (a grandchild), identified by pid and start time. It is reparented
// to the test binary (a subreaper) once its parent is gone.
func killOrphan(t *testing.T, pid int, startTime uint64) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("orphan %d to be gone", pid), func() bool {
		st, err := readStat(pid)
		if errors.Is(err, ErrGone) || err == nil && st.StartTime != startTime {
			return true
		}
		if err != nil {
			t.Fatalf("stat %d: %v", pid, err)
		}
		if !st.Dead() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return false
		}
		if st.PPID == os.Getpid() {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
		return false
	})
}

// readPidFile waits for a helper's pid file and returns the PID and the
// process's start time.
func readPidFile(t *testing.T, path string) (int, uint64) {
	t.Helper()
	var pid int
	eventually(t, 10*time.Second, "pid file "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(string(b))
		return err == nil
	})
	st, err := ReadStartTime(pid)
	if err != nil {
		t.Fatalf("start time of %d: %v", pid, err)
	}
	return pid, st
}

// tempFile creates an empty file in t.TempDir, open O_APPEND for writing.
func tempFile(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
