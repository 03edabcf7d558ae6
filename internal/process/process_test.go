package process

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func sleepSpec() Spec {
	return Spec{Path: "/bin/sleep", Args: []string{"sleep", "1000"}}
}

func shSpec(script string) Spec {
	return Spec{Path: "/bin/sh", Args: []string{"sh", "-c", script}}
}

func randomName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "rbee-test-" + hex.EncodeToString(b)
}

func TestStartRecordsIdentity(t *testing.T) {
	p := start(t, sleepSpec())
	if !p.Child || p.PGID != p.PID {
		t.Fatalf("Child=%v PGID=%d PID=%d, want a child leading its own group", p.Child, p.PGID, p.PID)
	}
	st, err := readStat(p.PID)
	if err != nil {
		t.Fatal(err)
	}
	if st.PGRP != p.PID || st.PPID != os.Getpid() || st.StartTime != p.StartTime {
		t.Fatalf("stat %+v, Proc %+v", st, p)
	}
	boot, err := BootID()
	if err != nil || p.BootID != boot || len(boot) != 36 {
		t.Fatalf("BootID %q / %q, %v", p.BootID, boot, err)
	}
	if !ProcessAlive(p.PID, p.StartTime) || ProcessAlive(p.PID, p.StartTime+1) {
		t.Fatal("ProcessAlive disagrees with the live process")
	}
	if p.Exited() || p.Exit() != (Exit{}) {
		t.Fatalf("Exit before exit: %+v", p.Exit())
	}
}

func TestExitCode(t *testing.T) {
	for _, code := range []int{0, 3, 127} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			p := start(t, helperSpec(t, "exit", strconv.Itoa(code)))
			ex := waitDone(t, p, 10*time.Second)
			if !ex.Known || ex.Code == nil || *ex.Code != code || ex.Signal != 0 || ex.Rusage == nil {
				t.Fatalf("Exit = %+v (%v), want code %d", ex, ex, code)
			}
			if got, want := ex.String(), "exit code "+strconv.Itoa(code); got != want {
				t.Fatalf("String = %q, want %q", got, want)
			}
		})
	}
}

func TestExitBySignal(t *testing.T) {
	p := start(t, sleepSpec())
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ex := waitDone(t, p, 10*time.Second)
	if !ex.Known || ex.Code != nil || ex.Signal != syscall.SIGTERM {
		t.Fatalf("Exit = %+v, want killed by SIGTERM", ex)
	}
	if ex.String() != "signal terminated" {
		t.Fatalf("String = %q", ex.String())
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, ErrGone) {
		t.Fatalf("Signal after exit = %v, want ErrGone", err)
	}
	if err := p.SignalGroup(syscall.SIGTERM); !errors.Is(err, ErrGone) {
		t.Fatalf("SignalGroup after the group is empty = %v, want ErrGone", err)
	}
	if p.GroupAlive() {
		t.Fatal("GroupAlive after the only member was reaped")
	}
}

func TestDoneLatencyAfterExternalSIGKILL(t *testing.T) {
	var lat []time.Duration
	for range 20 {
		p := start(t, sleepSpec())
		t0 := time.Now()
		if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		ex := waitDone(t, p, time.Second)
		d := time.Since(t0)
		if ex.Signal != syscall.SIGKILL {
			t.Fatalf("Exit = %+v", ex)
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	t.Logf("kill → Done latency over %d runs: min %v, median %v, max %v", len(lat), lat[0], lat[len(lat)/2], lat[len(lat)-1])
}

func TestSignalGroupKillsGrandchild(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	p := start(t, helperSpec(t, "spawn", pidfile, "group"))
	gpid, gstart := readPidFile(t, pidfile)
	t.Cleanup(func() { killOrphan(t, gpid, gstart) })
	st, err := readStat(gpid)
	if err != nil || st.PGRP != p.PGID {
		t.Fatalf("grandchild %d in group %d (%v), want %d", gpid, st.PGRP, err, p.PGID)
	}
	if err := p.SignalGroup(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ex := waitDone(t, p, 10*time.Second)
	if ex.Signal != syscall.SIGKILL {
		t.Fatalf("leader Exit = %+v", ex)
	}
	eventually(t, 10*time.Second, "grandchild to die", func() bool { return !ProcessAlive(gpid, gstart) })
}

// A member of the group outlives its leader: SignalGroup still reaches it
// after Done, through the group id the member keeps reserved.
func TestSignalGroupAfterLeaderExit(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	p := start(t, helperSpec(t, "spawn", pidfile, "group"))
	gpid, gstart := readPidFile(t, pidfile)
	t.Cleanup(func() { killOrphan(t, gpid, gstart) })
	if err := p.Signal(syscall.SIGKILL); err != nil { // the leader only
		t.Fatal(err)
	}
	waitDone(t, p, 10*time.Second)
	if !ProcessAlive(gpid, gstart) || !p.GroupAlive() {
		t.Fatal("grandchild should outlive the leader, and the group be alive")
	}
	if err := p.SignalGroup(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "grandchild to die", func() bool { return !ProcessAlive(gpid, gstart) })
	killOrphan(t, gpid, gstart) // reap it: a zombie still counts as a group member
	if p.GroupAlive() {
		t.Fatal("GroupAlive after every member is gone")
	}
	if err := p.SignalGroup(syscall.SIGKILL); !errors.Is(err, ErrGone) {
		t.Fatalf("SignalGroup of an empty group = %v, want ErrGone", err)
	}
}

// A grandchild that called setsid has left the group: SignalGroup does not
// reach it (by design; the cgroup kill does).
func TestSignalGroupMissesSetsidGrandchild(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	p := start(t, helperSpec(t, "spawn", pidfile, "setsid"))
	gpid, gstart := readPidFile(t, pidfile)
	t.Cleanup(func() { killOrphan(t, gpid, gstart) })
	if err := p.SignalGroup(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p, 10*time.Second)
	if !ProcessAlive(gpid, gstart) {
		t.Fatal("setsid grandchild was killed by SignalGroup; expected it to escape the group")
	}
	if p.GroupAlive() {
		t.Fatal("GroupAlive: the setsid grandchild is not in the group")
	}
	// The hive reaches such a process through its cgroup, or, knowing its
	// PID and start time, through Adopt.
	g, err := Adopt(gpid, gstart, p.BootID)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, g, 10*time.Second)
}

// Adopt a process that is not our child: the grandchild of a helper, which
// the helper (its parent) reaps.
func TestAdoptNonChild(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	parent := start(t, helperSpec(t, "spawn", pidfile, "newgroup"))
	gpid, gstart := readPidFile(t, pidfile)
	t.Cleanup(func() { killOrphan(t, gpid, gstart) })

	a, err := Adopt(gpid, gstart, parent.BootID)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Child || a.PID != gpid || a.PGID != gpid || a.StartTime != gstart {
		t.Fatalf("adopted %+v", a)
	}
	select {
	case <-a.Done():
		t.Fatal("Done closed for a live process")
	default:
	}
	t0 := time.Now()
	if err := syscall.Kill(gpid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ex := waitDone(t, a, time.Second)
	t.Logf("adopted process: kill → Done %v", time.Since(t0))
	if ex.Known || ex.Code != nil || ex.Signal != 0 || ex.At.IsZero() {
		t.Fatalf("Exit of adopted = %+v, want Known=false with a time", ex)
	}
	if ex.String() != "exited (status unknown)" {
		t.Fatalf("String = %q", ex.String())
	}
	// Its real parent reaped it and then exited 0.
	if pex := waitDone(t, parent, 10*time.Second); pex.Code == nil || *pex.Code != 0 {
		t.Fatalf("helper parent Exit = %+v", pex)
	}
	if err := a.Signal(syscall.SIGKILL); !errors.Is(err, ErrGone) {
		t.Fatalf("Signal after exit = %v, want ErrGone", err)
	}
}

// Adopt also works for a process started without this package (here: our
// own child through syscall.ForkExec). Adopt never reaps; its starter does.
func TestAdoptForkExecChild(t *testing.T) {
	pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "1000"}, &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Setpgid: true}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := ReadStartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killOrphan(t, pid, st) })
	boot, _ := BootID()
	a, err := Adopt(pid, st, boot)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.SignalGroup(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ex := waitDone(t, a, time.Second); ex.Known {
		t.Fatalf("Exit = %+v, want Known=false", ex)
	}
	// Still a zombie: Adopt did not reap it.
	if s, err := readStat(pid); err != nil || s.State != 'Z' {
		t.Fatalf("state %c, %v; want a zombie left for its parent", s.State, err)
	}
}

func TestAdoptWrongStartTimeIsNotSameAndUntouched(t *testing.T) {
	p := start(t, sleepSpec())
	for _, st := range []uint64{p.StartTime - 1, p.StartTime + 1, 0} {
		a, err := Adopt(p.PID, st, p.BootID)
		if !errors.Is(err, ErrNotSame) || a != nil {
			t.Fatalf("Adopt(start time %d) = %v, %v; want ErrNotSame", st, a, err)
		}
	}
	if _, err := Adopt(p.PID, p.StartTime, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, ErrNotSame) {
		t.Fatalf("Adopt(other boot) = %v, want ErrNotSame", err)
	}
	if _, err := Adopt(0, 1, p.BootID); !errors.Is(err, ErrNotSame) {
		t.Fatalf("Adopt(pid 0) = %v, want ErrNotSame", err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if (strings.HasPrefix(line, "SigPnd:") || strings.HasPrefix(line, "ShdPnd:")) && !strings.HasSuffix(line, "0000000000000000") {
			t.Fatalf("process was touched: %q", line)
		}
	}
	if p.Exited() {
		t.Fatal("process exited")
	}
}

func TestAdoptDeadPIDIsGone(t *testing.T) {
	p := start(t, sleepSpec())
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p, 10*time.Second)
	if _, err := Adopt(p.PID, p.StartTime, p.BootID); !errors.Is(err, ErrGone) {
		t.Fatalf("Adopt(reaped pid) = %v, want ErrGone", err)
	}
	if _, err := ReadStartTime(p.PID); !errors.Is(err, ErrGone) {
		t.Fatalf("ReadStartTime(reaped pid) = %v, want ErrGone", err)
	}
	if ProcessAlive(p.PID, p.StartTime) {
		t.Fatal("ProcessAlive for a reaped process")
	}
}

func TestAdoptZombieIsGone(t *testing.T) {
	pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "1000"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := ReadStartTime(pid)
	t.Cleanup(func() { killOrphan(t, pid, st) })
	_ = syscall.Kill(pid, syscall.SIGKILL)
	eventually(t, 10*time.Second, "zombie", func() bool { s, err := readStat(pid); return err == nil && s.Dead() })
	if ProcessAlive(pid, st) {
		t.Fatal("ProcessAlive for a zombie")
	}
	boot, _ := BootID()
	if _, err := Adopt(pid, st, boot); !errors.Is(err, ErrGone) {
		t.Fatalf("Adopt(zombie) = %v, want ErrGone", err)
	}
}

func TestSignalAndCloseAfterClose(t *testing.T) {
	p, err := Start(sleepSpec())
	if err != nil {
		t.Fatal(err)
	}
	pid, st := p.PID, p.StartTime
	// Close before exit ends the watcher (goleak checks) and stops all
	// signalling; the child is then ours to reap by hand.
	t.Cleanup(func() { killOrphan(t, pid, st) })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := p.Signal(syscall.SIGKILL); !errors.Is(err, ErrClosed) {
		t.Fatalf("Signal after Close = %v, want ErrClosed", err)
	}
	if err := p.SignalGroup(syscall.SIGKILL); !errors.Is(err, ErrClosed) {
		t.Fatalf("SignalGroup after Close = %v, want ErrClosed", err)
	}
	if !ProcessAlive(pid, st) {
		t.Fatal("Close signalled the process")
	}
	select {
	case <-p.Done():
		t.Fatal("Done closed by Close")
	default:
	}
}

func TestStartMissingProgramLeavesNothing(t *testing.T) {
	noexec := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		spec Spec
		want error
	}{
		{"missing", Spec{Path: "/nonexistent/rbee-worker"}, fs.ErrNotExist},
		{"not executable", Spec{Path: noexec}, fs.ErrPermission},
		{"missing via launcher", Spec{Path: "/nonexistent/rbee-worker", Nofile: 1024}, fs.ErrNotExist},
		{"not executable via launcher", Spec{Path: noexec, Nofile: 1024}, fs.ErrPermission},
		{"relative path", Spec{Path: "sleep"}, ErrInvalidSpec},
		{"bad dir", Spec{Path: "/bin/sleep", Dir: "/nonexistent"}, fs.ErrNotExist},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Start(c.spec)
			if err == nil {
				cleanupProc(t, p)
				t.Fatal("Start succeeded")
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.spec.Path) {
				t.Fatalf("err = %v; want %v, naming %s", err, c.want, c.spec.Path)
			}
			t.Logf("err: %v", err)
			if left := children(); len(left) > 0 {
				t.Fatalf("processes left: %v", left)
			}
		})
	}
}

func TestStdioAreTheGivenFiles(t *testing.T) {
	out, errf := tempFile(t, "out.log"), tempFile(t, "err.log")
	p := start(t, Spec{
		Path: "/bin/sh", Args: []string{"sh", "-c", `echo "out $FOO"; echo "err $(pwd)" >&2; read x || echo "stdin eof"; exec sleep 1000`},
		Env:    []string{"FOO=bar", "PATH=/usr/bin:/bin"},
		Dir:    "/tmp",
		Stdout: out, Stderr: errf,
	})
	eventually(t, 10*time.Second, "sleep to be exec'd", func() bool {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
		return strings.HasSuffix(exe, "/sleep")
	})
	for fd, want := range map[int]string{0: os.DevNull, 1: out.Name(), 2: errf.Name()} {
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", p.PID, fd))
		if err != nil || got != want {
			t.Errorf("fd %d → %q (%v), want %q", fd, got, err, want)
		}
	}
	onlyStdio(t, p.PID)
	o, _ := os.ReadFile(out.Name())
	e, _ := os.ReadFile(errf.Name())
	if string(o) != "out bar\nstdin eof\n" || string(e) != "err /tmp\n" {
		t.Fatalf("stdout %q, stderr %q", o, e)
	}
}

// Regression: descriptors the hive inherited without close-on-exec (here a
// dup) leaked into every worker.
func TestInheritedFDDoesNotLeakIntoChild(t *testing.T) {
	fd, err := syscall.Dup(2) // dup(2) never sets close-on-exec
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	p := start(t, sleepSpec())
	onlyStdio(t, p.PID)
}

// onlyStdio waits until pid has exactly fds 0, 1 and 2 open. (The program
// itself may hold another one briefly while it starts, e.g. sleep reading
// its locale; a leaked descriptor stays.)
func onlyStdio(t *testing.T, pid int) {
	t.Helper()
	var l []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 3 {
			return
		}
		if time.Now().After(deadline) {
			l = l[:0]
			for _, e := range ents {
				dst, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
				l = append(l, e.Name()+"→"+dst)
			}
			t.Fatalf("child has fds %v, want only 0, 1, 2", l)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNilStdioIsDevNull(t *testing.T) {
	p := start(t, sleepSpec())
	for fd := range 3 {
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", p.PID, fd))
		if err != nil || got != os.DevNull {
			t.Errorf("fd %d → %q (%v), want /dev/null", fd, got, err)
		}
	}
}

func TestLauncherNofile(t *testing.T) { bothJoins(t, testLauncherNofile) }

func testLauncherNofile(t *testing.T, shim bool) {
	spec := sleepSpec()
	spec.Nofile = 1234
	spec.Env = []string{"RBEE_MARK=nofile"}
	p := start(t, spec)
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	if !strings.HasSuffix(exe, "/sleep") {
		t.Fatalf("exe = %q: Start returned before the target was exec'd", exe)
	}
	if tracer := statusField(t, p.PID, "TracerPid"); tracer != "0" {
		t.Fatalf("TracerPid %s: the worker is still traced", tracer)
	}
	if st, _ := ReadStartTime(p.PID); st != p.StartTime {
		t.Fatalf("start time changed across exec: %d vs %d", st, p.StartTime)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", p.PID))
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.SplitSeq(string(limits), "\n") {
		if strings.HasPrefix(l, "Max open files") {
			line = l
		}
	}
	if f := strings.Fields(line); len(f) < 5 || f[3] != "1234" || f[4] != "1234" {
		t.Fatalf("limits line %q, want 1234 1234", line)
	}
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.PID))
	if string(env) != "RBEE_MARK=nofile\x00" {
		t.Fatalf("environ through the launcher = %q", env)
	}
	if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID)); string(cmd) != "sleep\x001000\x00" {
		t.Fatalf("cmdline = %q", cmd)
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ex := waitDone(t, p, 10*time.Second); ex.Signal != syscall.SIGKILL {
		t.Fatalf("Exit = %+v", ex)
	}
}

// makeCgroup creates a test cgroup directory under root and removes it in
// cleanup (after the processes in it are gone: register it before them).
func makeCgroup(t *testing.T, root string) string {
	t.Helper()
	dir := filepath.Join(root, randomName(t))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		eventually(t, 10*time.Second, "rmdir "+dir, func() bool {
			err := syscall.Rmdir(dir)
			return err == nil || errors.Is(err, syscall.ENOENT)
		})
	})
	return dir
}

// cgroupOf returns /proc/pid/cgroup's path for the hierarchy whose
// controller list is ctrl ("pids", or "" for cgroup v2).
func cgroupOf(t *testing.T, pid int, ctrl string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && f[1] == ctrl {
			return f[2]
		}
	}
	t.Fatalf("no %q hierarchy in %s", ctrl, b)
	return ""
}

func TestLauncherJoinProcsV1(t *testing.T) { bothJoins(t, testLauncherJoinProcsV1) }

func testLauncherJoinProcsV1(t *testing.T, shim bool) {
	dir := makeCgroup(t, "/sys/fs/cgroup/pids")
	spec := sleepSpec()
	spec.JoinProcs = []string{filepath.Join(dir, "cgroup.procs")}
	p := start(t, spec)
	if got, want := cgroupOf(t, p.PID, "pids"), "/"+filepath.Base(dir); got != want {
		t.Fatalf("pids cgroup %q, want %q", got, want)
	}
	procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if strings.TrimSpace(string(procs)) != strconv.Itoa(p.PID) {
		t.Fatalf("cgroup.procs = %q, want %d", procs, p.PID)
	}
}

func TestLauncherJoinProcsFailureLeavesNothing(t *testing.T) {
	bothJoins(t, testLauncherJoinProcsFailureLeavesNothing)
}

func testLauncherJoinProcsFailureLeavesNothing(t *testing.T, shim bool) {
	spec := sleepSpec()
	spec.JoinProcs = []string{"/sys/fs/cgroup/pids/" + randomName(t) + "/cgroup.procs"}
	errf := tempFile(t, "err.log")
	spec.Stderr = errf
	p, err := Start(spec)
	if err == nil {
		cleanupProc(t, p)
		t.Fatal("Start succeeded")
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), spec.JoinProcs[0]) {
		t.Fatalf("err = %v", err)
	}
	t.Logf("err: %v", err)
	if left := children(); len(left) > 0 {
		t.Fatalf("processes left: %v", left)
	}
	e, _ := os.ReadFile(errf.Name())
	if shim && !strings.HasPrefix(string(e), "rbee-launch: join cgroup ") {
		t.Fatalf("stderr = %q", e)
	}
}

func TestCloneIntoCgroupV2(t *testing.T) {
	dir := makeCgroup(t, "/sys/fs/cgroup/unified")
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	spec := sleepSpec()
	spec.CgroupFD = fd
	p := start(t, spec)
	if got, want := cgroupOf(t, p.PID, ""), "/"+filepath.Base(dir); got != want {
		t.Fatalf("cgroup v2 %q, want %q", got, want)
	}
}

// All three at once, as on a hybrid host with limits: created in the v2
// cgroup, joins the v1 one, then runs with the limit.
func TestLauncherWithCgroupV2AndV1AndNofile(t *testing.T) {
	bothJoins(t, testLauncherWithCgroupV2AndV1AndNofile)
}

func testLauncherWithCgroupV2AndV1AndNofile(t *testing.T, shim bool) {
	v2 := makeCgroup(t, "/sys/fs/cgroup/unified")
	v1 := makeCgroup(t, "/sys/fs/cgroup/pids")
	fd, err := syscall.Open(v2, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	spec := sleepSpec()
	spec.CgroupFD, spec.JoinProcs, spec.Nofile = fd, []string{filepath.Join(v1, "cgroup.procs")}, 4321
	p := start(t, spec)
	if got := cgroupOf(t, p.PID, ""); got != "/"+filepath.Base(v2) {
		t.Fatalf("v2 cgroup %q", got)
	}
	if got := cgroupOf(t, p.PID, "pids"); got != "/"+filepath.Base(v1) {
		t.Fatalf("v1 cgroup %q", got)
	}
	if err := p.SignalGroup(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ex := waitDone(t, p, 10*time.Second); ex.Signal != syscall.SIGTERM {
		t.Fatalf("Exit = %+v", ex)
	}
}

func TestStartBadCgroupFDLeavesNothing(t *testing.T) {
	f := tempFile(t, "not-a-cgroup")
	rc, _ := f.SyscallConn()
	var err error
	_ = rc.Control(func(fd uintptr) {
		spec := sleepSpec()
		spec.CgroupFD = int(fd)
		var p *Proc
		p, err = Start(spec)
		if err == nil {
			cleanupProc(t, p)
		}
	})
	if err == nil || !strings.Contains(err.Error(), "/bin/sleep") {
		t.Fatalf("Start with a regular file as cgroup fd: err = %v", err)
	}
	t.Logf("err: %v", err)
	if left := children(); len(left) > 0 {
		t.Fatalf("processes left: %v", left)
	}
}

func threads(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Exit detection must not cost an OS thread per process (1000 workers).
func TestManyChildrenDoNotCostAThreadEach(t *testing.T) {
	const n = 200
	before := threads(t)
	procs := make([]*Proc, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 4 { // start concurrently, as the hive may
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				p, err := Start(sleepSpec())
				if err != nil {
					errs <- err
					return
				}
				procs[i] = p
			}
		})
	}
	wg.Wait()
	for _, p := range procs {
		if p != nil {
			t.Cleanup(func() { cleanupProc(t, p) })
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := threads(t)
	t.Logf("threads: %d before, %d with %d live children", before, after, n)
	if after-before > 20 {
		t.Fatalf("threads grew by %d for %d processes", after-before, n)
	}
	t0 := time.Now()
	for _, p := range procs {
		if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		if ex := waitDone(t, p, 10*time.Second); ex.Signal != syscall.SIGKILL {
			t.Fatalf("Exit = %+v", ex)
		}
	}
	t.Logf("%d kills observed in %v", n, time.Since(t0))
}

func TestFindByEnv(t *testing.T) {
	marker := randomName(t)
	var want []int
	for i := range 3 {
		spec := sleepSpec()
		spec.Env = []string{"A=1", "RBEE_HIVE_ID=" + marker, "B=2"}
		if i == 2 {
			spec.Nofile = 2048 // through the launcher, too
		}
		want = append(want, start(t, spec).PID)
	}
	other := sleepSpec()
	other.Env = []string{"RBEE_HIVE_ID=" + marker + "x"}
	start(t, other)
	sort.Ints(want)
	if got := FindByEnv("RBEE_HIVE_ID", marker); !slices.Equal(got, want) {
		t.Fatalf("FindByEnv = %v, want %v", got, want)
	}
	if got := FindByEnv("RBEE_HIVE_ID", randomName(t)); len(got) != 0 {
		t.Fatalf("FindByEnv(unknown) = %v", got)
	}
}

func TestSignalGroupRefusesForeignGroup(t *testing.T) {
	// Adopting ourselves: we do not lead our group's... or if we do, it is
	// our own group. Either way SignalGroup must refuse.
	st, err := ReadStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := BootID()
	self, err := Adopt(os.Getpid(), st, boot)
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if err := self.SignalGroup(syscall.SIGKILL); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("SignalGroup of own group = %v, want ErrNotLeader", err)
	}
}

// Signal, SignalGroup, Exit and Close from several goroutines while the
// process dies: no race, no panic, and every call answers nil, ErrGone or
// ErrClosed.
func TestConcurrentSignalCloseAndExit(t *testing.T) {
	for range 20 {
		p, err := Start(sleepSpec())
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 50 {
					for _, err := range []error{p.Signal(0), p.SignalGroup(0)} {
						if err != nil && !errors.Is(err, ErrGone) && !errors.Is(err, ErrClosed) {
							t.Errorf("unexpected error %v", err)
						}
					}
					_ = p.Exit()
					_ = p.GroupAlive()
				}
			})
		}
		wg.Go(func() { _ = p.Signal(syscall.SIGKILL) })
		waitDone(t, p, 10*time.Second)
		wg.Go(func() { _ = p.Close() })
		wg.Wait()
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if ex := p.Exit(); ex.Signal != syscall.SIGKILL {
			t.Fatalf("Exit = %+v", ex)
		}
	}
}

// bothJoins runs a launcher test twice: joins and limits applied at the
// exec stop (ptrace, the default) and through the launcher shim (the
// fallback where ptrace is denied).
func bothJoins(t *testing.T, f func(t *testing.T, shim bool)) {
	for _, shim := range []bool{false, true} {
		name := "ptrace"
		if shim {
			name = "shim"
		}
		t.Run(name, func(t *testing.T) {
			traceDenied.Store(shim)
			defer traceDenied.Store(false)
			f(t, shim)
			if !shim && traceDenied.Load() {
				t.Fatal("the traced start fell back to the shim")
			}
		})
	}
}

// statusField returns a field of /proc/pid/status.
func statusField(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return ""
}

// The v1 join (an RCU grace period per move, ~5 ms) runs after Start
// returns; the child is not reaped (its PID not freed) before it is done,
// even when the child exits at once.
func TestJoinAfterV1FinishesBeforeReap(t *testing.T) {
	dir := makeCgroup(t, "/sys/fs/cgroup/pids")
	spec := sleepSpec()
	spec.Path, spec.Args = "/bin/true", []string{"/bin/true"}
	spec.JoinAfter = []string{filepath.Join(dir, "cgroup.procs")}
	for i := 0; i < 20; i++ {
		p := start(t, spec)
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("no exit within 10s")
		}
		select {
		case <-p.Joined():
		default:
			t.Fatal("the child was reaped before its cgroup join had finished")
		}
		if err := p.JoinErr(); err != nil {
			t.Fatalf("join of an exited child: %v (ESRCH is not an error)", err)
		}
	}
}

// Accounting-only v1 cgroups are joined right after the start, without an
// exec stop (and without the shim).
func TestJoinAfterV1(t *testing.T) {
	dir := makeCgroup(t, "/sys/fs/cgroup/pids")
	spec := sleepSpec()
	spec.JoinAfter = []string{filepath.Join(dir, "cgroup.procs")}
	p := start(t, spec)
	select {
	case <-p.Joined():
	case <-time.After(10 * time.Second):
		t.Fatal("the join did not finish within 10s")
	}
	if err := p.JoinErr(); err != nil {
		t.Fatal(err)
	}
	if got, want := cgroupOf(t, p.PID, "pids"), "/"+filepath.Base(dir); got != want {
		t.Fatalf("pids cgroup %q, want %q", got, want)
	}
	if tracer := statusField(t, p.PID, "TracerPid"); tracer != "0" {
		t.Fatalf("TracerPid %s", tracer)
	}
	spec.JoinAfter = []string{"/sys/fs/cgroup/pids/" + randomName(t) + "/cgroup.procs"}
	if p, err := Start(spec); err == nil {
		cleanupProc(t, p)
		t.Fatal("Start succeeded with a missing cgroup")
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
	if left := children(); len(left) > 1 { // the first sleep is still running
		t.Fatalf("processes left: %v", left)
	}
}
