package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/config"
)

const fakeOwn = "/system.slice/rbee-hive.service"

// fakeV2 builds a pure v2 tree whose hive runs in fakeOwn (holding this
// process, so the leaf move is needed) with the given controllers delegated.
func fakeV2(t *testing.T, ctrls string) Options {
	t.Helper()
	root := t.TempDir()
	put(t, filepath.Join(root, "cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc")
	put(t, filepath.Join(root, "cgroup.subtree_control"), "cpu memory pids")
	put(t, filepath.Join(root, "cgroup.procs"), "1\n")
	own := filepath.Join(root, fakeOwn)
	put(t, filepath.Join(own, "cgroup.controllers"), ctrls)
	put(t, filepath.Join(own, "cgroup.subtree_control"), "")
	put(t, filepath.Join(own, "cgroup.procs"), fmt.Sprintf("%d\n", os.Getpid()))
	self := filepath.Join(t.TempDir(), "cgroup")
	put(t, self, "0::"+fakeOwn+"\n")
	return Options{Root: root, Scope: "rbee-hive/test", SelfCgroup: self, Logger: testLogger(t), fs: fakeFS{root: root}}
}

// fakeHybrid builds a hybrid tree: v1 memory, cpu, cpuacct, pids and an
// empty cgroup2 hierarchy at unified.
func fakeHybrid(t *testing.T) Options {
	t.Helper()
	root := t.TempDir()
	for _, c := range []string{"memory", "cpu", "cpuacct", "pids"} {
		put(t, filepath.Join(root, c, "cgroup.procs"), "1\n")
	}
	put(t, filepath.Join(root, "unified", "cgroup.procs"), "1\n")
	put(t, filepath.Join(root, "unified", "cgroup.controllers"), "")
	put(t, filepath.Join(root, "unified", "cgroup.subtree_control"), "")
	self := filepath.Join(t.TempDir(), "cgroup")
	put(t, self, "4:memory:/\n0::/\n")
	return Options{Root: root, Scope: "rbee-hive/test", SelfCgroup: self, Logger: testLogger(t), fs: fakeFS{root: root}}
}

var allLimits = config.Limits{MemoryMaxBytes: 64 << 20, CPUMax: 1.5, PidsMax: 20, Nofile: 1024}

func TestFakeV2CreateWritesLimitsAndMovesHiveToLeaf(t *testing.T) {
	opts := fakeV2(t, "cpu memory pids")
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeV2 {
		t.Fatalf("mode %s, want v2", m.Mode())
	}
	t.Log(m.Describe())
	g, err := m.Create("worker-1", allLimits)
	if err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(opts.Root, fakeOwn)
	dir := filepath.Join(own, "rbee-hive", "test", "worker-1")
	if got := g.Paths(); len(got) != 1 || got[0] != dir {
		t.Fatalf("paths %v, want [%s]", got, dir)
	}
	for file, want := range map[string]string{
		"memory.max":      "67108864",
		"memory.swap.max": "0",
		"cpu.max":         "150000 100000",
		"pids.max":        "20",
	} {
		if got := read(t, filepath.Join(dir, file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	// The hive left its own cgroup for the leaf, and controllers are
	// enabled from its own cgroup down to the scope.
	if got := read(t, filepath.Join(own, "hive", "cgroup.procs")); got != fmt.Sprint(os.Getpid()) {
		t.Errorf("hive leaf procs %q, want our pid", got)
	}
	if got := read(t, filepath.Join(own, "cgroup.procs")); got != "" {
		t.Errorf("own cgroup still has processes: %q", got)
	}
	for _, d := range []string{own, filepath.Join(own, "rbee-hive"), filepath.Join(own, "rbee-hive", "test")} {
		if got := read(t, filepath.Join(d, "cgroup.subtree_control")); got != "cpu memory pids" {
			t.Errorf("%s/cgroup.subtree_control = %q", d, got)
		}
	}
	if g.JoinProcs() != nil {
		t.Errorf("JoinProcs on v2 = %v, want nil", g.JoinProcs())
	}
	fd, err := g.FD()
	if err != nil || fd < 0 {
		t.Fatalf("FD = %d, %v", fd, err)
	}
	closeFD(fd)

	if _, err := m.Create("worker-1", allLimits); !errors.Is(err, ErrExists) {
		t.Errorf("second Create: %v, want ErrExists", err)
	}
	if _, err := m.Create("worker-2", config.Limits{}); err != nil {
		t.Fatal(err)
	}
	ids, err := m.List()
	if err != nil || strings.Join(ids, ",") != "worker-1,worker-2" {
		t.Fatalf("List = %v, %v", ids, err)
	}
	if got := read(t, filepath.Join(own, "rbee-hive", "test", "worker-2", "memory.max")); got != "max" {
		t.Errorf("unlimited worker memory.max = %q, want max", got)
	}
	o, err := m.Open("worker-2")
	if err != nil {
		t.Fatal(err)
	}
	for _, gg := range []*Group{g, o} {
		if err := gg.Remove(); err != nil {
			t.Fatal(err)
		}
		if err := gg.Remove(); err != nil {
			t.Fatalf("second Remove: %v", err)
		}
	}
	if _, err := m.Open("worker-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open after Remove: %v, want ErrNotFound", err)
	}
	if err := m.RemoveScope(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(own, "rbee-hive")); !os.IsNotExist(err) {
		t.Errorf("scope left behind: %v", err)
	}
	if _, err := os.Stat(own); err != nil {
		t.Errorf("RemoveScope removed the hive's own cgroup: %v", err)
	}
}

func TestFakeV2SupportsNamesMissingController(t *testing.T) {
	m, err := New(fakeV2(t, "cpu"))
	if err != nil {
		t.Fatal(err)
	}
	err = m.Supports(allLimits)
	var ue *UnsupportedError
	if !errors.As(err, &ue) || !errors.Is(err, ErrLimitsUnsupported) {
		t.Fatalf("Supports = %v, want *UnsupportedError", err)
	}
	msg := err.Error()
	for _, want := range []string{"memory_max_bytes needs the memory controller", "pids_max needs the pids controller", "without memory in cgroup.controllers", fakeOwn} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "cpu_max") {
		t.Errorf("error %q complains about cpu, which is available", msg)
	}
	if len(ue.Problems) != 2 {
		t.Errorf("problems %q, want 2", ue.Problems)
	}
	if err := m.Supports(config.Limits{CPUMax: 1, Nofile: 10}); err != nil {
		t.Errorf("cpu+nofile: %v", err)
	}
	if _, err := m.Create("w", allLimits); !errors.Is(err, ErrLimitsUnsupported) {
		t.Errorf("Create = %v, want ErrLimitsUnsupported", err)
	}
	if ids, _ := m.List(); len(ids) != 0 {
		t.Errorf("failed Create left %v", ids)
	}
}

func TestFakeV2CreateRollsBackOnWriteFailure(t *testing.T) {
	opts := fakeV2(t, "cpu memory pids")
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	// Make the next mkdir come without pids.max (pids no longer enabled
	// in the scope), so writing the limit fails half-way through Create.
	if _, err := m.Create("ok", config.Limits{}); err != nil {
		t.Fatal(err)
	}
	scope := filepath.Join(opts.Root, fakeOwn, "rbee-hive", "test")
	put(t, filepath.Join(scope, "cgroup.subtree_control"), "cpu memory")
	if _, err := m.Create("bad", config.Limits{PidsMax: 5}); err == nil {
		t.Fatal("Create succeeded without pids.max")
	}
	if _, err := os.Stat(filepath.Join(scope, "bad")); !os.IsNotExist(err) {
		t.Errorf("failed Create left its directory: %v", err)
	}
}

func TestFakeV2OOMAndStatsParsing(t *testing.T) {
	opts := fakeV2(t, "cpu memory pids")
	m, _ := New(opts)
	g, err := m.Create("w", allLimits)
	if err != nil {
		t.Fatal(err)
	}
	d := g.Paths()[0]
	if oom, err := g.OOMKilled(); err != nil || oom {
		t.Fatalf("fresh group OOMKilled = %v, %v", oom, err)
	}
	// memory.events.local wins over the hierarchical memory.events.
	put(t, filepath.Join(d, "memory.events"), "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n")
	if oom, _ := g.OOMKilled(); oom {
		t.Error("OOMKilled read memory.events although memory.events.local exists")
	}
	put(t, filepath.Join(d, "memory.events.local"), "low 0\nhigh 0\nmax 7\noom 1\noom_kill 2\n")
	if oom, err := g.OOMKilled(); err != nil || !oom {
		t.Errorf("OOMKilled = %v, %v, want true", oom, err)
	}
	os.Remove(filepath.Join(d, "memory.events.local"))
	if oom, err := g.OOMKilled(); err != nil || !oom {
		t.Errorf("OOMKilled from memory.events = %v, %v, want true", oom, err)
	}
	put(t, filepath.Join(d, "memory.current"), "123456\n")
	put(t, filepath.Join(d, "cpu.stat"), "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
	put(t, filepath.Join(d, "cgroup.procs"), "10\n11\n")
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s != (Stats{MemoryBytes: 123456, CPU: 2500 * time.Millisecond, Pids: 2}) {
		t.Errorf("Stats = %+v", s)
	}
}

func TestFakeWaitEmptyReturnsAtOnceWhenNoProcessIsListed(t *testing.T) {
	opts := fakeV2(t, "cpu memory pids")
	m, _ := New(opts)
	g, err := m.Create("w", config.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// "populated 1" lags (a zombie not reaped yet), but no live process is
	// listed: the group is empty of processes.
	put(t, filepath.Join(g.Paths()[0], "cgroup.events"), "populated 1\nfrozen 0\n")
	put(t, filepath.Join(g.Paths()[0], "cgroup.procs"), "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := g.WaitEmpty(ctx); err != nil {
		t.Fatalf("WaitEmpty = %v", err)
	}
}

func TestFakeWaitEmptyWakesOnCgroupEvents(t *testing.T) {
	opts := fakeV2(t, "cpu memory pids")
	m, _ := New(opts)
	g, err := m.Create("w", config.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	events := filepath.Join(g.Paths()[0], "cgroup.events")
	procs := filepath.Join(g.Paths()[0], "cgroup.procs")
	put(t, events, "populated 1\nfrozen 0\n")
	put(t, procs, "4242\n") // a process is listed: no fast path
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := g.WaitEmpty(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitEmpty on a populated group = %v, want deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- g.WaitEmpty(context.Background()) }()
	start := time.Now()
	put(t, procs, "")
	if err := os.WriteFile(events, []byte("populated 0\nfrozen 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("woke %v after the write", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("WaitEmpty did not wake on populated 0")
	}
}

func TestFakeHybridCreateWritesV1Limits(t *testing.T) {
	opts := fakeHybrid(t)
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeHybrid {
		t.Fatalf("mode %s, want hybrid", m.Mode())
	}
	want := "hybrid: v1 memory,cpu,cpuacct,pids + cgroup2 (kill, events) at " + filepath.Join(opts.Root, "unified")
	if m.Describe() != want {
		t.Errorf("Describe = %q, want %q", m.Describe(), want)
	}
	if err := m.Supports(allLimits); err != nil {
		t.Fatal(err)
	}
	g, err := m.Create("w1", allLimits)
	if err != nil {
		t.Fatal(err)
	}
	p := func(parts ...string) string {
		return filepath.Join(append([]string{opts.Root}, parts...)...)
	}
	wantPaths := []string{p("cpu", "rbee-hive/test/w1"), p("cpuacct", "rbee-hive/test/w1"), p("memory", "rbee-hive/test/w1"), p("pids", "rbee-hive/test/w1"), p("unified", "rbee-hive/test/w1")}
	if strings.Join(g.Paths(), " ") != strings.Join(wantPaths, " ") {
		t.Errorf("Paths = %v\nwant %v", g.Paths(), wantPaths)
	}
	for file, want := range map[string]string{
		p("memory", "rbee-hive/test/w1", "memory.limit_in_bytes"):       "67108864",
		p("memory", "rbee-hive/test/w1", "memory.memsw.limit_in_bytes"): "67108864",
		p("cpu", "rbee-hive/test/w1", "cpu.cfs_period_us"):              "100000",
		p("cpu", "rbee-hive/test/w1", "cpu.cfs_quota_us"):               "150000",
		p("pids", "rbee-hive/test/w1", "pids.max"):                      "20",
	} {
		if got := read(t, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if got := len(g.JoinProcs()); got != 4 {
		t.Errorf("JoinProcs = %v, want the 4 v1 cgroup.procs", g.JoinProcs())
	}
	put(t, p("memory", "rbee-hive/test/w1", "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	put(t, p("memory", "rbee-hive/test/w1", "memory.usage_in_bytes"), "4096\n")
	put(t, p("unified", "rbee-hive/test/w1", "cpu.stat"), "usage_usec 1000\n")
	if oom, err := g.OOMKilled(); err != nil || !oom {
		t.Errorf("OOMKilled = %v, %v", oom, err)
	}
	if s, err := g.Stats(); err != nil || s.MemoryBytes != 4096 || s.CPU != time.Millisecond {
		t.Errorf("Stats = %+v, %v", s, err)
	}
	ids, _ := m.List()
	if strings.Join(ids, ",") != "w1" {
		t.Errorf("List = %v", ids)
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveScope(); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"memory", "cpu", "cpuacct", "pids", "unified"} {
		if _, err := os.Stat(p(h, "rbee-hive")); !os.IsNotExist(err) {
			t.Errorf("%s scope left: %v", h, err)
		}
	}
}

func TestFakeHybridSupportsWithoutMemoryHierarchy(t *testing.T) {
	opts := fakeHybrid(t)
	os.RemoveAll(filepath.Join(opts.Root, "memory"))
	m, _ := New(opts)
	err := m.Supports(config.Limits{MemoryMaxBytes: 1 << 20})
	if !errors.Is(err, ErrLimitsUnsupported) || !strings.Contains(err.Error(), "no v1 memory hierarchy") || !strings.Contains(err.Error(), "has no controllers") {
		t.Fatalf("Supports = %v", err)
	}
}

func TestDetectNone(t *testing.T) {
	m, err := New(Options{Root: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeNone {
		t.Fatalf("mode %s", m.Mode())
	}
	err = m.Supports(config.Limits{CPUMax: 1})
	if !errors.Is(err, ErrLimitsUnsupported) || !strings.Contains(err.Error(), "no cgroup hierarchy under") {
		t.Errorf("Supports = %v", err)
	}
	if err := m.Supports(config.Limits{Nofile: 100}); err != nil {
		t.Errorf("nofile only: %v", err)
	}
	if _, err := m.Create("w", config.Limits{}); !errors.Is(err, ErrNoCgroups) {
		t.Errorf("Create = %v, want ErrNoCgroups", err)
	}
}

func TestInvalidIDsAndScopes(t *testing.T) {
	for _, s := range []string{"../x", "/abs", "a//b", "a/../b", "a b"} {
		if _, err := New(Options{Root: t.TempDir(), Scope: s, Logger: testLogger(t)}); !errors.Is(err, ErrInvalidID) {
			t.Errorf("scope %q: %v", s, err)
		}
	}
	m, _ := New(fakeHybrid(t))
	for _, id := range []string{"", ".", "..", "a/b", "x y"} {
		if _, err := m.Create(id, config.Limits{}); !errors.Is(err, ErrInvalidID) {
			t.Errorf("id %q: %v", id, err)
		}
	}
}

// A reserved group is taken by its Create, which writes the limits into
// the directories made ahead; an id that was not reserved still fails on
// an existing directory; Unreserve removes only a group not taken.
func TestFakeHybridReservedGroupIsTakenByCreate(t *testing.T) {
	opts := fakeHybrid(t)
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	p := func(parts ...string) string {
		return filepath.Join(append([]string{opts.Root}, parts...)...)
	}
	if err := m.Reserve("w1"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"memory", "cpu", "cpuacct", "pids", "unified"} {
		if _, err := os.Stat(p(h, "rbee-hive/test/w1")); err != nil {
			t.Fatalf("reserved %s directory: %v", h, err)
		}
	}
	if ids, _ := m.List(); strings.Join(ids, ",") != "w1" {
		t.Errorf("List = %v: a reserved group must be found by an orphan cleanup", ids)
	}
	g, err := m.Create("w1", allLimits)
	if err != nil {
		t.Fatalf("Create of the reserved id: %v", err)
	}
	if got := read(t, p("memory", "rbee-hive/test/w1", "memory.limit_in_bytes")); got != "67108864" {
		t.Errorf("memory.limit_in_bytes = %q, want the limit written at Create", got)
	}
	if got := read(t, p("pids", "rbee-hive/test/w1", "pids.max")); got != "20" {
		t.Errorf("pids.max = %q", got)
	}
	if err := m.Unreserve("w1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p("memory", "rbee-hive/test/w1")); err != nil {
		t.Fatalf("Unreserve removed a group Create had taken: %v", err)
	}
	if _, err := m.Create("w1", config.Limits{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists (taken once only)", err)
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}

	if err := m.Reserve("w2"); err != nil {
		t.Fatal(err)
	}
	if err := m.Unreserve("w2"); err != nil {
		t.Fatal(err)
	}
	if ids, _ := m.List(); len(ids) != 0 {
		t.Fatalf("left after Unreserve: %v", ids)
	}
	if err := m.RemoveScope(); err != nil {
		t.Fatal(err)
	}
}
