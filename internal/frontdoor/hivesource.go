package frontdoor

import (
	"context"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/hive"
)

// HiveSource adapts *hive.Hive to Source.
type HiveSource struct{ H *hive.Hive }

// Spawn implements Source.
func (s HiveSource) Spawn(ctx context.Context, req *apiv1.SpawnRequest) (Worker, error) {
	w, err := s.H.Spawn(ctx, req)
	if w == nil {
		return nil, err
	}
	return w, err
}

// Worker implements Source.
func (s HiveSource) Worker(id string) (Worker, error) {
	w, err := s.H.Worker(id)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// LiveWorkers implements Source.
func (s HiveSource) LiveWorkers() []Worker {
	ws := s.H.LiveWorkers()
	out := make([]Worker, len(ws))
	for i, w := range ws {
		out[i] = w
	}
	return out
}

// Subscribe implements Source.
func (s HiveSource) Subscribe() (<-chan apiv1.Event, func()) {
	sub := s.H.Events().Subscribe(4096)
	return sub.C, sub.Close
}

// ResolveModel implements Source.
func (s HiveSource) ResolveModel(ref string) (string, int64, error) { return s.H.ResolveModel(ref) }

// ModelRoots implements Source.
func (s HiveSource) ModelRoots() []string { return s.H.ModelRoots() }

// GPUNeed implements GPUSource: the hive's own estimate for req.
func (s HiveSource) GPUNeed(req *apiv1.SpawnRequest) (int64, bool, error) {
	e, onGPU, err := s.H.Estimate(req)
	return e.VRAMBytes, onGPU, err
}

// GPUs implements GPUSource from the hive's per-device book
// (hive.GPUAccounts). Each holder counts for its Booked; the rest of the
// device's reservations (spawns that passed the preflight and are not
// registered yet) is held by no one, and the budget includes it.
func (s HiveSource) GPUs() []GPU {
	accts := s.H.GPUAccounts()
	out := make([]GPU, 0, len(accts))
	for _, a := range accts {
		g := GPU{Index: a.Index, UUID: a.UUID, Free: a.Free(), Reserve: a.Reserve, Budget: a.Budget()}
		other := a.Reserved
		for _, h := range a.Holders {
			g.Held = append(g.Held, GPUHeld{WorkerID: h.WorkerID, Bytes: h.Booked})
			other -= h.Booked - h.UsedBytes // the part of its Booked that is a reservation
		}
		if other > 0 {
			g.Held = append(g.Held, GPUHeld{Bytes: other})
			g.Budget += other
		}
		out = append(out, g)
	}
	return out
}
