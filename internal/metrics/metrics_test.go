package metrics_test

import (
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/metrics"
	"github.com/rbee/rbee-hive/internal/state"
)

type fakeLister []*apiv1.WorkerInfo

func (f fakeLister) List(all bool) []*apiv1.WorkerInfo { return f }

func gather(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

var nameRe = regexp.MustCompile(`^rbee_hive_[a-z0-9_]+$`)

// TestNamesFollowConventions: every family of ours is rbee_hive_…, counters
// end in _total, and nothing else does.
func TestNamesFollowConventions(t *testing.T) {
	m := metrics.New(metrics.Options{Version: "test"})
	m.WatchWorkers(fakeLister{})
	m.Spawned()
	m.Observe("GET /health", 200, time.Millisecond)
	ours := 0
	for name, f := range gather(t, m) {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		ours++
		if !nameRe.MatchString(name) {
			t.Errorf("%s: not rbee_hive_snake_case", name)
		}
		isCounter := f.GetType() == dto.MetricType_COUNTER
		if isCounter != strings.HasSuffix(name, "_total") {
			t.Errorf("%s: type %s, but _total suffix is %v", name, f.GetType(), !isCounter)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s: no help", name)
		}
	}
	if ours < 15 {
		t.Errorf("only %d rbee_hive families", ours)
	}
}

func TestLifecycleMethodsMoveTheirFamilies(t *testing.T) {
	m := metrics.New(metrics.Options{})
	m.Spawned()
	m.Spawned()
	m.Restarted()
	m.ForceKill()
	m.HealthCheckFailed()
	m.ReadyLatency(50 * time.Millisecond)
	m.StopLatency(20 * time.Millisecond)
	m.CrashDetected(300 * time.Microsecond)
	m.Ended(state.OOMKilled)
	m.Ended(state.HeartbeatTimeout)
	m.Ended(state.Stopped)
	f := gather(t, m)
	counter := func(name string) float64 { return f[name].GetMetric()[0].GetCounter().GetValue() }
	for name, want := range map[string]float64{
		"rbee_hive_worker_spawns_total": 2, "rbee_hive_worker_restarts_total": 1,
		"rbee_hive_worker_force_kills_total": 1, "rbee_hive_worker_health_check_failures_total": 1,
		"rbee_hive_worker_oom_kills_total": 1, "rbee_hive_worker_heartbeat_timeouts_total": 1,
	} {
		if got := counter(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	exits := map[string]float64{}
	for _, mt := range f["rbee_hive_worker_exits_total"].GetMetric() {
		exits[mt.GetLabel()[0].GetValue()] = mt.GetCounter().GetValue()
	}
	if len(exits) != len(state.Reasons) {
		t.Errorf("exits has %d reasons, want all %d present from the start", len(exits), len(state.Reasons))
	}
	if exits["stopped"] != 1 || exits["oom_killed"] != 1 || exits["crashed"] != 0 {
		t.Errorf("exits = %v", exits)
	}
	for name, sum := range map[string]float64{
		"rbee_hive_worker_ready_latency_seconds": 0.05, "rbee_hive_worker_stop_latency_seconds": 0.02,
		"rbee_hive_worker_crash_detection_seconds": 0.0003,
	} {
		h := f[name].GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 1 || h.GetSampleSum() < sum*0.99 || h.GetSampleSum() > sum*1.01 {
			t.Errorf("%s: count %d sum %v, want 1 and %v", name, h.GetSampleCount(), h.GetSampleSum(), sum)
		}
	}
}

// TestPerWorkerSeriesOnlyForLiveWorkers pins the cardinality bound: ended
// workers (kept for the retention window) have no per-worker series, and a
// live worker without stats (backoff) only its restart count.
func TestPerWorkerSeriesOnlyForLiveWorkers(t *testing.T) {
	m := metrics.New(metrics.Options{})
	st := &apiv1.Stats{RSSBytes: 1 << 20, CPUSeconds: 1.5, Threads: 7, OpenFDs: 9}
	m.WatchWorkers(fakeLister{
		{ID: "worker-a", ModelRef: "file:/m/a", State: state.Idle, Stats: st},
		{ID: "worker-b", ModelRef: "file:/m/b", State: state.Busy, Stats: st},
		{ID: "worker-c", ModelRef: "file:/m/c", State: state.Backoff, RestartCount: 2},
		{ID: "worker-d", ModelRef: "file:/m/d", State: state.Failed, Reason: state.Crashed},
		{ID: "worker-e", ModelRef: "file:/m/e", State: state.Terminated, Reason: state.Stopped},
	})
	f := gather(t, m)
	ids := func(name string) map[string]float64 {
		out := map[string]float64{}
		for _, mt := range f[name].GetMetric() {
			var id string
			for _, l := range mt.GetLabel() {
				if l.GetName() == "worker_id" {
					id = l.GetValue()
				}
			}
			out[id] = mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
		}
		return out
	}
	rss := ids("rbee_hive_worker_resident_memory_bytes")
	if len(rss) != 2 || rss["worker-a"] != 1<<20 || rss["worker-b"] != 1<<20 {
		t.Errorf("rss series = %v, want worker-a and worker-b only", rss)
	}
	if cpu := ids("rbee_hive_worker_cpu_seconds_total"); cpu["worker-a"] != 1.5 || len(cpu) != 2 {
		t.Errorf("cpu series = %v", cpu)
	}
	if rc := ids("rbee_hive_worker_restart_count"); len(rc) != 3 || rc["worker-c"] != 2 {
		t.Errorf("restart count series = %v, want the 3 live workers", rc)
	}
	byState := map[string]float64{}
	for _, mt := range f["rbee_hive_workers"].GetMetric() {
		byState[mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
	}
	want := map[string]float64{"spawning": 0, "loading": 0, "idle": 1, "busy": 1, "stopping": 0, "backoff": 1, "failed": 1, "terminated": 1}
	for s, n := range want {
		if byState[s] != n {
			t.Errorf("workers{state=%q} = %v, want %v (all: %v)", s, byState[s], n, byState)
		}
	}
}

func TestLastShutdownSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	m := metrics.New(metrics.Options{StateDir: dir})
	if _, ok := gather(t, m)["rbee_hive_last_shutdown_duration_seconds"]; ok {
		t.Fatal("last shutdown reported before any shutdown")
	}
	if err := m.ShutdownDone(1500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if h := gather(t, m)["rbee_hive_shutdown_duration_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleCount() != 1 {
		t.Errorf("shutdown histogram count = %d", h.GetSampleCount())
	}
	m2 := metrics.New(metrics.Options{StateDir: dir})
	f, ok := gather(t, m2)["rbee_hive_last_shutdown_duration_seconds"]
	if !ok || f.GetMetric()[0].GetGauge().GetValue() != 1.5 {
		t.Fatalf("last shutdown after restart = %v", f)
	}
}

func TestHandlerServesText(t *testing.T) {
	m := metrics.New(metrics.Options{Version: "1.2.3"})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `rbee_hive_build_info{version="1.2.3"} 1`) {
		t.Errorf("no build info in:\n%s", b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("content type %q", ct)
	}
}
