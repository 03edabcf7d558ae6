package metrics_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
	"github.com/rbee/rbee-hive/internal/version"
)

const wait = 20 * time.Second

// fakeEnv lets spawn requests switch on the reference worker's misbehaviours.
// (The test profile of refworker.WithTestMode allows LLMW_FAKE_*.)
const fakeEnv = ""

// scrape reads /metrics into series → value, the series written as the text
// format writes it (name{label="v",…}, labels sorted by name).
func scrape(t *testing.T, h *hivetest.Hive) map[string]float64 {
	t.Helper()
	resp, err := http.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// series returns the value of name with exactly the given labels (in
// sorted-name order), and whether it exists.
func series(m map[string]float64, name string, labels ...string) (float64, bool) {
	key := name
	if len(labels) > 0 {
		var b []string
		for i := 0; i < len(labels); i += 2 {
			b = append(b, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
		}
		key += "{" + strings.Join(b, ",") + "}"
	}
	v, ok := m[key]
	return v, ok
}

// withWorker returns the series of name that carry worker_id=id.
func withWorker(m map[string]float64, name, id string) (float64, bool) {
	for k, v := range m {
		if strings.HasPrefix(k, name+"{") && strings.Contains(k, `worker_id="`+id+`"`) {
			return v, true
		}
	}
	return 0, false
}

type expect struct {
	t    *testing.T
	h    *hivetest.Hive
	want map[string]float64
}

// check scrapes and compares every series named in want (waiting a little:
// a counter moves in the worker's owner just after the state an API caller
// sees).
func (e *expect) check(step string) map[string]float64 {
	e.t.Helper()
	var m map[string]float64
	var bad []string
	hivetest.Eventually(e.t, 5*time.Second, func() bool {
		m = scrape(e.t, e.h)
		bad = bad[:0]
		for k, want := range e.want {
			if got := m[k]; got != want {
				bad = append(bad, fmt.Sprintf("%s = %v, want %v", k, got, want))
			}
		}
		return len(bad) == 0
	})
	for _, b := range bad {
		e.t.Errorf("%s: %s", step, b)
	}
	return m
}

func (e *expect) add(series string, d float64) { e.want[series] += d }

func settings(t *testing.T, v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// watchFailed subscribes to /v1/events and returns a channel that yields
// the time of id's first event into failed. The subscription is live when
// it returns; it ends with the test.
func watchFailed(t *testing.T, h *hivetest.Hive, id string) <-chan time.Time {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() { // the stream's opening comment: subscribed
		cancel()
		t.Fatal("events stream closed at once")
	}
	out := make(chan time.Time, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			var ev apiv1.Event
			if ok && json.Unmarshal([]byte(data), &ev) == nil && ev.WorkerID == id && ev.To == "failed" {
				out <- ev.At
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

func stop(t *testing.T, h *hivetest.Hive, id string) {
	t.Helper()
	if _, err := h.Client.Stop(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// TestMetricFamiliesMoveWithTheirEvents drives real workers through each
// lifecycle event and checks, by scraping /metrics, that exactly the
// families of that event move.
func TestMetricFamiliesMoveWithTheirEvents(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Config: fakeEnv})
	e := &expect{t: t, h: h, want: map[string]float64{}}
	spawns := "rbee_hive_worker_spawns_total"
	exits := func(r string) string { return `rbee_hive_worker_exits_total{reason="` + r + `"}` }
	ready := "rbee_hive_worker_ready_latency_seconds_count"
	stopLat := "rbee_hive_worker_stop_latency_seconds_count"
	force := "rbee_hive_worker_force_kills_total"
	spawned201 := `rbee_hive_api_requests_total{code="201",route="POST /v1/workers/spawn"}`
	for _, k := range []string{spawns, exits("stopped"), exits("crashed"), ready, stopLat, force,
		"rbee_hive_worker_restarts_total", "rbee_hive_worker_health_check_failures_total",
		"rbee_hive_worker_heartbeat_timeouts_total", "rbee_hive_worker_oom_kills_total",
		"rbee_hive_worker_crash_detection_seconds_count", `rbee_hive_workers{state="idle"}`} {
		e.want[k] = 0
	}
	m := e.check("baseline")
	if _, ok := series(m, "rbee_hive_build_info", "version", version.Version); !ok {
		t.Errorf("no build info")
	}

	// 1. spawn → ready: spawns, ready latency, workers by state, and the
	// per-worker resource gauges of a live worker.
	a := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(a.WorkerID, wait, "idle")
	e.add(spawns, 1)
	e.add(spawned201, 1)
	e.add(ready, 1)
	e.add(`rbee_hive_workers{state="idle"}`, 1)
	m = e.check("spawn")
	rss, ok := withWorker(m, "rbee_hive_worker_resident_memory_bytes", a.WorkerID)
	if !ok || rss < 1<<20 {
		t.Errorf("resident memory of %s = %v (present %v), want > 1 MiB", a.WorkerID, rss, ok)
	}
	for _, fam := range []string{"rbee_hive_worker_threads", "rbee_hive_worker_open_fds"} {
		if v, ok := withWorker(m, fam, a.WorkerID); !ok || v < 1 {
			t.Errorf("%s of %s = %v (present %v)", fam, a.WorkerID, v, ok)
		}
	}
	if _, ok := withWorker(m, "rbee_hive_worker_cpu_seconds_total", a.WorkerID); !ok {
		t.Errorf("no cpu series for %s", a.WorkerID)
	}

	// 2. stop: exits{stopped}, stop latency; the worker's series go away.
	stop(t, h, a.WorkerID)
	h.WaitState(a.WorkerID, wait, "terminated")
	e.add(exits("stopped"), 1)
	e.add(stopLat, 1)
	e.add(`rbee_hive_workers{state="idle"}`, -1)
	e.want[`rbee_hive_workers{state="terminated"}`] = 1
	m = e.check("stop")
	for k := range m {
		if strings.Contains(k, a.WorkerID) {
			t.Errorf("ended worker still has a series: %s", k)
		}
	}

	// 3. a worker that ignores the stop: force kill after stop_timeout.
	b := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"},
		Settings: settings(t, map[string]any{"stop_timeout": "200ms"})})
	h.WaitState(b.WorkerID, wait, "idle")
	stop(t, h, b.WorkerID)
	h.WaitState(b.WorkerID, wait, "terminated")
	e.add(spawns, 1)
	e.add(spawned201, 1)
	e.add(ready, 1)
	e.add(force, 1)
	e.add(exits("stopped"), 1)
	e.add(stopLat, 1)
	e.add(`rbee_hive_workers{state="terminated"}`, 1)
	m = e.check("force kill")
	if sum := m["rbee_hive_worker_stop_latency_seconds_sum"]; sum < 0.2 {
		t.Errorf("stop latency sum %v, want ≥ 0.2 s (the forced stop waited 200ms)", sum)
	}

	// 4. a hung health endpoint: health-check failures, then failed. No
	// heartbeats after ready: fresh healthy ones would stand in for the
	// probes (SPEC §3).
	c := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_HANG_HEALTH": "1", "LLMW_FAKE_NO_HEARTBEAT": "1"},
		Settings: settings(t, map[string]any{"health": map[string]any{"interval": "100ms", "timeout": "100ms", "failure_threshold": 3},
			"heartbeat": map[string]any{"interval": "100ms", "timeout": "0s"},
			"restart":   map[string]any{"policy": "never"}})})
	info := h.WaitState(c.WorkerID, wait, "failed")
	if info.Reason != "health_check_failed" {
		t.Fatalf("worker ended %s, want health_check_failed", info.Reason)
	}
	m = scrape(t, h)
	if v := m["rbee_hive_worker_health_check_failures_total"]; v < 3 {
		t.Errorf("health check failures = %v, want ≥ 3", v)
	}
	e.want["rbee_hive_worker_health_check_failures_total"] = m["rbee_hive_worker_health_check_failures_total"]
	e.want[force] = m[force] // the failing worker is stopped, maybe by force
	e.add(spawns, 1)
	e.add(spawned201, 1)
	e.add(ready, 1)
	e.want[exits("health_check_failed")] = 1
	e.want[`rbee_hive_workers{state="failed"}`] = 1
	e.want[stopLat] = m[stopLat]
	e.check("health")

	// 5. a crash (SIGKILL from outside): exits{crashed}, restart, crash
	// detection latency.
	d := h.MustSpawn(apiv1.SpawnRequest{Settings: settings(t, map[string]any{
		"restart": map[string]any{"policy": "on-failure", "base_delay": "10ms", "jitter": 0}})})
	h.WaitState(d.WorkerID, wait, "idle")
	pid := h.Get(d.WorkerID).PID
	failedAt := watchFailed(t, h, d.WorkerID)
	killedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-failedAt:
		e2e := at.Sub(killedAt)
		t.Logf("crash detection end to end (kill(2) → failed event): %v", e2e)
		if e2e > time.Second {
			t.Errorf("crash noticed after %v; want milliseconds", e2e)
		}
	case <-time.After(wait):
		t.Fatal("no failed event after the kill")
	}
	hivetest.Eventually(t, wait, func() bool {
		i := h.Get(d.WorkerID)
		return i.RestartCount == 1 && i.State == "idle"
	})
	e.add(spawns, 2)
	e.add(spawned201, 1)
	e.add(ready, 2)
	e.add(exits("crashed"), 1)
	e.add("rbee_hive_worker_restarts_total", 1)
	e.add("rbee_hive_worker_crash_detection_seconds_count", 1)
	e.add(`rbee_hive_workers{state="idle"}`, 1)
	m = e.check("crash")
	if v, _ := withWorker(m, "rbee_hive_worker_restart_count", d.WorkerID); v != 1 {
		t.Errorf("restart count series of %s = %v, want 1", d.WorkerID, v)
	}
	t.Logf("crash detection (exit observed → failed recorded): %.1f µs",
		m["rbee_hive_worker_crash_detection_seconds_sum"]*1e6)

	// 6. kill through the API: exits{killed}, a force kill.
	if _, err := h.Client.Kill(context.Background(), d.WorkerID); err != nil {
		t.Fatal(err)
	}
	h.WaitState(d.WorkerID, wait, "terminated")
	e.add(exits("killed"), 1)
	e.add(force, 1)
	e.add(stopLat, 1)
	e.add(`rbee_hive_workers{state="idle"}`, -1)
	e.add(`rbee_hive_workers{state="terminated"}`, 1)
	e.check("kill")

	// 7. silence: heartbeat timeout.
	f := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_NO_HEARTBEAT": "1"},
		Settings: settings(t, map[string]any{"heartbeat": map[string]any{"interval": "100ms", "timeout": "300ms"},
			"restart": map[string]any{"policy": "never"}})})
	if info := h.WaitState(f.WorkerID, wait, "failed"); info.Reason != "heartbeat_timeout" {
		t.Fatalf("worker ended %s, want heartbeat_timeout", info.Reason)
	}
	m = scrape(t, h)
	e.add(spawns, 1)
	e.add(spawned201, 1)
	e.add(ready, 1)
	e.add("rbee_hive_worker_heartbeat_timeouts_total", 1)
	e.want[exits("heartbeat_timeout")] = 1
	e.add(`rbee_hive_workers{state="failed"}`, 1)
	e.want[force] = m[force]
	e.want[stopLat] = m[stopLat]
	e.check("heartbeat")

	// 8. a memory hog over its limit: OOM kill (where the host can enforce
	// memory limits; elsewhere the spawn is refused with 422 and the family
	// stays at 0).
	st, err := h.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	o, err := h.Spawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_ALLOC_MB": "256"},
		// No start grace: the hog dies while loading, which must count as
		// an OOM kill, not a failed spawn.
		Settings: settings(t, map[string]any{"limits": map[string]any{"memory_max_bytes": 64 << 20}, "start_grace": "0s",
			"restart": map[string]any{"policy": "never"}})})
	if err != nil {
		if !strings.Contains(err.Error(), "LIMITS_UNSUPPORTED") {
			t.Fatalf("memory-limited spawn: %v", err)
		}
		t.Logf("cgroups %s cannot enforce memory limits; OOM family checked at 0 only", st.CgroupMode)
	} else {
		if info := h.WaitState(o.WorkerID, wait, "failed"); info.Reason != "oom_killed" {
			t.Fatalf("memory hog ended %s (%s), want oom_killed", info.Reason, info.Detail)
		}
		e.add(spawns, 1)
		e.add(spawned201, 1)
		e.add("rbee_hive_worker_oom_kills_total", 1)
		e.add("rbee_hive_worker_crash_detection_seconds_count", 1)
		e.want[exits("oom_killed")] = 1
		e.add(`rbee_hive_workers{state="failed"}`, 1)
		e.check("oom")
	}

	// 9. API requests by route and status, errors included.
	for i := 0; i < 2; i++ {
		resp, err := http.Get(h.URL + "/v1/workers/worker-does-not-exist")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp, err := http.Get(h.URL + "/no/such/route")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	e.want[`rbee_hive_api_requests_total{code="404",route="GET /v1/workers/{id}"}`] = 2
	e.want[`rbee_hive_api_requests_total{code="404",route="/"}`] = 1
	m = e.check("api")
	if n := m[`rbee_hive_api_request_duration_seconds_count{route="GET /v1/workers/{id}"}`]; n < 2 {
		t.Errorf("api duration count for GET /v1/workers/{id} = %v", n)
	}

	// 10. the shutdown duration (here: stopping one live worker) survives
	// into the next run.
	last := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(last.WorkerID, wait, "idle")
	if err := h.Stop(wait); err != nil {
		t.Fatal(err)
	}
	h.Restart(hivetest.Options{Config: fakeEnv})
	m = scrape(t, h)
	if v, ok := m["rbee_hive_last_shutdown_duration_seconds"]; !ok || v <= 0 || v > 30 {
		t.Errorf("last shutdown duration after restart = %v (present %v)", v, ok)
	} else {
		t.Logf("previous shutdown took %.1f ms", v*1000)
	}
}

// TestWorkerStatsInAPI: GET /v1/workers/{id}, the list and the status
// totals carry the worker's resource use, and its memory matches the
// kernel's VmRSS of the worker's process.
func TestWorkerStatsInAPI(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	a := h.MustSpawn(apiv1.SpawnRequest{})
	info := h.WaitState(a.WorkerID, wait, "idle")
	if info.Stats == nil {
		t.Fatalf("GET %s has no stats", a.WorkerID)
	}
	vm := vmRSS(t, info.PID)
	if r := float64(info.Stats.RSSBytes) / float64(vm); r < 0.5 || r > 2 {
		t.Errorf("rss_bytes %d vs VmRSS %d", info.Stats.RSSBytes, vm)
	}
	if info.Stats.Threads < 2 || info.Stats.OpenFDs < 3 {
		t.Errorf("stats = %+v", *info.Stats)
	}
	ws, err := h.Client.List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].Stats == nil {
		t.Fatalf("list = %+v", ws)
	}
	st, err := h.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Totals.RSSBytes < info.Stats.RSSBytes/2 || st.Totals.Threads < 2 {
		t.Errorf("status totals = %+v", st.Totals)
	}
	t.Logf("idle reference worker: rss %.1f MiB (VmRSS %.1f MiB), %d threads, %d fds, %.3f cpu s",
		float64(info.Stats.RSSBytes)/(1<<20), float64(vm)/(1<<20), info.Stats.Threads, info.Stats.OpenFDs, info.Stats.CPUSeconds)
	stop(t, h, a.WorkerID)
	if got := h.WaitState(a.WorkerID, wait, "terminated"); got.Stats != nil {
		t.Errorf("ended worker has stats %+v", *got.Stats)
	}
}

func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}
