// Package metrics exports the hive's Prometheus metrics: worker lifecycle
// counters and latency histograms (it implements supervisor.Metrics), API
// requests by route and status, the hive's shutdown duration, and — read
// from the hive at scrape time — workers by state and per-worker resource
// gauges labelled by worker id and model. Per-worker series exist only for
// live workers, so label cardinality is bounded by the live worker count.
//
// Every name starts with rbee_hive_, carries its unit, and counters end in
// _total (https://prometheus.io/docs/practices/naming/).
package metrics

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/state"

	"github.com/rbee/rbee-hive/internal/atomicfile"
)

const ns = "rbee_hive"

// LastShutdownFile is the file in the state directory that carries the
// previous run's shutdown duration across a restart.
const LastShutdownFile = "last-shutdown.json"

// Lister is the part of the hive the scrape-time collector reads: every
// worker the hive knows (live and retained), with Stats filled where the
// worker has a process. hive.Hive implements it.
type Lister interface {
	List(all bool) []*apiv1.WorkerInfo
}

// Options configure Metrics. The zero value is usable: no version label and
// no persisted shutdown duration.
type Options struct {
	// Version is reported by rbee_hive_build_info.
	Version string
	// StateDir, when set, is where the last shutdown's duration is kept
	// (LastShutdownFile): New reads it into
	// rbee_hive_last_shutdown_duration_seconds, and ShutdownDone writes it.
	StateDir string
}

// Metrics holds the hive's metrics in their own registry. Its methods are
// safe for concurrent use and cheap (atomic adds), as supervisor.Metrics
// requires; nothing here blocks on the hive.
type Metrics struct {
	o   Options
	reg *prometheus.Registry

	spawns, restarts, forceKills, healthFails, oomKills, hbTimeouts prometheus.Counter

	exits, refused                     *prometheus.CounterVec
	ready, stop, crashDetect, shutdown prometheus.Histogram
	lastShutdown                       prometheus.Gauge
	apiReqs                            *prometheus.CounterVec
	apiDur                             *prometheus.HistogramVec
	routes                             sync.Map // routeKey → *routeObs

	lister atomic.Pointer[Lister]
}

// New creates the metrics and registers them, with the Go runtime and
// process collectors, in a fresh registry.
func New(o Options) *Metrics {
	m := &Metrics{o: o, reg: prometheus.NewRegistry()}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help})
	}
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: name, Help: help, Buckets: buckets})
	}
	m.spawns = counter("worker_spawns_total", "Worker processes started (first starts and restarts).")
	m.restarts = counter("worker_restarts_total", "Workers restarted with the same id (restart policy or restart asked).")
	m.forceKills = counter("worker_force_kills_total", "Workers SIGKILLed: a graceful stop that timed out, a kill asked, or a forced stop (ready, heartbeat or health failure).")
	m.healthFails = counter("worker_health_check_failures_total", "Failed liveness probes (each one, not only the one that stops the worker).")
	m.oomKills = counter("worker_oom_kills_total", "Worker incarnations that ended oom_killed.")
	m.hbTimeouts = counter("worker_heartbeat_timeouts_total", "Worker incarnations that ended heartbeat_timeout.")
	m.exits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "worker_exits_total",
		Help: "Worker incarnations that ended, by reason (stopped, killed, idle_timeout, hive_shutdown, exited, crashed, oom_killed, ready_timeout, health_check_failed, heartbeat_timeout, spawn_failed, crash_loop).",
	}, []string{"reason"})
	for _, r := range state.Reasons {
		m.exits.WithLabelValues(string(r)) // every reason present from the start, at 0
	}
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "refused_transitions_total",
		Help: "Events the worker state machine refused in a worker's state, by state and event (a stop asked of an ended worker is not one: stops are idempotent). Nothing was changed; API callers got 409 INVALID_STATE. Timer or exit events here are bugs.",
	}, []string{"state", "event"})
	m.ready = hist("worker_ready_latency_seconds", "Time from process start to ready (spawn → idle).",
		[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800})
	m.stop = hist("worker_stop_latency_seconds", "Time from a stop being asked to the worker's process being reaped.",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30, 60})
	m.crashDetect = hist("worker_crash_detection_seconds",
		"Time from the hive observing an unasked-for worker exit (the reaper's wait returning) to the worker being recorded failed and the event sent. The kernel's share (death to wait returning) is not measurable from inside the hive.",
		[]float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1})
	m.shutdown = hist("shutdown_duration_seconds", "Duration of this hive's shutdowns (observed once, as the hive exits; see last_shutdown_duration_seconds for the previous run).",
		[]float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60})
	m.lastShutdown = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "last_shutdown_duration_seconds",
		Help: "How long the previous hive run's shutdown took (stopping or detaching its workers), read from the state directory at start; absent when unknown."})
	m.apiReqs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "api_requests_total",
		Help: "API requests by route pattern and HTTP status code."}, []string{"route", "code"})
	m.apiDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "api_request_duration_seconds",
		Help: "API request durations by route pattern (streams count until they end).", Buckets: prometheus.DefBuckets}, []string{"route"})
	build := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
		Help: "Always 1; the version label names the running hive.", ConstLabels: prometheus.Labels{"version": o.Version}})
	build.Set(1)

	m.reg.MustRegister(m.spawns, m.restarts, m.forceKills, m.healthFails, m.oomKills, m.hbTimeouts, m.exits, m.refused,
		m.ready, m.stop, m.crashDetect, m.shutdown, m.apiReqs, m.apiDur, build, &workerCollector{m: m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if o.StateDir != "" {
		if d, ok := LoadLastShutdown(o.StateDir); ok {
			m.lastShutdown.Set(d.Seconds())
			m.reg.MustRegister(m.lastShutdown)
		}
	}
	return m
}

// Registry returns the registry (to register more collectors, or to gather
// in tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text (or OpenMetrics)
// format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Register adds other parts' collectors (the front door's per-model
// metrics) to the hive's registry.
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// WatchWorkers makes scrapes read workers from l (the hive, which is built
// after its Metrics). Until it is called the per-worker and by-state
// families are empty.
func (m *Metrics) WatchWorkers(l Lister) { m.lister.Store(&l) }

// Spawned implements supervisor.Metrics.
func (m *Metrics) Spawned() { m.spawns.Inc() }

// ReadyLatency implements supervisor.Metrics.
func (m *Metrics) ReadyLatency(d time.Duration) { m.ready.Observe(d.Seconds()) }

// StopLatency implements supervisor.Metrics.
func (m *Metrics) StopLatency(d time.Duration) { m.stop.Observe(d.Seconds()) }

// ForceKill implements supervisor.Metrics.
func (m *Metrics) ForceKill() { m.forceKills.Inc() }

// HealthCheckFailed implements supervisor.Metrics.
func (m *Metrics) HealthCheckFailed() { m.healthFails.Inc() }

// Restarted implements supervisor.Metrics.
func (m *Metrics) Restarted() { m.restarts.Inc() }

// Ended implements supervisor.Metrics: one incarnation ended for r.
func (m *Metrics) Ended(r state.Reason) {
	m.exits.WithLabelValues(string(r)).Inc()
	switch r {
	case state.OOMKilled:
		m.oomKills.Inc()
	case state.HeartbeatTimeout:
		m.hbTimeouts.Inc()
	}
}

// RefusedTransition implements supervisor.Metrics.
func (m *Metrics) RefusedTransition(from state.State, event string) {
	m.refused.WithLabelValues(string(from), event).Inc()
}

// CrashDetected records the time from an unasked-for exit being observed
// to the failure being recorded.
func (m *Metrics) CrashDetected(d time.Duration) { m.crashDetect.Observe(d.Seconds()) }

// Observe records one API request; it has the signature of
// api.Options.Observe. route is the mux pattern, so its values are bounded.
func (m *Metrics) Observe(route string, status int, d time.Duration) {
	// The children are looked up once per route and status, not on
	// every request (label hashing showed in an idle hive's profile at
	// 1000 workers' heartbeats).
	k := routeKey{route, status}
	o, ok := m.routes.Load(k)
	if !ok {
		o, _ = m.routes.LoadOrStore(k, &routeObs{
			reqs: m.apiReqs.WithLabelValues(route, strconv.Itoa(status)),
			dur:  m.apiDur.WithLabelValues(route),
		})
	}
	ro := o.(*routeObs)
	ro.reqs.Inc()
	ro.dur.Observe(d.Seconds())
}

type routeKey struct {
	route  string
	status int
}

// routeObs is one route's request counter (for one status) and its
// duration histogram.
type routeObs struct {
	reqs prometheus.Counter
	dur  prometheus.Observer
}

// ShutdownDone records a finished shutdown of this hive: it is observed in
// the histogram and, when Options.StateDir is set, written (atomically) for
// the next run's rbee_hive_last_shutdown_duration_seconds.
func (m *Metrics) ShutdownDone(d time.Duration) error {
	m.shutdown.Observe(d.Seconds())
	if m.o.StateDir == "" {
		return nil
	}
	return SaveLastShutdown(m.o.StateDir, d, time.Now())
}

type lastShutdown struct {
	DurationSeconds float64   `json:"duration_seconds"`
	At              time.Time `json:"at"`
}

// SaveLastShutdown writes d (a shutdown that ended at at) to
// <stateDir>/LastShutdownFile, atomically.
func SaveLastShutdown(stateDir string, d time.Duration, at time.Time) error {
	b, _ := json.Marshal(lastShutdown{DurationSeconds: d.Seconds(), At: at})
	if err := atomicfile.Write(filepath.Join(stateDir, LastShutdownFile), append(b, '\n'), 0o600, true); err != nil {
		return fmt.Errorf("save last shutdown: %w", err)
	}
	return nil
}

// LoadLastShutdown reads what SaveLastShutdown wrote; ok is false when there
// is nothing (or nothing readable).
func LoadLastShutdown(stateDir string) (d time.Duration, ok bool) {
	b, err := os.ReadFile(filepath.Join(stateDir, LastShutdownFile))
	if err != nil {
		return 0, false
	}
	var ls lastShutdown
	if json.Unmarshal(b, &ls) != nil || ls.DurationSeconds < 0 {
		return 0, false
	}
	return time.Duration(ls.DurationSeconds * float64(time.Second)), true
}

// workerCollector reads the hive's workers at scrape time.
type workerCollector struct{ m *Metrics }

var (
	descWorkers = prometheus.NewDesc(ns+"_workers", "Workers the hive knows, by state (ended ones while retained).", []string{"state"}, nil)
	descRSS     = prometheus.NewDesc(ns+"_worker_resident_memory_bytes", "Resident memory of a live worker, summed over its processes.", []string{"worker_id", "model_ref"}, nil)
	descCPU     = prometheus.NewDesc(ns+"_worker_cpu_seconds_total", "CPU time used by a live worker's current incarnation (user+system, its cgroup's counter where it has one).", []string{"worker_id", "model_ref"}, nil)
	descThreads = prometheus.NewDesc(ns+"_worker_threads", "Threads of a live worker, summed over its processes.", []string{"worker_id", "model_ref"}, nil)
	descFDs     = prometheus.NewDesc(ns+"_worker_open_fds", "Open file descriptors of a live worker, summed over its processes.", []string{"worker_id", "model_ref"}, nil)
	descRestart = prometheus.NewDesc(ns+"_worker_restart_count", "Restarts of a live worker so far.", []string{"worker_id", "model_ref"}, nil)
)

// Describe implements prometheus.Collector.
func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append([]*prometheus.Desc{descWorkers, descRSS, descCPU, descThreads, descFDs, descRestart}, gpuDescs...) {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one hive.List per scrape (whose
// stats are cached for a couple of seconds per worker).
func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	lp := c.m.lister.Load()
	if lp == nil {
		return
	}
	byState := map[state.State]int{}
	for _, s := range state.All {
		byState[s] = 0
	}
	for _, w := range (*lp).List(true) {
		byState[w.State]++
		if w.State.Ended() {
			continue
		}
		lv := []string{w.ID, w.ModelRef}
		ch <- prometheus.MustNewConstMetric(descRestart, prometheus.GaugeValue, float64(w.RestartCount), lv...)
		if st := w.Stats; st != nil {
			ch <- prometheus.MustNewConstMetric(descRSS, prometheus.GaugeValue, float64(st.RSSBytes), lv...)
			ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, st.CPUSeconds, lv...)
			ch <- prometheus.MustNewConstMetric(descThreads, prometheus.GaugeValue, float64(st.Threads), lv...)
			ch <- prometheus.MustNewConstMetric(descFDs, prometheus.GaugeValue, float64(st.OpenFDs), lv...)
		}
		collectWorkerGPU(ch, w)
	}
	collectGPUs(ch, *lp)
	for s, n := range byState {
		ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(n), string(s))
	}
}
