package frontdoor

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the front door's per-model Prometheus metrics (SPEC §10):
// requests by status code, time to first byte, total duration, queue depth
// and wait, cold starts and their duration, evictions. The model label
// takes only configured model names, so cardinality is bounded by the
// config. Methods are safe for concurrent use and cheap.
type Metrics struct {
	requests   *prometheus.CounterVec
	ttfb, dur  *prometheus.HistogramVec
	depth      *prometheus.GaugeVec
	wait       *prometheus.HistogramVec
	cold       *prometheus.CounterVec
	coldDur    *prometheus.HistogramVec
	evictions  *prometheus.CounterVec
	collectors []prometheus.Collector

	// per caches each model's children of the per-request metrics: a
	// label lookup hashes the values on every call.
	per sync.Map // model name → *modelMetrics
}

// modelMetrics are one model's children of the per-request metrics.
type modelMetrics struct {
	ttfb, dur, wait prometheus.Observer
	depth           prometheus.Gauge
	ok              prometheus.Counter // requests answered 200
}

func (m *Metrics) of(model string) *modelMetrics {
	if v, ok := m.per.Load(model); ok {
		return v.(*modelMetrics)
	}
	mm := &modelMetrics{
		ttfb: m.ttfb.WithLabelValues(model), dur: m.dur.WithLabelValues(model), wait: m.wait.WithLabelValues(model),
		depth: m.depth.WithLabelValues(model), ok: m.requests.WithLabelValues(model, "200"),
	}
	v, _ := m.per.LoadOrStore(model, mm)
	return v.(*modelMetrics)
}

// NewMetrics creates the metrics; register Collectors() with a registry.
func NewMetrics() *Metrics {
	const ns, sub = "rbee_hive", "frontdoor"
	lat := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Inference requests by model and HTTP status code (499: the client went away)."}, []string{"model", "code"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "time_to_first_byte_seconds",
			Help: "From a request's arrival to the worker's response head (queue and cold start included).", Buckets: lat}, []string{"model"}),
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "request_duration_seconds",
			Help: "From a request's arrival to its answer's end.", Buckets: lat}, []string{"model"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "queue_depth",
			Help: "Requests waiting for a worker of the model."}, []string{"model"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "queue_wait_seconds",
			Help: "Time requests waited in the model's queue (0 when a worker was free).", Buckets: lat}, []string{"model"}),
		cold: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cold_starts_total",
			Help: "Workers the front door started (on demand or for min_workers)."}, []string{"model"}),
		coldDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "cold_start_duration_seconds",
			Help: "From deciding to start a worker (evictions included) to the worker being ready.", Buckets: lat}, []string{"model"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "evictions_total",
			Help: "Idle workers of the model stopped to make room for another model's worker."}, []string{"model"}),
	}
	m.collectors = []prometheus.Collector{m.requests, m.ttfb, m.dur, m.depth, m.wait, m.cold, m.coldDur, m.evictions}
	return m
}

// Collectors returns the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector { return m.collectors }

func (m *Metrics) request(model string, code int, d time.Duration) {
	mm := m.of(model)
	if code == 200 {
		mm.ok.Inc()
	} else {
		m.requests.WithLabelValues(model, strconv.Itoa(code)).Inc()
	}
	mm.dur.Observe(d.Seconds())
}

func (m *Metrics) firstByte(model string, d time.Duration) { m.of(model).ttfb.Observe(d.Seconds()) }

func (m *Metrics) queued(model string, delta float64) { m.of(model).depth.Add(delta) }

func (m *Metrics) queueWait(model string, d time.Duration) { m.of(model).wait.Observe(d.Seconds()) }

func (m *Metrics) coldStart(model string, since time.Time) {
	m.cold.WithLabelValues(model).Inc()
	m.coldDur.WithLabelValues(model).Observe(time.Since(since).Seconds())
}

func (m *Metrics) evicted(model string) { m.evictions.WithLabelValues(model).Inc() }
