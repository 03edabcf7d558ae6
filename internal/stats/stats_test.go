package stats_test

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/stats"
)

// startGroup starts a shell in its own process group that forks n sleeping
// children, and returns the shell's pid (the group id) once all n+1
// processes exist. The group is killed and reaped in t.Cleanup.
func startGroup(t *testing.T, n int) int {
	t.Helper()
	script := "exec sleep 1000"
	if n > 0 {
		script = strings.Repeat("sleep 1000 & ", n) + "wait"
	}
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		groups, err := stats.ProcessGroups("")
		if err != nil {
			t.Fatal(err)
		}
		if len(groups[pid]) == n+1 {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %d has %d processes, want %d", pid, len(groups[pid]), n+1)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func status(t *testing.T, pid int, key string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			f := strings.Fields(v)
			n, _ := strconv.ParseInt(f[0], 10, 64)
			if len(f) > 1 && f[1] == "kB" {
				n <<= 10
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}

// TestRSSIsVmRSSNotStatField24 pins a bug of the first version, which took
// RSS from /proc/PID/stat field 24: on Linux 6.18 that leaves out the
// anonymous pages (1648 kB against a VmRSS of 1756 kB for a sleep). RSS must
// be VmRSS, and the thread count /proc/PID/status's Threads.
func TestRSSIsVmRSSNotStatField24(t *testing.T) {
	pid := startGroup(t, 0)
	// The shell may still be exec'ing sleep, so its RSS moves: compare only
	// a reading taken between two equal VmRSS readings (CI once read 1712
	// kB, then 1832 kB, across the exec).
	var p stats.Proc
	for tries := 0; ; tries++ {
		before := status(t, pid, "VmRSS")
		var err error
		if p, err = stats.ReadProc("", pid); err != nil {
			t.Fatal(err)
		}
		after := status(t, pid, "VmRSS")
		if before == after {
			if p.RSS != after {
				t.Errorf("RSS %d, VmRSS %d", p.RSS, after)
			}
			break
		}
		if tries == 100 {
			t.Fatalf("VmRSS of a sleep kept moving: %d then %d", before, after)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if want := status(t, pid, "Threads"); int64(p.Threads) != want {
		t.Errorf("threads %d, want %d", p.Threads, want)
	}
	if p.PGID != pid {
		t.Errorf("pgid %d, want %d", p.PGID, pid)
	}
}

func TestReadProcGone(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := stats.ReadProc("", cmd.Process.Pid); err == nil {
		t.Fatal("no error for a reaped process")
	}
}

// TestSumCountsTheWholeGroup: a worker's numbers cover its children.
func TestSumCountsTheWholeGroup(t *testing.T) {
	pid := startGroup(t, 3)
	groups, err := stats.ProcessGroups("")
	if err != nil {
		t.Fatal(err)
	}
	pids := groups[pid]
	var wantRSS int64
	var wantFDs int
	for _, p := range pids {
		wantRSS += status(t, p, "VmRSS")
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		wantFDs += len(ents)
	}
	s, err := stats.Sum("", pids)
	if err != nil {
		t.Fatal(err)
	}
	if s.Threads != 4 || s.RSSBytes != wantRSS || s.OpenFDs != wantFDs {
		t.Errorf("sum = %+v, want 4 threads, rss %d, fds %d", s, wantRSS, wantFDs)
	}
	if one, _ := stats.Sum("", []int{pid}); one.RSSBytes >= s.RSSBytes {
		t.Errorf("the group (%d) is not bigger than its leader (%d)", s.RSSBytes, one.RSSBytes)
	}
}

// TestCPUCountsBusyChild: CPU time burnt by a process shows up.
func TestCPUCountsBusyChild(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL); _ = cmd.Wait() })
	s := stats.New(stats.Options{MaxAge: -1})
	info := &apiv1.WorkerInfo{ID: "w", PID: pid, State: state.Idle}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.Get(info)
		if got.Stats != nil && got.Stats.CPUSeconds >= 0.05 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cpu seconds never reached 0.05: %+v", got.Stats)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFillCachesAndCopies: numbers are reused within MaxAge, refreshed
// after, and the snapshots passed in are never modified.
func TestFillCachesAndCopies(t *testing.T) {
	pid := startGroup(t, 1)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := stats.New(stats.Options{MaxAge: 2 * time.Second, Now: clock})
	live := &apiv1.WorkerInfo{ID: "worker-live", PID: pid, State: state.Busy}
	ended := &apiv1.WorkerInfo{ID: "worker-ended", PID: pid, State: state.Terminated}
	backoff := &apiv1.WorkerInfo{ID: "worker-backoff", PID: pid, State: state.Backoff}
	out := s.Fill([]*apiv1.WorkerInfo{live, ended, backoff})
	if live.Stats != nil {
		t.Fatal("Fill modified the snapshot passed in")
	}
	if out[0] == live || out[0].Stats == nil || out[0].Stats.Threads != 2 {
		t.Fatalf("live worker: %+v", out[0].Stats)
	}
	if out[1] != ended || out[2] != backoff {
		t.Error("workers without a process were copied or measured")
	}
	first := *out[0].Stats

	// A third process joins the group; within MaxAge the old numbers stay.
	more := exec.Command("/bin/sleep", "1000")
	more.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pid}
	if err := more.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = more.Process.Kill(); _ = more.Wait() })
	if got := s.Get(live).Stats; *got != first {
		t.Errorf("within MaxAge: %+v, want cached %+v", *got, first)
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	if got := s.Get(live).Stats; got.Threads != 3 {
		t.Errorf("after MaxAge: %d threads, want 3", got.Threads)
	}
	// A restart (new PID) is measured at once, over the new PID's own
	// group (here: it alone).
	restarted := *live
	restarted.PID = more.Process.Pid
	if got := s.Get(&restarted).Stats; got.Threads != 1 {
		t.Errorf("new pid: %+v", got)
	}
}

// TestFillUsesTheCgroup: a worker with a cgroup is measured over the
// cgroup's processes, even one that left the process group.
func TestFillUsesTheCgroup(t *testing.T) {
	m, err := cgroup.New(cgroup.Options{Scope: "rbee-hive-stats-test/" + strconv.Itoa(os.Getpid()), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() == cgroup.ModeNone {
		t.Fatal("this test needs cgroups; none found")
	}
	g, err := m.Create("worker-cg", config.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = g.Kill()
		_ = g.Remove()
		_ = m.RemoveScope()
	})
	leader := startGroup(t, 0)
	escaped := exec.Command("/bin/sleep", "1000")
	escaped.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := escaped.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = escaped.Process.Kill(); _ = escaped.Wait() })
	for _, p := range []int{leader, escaped.Process.Pid} {
		if err := g.Join(p); err != nil {
			t.Fatal(err)
		}
	}
	s := stats.New(stats.Options{Cgroups: m, MaxAge: -1})
	got := s.Get(&apiv1.WorkerInfo{ID: "worker-cg", PID: leader, State: state.Idle})
	if got.Stats == nil || got.Stats.Threads != 2 {
		t.Fatalf("stats over the cgroup = %+v, want 2 processes' threads", got.Stats)
	}
	noCg := stats.New(stats.Options{MaxAge: -1})
	if got := noCg.Get(&apiv1.WorkerInfo{ID: "worker-cg", PID: leader, State: state.Idle}); got.Stats.Threads != 1 {
		t.Errorf("without the cgroup: %+v, want the group leader only", got.Stats)
	}
}

// TestFillThousandWorkers measures a listing of 1000 workers over 100 real
// processes with no cache (the worst case), and with the cache.
func TestFillThousandWorkers(t *testing.T) {
	var pids []int
	for i := 0; i < 100; i++ {
		pids = append(pids, startGroup(t, 0))
	}
	infos := make([]*apiv1.WorkerInfo, 1000)
	for i := range infos {
		infos[i] = &apiv1.WorkerInfo{ID: fmt.Sprintf("worker-%d", i), PID: pids[i%len(pids)], State: state.Idle}
	}
	cold := stats.New(stats.Options{MaxAge: -1})
	start := time.Now()
	out := cold.Fill(infos)
	coldT := time.Since(start)
	for i, w := range out {
		if w.Stats == nil {
			t.Fatalf("worker %d has no stats", i)
		}
	}
	warm := stats.New(stats.Options{})
	warm.Fill(infos)
	start = time.Now()
	warm.Fill(infos)
	warmT := time.Since(start)
	t.Logf("1000 workers: %v measuring all (one /proc scan), %v from the cache", coldT, warmT)
	if coldT > 5*time.Second || warmT > 100*time.Millisecond {
		t.Errorf("too slow: cold %v, warm %v", coldT, warmT)
	}
}
