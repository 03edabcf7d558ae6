package frontdoor

import (
	"fmt"
	"net/http"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/gpu"
)

// GPUSource is what eviction by VRAM (SPEC §10, §11) needs of the hive. A
// Source that does not implement it has no GPUs: its models are planned by
// RAM alone.
type GPUSource interface {
	// GPUNeed returns the VRAM a worker that req would spawn needs, and
	// whether it would be a GPU worker at all. It starts nothing.
	GPUNeed(req *apiv1.SpawnRequest) (vram int64, onGPU bool, err error)
	// GPUs returns every device's VRAM book as the hive's placement keeps
	// it (never blocks on an inventory read).
	GPUs() []GPU
}

// GPU is one device's VRAM book as the front door plans with it. Bytes
// throughout.
type GPU struct {
	Index   int
	UUID    string
	Free    int64 // the device's free memory as the inventory reports it
	Reserve int64 // vram_reserve_bytes
	// Budget is the VRAM the hive's workers may hold on this device
	// together: a new worker needing N fits once the Held still there add
	// up to at most Budget − N.
	Budget int64
	// Held is what each live worker placed on the device counts for in
	// the book (stopping it gives that back); WorkerID "" is memory
	// reserved by spawns not registered yet, which nothing can stop.
	Held []GPUHeld
}

// GPUHeld is VRAM one worker holds on a device.
type GPUHeld struct {
	WorkerID string
	Bytes    int64
}

// Device is what the per-device VRAM plan knows of one GPU: its budget and
// the workers on it (Snapshot.Memory: the VRAM each holds there).
type Device struct {
	Index   int
	Budget  int64
	Holders []Snapshot
}

// GPUChoice is the outcome of PlanGPU.
type GPUChoice struct {
	Verdict Verdict
	// Device is the GPU to ask for: apiv1.DeviceAuto unless Verdict is
	// Evict (then the device the victims are stopped on).
	Device  int
	Victims []string
}

// PlanGPU decides where a GPU worker of model needing need bytes of VRAM
// goes, device by device with Plan: when it fits on any device as things
// stand, it Fits and the hive places it (auto); else, on the device where
// it fits after stopping the fewest idle workers of other models (among
// equals, the one whose most recently used victim was used least recently,
// then the first in devs), it Evicts those; else, when busy or pinned workers
// stand in the way on some device, it must Wait; else (every device is too
// small, or there are none) it can Never fit. It is pure.
func PlanGPU(need int64, model string, devs []Device) GPUChoice {
	best := GPUChoice{Verdict: Never, Device: apiv1.DeviceAuto}
	var bestRecent int64 // the latest LastUsed among best's victims
	for _, d := range devs {
		v, victims := Plan(need, d.Budget, model, d.Holders)
		switch v {
		case Fits:
			return GPUChoice{Verdict: Fits, Device: apiv1.DeviceAuto}
		case Evict:
			recent := latestUse(victims, d.Holders)
			if best.Verdict != Evict || len(victims) < len(best.Victims) ||
				(len(victims) == len(best.Victims) && recent < bestRecent) {
				best, bestRecent = GPUChoice{Verdict: Evict, Device: d.Index, Victims: victims}, recent
			}
		case Wait:
			if best.Verdict == Never {
				best.Verdict = Wait
			}
		}
	}
	return best
}

// latestUse is the latest LastUsed (UnixNano) among the holders named in ids.
func latestUse(ids []string, holders []Snapshot) int64 {
	var t int64
	for _, id := range ids {
		for _, h := range holders {
			if h.ID == id && h.LastUsed.UnixNano() > t {
				t = h.LastUsed.UnixNano()
			}
		}
	}
	return t
}

// gpuNeedLocked returns the VRAM a worker of m needs and whether it is a
// GPU worker, asking the hive once (a failure — the model file is not there
// yet — is not remembered). Called with fd.mu held.
func (fd *FrontDoor) gpuNeedLocked(m *model, gs GPUSource) (int64, bool, error) {
	if m.vramKnown {
		return m.vram, m.onGPU, nil
	}
	vram, onGPU, err := gs.GPUNeed(&apiv1.SpawnRequest{ModelRef: m.ref, Profile: m.entry.Profile, Settings: m.setJSON})
	if err != nil {
		return 0, false, err
	}
	m.vram, m.onGPU, m.vramKnown = vram, onGPU, true
	return vram, onGPU, nil
}

// planGPULocked is the VRAM half of planLocked: for a model whose workers
// run on a GPU, PlanGPU over the hive's devices, with the front door's own
// knowledge of which workers are idle, pinned or being stopped (a worker
// it did not start is never stopped). While another GPU spawn of the front
// door is under way (its device is not booked yet) it waits: the spawn's
// end plans again. A model that is not on a GPU, or a hive without GPUs,
// Fits (the hive's own placement answers for the latter). On Never, the
// returned error is the 507 to fail the queue with.
func (fd *FrontDoor) planGPULocked(m *model) (GPUChoice, *Error, error) {
	fits := GPUChoice{Verdict: Fits, Device: apiv1.DeviceAuto}
	gs, ok := fd.src.(GPUSource)
	if !ok {
		return fits, nil, nil
	}
	need, onGPU, err := fd.gpuNeedLocked(m, gs)
	if err != nil || !onGPU {
		return fits, nil, err
	}
	gpus := gs.GPUs()
	if len(gpus) == 0 {
		return fits, nil, nil
	}
	for _, o := range fd.models {
		if (o.profile.GPU || o.vramKnown && o.onGPU) && len(o.pending) > 0 {
			fd.log.Debug("VRAM plan waits for a GPU spawn under way", "model", m.name, "spawning", o.name)
			return GPUChoice{Verdict: Wait, Device: apiv1.DeviceAuto}, nil, nil
		}
	}
	devs := make([]Device, 0, len(gpus))
	for _, g := range gpus {
		d := Device{Index: g.Index, Budget: g.Budget}
		for _, h := range g.Held {
			sn := Snapshot{ID: h.WorkerID, Memory: h.Bytes, Pinned: true}
			if h.WorkerID == "" {
				sn.ID = "reserved:" + g.UUID
			} else if s := fd.byID[h.WorkerID]; s != nil {
				sn.Model, sn.Idle, sn.Pinned, sn.LastUsed = s.m.name, evictableLocked(s), s.pinned || s.evicting, s.lastUsed
			}
			d.Holders = append(d.Holders, sn)
		}
		devs = append(devs, d)
	}
	c := PlanGPU(need, m.name, devs)
	fd.log.Debug("VRAM plan", "model", m.name, "need", need, "verdict", c.Verdict.String(), "device", c.Device, "victims", c.Victims, "devices", fmt.Sprint(devs))
	if c.Verdict == Never {
		return c, insufficientVRAM(m.name, need, gpus), nil
	}
	return c, nil, nil
}

// insufficientVRAM is the 507 for a model no GPU can ever hold, with the
// numbers of the device that comes closest.
func insufficientVRAM(name string, need int64, gpus []GPU) *Error {
	g := gpus[0]
	for _, x := range gpus[1:] {
		if x.Budget > g.Budget {
			g = x
		}
	}
	// What the hive's own workers use beyond the free memory (the driver
	// counts it as used; stopping them gives it back).
	own := g.Budget - (g.Free - g.Reserve)
	return errorf(http.StatusInsufficientStorage, apiv1.CodeInsufficientVRAM,
		"model %s needs an estimated %d bytes (%s) of VRAM, more than any GPU can give one worker even with every other worker stopped: "+
			"the most is %d bytes (%s) on GPU %d (%s): %s free, less %s that must stay free (vram_reserve_bytes), plus %s in use by the hive's workers",
		name, need, gpu.MiB(need), g.Budget, gpu.MiB(g.Budget), g.Index, g.UUID, gpu.MiB(g.Free), gpu.MiB(g.Reserve), gpu.MiB(own))
}
