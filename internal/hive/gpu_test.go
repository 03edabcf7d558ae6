package hive_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
)

// The book the front door's eviction by VRAM reads: the live workers on
// each device with what they count for, a budget that makes eviction the
// same sum as for RAM, and the estimate a spawn would book.
func TestGPUAccountsForEviction(t *testing.T) {
	dir := t.TempDir()
	inv := filepath.Join(dir, "gpus.json")
	if err := os.WriteFile(inv, []byte(`{"gpus":[{"index":0,"uuid":"GPU-a","name":"A","memory_total_bytes":8589934592,"memory_used_bytes":1073741824,"utilization_percent":0}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	h := startHive(t, dir, func(c *config.Config) {
		c.GPUInventory = inv
	})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	}()
	model, err := builtinmodel.WriteTo(filepath.Join(dir, "models"))
	if err != nil {
		t.Fatal(err)
	}
	req := &apiv1.SpawnRequest{ModelRef: "file:" + model, Backend: "cuda", Settings: json.RawMessage(`{"vram_bytes":2147483648}`)}
	est, onGPU, err := h.Estimate(req)
	if err != nil || !onGPU || est.VRAMBytes != 2<<30 || est.Source != "settings" {
		t.Fatalf("Estimate: %+v %v %v", est, onGPU, err)
	}
	var ids []string
	for range 2 {
		w, err := h.Spawn(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, w.ID())
		deadline := time.Now().Add(20 * time.Second)
		for w.Info().State != state.Idle {
			if time.Now().After(deadline) {
				t.Fatalf("worker %s: %s", w.ID(), w.Info().State)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	accts := h.GPUAccounts()
	if len(accts) != 1 || len(accts[0].Holders) != 2 {
		t.Fatalf("accounts: %+v", accts)
	}
	a := accts[0]
	// 7 GiB free − 512 MiB reserve; two ready workers hold 2 GiB each (a
	// JSON inventory does not see them, so their estimates stay booked).
	if a.Available != 7<<30-512<<20-4<<30 || a.Budget() != 7<<30-512<<20 {
		t.Fatalf("available %d, budget %d", a.Available, a.Budget())
	}
	for _, g := range a.Holders {
		if g.Booked != 2<<30 || g.EstimateBytes != 2<<30 || g.State != state.Idle {
			t.Fatalf("holder %+v", g)
		}
	}
	// A third 4 GiB worker does not fit (2.5 GiB available); stopping one
	// idle holder (Booked 2 GiB) makes room, and the spawn then passes.
	big := &apiv1.SpawnRequest{ModelRef: "file:" + model, Backend: "cuda", Settings: json.RawMessage(`{"vram_bytes":4294967296}`)}
	if _, err := h.Spawn(context.Background(), big); err == nil {
		t.Fatal("a 4 GiB worker fitted in 2.5 GiB")
	}
	w, _ := h.Worker(ids[0])
	if err := w.Stop(context.Background(), state.Stopped); err != nil {
		t.Fatal(err)
	}
	<-w.Done()
	if _, err := h.Spawn(context.Background(), big); err != nil {
		t.Fatalf("after evicting one holder: %v", err)
	}
}
