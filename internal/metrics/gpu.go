package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// GPULister is the part of the hive the GPU gauges read at scrape time
// (hive.Hive implements it). A Lister that is not one has no GPU series.
type GPULister interface {
	GPUs() []apiv1.GPUStatus
}

var (
	gpuLabels        = []string{"gpu", "uuid", "name"}
	descGPUTotal     = prometheus.NewDesc(ns+"_gpu_memory_total_bytes", "A GPU's memory, as its driver reports it.", gpuLabels, nil)
	descGPUUsed      = prometheus.NewDesc(ns+"_gpu_memory_used_bytes", "A GPU's memory in use (by anyone), as its driver reports it.", gpuLabels, nil)
	descGPUFree      = prometheus.NewDesc(ns+"_gpu_memory_free_bytes", "A GPU's memory not in use.", gpuLabels, nil)
	descGPUReserved  = prometheus.NewDesc(ns+"_gpu_memory_reserved_bytes", "A GPU's memory reserved for the hive's workers: their estimates minus what they are seen to hold, for workers still loading (with a JSON inventory, for every live worker).", gpuLabels, nil)
	descGPUUtil      = prometheus.NewDesc(ns+"_gpu_utilization_percent", "Percent of the last sample period a kernel ran on the GPU (absent when the driver does not say).", gpuLabels, nil)
	descWorkerGPUMem = prometheus.NewDesc(ns+"_worker_gpu_memory_bytes", "GPU memory held by a live worker's processes (summed over its process tree).", []string{"worker_id", "model_ref", "uuid"}, nil)
	gpuDescs         = []*prometheus.Desc{descGPUTotal, descGPUUsed, descGPUFree, descGPUReserved, descGPUUtil, descWorkerGPUMem}
)

// collectGPUs sends the per-GPU gauges.
func collectGPUs(ch chan<- prometheus.Metric, l Lister) {
	gl, ok := l.(GPULister)
	if !ok {
		return
	}
	for _, g := range gl.GPUs() {
		lv := []string{strconv.Itoa(g.Index), g.UUID, g.Name}
		ch <- prometheus.MustNewConstMetric(descGPUTotal, prometheus.GaugeValue, float64(g.MemoryTotalBytes), lv...)
		ch <- prometheus.MustNewConstMetric(descGPUUsed, prometheus.GaugeValue, float64(g.MemoryUsedBytes), lv...)
		ch <- prometheus.MustNewConstMetric(descGPUFree, prometheus.GaugeValue, float64(g.MemoryFreeBytes), lv...)
		ch <- prometheus.MustNewConstMetric(descGPUReserved, prometheus.GaugeValue, float64(g.ReservedBytes), lv...)
		if g.UtilizationPercent >= 0 {
			ch <- prometheus.MustNewConstMetric(descGPUUtil, prometheus.GaugeValue, float64(g.UtilizationPercent), lv...)
		}
	}
}

// collectWorkerGPU sends a live GPU worker's GPU memory.
func collectWorkerGPU(ch chan<- prometheus.Metric, w *apiv1.WorkerInfo) {
	if w.GPUUUID == "" && (w.Stats == nil || w.Stats.GPUMemoryBytes == 0) {
		return
	}
	var n int64
	if w.Stats != nil {
		n = w.Stats.GPUMemoryBytes
	}
	ch <- prometheus.MustNewConstMetric(descWorkerGPUMem, prometheus.GaugeValue, float64(n), w.ID, w.ModelRef, w.GPUUUID)
}
