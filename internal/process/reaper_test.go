package process

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startTestReaper starts a Reaper whose backstop round runs every interval,
// logging at debug level into the returned buffer, and closes it in cleanup.
func startTestReaper(t *testing.T, interval time.Duration) (*Reaper, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := startReaper(log, interval)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, buf
}

// gone reports whether the process (pid, startTime) no longer exists at all:
// not running and not a zombie either.
func gone(t *testing.T, pid int, startTime uint64) bool {
	t.Helper()
	st, err := readStat(pid)
	if errors.Is(err, ErrGone) {
		return true
	}
	if err != nil {
		t.Fatalf("stat %d: %v", pid, err)
	}
	return st.StartTime != startTime
}

// forkZombie starts a child outside Start (so nothing tracks it) that exits
// with code at once, and waits until it is a zombie.
func forkZombie(t *testing.T, code int) (int, uint64) {
	t.Helper()
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit " + strconv.Itoa(code)}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := ReadStartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killOrphan(t, pid, st) })
	eventually(t, 10*time.Second, fmt.Sprintf("%d to be a zombie", pid), func() bool {
		s, err := readStat(pid)
		return err == nil && s.Dead()
	})
	return pid, st
}

// The bug: PID 1 here never reaps, so a worker's grandchild orphaned by the
// worker's exit stayed a zombie forever after it died.
func TestReaperReapsOrphanedGrandchild(t *testing.T) {
	// No backstop during the test: SIGCHLD alone must do it.
	_, logs := startTestReaper(t, time.Hour)
	pidfile := filepath.Join(t.TempDir(), "pid")
	p := start(t, helperSpec(t, "orphan", pidfile, "1000"))
	if ex := waitDone(t, p, 10*time.Second); ex.Code == nil || *ex.Code != 0 {
		t.Fatalf("helper Exit = %+v", ex)
	}
	gpid, gstart := readPidFile(t, pidfile)
	t.Cleanup(func() { killOrphan(t, gpid, gstart) })
	// Its parent has been reaped, so it has been re-parented: to us, the
	// subreaper.
	if st, err := readStat(gpid); err != nil || st.PPID != os.Getpid() || st.Dead() {
		t.Fatalf("orphan %d: %+v, %v; want a live child of the test binary", gpid, st, err)
	}
	t0 := time.Now()
	if err := syscall.Kill(gpid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "orphan to be reaped", func() bool { return gone(t, gpid, gstart) })
	t.Logf("orphan kill → reaped in %v", time.Since(t0))
	want := fmt.Sprintf("pid=%d exit=\"signal killed\"", gpid)
	eventually(t, 5*time.Second, "the reap to be logged", func() bool { return strings.Contains(logs.String(), want) })
}

// A zombie that was already there when the Reaper started (its SIGCHLD came
// before anyone listened) is reaped by the first round.
func TestReaperFirstRoundReapsEarlierZombie(t *testing.T) {
	pid, st := forkZombie(t, 3)
	_, logs := startTestReaper(t, time.Hour)
	eventually(t, 5*time.Second, "zombie to be reaped", func() bool { return gone(t, pid, st) })
	want := fmt.Sprintf("pid=%d exit=\"exit code 3\"", pid)
	eventually(t, 5*time.Second, "the reap to be logged", func() bool { return strings.Contains(logs.String(), want) })
}

// The bug: a child whose Proc was closed before it exited stayed a zombie
// (nobody watched it any more).
func TestReaperReapsChildExitingAfterProcClose(t *testing.T) {
	startTestReaper(t, time.Hour)
	p, err := Start(sleepSpec())
	if err != nil {
		t.Fatal(err)
	}
	pid, st := p.PID, p.StartTime
	t.Cleanup(func() { killOrphan(t, pid, st) })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "closed child to be reaped", func() bool { return gone(t, pid, st) })
}

// Procs keep their exit status while the Reaper runs and orphans die all
// around them: 100 tracked processes that exit at once (/bin/sh -c exit N,
// often gone before Start returns), exit as the helper, or are killed,
// started concurrently.
func TestReaperKeepsTrackedExitStatus(t *testing.T) {
	startTestReaper(t, 20*time.Millisecond) // backstop rounds too
	const n = 100
	var wg sync.WaitGroup
	dir := t.TempDir()
	var orphansMu sync.Mutex
	var orphans [][2]uint64
	// Orphans that die on their own soon after their parent exits.
	for w := range 2 {
		wg.Go(func() {
			for i := range 10 {
				pidfile := filepath.Join(dir, fmt.Sprintf("orphan-%d-%d", w, i))
				p, err := Start(helperSpec(t, "orphan", pidfile, "0.05"))
				if err != nil {
					t.Error(err)
					return
				}
				ex, ok := waitExit(p, 10*time.Second)
				p.Close()
				if !ok || ex.Code == nil || *ex.Code != 0 {
					t.Errorf("orphan helper: exited %v, Exit = %+v", ok, ex)
					return
				}
				// The helper wrote the file before exiting.
				b, err := os.ReadFile(pidfile)
				if err != nil {
					t.Error(err)
					return
				}
				pid, _ := strconv.Atoi(string(b))
				st, err := ReadStartTime(pid)
				if errors.Is(err, ErrGone) {
					continue // already died and reaped
				}
				if err != nil {
					t.Error(err)
					return
				}
				orphansMu.Lock()
				orphans = append(orphans, [2]uint64{uint64(pid), st})
				orphansMu.Unlock()
			}
		})
	}
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				code := i % 256
				var spec Spec
				switch i % 3 {
				case 0:
					spec = shSpec("exit " + strconv.Itoa(code))
				case 1:
					spec = helperSpec(t, "exit", strconv.Itoa(code))
				case 2:
					spec = sleepSpec()
				}
				p, err := Start(spec)
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 == 2 {
					if err := p.Signal(syscall.SIGKILL); err != nil {
						t.Errorf("%v: %v", p, err)
					}
				}
				ex, ok := waitExit(p, 10*time.Second)
				p.Close()
				switch {
				case !ok:
					t.Errorf("%d: %v did not exit", i, p)
					if p.Child {
						_ = syscall.Kill(p.PID, syscall.SIGKILL) // the Reaper reaps it
					}
				case !ex.Known || ex.Rusage == nil:
					t.Errorf("%d: %v: Exit = %+v, want a known status", i, p, ex)
				case i%3 == 2 && ex.Signal != syscall.SIGKILL:
					t.Errorf("%d: %v: Exit = %v, want signal killed", i, p, ex)
				case i%3 != 2 && (ex.Code == nil || *ex.Code != code):
					t.Errorf("%d: %v: Exit = %v, want exit code %d", i, p, ex, code)
				}
			}
		})
	}
	wg.Wait()
	for _, o := range orphans {
		pid, st := int(o[0]), o[1]
		t.Cleanup(func() { killOrphan(t, pid, st) })
	}
	if t.Failed() {
		return
	}
	t.Logf("%d of 20 orphans still there after their parent exited", len(orphans))
	for _, o := range orphans {
		pid, st := int(o[0]), o[1]
		eventually(t, 5*time.Second, fmt.Sprintf("orphan %d to be reaped", pid), func() bool { return gone(t, pid, st) })
	}
	eventually(t, 5*time.Second, "no child left", func() bool { return len(children()) == 0 })
}

// waitExit is waitDone for goroutines other than the test's: it reports a
// timeout instead of failing.
func waitExit(p *Proc, timeout time.Duration) (Exit, bool) {
	select {
	case <-p.Done():
		return p.Exit(), true
	case <-time.After(timeout):
		return Exit{}, false
	}
}

// Pins the ordering contract of reaper.go: a child is safe from the Reaper
// while a Start is in flight (its PID may not be registered yet) and while
// it is tracked; only then is it the Reaper's.
func TestReapIfOrphanRespectsTrackingAndStartsInFlight(t *testing.T) {
	pid, st := forkZombie(t, 5)

	beginStart() // a fork in flight: the zombie might be its child
	if _, reaped, deferred := reapIfOrphan(pid); reaped || !deferred {
		t.Fatalf("during a start: reaped=%v deferred=%v; want left, and deferred", reaped, deferred)
	}
	endStart(pid) // …and it was: now tracked
	if _, reaped, deferred := reapIfOrphan(pid); reaped || deferred {
		t.Fatalf("tracked: reaped=%v deferred=%v; want left alone", reaped, deferred)
	}
	// A second owner of the same PID number (reuse after the first owner
	// reaped, before it untracked): one untrack does not free it.
	beginStart()
	endStart(pid)
	untrackChild(pid)
	if _, reaped, _ := reapIfOrphan(pid); reaped {
		t.Fatal("reaped while one owner remains")
	}
	untrackChild(pid)
	ex, reaped, _ := reapIfOrphan(pid)
	if !reaped || ex.Code == nil || *ex.Code != 5 {
		t.Fatalf("untracked zombie: reaped=%v Exit=%v; want reaped, exit code 5", reaped, ex)
	}
	if !gone(t, pid, st) {
		t.Fatal("still there after the reap")
	}
	trackMu.Lock()
	defer trackMu.Unlock()
	if starting != 0 || len(tracked) != 0 {
		t.Fatalf("starting=%d tracked=%v after the test", starting, tracked)
	}
}

func TestChildrenListingsAgree(t *testing.T) {
	var want []int
	for range 3 {
		want = append(want, start(t, sleepSpec()).PID)
	}
	slices.Sort(want)
	a, err := childrenFromTasks()
	if err != nil {
		t.Fatal(err)
	}
	b, err := childrenFromStat()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, want) || !slices.Equal(b, want) {
		t.Fatalf("from tasks %v, from stat %v; want %v", a, b, want)
	}
}

func TestReaperCloseLeavesNoGoroutine(t *testing.T) {
	r, err := StartReaper(nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		r.Close()
		r.Close() // idempotent
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	goleak.VerifyNone(t)
}
