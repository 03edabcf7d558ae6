package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// listByID returns the live workers (or all with all) keyed by id.
func listByID(t *testing.T, h *hivetest.Hive, all bool) map[string]*apiv1.WorkerInfo {
	t.Helper()
	l, err := h.Client.List(context.Background(), all)
	if err != nil {
		t.Fatalf("list: %v\n%s", err, h.Log())
	}
	m := map[string]*apiv1.WorkerInfo{}
	for _, w := range l {
		m[w.ID] = w
	}
	return m
}

// restartAfterKill9 SIGKILLs the hive (not its workers) and starts a new
// one on the same state dir; it returns how long the new one took to
// answer /health.
func restartAfterKill9(t *testing.T, h *hivetest.Hive, o hivetest.Options) time.Duration {
	t.Helper()
	h.Kill9()
	waitBindable(t, h.Addr)
	start := time.Now()
	waitBindable(t, h.Addr)
	h.Restart(o)
	return time.Since(start)
}

// waitBindable waits (bounded) until the dead hive's address can be bound
// again. While no hive listens, a worker retrying its heartbeat to that
// address may, when the port lies in the ephemeral range, be given the very
// same port as its source port and connect to itself (TCP simultaneous
// open), holding the port for a moment; and on a shared test machine another
// test's hive may briefly take it. Neither is what these tests are about.
func waitBindable(t testing.TB, addr string) {
	t.Helper()
	ok := hivetest.Eventually(t, 10*time.Second, func() bool {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		l.Close()
		return true
	})
	if !ok {
		out, _ := process.RunCmd(exec.Command("ss", "-tanp"))
		t.Fatalf("hive address %s not bindable after 10s:\n%s", addr, out)
	}
}

// startInference starts one streamed request in the background; the
// returned channel gets the time it ended.
func startInference(t *testing.T, url string, tokens, delayMS int) <-chan time.Time {
	done := make(chan time.Time, 1)
	go func() {
		inference(t, url, tokens, delayMS)
		done <- time.Now()
	}()
	return done
}

// TestHiveSIGKILLAdoptsWorkersInEveryState: a hive SIGKILLed with workers
// loading, idle, busy, in backoff and stopping is restarted on the same
// state dir: within a second every live worker is listed with the same PID
// and a sensible state, and supervision goes on (stop, crash detection,
// idle timeout, busy → idle, pending restart, stop escalation).
func TestHiveSIGKILLAdoptsWorkersInEveryState(t *testing.T) {
	o := hivetest.Options{}
	h := hivetest.Start(t, o)
	hb := `"heartbeat":{"interval":"200ms","timeout":"5s"}`
	idle := h.MustSpawn(apiv1.SpawnRequest{Settings: settings(`{"idle_timeout":"3s",` + hb + `}`)})
	crashy := h.MustSpawn(apiv1.SpawnRequest{Settings: settings(`{"idle_timeout":"0s","restart":{"policy":"never"},` + hb + `}`)})
	busy := h.MustSpawn(apiv1.SpawnRequest{Settings: settings(`{"idle_timeout":"0s",` + hb + `}`)})
	loading := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_LOAD_MS": "120000"},
		Settings: settings(`{"ready_stall_timeout":"10m"}`)})
	backoff := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_CRASH_AFTER_MS": "100"},
		Settings: settings(`{"idle_timeout":"0s","restart":{"base_delay":"3s","jitter":0,"max_failures":10}}`)})
	stopping := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"},
		Settings: settings(`{"idle_timeout":"0s","stop_timeout":"3s"}`)})
	for _, r := range []*apiv1.SpawnResponse{idle, crashy, busy, stopping} {
		h.WaitState(r.WorkerID, wait, "idle")
	}
	h.WaitState(loading.WorkerID, wait, "loading")
	reqDone := startInference(t, busy.URL, 40, 100) // ~4 s
	h.WaitState(busy.WorkerID, wait, "busy")
	h.WaitState(backoff.WorkerID, wait, "backoff")
	if _, err := h.Client.Stop(context.Background(), stopping.WorkerID); err != nil {
		t.Fatal(err)
	}
	h.WaitState(stopping.WorkerID, wait, "stopping")
	before := listByID(t, h, false)

	took := restartAfterKill9(t, h, o)
	after := listByID(t, h, true)
	t.Logf("new hive answered after %s", took)
	if took > time.Second {
		t.Errorf("restart with %d workers took %s", len(before), took)
	}
	for id, b := range before {
		a, ok := after[id]
		if !ok {
			t.Fatalf("worker %s (%s) lost; hive log:\n%s", id, b.State, h.Log())
		}
		if b.State != "backoff" && (a.PID != b.PID || !hivetest.Alive(a.PID)) {
			t.Errorf("worker %s: pid %d → %d (alive %v)", id, b.PID, a.PID, hivetest.Alive(a.PID))
		}
		if a.Port != b.Port || a.RestartCount != b.RestartCount {
			t.Errorf("worker %s: port %d → %d, restarts %d → %d", id, b.Port, a.Port, b.RestartCount, a.RestartCount)
		}
		t.Logf("%s: %s → %s", id, b.State, a.State)
	}
	want := map[string][]state.State{
		idle.WorkerID: {"idle"}, crashy.WorkerID: {"idle"}, busy.WorkerID: {"busy", "idle"},
		loading.WorkerID: {"loading"}, backoff.WorkerID: {"backoff", "spawning", "loading", "idle"},
		stopping.WorkerID: {"stopping", "terminated"},
	}
	for id, states := range want {
		got := after[id]
		ok := false
		for _, s := range states {
			ok = ok || got.State == s
		}
		if !ok {
			t.Errorf("worker %s is %s after adoption, want one of %v", id, got.State, states)
		}
	}
	if !strings.Contains(h.Log(), "Worker adopted") {
		t.Fatalf("no adoption logged:\n%s", h.Log())
	}

	// An external SIGKILL of an adopted worker is seen at once (pidfd).
	killedAt := time.Now()
	syscall.Kill(after[crashy.WorkerID].PID, syscall.SIGKILL)
	info := h.WaitState(crashy.WorkerID, wait, "failed")
	if info.Reason != "crashed" || info.Exit == nil || info.Exit.Known {
		t.Errorf("adopted worker's crash: %s/%s exit %+v", info.State, info.Reason, info.Exit)
	}
	if d := info.Exit.At.Sub(killedAt); d > 500*time.Millisecond {
		t.Errorf("crash of an adopted worker seen after %s", d)
	}

	// Busy returns to idle when the in-flight request ends.
	<-reqDone
	h.WaitState(busy.WorkerID, wait, "idle")

	// The idle timeout fires counting from the last activity before the
	// hive died, not from the adoption.
	info = h.WaitState(idle.WorkerID, wait, "terminated")
	if info.Reason != "idle_timeout" {
		t.Fatalf("idle worker ended %s", info.Reason)
	}
	idleFor := info.EndedAt.Sub(*before[idle.WorkerID].LastActivity)
	t.Logf("adopted idle worker stopped %s after its last activity (idle_timeout 3s)", idleFor)
	if idleFor < 2900*time.Millisecond || idleFor > 4500*time.Millisecond {
		t.Errorf("idle timeout fired %s after the last activity, want ~3s", idleFor)
	}

	// The stop under way goes on: escalated to SIGKILL after stop_timeout
	// counted from when it was asked.
	info = h.WaitState(stopping.WorkerID, wait, "terminated")
	if info.Reason != "stopped" || hivetest.Alive(stopping.PID) {
		t.Errorf("stopping worker: %s/%s alive %v", info.State, info.Reason, hivetest.Alive(stopping.PID))
	}

	// The pending restart happens, with the same id and a new PID.
	var bo *apiv1.WorkerInfo
	hivetest.Eventually(t, wait, func() bool {
		bo = h.Get(backoff.WorkerID)
		return bo.RestartCount > before[backoff.WorkerID].RestartCount && bo.PID != 0 &&
			bo.PID != before[backoff.WorkerID].PID
	})
	if bo.RestartCount <= before[backoff.WorkerID].RestartCount {
		t.Errorf("backoff worker did not restart: %+v", bo)
	}

	// Stop works on an adopted loading worker.
	if _, err := h.Client.Stop(context.Background(), loading.WorkerID); err != nil {
		t.Fatal(err)
	}
	info = h.WaitState(loading.WorkerID, wait, "terminated")
	if info.Reason != "stopped" || hivetest.Alive(loading.PID) {
		t.Errorf("loading worker stop: %s/%s", info.State, info.Reason)
	}
	// Ready callbacks and heartbeats of adopted workers are still accepted
	// (the token hash survived): no heartbeat timeout, no auth failures.
	if info := h.Get(busy.WorkerID); info.State != "idle" || info.LastHeartbeat == nil ||
		!info.LastHeartbeat.After(killedAt) {
		t.Errorf("busy worker after adoption: %s, last heartbeat %v", info.State, info.LastHeartbeat)
	}
}

// TestWorkerKilledWhileHiveDownIsFailedAndRestarted: a worker that dies
// while no hive runs is recorded failed/crashed and restarted per policy
// (same id, new PID).
func TestWorkerKilledWhileHiveDownIsFailedAndRestarted(t *testing.T) {
	o := hivetest.Options{}
	h := hivetest.Start(t, o)
	r := h.MustSpawn(apiv1.SpawnRequest{Settings: settings(`{"restart":{"base_delay":"100ms"}}`)})
	h.WaitState(r.WorkerID, wait, "idle")
	h.Kill9()
	syscall.Kill(r.PID, syscall.SIGKILL)
	hivetest.Eventually(t, wait, func() bool { return !hivetest.Alive(r.PID) })
	waitBindable(t, h.Addr)
	h.Restart(o)
	var info *apiv1.WorkerInfo
	ok := hivetest.Eventually(t, wait, func() bool {
		info = h.Get(r.WorkerID)
		return info.State == "idle" && info.PID != r.PID
	})
	if !ok || info.RestartCount != 1 {
		t.Fatalf("worker not restarted: %+v\n%s", info, h.Log())
	}
	if !strings.Contains(h.Log(), "died while the hive was down") {
		t.Fatalf("hive log does not say the worker died while down:\n%s", h.Log())
	}
}

// TestRecordedPIDReusedByAnotherProcessIsNeverSignalled: a state file that
// names a PID now used by an unrelated process (with another start time)
// leaves that process alone; the worker is recorded failed.
func TestRecordedPIDReusedByAnotherProcessIsNeverSignalled(t *testing.T) {
	o := hivetest.Options{Settings: "  restart: {policy: never}\n"}
	h := hivetest.Start(t, o)
	// The worker "is" an unrelated process, with a start time that is not
	// that process's.
	r, sleep, sleepDone := recordAStranger(t, h, func(rec *record.Record, pid int, start uint64) {
		rec.Info.PID, rec.PGID, rec.StartTime = pid, pid, start+1
	})
	waitBindable(t, h.Addr)
	h.Restart(o)
	info := h.WaitState(r.WorkerID, wait, "failed")
	if info.Reason != "crashed" || !strings.Contains(info.Detail, "died while the hive was down") {
		t.Fatalf("worker with a reused PID: %s/%s %q", info.State, info.Reason, info.Detail)
	}
	if !strings.Contains(h.Log(), "now names another process") {
		t.Errorf("log does not say the PID names another process:\n%s", h.Log())
	}
	if !hivetest.Alive(sleep.Process.Pid) {
		t.Fatal("the unrelated process was killed")
	}
	// Nor signalled in any other way: it is not stopped, and its state is
	// sleeping, not a tracing or stopped state.
	select {
	case err := <-sleepDone:
		t.Fatalf("unrelated process exited: %v", err)
	default:
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sleep.Process.Pid))
	if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); f[0] != "S" {
		t.Fatalf("unrelated process state %s", f[0])
	}
}

// recordAStranger spawns a worker on h, SIGKILLs the hive and then the
// worker, and starts an unrelated process (sleep 300, in its own process
// group, ignoring nothing; killed at the test's end). patch rewrites the
// dead worker's record with the stranger's PID and start time. The hive is
// left down for the caller to restart; done has the stranger's end.
func recordAStranger(t *testing.T, h *hivetest.Hive, patch func(rec *record.Record, pid int, start uint64)) (r *apiv1.SpawnResponse, stranger *exec.Cmd, done chan error) {
	t.Helper()
	r = h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	h.Kill9()
	syscall.Kill(r.PID, syscall.SIGKILL)
	hivetest.Eventually(t, wait, func() bool { return !hivetest.Alive(r.PID) })

	stranger = exec.Command("sleep", "300")
	stranger.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := process.StartCmd(stranger); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- process.WaitCmd(stranger) }()
	t.Cleanup(func() { stranger.Process.Kill(); <-done })
	start, err := process.ReadStartTime(stranger.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h.Dir, "workers", r.WorkerID+".json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec record.Record
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	patch(&rec, stranger.Process.Pid, start)
	b, _ = json.Marshal(rec)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return r, stranger, done
}

// TestCorruptStateFileIsMovedAsideAndHiveStarts: an unreadable record is
// kept beside the others with a .corrupt- suffix, the hive starts and
// serves, and the worker it described (alive, carrying the hive's marker,
// but now unaccounted for) is killed as an orphan.
func TestCorruptStateFileIsMovedAsideAndHiveStarts(t *testing.T) {
	o := hivetest.Options{}
	h := hivetest.Start(t, o)
	r := h.MustSpawn(apiv1.SpawnRequest{})
	good := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	h.WaitState(good.WorkerID, wait, "idle")
	h.Kill9()
	path := filepath.Join(h.Dir, "workers", r.WorkerID+".json")
	if err := os.WriteFile(path, []byte(`{"info":{"id":"`+r.WorkerID+`","state":"id`), 0o600); err != nil {
		t.Fatal(err)
	}
	waitBindable(t, h.Addr)
	h.Restart(o)
	matches, _ := filepath.Glob(path + ".corrupt-*")
	if len(matches) != 1 {
		t.Fatalf("corrupt file not moved aside: %v", matches)
	}
	if !strings.Contains(h.Log(), "level=ERROR") || !strings.Contains(h.Log(), "corrupt") {
		t.Fatalf("corruption not logged loudly:\n%s", h.Log())
	}
	// The orphan is gone, the other worker adopted, and the hive serves.
	if !hivetest.Eventually(t, 5*time.Second, func() bool { return !hivetest.Alive(r.PID) }) {
		t.Fatal("the worker of the corrupt record survives as an orphan")
	}
	if !strings.Contains(h.Log(), "orphan") {
		t.Fatalf("orphan kill not reported:\n%s", h.Log())
	}
	if info := h.Get(good.WorkerID); info.PID != good.PID || info.State != "idle" {
		t.Fatalf("good worker: %+v", info)
	}
	n := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(n.WorkerID, wait, "idle")
}

// TestKeepWorkersOnExitUpgradeRoundTrip: a hive SIGTERMed with
// --keep-workers-on-exit leaves its workers running; the next hive adopts
// them with the same PIDs and no restart.
func TestKeepWorkersOnExitUpgradeRoundTrip(t *testing.T) {
	o := hivetest.Options{Args: []string{"--keep-workers-on-exit"}}
	h := hivetest.Start(t, o)
	var rs []*apiv1.SpawnResponse
	for range 3 {
		r := h.MustSpawn(apiv1.SpawnRequest{})
		rs = append(rs, r)
	}
	for _, r := range rs {
		h.WaitState(r.WorkerID, wait, "idle")
	}
	if err := h.Stop(30 * time.Second); err != nil {
		t.Fatalf("clean exit: %v\n%s", err, h.Log())
	}
	for _, r := range rs {
		if !hivetest.Alive(r.PID) {
			t.Fatalf("worker %d did not survive --keep-workers-on-exit", r.PID)
		}
	}
	// The upgraded hive runs without the flag: its SIGTERM at cleanup
	// stops everything.
	waitBindable(t, h.Addr)
	h.Restart(hivetest.Options{})
	after := listByID(t, h, false)
	for _, r := range rs {
		a := after[r.WorkerID]
		if a == nil || a.PID != r.PID || a.RestartCount != 0 || a.State != "idle" {
			t.Fatalf("worker %s after the upgrade: %+v", r.WorkerID, a)
		}
	}
	// Still supervised: a stop ends it.
	h.Client.Stop(context.Background(), rs[0].WorkerID)
	h.WaitState(rs[0].WorkerID, wait, "terminated")
	if hivetest.Alive(rs[0].PID) {
		t.Fatal("adopted worker survived its stop")
	}
}

// TestOrphanCarryingMarkerIsKilled: a process with this hive's marker but
// no record (here: a worker whose record was deleted) is killed at start
// and reported.
func TestOrphanCarryingMarkerIsKilled(t *testing.T) {
	o := hivetest.Options{}
	h := hivetest.Start(t, o)
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_FORK_CHILD": "setsid"}})
	h.WaitState(r.WorkerID, wait, "idle")
	child := childPID(t, h, r.WorkerID)
	h.Kill9()
	os.Remove(filepath.Join(h.Dir, "workers", r.WorkerID+".json"))
	waitBindable(t, h.Addr)
	h.Restart(o)
	for _, pid := range []int{r.PID, child} {
		if !hivetest.Eventually(t, 5*time.Second, func() bool { return !hivetest.Alive(pid) }) {
			t.Fatalf("orphan %d survived", pid)
		}
	}
	if !strings.Contains(h.Log(), "reason=orphan") {
		t.Fatalf("orphan not reported:\n%s", h.Log())
	}
	if l := listByID(t, h, true); len(l) != 0 {
		t.Fatalf("orphan listed as a worker: %v", l)
	}
}

// TestAdoptedWorkerKeepsItsSetsidGrandchild: a live adopted worker's
// grandchild that left the process group is part of its tree, not an
// orphan.
func TestAdoptedWorkerKeepsItsSetsidGrandchild(t *testing.T) {
	o := hivetest.Options{}
	h := hivetest.Start(t, o)
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_FORK_CHILD": "setsid"}})
	h.WaitState(r.WorkerID, wait, "idle")
	child := childPID(t, h, r.WorkerID)
	restartAfterKill9(t, h, o)
	if !hivetest.Alive(child) || !hivetest.Alive(r.PID) {
		t.Fatalf("adoption killed part of a live worker's tree (worker %v, child %v)",
			hivetest.Alive(r.PID), hivetest.Alive(child))
	}
	h.Client.Stop(context.Background(), r.WorkerID)
	h.WaitState(r.WorkerID, wait, "terminated")
	if !hivetest.Eventually(t, 5*time.Second, func() bool { return !hivetest.Alive(child) }) {
		t.Fatal("grandchild survived the adopted worker's stop")
	}
}

// checkInvariants: every live process of the hive is known to it (its PID
// is a live worker's, or it descends from one), every known live worker's
// PID is alive, and no two live workers share a port.
func checkInvariants(t *testing.T, h *hivetest.Hive, iter int) {
	t.Helper()
	ws := listByID(t, h, false)
	known := map[int]string{}
	ports := map[int]string{}
	for id, w := range ws {
		if w.PID > 0 && (w.State == "loading" || w.State == "idle" || w.State == "busy" || w.State == "stopping") {
			known[w.PID] = id
			if !hivetest.Alive(w.PID) {
				// A death may be in flight; it must be seen at once.
				if !hivetest.Eventually(t, 2*time.Second, func() bool {
					i, err := h.Client.Get(context.Background(), id)
					return err != nil || i.PID != w.PID || i.State == "failed" || i.State == "terminated" || i.State == "backoff"
				}) {
					t.Fatalf("iteration %d: worker %s (%s) pid %d is dead but listed", iter, id, w.State, w.PID)
				}
			}
			if other, dup := ports[w.Port]; dup {
				t.Fatalf("iteration %d: port %d held by %s and %s", iter, w.Port, other, id)
			}
			ports[w.Port] = id
		}
	}
	for _, pid := range h.Leftovers() {
		if _, ok := known[pid]; ok {
			continue
		}
		// A process that is just being started or stopped: give the hive
		// a moment to list it (or for it to die).
		ok := hivetest.Eventually(t, 3*time.Second, func() bool {
			if !hivetest.Alive(pid) {
				return true
			}
			for _, w := range listByID(t, h, false) {
				if w.PID == pid {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Fatalf("iteration %d: process %d (%s) of this hive is not a known worker; workers: %v\n%s",
				iter, pid, cmdlineOf(pid), describe(ws), tailLog(h.Log(), 40))
		}
	}
}

func cmdlineOf(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}

func describe(ws map[string]*apiv1.WorkerInfo) string {
	var s []string
	for id, w := range ws {
		s = append(s, fmt.Sprintf("%s=%s/pid%d", id[len(id)-6:], w.State, w.PID))
	}
	return strings.Join(s, " ")
}

func tailLog(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// TestFaultInjectionKill9DuringSpawnStopRestart SIGKILLs the hive at random
// points while workers are spawned, stopped, restarted and crash, restarts
// it each time, and checks the invariants after every restart. At the end
// everything is stopped and nothing of the hive survives (hivetest checks).
func TestFaultInjectionKill9DuringSpawnStopRestart(t *testing.T) {
	iterations := 50
	if testing.Short() {
		iterations = 10
	}
	o := hivetest.Options{Ports: 40, Settings: "  idle_timeout: 0s\n  start_grace: 50ms\n  stop_timeout: 1s\n" +
		"  restart: {base_delay: 50ms, max_delay: 200ms, jitter: 0.5, max_failures: 1000}\n"}
	h := hivetest.Start(t, o)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("iterations %d, seed %d", iterations, seed)
	start := time.Now()
	var adopted, died, orphans int
	const diedWhileDown = "Worker died while the hive was down"
	for i := range iterations {
		// Keep a handful of workers; act on them at random, asynchronously,
		// so the kill lands in the middle of things.
		ws := listByID(t, h, false)
		var ids []string
		for id := range ws {
			ids = append(ids, id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for range 1 + rng.IntN(3) {
			switch op := rng.IntN(6); {
			case op <= 1 || len(ids) < 2:
				env := map[string]string{}
				if rng.IntN(4) == 0 {
					env["LLMW_FAKE_CRASH_AFTER_MS"] = fmt.Sprint(50 + rng.IntN(300))
				}
				if rng.IntN(4) == 0 {
					env["LLMW_FAKE_IGNORE_SHUTDOWN"] = "1"
				}
				if len(ids) < 8 {
					go h.Client.Spawn(ctx, &apiv1.SpawnRequest{ModelRef: h.Ref, Env: env})
				}
			case op == 2:
				go h.Client.Stop(ctx, ids[rng.IntN(len(ids))])
			case op == 3:
				go h.Client.Restart(ctx, ids[rng.IntN(len(ids))])
			case op == 4:
				go h.Client.Kill(ctx, ids[rng.IntN(len(ids))])
			case op == 5:
				if w := ws[ids[rng.IntN(len(ids))]]; w.PID > 0 {
					syscall.Kill(w.PID, syscall.SIGKILL)
				}
			}
		}
		time.Sleep(time.Duration(rng.IntN(250)) * time.Millisecond) // the random kill point
		h.Kill9()
		cancel()
		waitBindable(t, h.Addr)
		h.Restart(o)
		checkInvariants(t, h, i)
		lg := h.Log()
		adopted += strings.Count(lg, "Worker adopted")
		died += strings.Count(lg, diedWhileDown)
		orphans += strings.Count(lg, "reason=orphan")
	}
	t.Logf("%d kill/restart iterations in %s: %d adoptions, %d workers found dead, %d orphans killed",
		iterations, time.Since(start), adopted, died, orphans)
	if adopted == 0 {
		t.Fatal("no worker was ever adopted: the test exercised nothing")
	}
	// Everything stops; hivetest's cleanup fails the test if any process
	// of this hive survives.
	if err := h.Stop(30 * time.Second); err != nil {
		t.Fatalf("final stop: %v", err)
	}
	h.AssertNoLeftovers()
}

// A worker that kept serving requests past its idle_timeout since it
// became ready was stopped as idle the moment a SIGKILLed hive's
// successor adopted it: idle ⇄ busy flips are not written, so its record's
// last_activity was still its ready time, and the adopted idle timer
// counts from that. Its last activity now reaches the record (at most a
// second stale), and the adopted worker idles out an idle_timeout after
// its last request.
func TestAdoptedWorkerIsNotIdledOutFromAStaleLastActivity(t *testing.T) {
	gw := hivetest.GenericWorker(t)
	o := hivetest.Options{Settings: "  idle_timeout: 4s\n", Config: fmt.Sprintf(`profiles:
  gen:
    command: [%s, --port, "{port}", --model, "{model}"]
models:
  m1:
    model_ref: file:stories260K.gguf
    profile: gen
`, gw)}
	h := startFD(t, o)
	if code, body, _ := h.chat("m1"); code != 200 {
		t.Fatalf("cold request: %d %s", code, body)
	}
	ws := h.workersOf("m1", false)
	if len(ws) != 1 || ws[0].ReadyAt == nil {
		t.Fatalf("workers %s", dump(ws))
	}
	id, ready := ws[0].ID, *ws[0].ReadyAt
	// Requests for longer than the idle timeout since the worker was ready.
	for time.Since(ready) < 6*time.Second {
		if code, body, _ := h.chat("m1"); code != 200 {
			t.Fatalf("request: %d %s", code, body)
		}
		time.Sleep(300 * time.Millisecond)
	}
	last := time.Now()
	h.Kill9()
	waitBindable(t, h.Addr)
	h.Restart(o)
	info := h.WaitState(id, wait, "idle", "stopping", "terminated")
	if info.State != "idle" {
		t.Fatalf("adopted worker %s/%s %s after its last request, want idle", info.State, info.Reason, time.Since(last))
	}
	// Not before its idle timeout, counted from its last request (less the
	// second the record may lag); an idle timeout later it ends.
	for time.Since(last) < 2500*time.Millisecond {
		if i := h.Get(id); i.State != "idle" {
			t.Fatalf("adopted worker %s/%s %s after its last request (idle_timeout 4s)", i.State, i.Reason, time.Since(last))
		}
		time.Sleep(50 * time.Millisecond)
	}
	info = h.WaitState(id, 10*time.Second, "terminated")
	if info.Reason != "idle_timeout" {
		t.Fatalf("ended %s", info.Reason)
	}
}
