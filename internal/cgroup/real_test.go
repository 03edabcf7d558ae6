package cgroup

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rbee/rbee-hive/internal/config"
)

// These tests use the host's real cgroups (this machine and CI are hybrid
// and run as root). Each uses its own scope and checks that it is gone from
// every hierarchy afterwards.

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func randomScope(t *testing.T) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "rbee-hive-test/" + t.Name() + "-" + hex.EncodeToString(b)
}

// realManager returns a Manager on root (default the host's) with a unique
// scope, and on cleanup removes the scope and checks nothing is left.
func realManager(t *testing.T, root string) *Manager {
	t.Helper()
	m, err := New(Options{Root: root, Scope: randomScope(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.RemoveScope(); err != nil {
			t.Errorf("RemoveScope: %v", err)
		}
		for _, d := range m.scopeDirs() {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cgroup scope %s left behind (%v)", d, err)
			}
		}
	})
	return m
}

// scopeDirs returns the scope directory in each hierarchy.
func (m *Manager) scopeDirs() []string {
	u, v1 := m.dirsFor("")
	var ds []string
	if u != "" {
		ds = append(ds, u)
	}
	for _, d := range v1 {
		ds = append(ds, d)
	}
	return ds
}

func create(t *testing.T, m *Manager, id string, l config.Limits) *Group {
	t.Helper()
	g, err := m.Create(id, l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = g.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.WaitEmpty(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := g.Remove(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return g
}

type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	done  chan struct{} // closed when Wait returned
	err   error
}

// start runs argv inside g the way the hive will: clone straight into the
// cgroup2 directory (when there is one), then join the v1 hierarchies
// before the program is told to go (a line on its stdin). One goroutine owns
// Wait, as in the hive, so exited children are reaped at once.
func start(t *testing.T, g *Group, env []string, argv ...string) *proc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = tWriter{t}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second // grandchildren may hold stderr
	fd, err := g.FD()
	if err != nil {
		t.Fatal(err)
	}
	if fd >= 0 {
		defer closeFD(fd)
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = fd
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.out = bufio.NewReader(out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = g.Kill()
		p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("pid %d not reaped", cmd.Process.Pid)
		}
	})
	pid := strconv.Itoa(cmd.Process.Pid)
	for _, f := range g.JoinProcs() {
		if err := os.WriteFile(f, []byte(pid), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *proc) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("process did not exit")
	}
}

func helperCmd(name string) ([]string, []string) {
	return []string{helperEnv + "=" + name}, []string{os.Args[0]}
}

func TestRealLayoutIsReported(t *testing.T) {
	m := realManager(t, "")
	t.Logf("mode %s: %s", m.Mode(), m.Describe())
	if m.Mode() == ModeNone {
		t.Fatal("no cgroups found on this host")
	}
	if err := m.Supports(allLimits); err != nil {
		t.Fatalf("this host (root) should support all limits: %v", err)
	}
}

// startSleep starts a sleep in g (through a shell that waits for its
// stdin, so that it is placed before it execs) and returns its PID and its
// /proc/PID/cgroup once it is the sleep.
func startSleep(t *testing.T, g *Group) (int, []byte) {
	t.Helper()
	p := start(t, g, nil, "/bin/sh", "-c", "read x; exec sleep 1000")
	pid := p.cmd.Process.Pid
	eventually(t, 5*time.Second, "the sleep to exec", func() bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return strings.TrimSpace(string(b)) == "sleep"
	})
	cg, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	return pid, cg
}

func TestRealPlacementAndLimitFiles(t *testing.T) {
	m := realManager(t, "")
	g := create(t, m, "w-place", allLimits)
	pid, cg := startSleep(t, g)
	t.Logf("/proc/%d/cgroup:\n%s", pid, cg)
	for _, d := range g.Paths() {
		// The hierarchy-relative path is the part after the mount.
		rel := "/" + m.scope + "/w-place"
		if !strings.HasSuffix(d, rel) {
			t.Fatalf("path %s does not end in %s", d, rel)
		}
		if !strings.Contains(string(cg), ":"+rel+"\n") {
			t.Errorf("process not in %s", d)
		}
	}
	pids, err := g.Pids()
	if err != nil || len(pids) != 1 || pids[0] != pid {
		t.Errorf("Pids = %v, %v, want [%d]", pids, err, pid)
	}
	if m.Mode() == ModeHybrid {
		for file, want := range map[string]string{
			filepath.Join(g.v1["memory"], "memory.limit_in_bytes"): "67108864",
			filepath.Join(g.v1["cpu"], "cpu.cfs_quota_us"):         "150000",
			filepath.Join(g.v1["cpu"], "cpu.cfs_period_us"):        "100000",
			filepath.Join(g.v1["pids"], "pids.max"):                "20",
		} {
			if got := read(t, file); got != want {
				t.Errorf("%s = %q, want %q", file, got, want)
			}
		}
	}
	s, err := g.Stats()
	if err != nil || s.Pids != 1 || s.MemoryBytes == 0 {
		t.Errorf("Stats = %+v, %v", s, err)
	}
	t.Logf("stats %+v", s)
	if ids, err := m.List(); err != nil || len(ids) != 1 || ids[0] != "w-place" {
		t.Errorf("List = %v, %v", ids, err)
	}
	if o, err := m.Open("w-place"); err != nil || strings.Join(o.Paths(), " ") != strings.Join(g.Paths(), " ") {
		t.Errorf("Open = %v, %v", o, err)
	}
	if err := g.Remove(); !errors.Is(err, unix.EBUSY) {
		t.Errorf("Remove of a populated group = %v, want EBUSY", err)
	}
}

// The stop path: a worker that ignores SIGTERM and a grandchild that left
// the process group with setsid are both killed through the cgroup.
func testKillTree(t *testing.T, m *Manager, l config.Limits) {
	g := create(t, m, "w-tree", l)
	p := start(t, g, nil, "/bin/sh", "-c", `read x; setsid sleep 1000 & trap "" TERM; sleep 1000`)
	var pids []int
	eventually(t, 5*time.Second, "the shell, its sleep and a setsid'd sleep in the cgroup", func() bool {
		pids, _ = g.Pids()
		if len(pids) != 3 {
			return false
		}
		sleeps, otherSession := 0, 0
		for _, pid := range pids {
			comm, sid := procStat(pid)
			if comm == "sleep" {
				sleeps++
			}
			if sid == pid {
				otherSession++ // a session leader: the setsid'd one
			}
		}
		return sleeps == 2 && otherSession == 1
	})
	// The polite signal to the group reaches neither the shell (ignores it)
	// nor the grandchild (another session).
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		t.Fatal("the shell died of SIGTERM")
	case <-time.After(100 * time.Millisecond):
	}
	if now, _ := g.Pids(); len(now) != 3 {
		t.Fatalf("after SIGTERM %v, want all 3 alive", now)
	}
	start := time.Now()
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("kill → empty in %v", time.Since(start))
	p.wait(t)
	for _, pid := range pids {
		eventually(t, 5*time.Second, "pid "+strconv.Itoa(pid)+" to be gone", func() bool {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			// gone, or a zombie waiting for init to reap it
			return err != nil || len(b) == 0
		})
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
}

func TestRealKillTreeWithSetsidGrandchild(t *testing.T) {
	testKillTree(t, realManager(t, ""), config.Limits{MemoryMaxBytes: 256 << 20, PidsMax: 10})
}

// v1 only: a root that shows the host's v1 hierarchies and no cgroup2, so
// Kill signals each process through pidfds and WaitEmpty polls.
func TestRealV1KillByPolling(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"memory", "cpu", "cpuacct", "pids"} {
		if err := os.Symlink(filepath.Join("/sys/fs/cgroup", c), filepath.Join(root, c)); err != nil {
			t.Fatal(err)
		}
	}
	m := realManager(t, root)
	if m.Mode() != ModeV1 {
		t.Fatalf("mode %s, want v1", m.Mode())
	}
	t.Log(m.Describe())
	testKillTree(t, m, config.Limits{MemoryMaxBytes: 256 << 20, PidsMax: 10})
}

// The v2 code path for real: the host's cgroup2 hierarchy (no controllers
// here) used as a pure v2 root. CLONE_INTO_CGROUP, cgroup.kill and the
// inotify wait on cgroup.events all run against the kernel.
func TestRealUnifiedAsV2(t *testing.T) {
	m := realManager(t, "/sys/fs/cgroup/unified")
	if m.Mode() != ModeV2 {
		t.Fatalf("mode %s, want v2", m.Mode())
	}
	t.Log(m.Describe())
	err := m.Supports(config.Limits{MemoryMaxBytes: 1 << 30})
	if !errors.Is(err, ErrLimitsUnsupported) || !strings.Contains(err.Error(), "memory_max_bytes needs the memory controller") {
		t.Errorf("Supports = %v", err)
	}
	t.Log(err)
	testKillTree(t, m, config.Limits{})
}

func TestRealOOMKillIsReported(t *testing.T) {
	m := realManager(t, "")
	g := create(t, m, "w-oom", config.Limits{MemoryMaxBytes: 32 << 20})
	env, argv := helperCmd("alloc")
	p := start(t, g, env, argv...)
	p.wait(t)
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		t.Fatalf("helper exit: %v", p.err)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended %v, want SIGKILL", p.err)
	}
	oom, err := g.OOMKilled()
	if err != nil || !oom {
		t.Fatalf("OOMKilled = %v, %v, want true", oom, err)
	}
}

func TestRealNoOOMWithoutPressure(t *testing.T) {
	m := realManager(t, "")
	g := create(t, m, "w-nooom", config.Limits{MemoryMaxBytes: 512 << 20})
	env, argv := helperCmd("alloc")
	p := start(t, g, env, argv...)
	p.wait(t)
	if p.err != nil {
		t.Fatalf("helper: %v", p.err)
	}
	if oom, err := g.OOMKilled(); err != nil || oom {
		t.Fatalf("OOMKilled = %v, %v, want false", oom, err)
	}
}

func TestRealPidsMax(t *testing.T) {
	m := realManager(t, "")
	g := create(t, m, "w-pids", config.Limits{PidsMax: 20})
	env, argv := helperCmd("forkmany")
	p := start(t, g, append(env, "GOMAXPROCS=1"), argv...)
	line, err := p.out.ReadString('\n')
	if err != nil {
		t.Fatalf("helper output: %q, %v", line, err)
	}
	t.Log(strings.TrimSpace(line))
	var started, failed int
	if _, err := fmtSscanf(line, &started, &failed); err != nil {
		t.Fatal(err)
	}
	if failed == 0 || started+failed != 200 {
		t.Errorf("started %d failed %d: want failures", started, failed)
	}
	pids, err := g.Pids()
	if err != nil || len(pids) > 20 || len(pids) < 2 {
		t.Errorf("Pids = %d (%v), want 2..20", len(pids), err)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRealCPUMax(t *testing.T) {
	m := realManager(t, "")
	g := create(t, m, "w-cpu", config.Limits{CPUMax: 0.5})
	env, argv := helperCmd("spin")
	start(t, g, env, argv...)
	before, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	time.Sleep(1500 * time.Millisecond) // the measurement window itself
	after, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	cores := (after.CPU - before.CPU).Seconds() / time.Since(t0).Seconds()
	t.Logf("busy-looping helper used %.2f cores under cpu_max 0.5", cores)
	if cores > 0.7 || cores < 0.2 {
		t.Errorf("used %.2f cores, want about 0.5", cores)
	}
}

func fmtSscanf(line string, started, failed *int) (int, error) {
	return fmt.Sscanf(line, "started %d failed %d", started, failed)
}

// procStat returns a process's command name and session id from
// /proc/PID/stat ("" and 0 when it is gone).
func procStat(pid int) (comm string, sid int) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return "", 0
	}
	f := strings.Fields(s[j+1:]) // state ppid pgrp session ...
	if len(f) < 4 {
		return "", 0
	}
	sid, _ = strconv.Atoi(f[3])
	return s[i+1 : j], sid
}

// A process started in a group taken from a reservation is in every
// hierarchy's directory of it, under the limits Create wrote.
func TestRealReservedGroupHoldsTheProcessUnderItsLimits(t *testing.T) {
	m := realManager(t, "")
	if err := m.Reserve("w-spare"); err != nil {
		t.Fatal(err)
	}
	g := create(t, m, "w-spare", allLimits)
	_, cg := startSleep(t, g)
	rel := "/" + m.scope + "/w-spare"
	for _, d := range g.Paths() {
		if !strings.Contains(string(cg), ":"+rel+"\n") {
			t.Errorf("process not in %s:\n%s", d, cg)
		}
	}
	limits := map[string]string{}
	if m.Mode() == ModeHybrid {
		limits[filepath.Join(g.v1["memory"], "memory.limit_in_bytes")] = "67108864"
		limits[filepath.Join(g.v1["pids"], "pids.max")] = "20"
	} else {
		limits[filepath.Join(g.unified, "memory.max")] = "67108864"
		limits[filepath.Join(g.unified, "pids.max")] = "20"
	}
	for file, want := range limits {
		if got := read(t, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
}
