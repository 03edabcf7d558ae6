package metrics_test

import (
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/metrics"
	"github.com/rbee/rbee-hive/internal/state"
)

// gpuLister is a hive with GPUs.
type gpuLister struct {
	fakeLister
	gpus []apiv1.GPUStatus
}

func (g gpuLister) GPUs() []apiv1.GPUStatus { return g.gpus }

func TestGPUSeries(t *testing.T) {
	m := metrics.New(metrics.Options{})
	m.WatchWorkers(gpuLister{
		fakeLister: fakeLister{
			{ID: "worker-g", ModelRef: "file:/m/g", State: state.Idle, GPUUUID: "GPU-1", Stats: &apiv1.Stats{GPUMemoryBytes: 3 << 30}},
			{ID: "worker-c", ModelRef: "file:/m/c", State: state.Idle, Stats: &apiv1.Stats{}},
			{ID: "worker-x", ModelRef: "file:/m/x", State: state.Terminated, GPUUUID: "GPU-1"},
		},
		gpus: []apiv1.GPUStatus{
			{Index: 0, UUID: "GPU-0", Name: "A", MemoryTotalBytes: 8 << 30, MemoryUsedBytes: 1 << 30, MemoryFreeBytes: 7 << 30, UtilizationPercent: -1},
			{Index: 1, UUID: "GPU-1", Name: "B", MemoryTotalBytes: 16 << 30, MemoryUsedBytes: 4 << 30, MemoryFreeBytes: 12 << 30, ReservedBytes: 1 << 30, UtilizationPercent: 40},
		},
	})
	f := gather(t, m)
	byGPU := func(name string) map[string]float64 {
		out := map[string]float64{}
		for _, mt := range f[name].GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[labels["gpu"]+"/"+labels["uuid"]+"/"+labels["name"]+labels["worker_id"]] = mt.GetGauge().GetValue()
		}
		return out
	}
	for name, want := range map[string]map[string]float64{
		"rbee_hive_gpu_memory_total_bytes":    {"0/GPU-0/A": 8 << 30, "1/GPU-1/B": 16 << 30},
		"rbee_hive_gpu_memory_used_bytes":     {"0/GPU-0/A": 1 << 30, "1/GPU-1/B": 4 << 30},
		"rbee_hive_gpu_memory_free_bytes":     {"0/GPU-0/A": 7 << 30, "1/GPU-1/B": 12 << 30},
		"rbee_hive_gpu_memory_reserved_bytes": {"0/GPU-0/A": 0, "1/GPU-1/B": 1 << 30},
		"rbee_hive_gpu_utilization_percent":   {"1/GPU-1/B": 40}, // GPU 0 does not say
		"rbee_hive_worker_gpu_memory_bytes":   {"/GPU-1/worker-g": 3 << 30},
	} {
		got := byGPU(name)
		if len(got) != len(want) {
			t.Errorf("%s = %v, want %v", name, got, want)
			continue
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s[%s] = %v, want %v", name, k, got[k], v)
			}
		}
	}
}
