package hive

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/gpu"
	"github.com/rbee/rbee-hive/internal/models"
	"github.com/rbee/rbee-hive/internal/modelsize"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/validate"
)

// gpuFreshness is how old an inventory reading a placement may use: a
// spawn reads the inventory again when the last reading is older (SPEC §11:
// refreshed around every spawn), without making a burst of spawns run
// nvidia-smi once each.
const gpuFreshness = time.Second

// gpuBook is the hive's side of GPU placement (SPEC §11): the inventory
// and the reservations of spawns that have passed the VRAM preflight but
// whose worker is not registered yet. Safe for concurrent use.
type gpuBook struct {
	inv *gpu.Refresher

	// place makes a placement (read the inventory and the book, pick,
	// reserve) one step, so two spawns racing for one GPU cannot both pass
	// the preflight. It may be held across a run of nvidia-smi.
	place sync.Mutex
	// pendMu guards pending; it is never held for long, so readers of the
	// book (status, metrics) do not wait for a placement's inventory read.
	pendMu  sync.Mutex
	pending map[string]gpu.Reservation // by worker id

	// freedAt is when a GPU worker last ended (UnixNano): a placement
	// reads the inventory again if its reading is older, so a spawn right
	// after an eviction sees the memory the evicted worker gave back.
	freedAt atomic.Int64

	estimates modelsize.Cache // model estimates, so a model's header is parsed once

	useMu   sync.Mutex
	useSnap *gpu.Snapshot    // the reading use was attributed from
	use     map[string]int64 // GPU memory by worker id
}

// initGPU opens the configured inventory and reads it once.
func (h *Hive) initGPU() error {
	src, err := gpu.Open(h.cfg.GPUInventory)
	if err != nil {
		return fmt.Errorf("hive: %w", err)
	}
	h.gpu = &gpuBook{inv: gpu.NewRefresher(src, gpu.DefaultInterval, h.log), pending: map[string]gpu.Reservation{}}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	h.gpu.inv.Start(ctx)
	if s := h.gpu.inv.Snapshot(); len(s.GPUs) > 0 || s.Err != nil {
		h.log.Info("GPU inventory", "source", s.Source, "gpus", len(s.GPUs), "error", s.Err)
	}
	return nil
}

// GPUInventory returns the refresher of the hive's GPU inventory.
func (h *Hive) GPUInventory() *gpu.Refresher { return h.gpu.inv }

// wantsGPU reports whether a spawn makes a GPU worker.
func wantsGPU(backend string, prof config.Profile) bool { return backend == "cuda" || prof.GPU }

// estimate books a worker's memory need (SPEC §11): memory_bytes /
// vram_bytes when set (the spawn's settings — which a model entry's
// settings feed — else the profile's), else the
// estimate from the GGUF file at the settings' ctx with the profile's
// gpu_layers (all by default) offloaded for a GPU worker; a file that is
// not GGUF falls back to file size × 1.2 for RAM and no VRAM figure.
// ramBasis says where the RAM figure came from, for the memory preflight's
// message.
// c caches the estimates (nil: none).
func estimate(c *modelsize.Cache, path string, size int64, prof config.Profile, s config.Settings, onGPU bool) (e apiv1.Estimate, ramBasis string) {
	layers := 0
	if onGPU {
		layers = modelsize.AllLayers
		if prof.GPULayers > 0 {
			layers = prof.GPULayers
		}
	}
	e = apiv1.Estimate{Source: "gguf"}
	ramBasis = "estimate from the GGUF file"
	detail := modelsize.Detail
	if c != nil {
		detail = c.Detail
	}
	b, err := detail(path, s.Ctx, layers)
	if err != nil {
		e = apiv1.Estimate{Source: "file_size", RAMBytes: models.NeedBytes(size)}
		ramBasis = "" // file size × 1.2
	} else {
		e.RAMBytes, e.VRAMBytes, e.Ctx = b.RAM, b.VRAM, b.Ctx
	}
	vram := s.VRAMBytes
	if vram == 0 {
		vram = prof.VRAMBytes
	}
	ram := s.MemoryBytes
	if ram == 0 {
		ram = prof.MemoryBytes
	}
	if ram > 0 || (onGPU && vram > 0) {
		e.Source = "settings"
	}
	if ram > 0 {
		e.RAMBytes, ramBasis = ram, "memory_bytes"
	}
	if onGPU && vram > 0 {
		e.VRAMBytes = vram
	}
	if !onGPU {
		e.VRAMBytes = 0
	}
	return e, ramBasis
}

// preflightRAM is the memory preflight (SPEC §3) with the estimate's RAM
// figure, found as basis says.
func (h *Hive) preflightRAM(e apiv1.Estimate, basis string) error {
	if h.cfg.MemoryReserveBytes < 0 {
		return nil
	}
	avail, err := models.MemAvailable()
	if err != nil {
		return fmt.Errorf("memory preflight: %w", err)
	}
	return models.PreflightNeed(e.RAMBytes, avail, h.cfg.MemoryReserveBytes, basis)
}

// placeGPU picks the device of a GPU worker and reserves its VRAM need
// until release is called (after the worker is registered, when its own
// state carries the reservation). It returns a *validate.Error
// INVALID_DEVICE for a device that is not there, and a
// *gpu.InsufficientVRAMError when the device (auto: every device) cannot
// hold need.
func (h *Hive) placeGPU(ctx context.Context, id string, req *apiv1.SpawnRequest, need int64) (gpu.DeviceAccount, func(), error) {
	asked := apiv1.DeviceAuto
	if req.DeviceGiven && req.Device != apiv1.DeviceAuto {
		asked = req.Device
	}
	b := h.gpu
	b.place.Lock()
	defer b.place.Unlock()
	snap := b.inv.Fresh(ctx, gpuFreshness)
	if snap.At.UnixNano() < b.freedAt.Load() {
		snap = b.inv.Refresh(ctx)
	}
	b.pendMu.Lock()
	defer b.pendMu.Unlock()
	a, err := gpu.Pick(h.accounts(snap), asked, need, snap.Source)
	if err != nil {
		var de *gpu.InvalidDeviceError
		if errors.As(err, &de) {
			return a, nil, &validate.Error{Code: apiv1.CodeInvalidDevice, Message: de.Error()}
		}
		return a, nil, err
	}
	b.pending[id] = gpu.Reservation{WorkerID: id, UUID: a.UUID, Bytes: need}
	return a, func() {
		b.pendMu.Lock()
		delete(b.pending, id)
		b.pendMu.Unlock()
	}, nil
}

// gpuChanged is told of a GPU worker's state change: memory it held is
// free once it ended, or in use once it is ready, so the inventory is read
// again (SPEC §11: around every spawn and stop).
func (h *Hive) gpuChanged(to state.State) {
	if to.Ended() {
		h.gpu.freedAt.Store(time.Now().UnixNano())
	}
	if to.Ended() || to == state.Idle || to == state.Backoff {
		h.gpu.inv.Kick()
	}
}

// GPUAccount is one device's VRAM book with the workers placed on it: what
// spawn placement and the front door's eviction by VRAM (SPEC §10) read.
type GPUAccount struct {
	gpu.DeviceAccount
	// Holders are the live workers placed on this device.
	Holders []GPUHolder
}

// Budget is the VRAM the hive's workers may hold on this device together:
// what is available now plus what the holders count for in the book. With
// it, eviction by VRAM is the same problem as eviction by RAM: a spawn
// needing N fits once Σ Booked of the remaining holders + N ≤ Budget.
func (a GPUAccount) Budget() int64 {
	b := a.Available
	for _, h := range a.Holders {
		b += h.Booked
	}
	return b
}

// GPUHolder is a live worker on a device.
type GPUHolder struct {
	WorkerID string
	ModelRef string
	State    state.State
	// EstimateBytes is its VRAM need as booked at its spawn; UsedBytes what
	// its processes are seen to hold (0 when the inventory cannot tell).
	EstimateBytes, UsedBytes int64
	// Booked is what it counts for in the device's book: what it is seen
	// to use (in the driver's used memory) plus what it still has reserved.
	// Stopping it gives this back.
	Booked int64
}

// GPUAccounts returns every device's book from the latest inventory
// reading (at most a few seconds old; it does not wait for a read), with
// the live workers on each. For eviction by VRAM (SPEC §10): a worker of a
// model needing N bytes of VRAM (Estimate) fits on a device once idle
// holders there whose Booked add up to N − Available are stopped
// (equivalently: Plan(N, a.Budget(), holders as their Booked)); spawn it
// with that device asked (Device, DeviceGiven), and placement, which
// reads the inventory again after a GPU worker ended, sees the memory
// given back. Safe for concurrent use.
func (h *Hive) GPUAccounts() []GPUAccount {
	snap := h.gpu.inv.Snapshot()
	h.gpu.pendMu.Lock()
	accts := h.accounts(snap)
	h.gpu.pendMu.Unlock()
	use := h.gpuUse(snap)
	out := make([]GPUAccount, len(accts))
	idx := map[string]int{}
	for i, a := range accts {
		out[i] = GPUAccount{DeviceAccount: a}
		idx[a.UUID] = i
	}
	h.mu.RLock()
	infos := make([]*apiv1.WorkerInfo, 0, len(h.workers))
	for _, w := range h.workers {
		if info := w.Info(); info != nil && info.GPUUUID != "" && !info.State.Ended() {
			infos = append(infos, info)
		}
	}
	h.mu.RUnlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].ID < infos[j].ID })
	for _, info := range infos {
		i, ok := idx[info.GPUUUID]
		if !ok {
			continue
		}
		g := GPUHolder{WorkerID: info.ID, ModelRef: info.ModelRef, State: info.State, UsedBytes: use[info.ID]}
		if info.Estimate != nil {
			g.EstimateBytes = info.Estimate.VRAMBytes
		}
		g.Booked = g.UsedBytes
		if reserves(info.State, snap.Static) {
			g.Booked = max(g.EstimateBytes, g.UsedBytes)
		}
		out[i].Holders = append(out[i].Holders, g)
	}
	return out
}

// accounts books the reservations against snap: every registered worker
// placed on a GPU that has not finished loading (spawning, loading,
// backoff) holds its estimate minus what it is seen to use already (a
// ready worker's memory is in the driver's used figure); with a static
// inventory (a JSON file, which does not see workers load) every live
// worker does. A placement whose worker is not registered yet holds its
// whole estimate. Call with h.gpu.pendMu held.
func (h *Hive) accounts(snap *gpu.Snapshot) []gpu.DeviceAccount {
	use := h.gpuUse(snap)
	var res []gpu.Reservation
	registered := map[string]bool{}
	h.mu.RLock()
	for id, w := range h.workers {
		info := w.Info()
		if info == nil {
			continue
		}
		registered[id] = true
		if info.GPUUUID == "" || info.Estimate == nil {
			continue
		}
		switch {
		case reserves(info.State, snap.Static):
			if left := info.Estimate.VRAMBytes - use[id]; left > 0 {
				res = append(res, gpu.Reservation{WorkerID: id, UUID: info.GPUUUID, Bytes: left})
			}
		}
	}
	h.mu.RUnlock()
	for id, r := range h.gpu.pending {
		if !registered[id] {
			res = append(res, r)
		}
	}
	sort.Slice(res, func(i, j int) bool { return res[i].WorkerID < res[j].WorkerID })
	return gpu.Account(snap, h.cfg.VRAMReserveBytes, res)
}

// reserves reports whether a GPU worker in state st keeps its estimate
// (less what it is seen to use) reserved: until it is ready, or, with a
// static inventory, while it lives.
func reserves(st state.State, static bool) bool {
	switch st {
	case state.Spawning, state.Loading, state.Backoff:
		return true
	}
	return static && !st.Ended()
}

// gpuUse returns the GPU memory of each live worker's process tree in
// snap, attributed once per reading.
func (h *Hive) gpuUse(snap *gpu.Snapshot) map[string]int64 {
	b := h.gpu
	b.useMu.Lock()
	defer b.useMu.Unlock()
	if b.useSnap == snap && b.use != nil {
		return b.use
	}
	use := map[string]int64{}
	if len(snap.Processes) > 0 {
		roots := map[int]string{}
		h.mu.RLock()
		for id, w := range h.workers {
			if info := w.Info(); info != nil && info.PID > 0 && !info.State.Ended() {
				roots[info.PID] = id
			}
		}
		h.mu.RUnlock()
		use = gpu.Attribute(snap.Processes, gpu.TreeOwner("", roots))
	}
	b.useSnap, b.use = snap, use
	return use
}

// withGPUUse returns infos with each worker's GPU memory in its Stats
// (copies where it changes anything).
func (h *Hive) withGPUUse(infos []*apiv1.WorkerInfo) []*apiv1.WorkerInfo {
	use := h.gpuUse(h.gpu.inv.Snapshot())
	if len(use) == 0 {
		return infos
	}
	for i, info := range infos {
		n, ok := use[info.ID]
		if !ok || info.State.Ended() {
			continue
		}
		cp := *info
		st := apiv1.Stats{}
		if info.Stats != nil {
			st = *info.Stats
		}
		st.GPUMemoryBytes = n
		cp.Stats = &st
		infos[i] = &cp
	}
	return infos
}

// GPUs returns the GPUs as GET /v1/status shows them.
func (h *Hive) GPUs() []apiv1.GPUStatus {
	out := []apiv1.GPUStatus{}
	for _, a := range h.GPUAccounts() {
		g := apiv1.GPUStatus{
			Index: a.Index, UUID: a.UUID, Name: a.Name, MemoryTotalBytes: a.MemoryTotal, MemoryUsedBytes: a.MemoryUsed,
			MemoryFreeBytes: a.Free(), UtilizationPercent: a.Utilization, ReserveBytes: a.Reserve,
			ReservedBytes: a.Reserved, AvailableBytes: a.Available, Workers: []string{},
		}
		for _, w := range a.Holders {
			g.Workers = append(g.Workers, w.WorkerID)
		}
		out = append(out, g)
	}
	return out
}

// gpuStatus fills the GPU part of st.
func (h *Hive) gpuStatus(st *apiv1.Status) {
	snap := h.gpu.inv.Snapshot()
	st.GPUInventory = snap.Source
	if snap.Err != nil {
		st.GPUError = snap.Err.Error()
	}
	if !snap.At.IsZero() {
		at := snap.At
		st.GPUReadAt = &at
	}
	st.GPUs = h.GPUs()
	st.Memory.ReserveBytes = h.cfg.MemoryReserveBytes
	st.Memory.TotalBytes, _ = models.MemTotal()
	st.Memory.AvailableBytes, _ = models.MemAvailable()
}

// withGPUEnv returns env with CUDA_VISIBLE_DEVICES set to the worker's GPU,
// replacing any value from the hive's environment, the profile or the
// request (a worker must not see another GPU than the one it was placed
// on and booked against).
func withGPUEnv(env []string, uuid string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CUDA_VISIBLE_DEVICES=") {
			out = append(out, kv)
		}
	}
	return append(out, "CUDA_VISIBLE_DEVICES="+uuid)
}

// Estimate returns the memory need Spawn would book for req (its profile,
// settings and model, as Spawn resolves them), and whether the worker
// would be a GPU worker — for the front door to plan evictions before it
// spawns. It starts nothing and reserves nothing. Safe for concurrent use.
// Errors are *Error.
func (h *Hive) Estimate(req *apiv1.SpawnRequest) (apiv1.Estimate, bool, error) {
	e, onGPU, err := h.estimateReq(req)
	return e, onGPU, wrapErr(err)
}

func (h *Hive) estimateReq(req *apiv1.SpawnRequest) (apiv1.Estimate, bool, error) {
	probe, err := config.Override(h.cfg.Defaults, req.Settings)
	if err != nil {
		return apiv1.Estimate{}, false, &validate.Error{Code: "INVALID_SETTINGS", Message: err.Error()}
	}
	name := probe.Profile
	if req.Profile != "" {
		name = req.Profile
	}
	prof, ok := h.cfg.Profiles[name]
	if !ok {
		return apiv1.Estimate{}, false, &validate.Error{Code: "INVALID_PROFILE", Message: fmt.Sprintf("no profile named %q", clip(name))}
	}
	path, size, err := h.resolver.Resolve(req.ModelRef, req.ModelPath)
	if err != nil {
		return apiv1.Estimate{}, false, err
	}
	backend := req.Backend
	if backend == "" {
		backend = "cpu"
	}
	onGPU := wantsGPU(backend, prof)
	e, _ := estimate(&h.gpu.estimates, path, size, prof, probe, onGPU)
	return e, onGPU, nil
}
