package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// workerCgroupDirs lists the worker directories left under the hive's
// scope: those named after a worker the hive lists (the others are its
// spare, the next worker's cgroup made ahead, which goes at its exit).
func workerCgroupDirs(h *hivetest.Hive) []string {
	ws, err := h.Client.List(context.Background(), true)
	if err != nil {
		return []string{"(list: " + err.Error() + ")"}
	}
	known := map[string]bool{}
	for _, w := range ws {
		known[w.ID] = true
	}
	var left []string
	for _, d := range hivetest.ScopeDirs(h.Marker) {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.IsDir() && known[e.Name()] {
				left = append(left, filepath.Join(d, e.Name()))
			}
		}
	}
	return left
}

// startLimitsHive starts a hive; hivetest's cleanup checks that no cgroup
// directory of it is left once it has exited.
func startLimitsHive(t *testing.T, o hivetest.Options) *hivetest.Hive {
	t.Helper()
	return hivetest.Start(t, o)
}

// assertNoWorkerCgroups waits (bounded) until the hive's scope holds no
// worker cgroup.
func assertNoWorkerCgroups(t *testing.T, h *hivetest.Hive) {
	t.Helper()
	var left []string
	if !hivetest.Eventually(t, 5*time.Second, func() bool { left = workerCgroupDirs(h); return len(left) == 0 }) {
		t.Fatalf("worker cgroup directories left: %v", left)
	}
}

// workerLog returns the last lines of the worker's log through the API.
func workerLog(t *testing.T, h *hivetest.Hive, id string) string {
	t.Helper()
	var b strings.Builder
	if err := h.Client.Logs(context.Background(), id, 500, false, &b); err != nil {
		t.Fatalf("logs %s: %v", id, err)
	}
	return b.String()
}

// cpuTicks returns utime+stime of pid in clock ticks (USER_HZ, 100/s).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatalf("stat %d: %v", pid, err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after ")": state(3) … utime(14) stime(15), so index 11 and 12.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

func TestMemoryLimitOOMKillIsReportedAsOOMKilled(t *testing.T) {
	h := startLimitsHive(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{
		// The slow load puts the allocation after the start grace, so the
		// OOM kill ends a running worker rather than failing the spawn.
		Env: map[string]string{"LLMW_FAKE_ALLOC_MB": "256", "LLMW_FAKE_LOAD_MS": "300"},
		Settings: jsonSettings(t, jobj{
			"limits":  jobj{"memory_max_bytes": 64 << 20},
			"restart": jobj{"policy": "never"},
		}),
	})
	limitFile := "memory.limit_in_bytes"
	if hivetest.CgroupV2() {
		limitFile = "memory.max"
	}
	limit, err := os.ReadFile(filepath.Join(hivetest.WorkerCgroup(h.Marker, r.WorkerID, "memory"), limitFile))
	if err != nil || strings.TrimSpace(string(limit)) != strconv.Itoa(64<<20) {
		t.Fatalf("%s = %q, %v", limitFile, limit, err)
	}
	end := h.WaitState(r.WorkerID, wait, "failed")
	if end.Reason != "oom_killed" || end.Exit == nil || !end.Exit.OOMKilled || end.Exit.Signal != int(syscall.SIGKILL) {
		t.Fatalf("end %s/%s exit %+v (%s)", end.State, end.Reason, end.Exit, end.Detail)
	}
	if end.Limits.MemoryMaxBytes != 64<<20 {
		t.Fatalf("limits not shown: %+v", end.Limits)
	}
	assertNoWorkerCgroups(t, h)
}

func TestPidsLimitContainsForkBomb(t *testing.T) {
	const pidsMax = 20
	h := startLimitsHive(t, hivetest.Options{})
	bystander := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(bystander.WorkerID, wait, "idle")

	r := h.MustSpawn(apiv1.SpawnRequest{
		Env: map[string]string{"LLMW_FAKE_FORK_MANY": "200"},
		Settings: jsonSettings(t, jobj{
			"limits":  jobj{"pids_max": pidsMax},
			"restart": jobj{"policy": "never"},
		}),
	})
	dir := hivetest.WorkerCgroup(h.Marker, r.WorkerID, "pids")
	maxFile, err := os.ReadFile(filepath.Join(dir, "pids.max"))
	if err != nil || strings.TrimSpace(string(maxFile)) != strconv.Itoa(pidsMax) {
		t.Fatalf("pids.max = %q, %v", maxFile, err)
	}
	// Until the worker reports the fork storm's outcome (or dies of it):
	// the group never holds more than pids_max tasks, and the hive answers
	// /health fast all along.
	re := regexp.MustCompile(`fake: fork_many started=(\d+) failed=(\d+)`)
	var peak int64
	var slowest time.Duration
	var report []string
	var info *apiv1.WorkerInfo
	var refused int64
	ok := hivetest.Eventually(t, wait, func() bool {
		if b, err := os.ReadFile(filepath.Join(dir, "pids.current")); err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			peak = max(peak, n)
		}
		if n, err := readKeyedInt(filepath.Join(dir, "pids.events"), "max"); err == nil {
			refused = max(refused, n)
		}
		start := time.Now()
		resp, err := http.Get(h.URL + "/health")
		if err != nil {
			t.Fatalf("hive unhealthy during the fork storm: %v", err)
		}
		resp.Body.Close()
		slowest = max(slowest, time.Since(start))
		info = h.Get(r.WorkerID)
		report = re.FindStringSubmatch(workerLog(t, h, r.WorkerID))
		return report != nil || info.State.Ended()
	})
	if !ok {
		t.Fatalf("fork storm had no outcome: %+v", info)
	}
	t.Logf("fork storm: report %v, worker %s/%s, peak pids.current %d, pids.events max %d, slowest /health %s",
		report, info.State, info.Reason, peak, refused, slowest)
	if report == nil {
		t.Logf("the worker died of the storm; its last output:\n%s", info.LastLines)
	}
	if peak > pidsMax {
		t.Fatalf("pids.current reached %d > pids_max %d", peak, pidsMax)
	}
	if report != nil {
		started, _ := strconv.Atoi(report[1])
		failed, _ := strconv.Atoi(report[2])
		if failed == 0 || started >= pidsMax {
			t.Fatalf("fork storm not contained: started=%d failed=%d", started, failed)
		}
	} else if refused == 0 {
		t.Fatalf("worker ended (%s/%s) without the pids limit ever refusing a fork", info.State, info.Reason)
	}
	if slowest > time.Second {
		t.Fatalf("/health took %s during the fork storm", slowest)
	}
	if b := h.Get(bystander.WorkerID); b.State != "idle" || b.PID != bystander.PID {
		t.Fatalf("bystander worker disturbed: %s pid %d", b.State, b.PID)
	}
	resp, err := http.Get(bystander.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("bystander worker does not serve: %v", err)
	}
	resp.Body.Close()
	h.Client.Stop(context.Background(), r.WorkerID)
	h.WaitState(r.WorkerID, wait, "terminated", "failed")
	h.Client.Stop(context.Background(), bystander.WorkerID)
	h.WaitState(bystander.WorkerID, wait, "terminated")
	assertNoWorkerCgroups(t, h)
}

// readKeyedInt reads "key N" from a flat keyed cgroup file.
func readKeyedInt(file, key string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+" "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, os.ErrNotExist
}

func TestCPULimitCapsBusyLoop(t *testing.T) {
	h := startLimitsHive(t, hivetest.Options{})
	busy := map[string]string{"LLMW_FAKE_BUSY_LOOP": "1"}
	capped := h.MustSpawn(apiv1.SpawnRequest{Env: busy, Settings: jsonSettings(t, jobj{"limits": jobj{"cpu_max": 0.5}})})
	free := h.MustSpawn(apiv1.SpawnRequest{Env: busy})
	h.WaitState(capped.WorkerID, wait, "idle")
	h.WaitState(free.WorkerID, wait, "idle")
	quotaFile, want := "cpu.cfs_quota_us", "50000"
	if hivetest.CgroupV2() {
		quotaFile, want = "cpu.max", "50000 100000"
	}
	quota, err := os.ReadFile(filepath.Join(hivetest.WorkerCgroup(h.Marker, capped.WorkerID, "cpu"), quotaFile))
	if err != nil || strings.TrimSpace(string(quota)) != want {
		t.Fatalf("%s = %q, %v", quotaFile, quota, err)
	}
	// Both spin at once over the same window (2 cores here): the capped
	// one gets about half a core, the other about a whole one.
	const window = 2 * time.Second
	c0, f0, t0 := cpuTicks(t, capped.PID), cpuTicks(t, free.PID), time.Now()
	time.Sleep(window) // the measurement window, not a wait for a condition
	c1, f1, t1 := cpuTicks(t, capped.PID), cpuTicks(t, free.PID), time.Now()
	secs := t1.Sub(t0).Seconds()
	cappedShare := float64(c1-c0) / 100 / secs
	freeShare := float64(f1-f0) / 100 / secs
	t.Logf("CPU share over %.2fs: cpu_max 0.5 → %.2f cores; no limit → %.2f cores", secs, cappedShare, freeShare)
	if cappedShare >= 0.7 {
		t.Fatalf("cpu_max 0.5 worker used %.2f cores", cappedShare)
	}
	if cappedShare < 0.1 {
		t.Fatalf("capped worker used only %.2f cores: is it busy at all?", cappedShare)
	}
	// The uncapped twin shows what the loop takes without the cap; on a
	// machine busy with other tests it may get less than a core, so it is
	// only reported.
	if freeShare < cappedShare+0.2 {
		t.Logf("note: the uncapped worker got only %.2f cores (machine busy?)", freeShare)
	}
	h.Client.Stop(context.Background(), capped.WorkerID)
	h.Client.Stop(context.Background(), free.WorkerID)
	h.WaitState(capped.WorkerID, wait, "terminated")
	h.WaitState(free.WorkerID, wait, "terminated")
	assertNoWorkerCgroups(t, h)
}

func TestNofileLimitApplies(t *testing.T) {
	h := startLimitsHive(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{Settings: jsonSettings(t, jobj{"limits": jobj{"nofile": 256}})})
	h.WaitState(r.WorkerID, wait, "idle")
	b, err := os.ReadFile("/proc/" + strconv.Itoa(r.PID) + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Max open files\s+256\s+256\s+files`).Match(b) {
		t.Fatalf("/proc/%d/limits:\n%s", r.PID, b)
	}
	if info := h.Get(r.WorkerID); info.Limits.Nofile != 256 {
		t.Fatalf("limits not shown: %+v", info.Limits)
	}
}

// A grandchild that left the process group (and session) with setsid is
// still killed on stop, through the worker's cgroup.
func TestSetsidGrandchildKilledOnStopThroughCgroup(t *testing.T) {
	h := startLimitsHive(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_FORK_CHILD": "setsid"}})
	h.WaitState(r.WorkerID, wait, "idle")
	re := regexp.MustCompile(`fake: child pid (\d+)`)
	var child int
	if !hivetest.Eventually(t, wait, func() bool {
		m := re.FindStringSubmatch(workerLog(t, h, r.WorkerID))
		if m != nil {
			child, _ = strconv.Atoi(m[1])
		}
		return child > 0
	}) {
		t.Fatal("worker did not report its child")
	}
	if !hivetest.Alive(child) {
		t.Fatalf("grandchild %d not alive", child)
	}
	workerPgid, _ := syscall.Getpgid(r.PID)
	childPgid, _ := syscall.Getpgid(child)
	childSid, _ := getsid(child)
	if childPgid == workerPgid || childSid != child {
		t.Fatalf("grandchild did not escape: pgid %d (worker's %d), sid %d", childPgid, workerPgid, childSid)
	}
	procs, err := os.ReadFile(filepath.Join(hivetest.WorkerCgroup(h.Marker, r.WorkerID, ""), "cgroup.procs"))
	if err != nil || !regexp.MustCompile(`(?m)^`+strconv.Itoa(child)+`$`).Match(procs) {
		t.Fatalf("grandchild %d not in the worker's cgroup: %q %v", child, procs, err)
	}
	h.Client.Stop(context.Background(), r.WorkerID)
	end := h.WaitState(r.WorkerID, wait, "terminated")
	if end.Reason != "stopped" {
		t.Fatalf("end %s/%s", end.State, end.Reason)
	}
	if hivetest.Alive(child) {
		t.Fatalf("setsid grandchild %d survived the stop", child)
	}
	if hivetest.Alive(r.PID) {
		t.Fatal("worker survived")
	}
	assertNoWorkerCgroups(t, h)
}

func getsid(pid int) (int, error) {
	sid, _, errno := syscall.RawSyscall(syscall.SYS_GETSID, uintptr(pid), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(sid), nil
}

// A hive without write access to the cgroup hierarchies (an unprivileged
// user, no delegated subtree) refuses limits it cannot enforce with 422
// LIMITS_UNSUPPORTED naming what is missing, and still runs workers that ask
// for none (or only for nofile, an rlimit).
func TestLimitsUnsupportedWithoutCgroupAccess(t *testing.T) {
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	h := startLimitsHive(t, hivetest.Options{Credential: nobody})
	_, err := h.Spawn(apiv1.SpawnRequest{Settings: jsonSettings(t, jobj{"limits": jobj{"memory_max_bytes": 64 << 20}})})
	ae := apiErr(t, err)
	t.Logf("422 message: %s", ae.Message)
	if ae.Status != 422 || ae.Code != "LIMITS_UNSUPPORTED" ||
		!strings.Contains(ae.Message, "no write access to "+hivetest.CgroupBase("memory")+" (") ||
		!strings.Contains(ae.Message, "run as root or delegate") {
		t.Fatalf("got %+v", ae)
	}
	_, err = h.Spawn(apiv1.SpawnRequest{Settings: jsonSettings(t, jobj{"limits": jobj{"cpu_max": 0.5, "pids_max": 50}})})
	ae = apiErr(t, err)
	if ae.Status != 422 || !strings.Contains(ae.Message, hivetest.CgroupBase("cpu")) || !strings.Contains(ae.Message, hivetest.CgroupBase("pids")) {
		t.Fatalf("got %+v", ae)
	}
	// Nothing was listed for the refused spawns.
	if list, _ := h.Client.List(context.Background(), true); len(list) != 0 {
		t.Fatalf("refused spawns listed: %+v", list)
	}
	// No limits (or only the nofile rlimit): the worker runs, without a
	// cgroup of its own.
	r := h.MustSpawn(apiv1.SpawnRequest{Settings: jsonSettings(t, jobj{"limits": jobj{"nofile": 256}})})
	h.WaitState(r.WorkerID, wait, "idle")
	if st, err := os.Stat("/proc/" + strconv.Itoa(r.PID)); err != nil || st.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("worker not running as nobody: %v", err)
	}
	h.Client.Stop(context.Background(), r.WorkerID)
	h.WaitState(r.WorkerID, wait, "terminated")
}

func TestMemoryPreflightRefusesWithNumbers(t *testing.T) {
	reserve := int64(1) << 50 // 1 PiB must stay free: never true
	h := startLimitsHive(t, hivetest.Options{MemoryReserve: &reserve})
	_, err := h.Spawn(apiv1.SpawnRequest{})
	ae := apiErr(t, err)
	t.Logf("507 message: %s", ae.Message)
	if ae.Status != 507 || ae.Code != "INSUFFICIENT_MEMORY" {
		t.Fatalf("got %+v", ae)
	}
	// The numbers: the need (file size × 1.2), what is available, the reserve.
	if !regexp.MustCompile(`needs about [0-9.]+ ?[KMGTP]?i?B.*[0-9.]+ ?[KMGTP]?i?B is available.*[0-9.]+ ?[KMGTP]?i?B must stay free`).MatchString(ae.Message) {
		t.Fatalf("message lacks the numbers: %q", ae.Message)
	}
	if list, _ := h.Client.List(context.Background(), true); len(list) != 0 {
		t.Fatalf("refused spawn listed: %+v", list)
	}
}
