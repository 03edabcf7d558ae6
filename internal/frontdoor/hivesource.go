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
