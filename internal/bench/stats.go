// Package bench is the benchmark suite behind cmd/hivebench: it starts real
// rbee-hive daemons (bin/rbee-hive with a generated config in a temporary
// state directory, on a free loopback port and port range) and real
// reference workers (bin/llm-worker-rbee), and, side by side, a private
// supervisord instance running the same worker binary. It measures latencies
// on the hive's own clock (the `at` of /v1/events) against the wall clock of
// the benchmark (same machine, same CLOCK_REALTIME), and costs from /proc,
// and writes the figures as Markdown and JSON.
//
// Nothing here is a timed test: the targets are reported as pass/fail, never
// asserted. Every process a scenario starts is stopped, and its leftovers
// (found by the marker in their environment) killed, before the scenario
// returns.
package bench

import (
	"math"
	"slices"
	"time"
)

// Dist summarises samples: count, median, p99 and max, in the unit of the
// figure it belongs to.
type Dist struct {
	Trials int
	Median float64
	P99    float64
	Max    float64
}

// Summarize returns the distribution of xs (nearest-rank percentiles). An
// empty xs gives a zero Dist.
func Summarize(xs []float64) Dist {
	if len(xs) == 0 {
		return Dist{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return Dist{Trials: len(s), Median: rank(s, 0.5), P99: rank(s, 0.99), Max: s[len(s)-1]}
}

// rank is the nearest-rank percentile p of sorted s.
func rank(s []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

// ms converts durations to milliseconds.
func ms(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}
