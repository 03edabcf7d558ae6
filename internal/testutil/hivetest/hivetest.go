// Package hivetest runs a real rbee-hive daemon (built once per test
// process, with the reference worker beside it) for integration tests, and
// checks afterwards that no process it started survives.
package hivetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/client"
	"github.com/rbee/rbee-hive/internal/hive"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/procstat"
	"github.com/rbee/rbee-hive/internal/testutil/buildbin"
	"github.com/rbee/rbee-hive/internal/testutil/daemonkit"
)

// Options shape one test hive.
type Options struct {
	// Config is extra YAML appended to the generated config (which sets
	// addr, state_dir, ports and memory_reserve_bytes). It must not repeat
	// those keys.
	Config string
	// Settings is YAML for the `defaults:` block, indented by the caller
	// as a block body (e.g. "  idle_timeout: 1s\n").
	Settings string
	// StateDir reuses a state directory (restart tests); empty: a new one.
	StateDir string
	// Ports is the worker port range width; 0 means 60.
	Ports int
	// PortMin fixes the range start; 0 picks a free range at random.
	PortMin int
	// Args are extra daemon flags.
	Args []string
	// Env is extra environment for the daemon.
	Env []string
	// NoWait does not wait for /health (for start-failure tests).
	NoWait bool
	// MemoryReserve sets memory_reserve_bytes; nil keeps the generated -1
	// (memory preflight off).
	MemoryReserve *int64
	// Credential runs the daemon as another user (e.g. nobody, uid 65534,
	// to test a hive without cgroup access). The state dir is then a new
	// directory owned by that user (StateDir must be empty), with the config
	// and the test model owned by it too. Nil: as the test's own user.
	Credential *syscall.Credential
}

// Hive is a running daemon.
type Hive struct {
	t        testing.TB
	Bin      string // rbee-hive binary (the reference worker sits beside it)
	Dir      string // state dir
	Models   string // model root
	Model    string // the built-in stories260K model, inside Models
	Ref      string // "file:" + Model
	Addr     string
	URL      string
	Client   *client.Client
	Marker   string
	PortMin  int
	PortMax  int
	Config   string // path of the config file
	cmd      *exec.Cmd
	stderr   *SyncBuffer
	exited   chan struct{}
	exitErr  error
	stopOnce sync.Once
}

// Binaries builds rbee-hive, llm-worker-rbee and the generic test worker
// into one directory and returns the hive's path.
func Binaries(t testing.TB) string {
	hiveBin := buildbin.Build(t, "cmd/rbee-hive")
	buildbin.Build(t, "cmd/llm-worker-rbee")
	buildbin.Build(t, "internal/testutil/genericworker")
	return hiveBin
}

// GenericWorker returns the path of the generic HTTP test worker.
func GenericWorker(t testing.TB) string { return buildbin.Build(t, "internal/testutil/genericworker") }

// FreeRange finds n consecutive ports that can be bound now (see
// daemonkit.FreeRange).
func FreeRange(t testing.TB, n int) int {
	base, err := daemonkit.FreeRange(n)
	if err != nil {
		t.Fatal(err)
	}
	return base
}

// Start runs a daemon and registers its shutdown (and the leftover check)
// with t.Cleanup.
func Start(t testing.TB, o Options) *Hive {
	t.Helper()
	bin := Binaries(t)
	dir := o.StateDir
	if dir == "" && o.Credential != nil {
		// t.TempDir's parent is 0700 and owned by us: the other user could
		// not reach it.
		d, err := os.MkdirTemp("", "rbee-hive-cred-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	if dir == "" {
		dir = t.TempDir()
	}
	models, model, err := daemonkit.PrepareStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	width := o.Ports
	if width == 0 {
		width = 60
	}
	pmin := o.PortMin
	if pmin == 0 {
		pmin = FreeRange(t, width+1)
	}
	h := &Hive{
		t: t, Bin: bin, Dir: dir, Models: models, Model: model, Ref: "file:" + model,
		PortMin: pmin + 1, PortMax: pmin + width, Addr: "127.0.0.1:" + strconv.Itoa(pmin),
		Marker: hive.InstanceID(dir),
	}
	h.URL = "http://" + h.Addr
	reserve := int64(-1)
	if o.MemoryReserve != nil {
		reserve = *o.MemoryReserve
	}
	cfg := daemonkit.Config{Addr: h.Addr, StateDir: dir, PortMin: h.PortMin, PortMax: h.PortMax,
		MemoryReserve: reserve, Settings: o.Settings, Extra: o.Config}.YAML()
	h.Config = filepath.Join(dir, "hive.yaml")
	if err := os.WriteFile(h.Config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if c := o.Credential; c != nil {
		for _, p := range []string{dir, models, model, h.Config} {
			if err := os.Chown(p, int(c.Uid), int(c.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	h.Client = client.New(h.URL, "")
	h.start(o)
	t.Cleanup(func() { h.Close() })
	return h
}

func (h *Hive) start(o Options) {
	h.t.Helper()
	args := append([]string{"daemon", "--config", h.Config}, o.Args...)
	h.cmd = exec.Command(h.Bin, args...)
	h.cmd.Env = append(os.Environ(), o.Env...)
	h.stderr = &SyncBuffer{}
	h.cmd.Stdout = h.stderr
	h.cmd.Stderr = h.stderr
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: o.Credential}
	if err := process.StartCmd(h.cmd); err != nil {
		h.t.Fatal(err)
	}
	h.exited = make(chan struct{})
	go func() {
		h.exitErr = process.WaitCmd(h.cmd)
		close(h.exited)
	}()
	if o.NoWait {
		return
	}
	switch err := daemonkit.WaitHealthy(h.URL, h.exited, 20*time.Second); {
	case errors.Is(err, daemonkit.ErrExited):
		h.t.Fatalf("daemon exited at start: %v\n%s", h.exitErr, h.stderr.String())
	case err != nil:
		h.t.Fatalf("%v\n%s", err, h.stderr.String())
	}
}

// Restart starts a new daemon on the same state dir and config (after a
// Kill9 or Stop).
func (h *Hive) Restart(o Options) {
	h.t.Helper()
	select {
	case <-h.exited:
	default:
		h.t.Fatal("Restart while the daemon still runs")
	}
	h.stopOnce = sync.Once{}
	h.start(o)
}

// PID is the daemon's pid.
func (h *Hive) PID() int { return h.cmd.Process.Pid }

// Log returns what the daemon has written so far.
func (h *Hive) Log() string { return h.stderr.String() }

// Exited is closed when the daemon has exited.
func (h *Hive) Exited() <-chan struct{} { return h.exited }

// ExitErr is the daemon's exit error (after Exited).
func (h *Hive) ExitErr() error { return h.exitErr }

// Signal sends sig to the daemon.
func (h *Hive) Signal(sig syscall.Signal) { _ = h.cmd.Process.Signal(sig) }

// Kill9 SIGKILLs the daemon (not its workers) and waits for it.
func (h *Hive) Kill9() {
	h.Signal(syscall.SIGKILL)
	<-h.exited
}

// Stop sends SIGTERM and waits (bounded) for a clean exit; it returns the
// exit error.
func (h *Hive) Stop(timeout time.Duration) error {
	h.t.Helper()
	if _, err := daemonkit.Stop(h.PID(), h.exited, timeout); err != nil {
		return err
	}
	return h.exitErr
}

// Close stops the daemon if it runs and fails the test if any process of
// this hive (a worker, a grandchild) survives.
func (h *Hive) Close() {
	h.stopOnce.Do(func() {
		select {
		case <-h.exited:
		default:
			h.AssertNoZombies()
			if err := h.Stop(60 * time.Second); err != nil {
				h.t.Errorf("daemon shutdown: %v\n%s", err, tail(h.Log(), 40))
			}
		}
		h.AssertNoLeftovers()
		if h.exitErr == nil {
			h.AssertNoCgroupsLeft()
		}
	})
}

// cgroupHierarchies are where a hybrid, v1 or v2 host keeps worker cgroups;
// the ones that do not exist are skipped.
var cgroupHierarchies = []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids",
	"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup"}

// ScopeDirs returns the hive's cgroup scope directory in every hierarchy
// that has cgroups.
func ScopeDirs(marker string) []string {
	if CgroupV2() {
		return []string{filepath.Join(CgroupBase(""), "rbee-hive", marker)}
	}
	var out []string
	for _, d := range cgroupHierarchies {
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
			out = append(out, filepath.Join(d, "rbee-hive", marker))
		}
	}
	return out
}

// CgroupV2 reports whether this host is pure cgroup v2 (one cgroup2
// hierarchy with controllers at /sys/fs/cgroup), as scripts/cgroupv2-vm.sh's
// guest is; otherwise it is hybrid (or v1).
func CgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// CgroupBase is the directory a test hive's scope lives under for controller
// ("memory", "cpu", "pids"; "" for the cgroup2 hierarchy that kills and
// reports): on v2 the test process's own cgroup (which the hive it starts
// inherits), on a hybrid host the controller's v1 hierarchy or the cgroup2
// one at /sys/fs/cgroup/unified.
func CgroupBase(controller string) string {
	if CgroupV2() {
		own := "/"
		b, _ := os.ReadFile("/proc/self/cgroup")
		for _, l := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(l, "0::"); ok {
				own = p
			}
		}
		return filepath.Join("/sys/fs/cgroup", own)
	}
	if controller == "" {
		controller = "unified"
	}
	return filepath.Join("/sys/fs/cgroup", controller)
}

// WorkerCgroup is the directory of a worker's cgroup for controller (see
// CgroupBase).
func WorkerCgroup(marker, id, controller string) string {
	return filepath.Join(CgroupBase(controller), "rbee-hive", marker, id)
}

// AssertNoCgroupsLeft fails the test if the (cleanly exited) daemon left
// any cgroup directory of its scope behind.
func (h *Hive) AssertNoCgroupsLeft() {
	h.t.Helper()
	var left []string
	Eventually(h.t, 5*time.Second, func() bool {
		left = nil
		for _, d := range ScopeDirs(h.Marker) {
			if _, err := os.Stat(d); err == nil {
				left = append(left, d)
			}
		}
		return len(left) == 0
	})
	if len(left) > 0 {
		h.t.Errorf("cgroup directories left after the hive exited: %v", left)
	}
}

// AssertNoZombies fails the test if the running daemon has unreaped
// children (a worker or an orphaned grandchild it should have reaped).
func (h *Hive) AssertNoZombies() {
	h.t.Helper()
	var z []int
	ok := Eventually(h.t, 3*time.Second, func() bool { z = zombiesOf(h.PID()); return len(z) == 0 })
	if !ok {
		h.t.Errorf("daemon %d left zombie children: %v", h.PID(), z)
	}
}

// zombiesOf lists zombie processes whose parent is ppid.
func zombiesOf(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := procstat.Read("", pid)
		if err == nil && st.State == 'Z' && st.PPID == ppid {
			out = append(out, pid)
		}
	}
	return out
}

// Leftovers returns live (non-zombie) processes carrying this hive's marker.
func (h *Hive) Leftovers() []int { return process.FindByEnv("RBEE_HIVE_MARKER", h.Marker) }

// AssertNoLeftovers fails the test (and kills them) if processes of this
// hive are alive.
func (h *Hive) AssertNoLeftovers() {
	h.t.Helper()
	var left []int
	Eventually(h.t, 5*time.Second, func() bool { left = h.Leftovers(); return len(left) == 0 })
	if len(left) > 0 {
		for _, pid := range left {
			cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			h.t.Errorf("process %d of this hive survived: %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Spawn spawns a worker on the test model with req's other fields.
func (h *Hive) Spawn(req apiv1.SpawnRequest) (*apiv1.SpawnResponse, error) {
	if req.ModelRef == "" {
		req.ModelRef = h.Ref
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return h.Client.Spawn(ctx, &req)
}

// MustSpawn is Spawn that fails the test on error.
func (h *Hive) MustSpawn(req apiv1.SpawnRequest) *apiv1.SpawnResponse {
	h.t.Helper()
	r, err := h.Spawn(req)
	if err != nil {
		h.t.Fatalf("spawn: %v", err)
	}
	return r
}

// Get returns the worker's info, failing the test on error.
func (h *Hive) Get(id string) *apiv1.WorkerInfo {
	h.t.Helper()
	info, err := h.Client.Get(context.Background(), id)
	if err != nil {
		h.t.Fatalf("get %s: %v", id, err)
	}
	return info
}

// WaitState waits until the worker is in one of states and returns it.
func (h *Hive) WaitState(id string, timeout time.Duration, states ...string) *apiv1.WorkerInfo {
	h.t.Helper()
	var last *apiv1.WorkerInfo
	ok := Eventually(h.t, timeout, func() bool {
		info, err := h.Client.Get(context.Background(), id)
		if err != nil {
			return false
		}
		last = info
		for _, s := range states {
			if string(info.State) == s {
				return true
			}
		}
		return false
	})
	if !ok {
		st := "unknown"
		if last != nil {
			st = fmt.Sprintf("%s/%s (%s)", last.State, last.Reason, last.Detail)
		}
		h.t.Fatalf("worker %s not in %v after %s; it is %s\nhive log:\n%s", id, states, timeout, st, tail(h.Log(), 30))
	}
	return last
}

// Eventually polls cond every 10 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Alive reports whether pid is a live, non-zombie process.
func Alive(pid int) bool {
	st, err := procstat.Read("", pid)
	return err == nil && !st.Dead()
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// SyncBuffer is a bytes.Buffer safe for one writer and concurrent readers
// (a child process's output read while it runs).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Main is the TestMain of a package whose tests run daemons: the test
// binary becomes a child subreaper with a reaper (workers of a daemon that
// was SIGKILLed are re-parented to it, not to a PID 1 that may never reap
// them), runs the tests, and then fails the run if goroutines leaked.
func Main(m *testing.M) {
	if err := process.BecomeSubreaper(); err != nil {
		panic(err)
	}
	r, err := process.StartReaper(nil)
	if err != nil {
		panic(err)
	}
	code := m.Run()
	r.Close()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("internal/poll.runtime_pollWait")); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}
