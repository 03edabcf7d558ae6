package hive

import (
	"fmt"
	"sort"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/supervisor"
	"github.com/rbee/rbee-hive/internal/version"
)

// LiveWorkers returns the workers that have not ended.
func (h *Hive) LiveWorkers() []*supervisor.Worker {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*supervisor.Worker, 0, len(h.workers))
	for _, w := range h.workers {
		if info := w.Info(); info != nil && !info.State.Ended() {
			out = append(out, w)
		}
	}
	return out
}

// Worker returns the worker with id, live or retained; else an *Error of
// kind WorkerNotFound.
func (h *Hive) Worker(id string) (*supervisor.Worker, error) {
	h.mu.RLock()
	w, ok := h.workers[id]
	h.mu.RUnlock()
	if !ok {
		return nil, wrapErr(fmt.Errorf("%w: %s", ErrWorkerNotFound, clip(id)))
	}
	return w, nil
}

// WithStats returns info with its resource stats filled (a copy; info is
// not modified) when the worker has a process. The numbers are at most a
// couple of seconds old (stats.DefaultMaxAge).
func (h *Hive) WithStats(info *apiv1.WorkerInfo) *apiv1.WorkerInfo {
	return h.withGPUUse([]*apiv1.WorkerInfo{h.stats.Get(info)})[0]
}

// List returns snapshots of the workers, sorted by start time then id; ended
// ones only when all is set. Live workers carry their resource stats, a few
// seconds old at most: they come from a refresh that runs in the background
// (liststats.go), so List only measures inline the workers that refresh has
// not seen yet.
func (h *Hive) List(all bool) []*apiv1.WorkerInfo {
	h.mu.RLock()
	out := make([]*apiv1.WorkerInfo, 0, len(h.workers))
	for _, w := range h.workers {
		info := w.Info()
		if info == nil || (!all && info.State.Ended()) {
			continue
		}
		out = append(out, info)
	}
	h.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.StartedAt != nil && b.StartedAt != nil && !a.StartedAt.Equal(*b.StartedAt) {
			return a.StartedAt.Before(*b.StartedAt)
		}
		return a.ID < b.ID
	})
	return h.withGPUUse(h.lstats.fill(out, h.stats))
}

// Status summarises the hive.
func (h *Hive) Status() apiv1.Status {
	st := apiv1.Status{
		Version: version.Version, APIVersion: apiv1.Version, StartedAt: h.started,
		UptimeSeconds: time.Since(h.started).Seconds(), StateDir: h.stateDir,
		Addr: h.cfg.Addr, DevMode: h.cfg.APIToken == "",
		CgroupMode: string(cgroup.ModeNone), Workers: map[string]int{},
	}
	if h.cgroups != nil {
		st.CgroupMode = string(h.cgroups.Mode())
		st.Cgroups = h.cgroups.Describe()
	}
	for _, s := range state.All {
		st.Workers[string(s)] = 0
	}
	for _, info := range h.List(true) {
		st.Workers[string(info.State)]++
		if info.Stats != nil {
			st.Totals.RSSBytes += info.Stats.RSSBytes
			st.Totals.CPUSeconds += info.Stats.CPUSeconds
			st.Totals.Threads += info.Stats.Threads
			st.Totals.OpenFDs += info.Stats.OpenFDs
			st.Totals.GPUMemoryBytes += info.Stats.GPUMemoryBytes
		}
	}
	h.gpuStatus(&st)
	return st
}
