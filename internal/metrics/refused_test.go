package metrics_test

import (
	"testing"

	"github.com/rbee/rbee-hive/internal/metrics"
	"github.com/rbee/rbee-hive/internal/state"
)

// Refused events are counted by the worker's state and the event.
func TestRefusedTransitionsCounted(t *testing.T) {
	m := metrics.New(metrics.Options{})
	m.RefusedTransition(state.Idle, "ready")
	m.RefusedTransition(state.Idle, "ready")
	m.RefusedTransition(state.Stopping, "restart")
	f := gather(t, m)["rbee_hive_refused_transitions_total"]
	if f == nil {
		t.Fatal("no rbee_hive_refused_transitions_total family")
	}
	got := map[string]float64{}
	for _, mt := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range mt.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		got[labels["state"]+"/"+labels["event"]] = mt.GetCounter().GetValue()
	}
	if len(got) != 2 || got["idle/ready"] != 2 || got["stopping/restart"] != 1 {
		t.Fatalf("series %v", got)
	}
}
