package hive

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/gpu"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/supervisor"
	"github.com/rbee/rbee-hive/internal/validate"
)

// gpuOnlyHive is a Hive with just what placement needs: a JSON inventory
// and an empty registry.
func gpuOnlyHive(t *testing.T, inv string) *Hive {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gpus.json")
	if err := os.WriteFile(path, []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	h := &Hive{cfg: cfg, workers: map[string]*supervisor.Worker{}}
	h.gpu = &gpuBook{inv: gpu.NewRefresher(gpu.NewFile(path), 0, nil), pending: map[string]gpu.Reservation{}}
	return h
}

const twoGPUInventory = `{"gpus":[
 {"index":0,"uuid":"GPU-a","name":"A","memory_total_bytes":8589934592,"memory_used_bytes":6442450944,"utilization_percent":1},
 {"index":1,"uuid":"GPU-b","name":"B","memory_total_bytes":8589934592,"memory_used_bytes":2147483648,"utilization_percent":1}]}`

func TestPlaceGPUAutoPicksTheFreerAndReservesUntilReleased(t *testing.T) {
	h := gpuOnlyHive(t, twoGPUInventory)
	ctx := context.Background()
	req := &apiv1.SpawnRequest{Backend: "cuda"} // no device: auto
	a, release, err := h.placeGPU(ctx, "w1", req, 5<<30)
	if err != nil || a.UUID != "GPU-b" {
		t.Fatalf("auto: %+v %v", a, err)
	}
	// GPU 1 now has 6 GiB − 512 MiB − 5 GiB reserved = 512 MiB left; GPU 0
	// has 1.5 GiB: auto takes GPU 0 for the next 1 GiB.
	b, release2, err := h.placeGPU(ctx, "w2", req, 1<<30)
	if err != nil || b.UUID != "GPU-a" {
		t.Fatalf("second auto: %+v %v", b, err)
	}
	accts := h.GPUAccounts()
	if accts[1].Reserved != 5<<30 || accts[0].Reserved != 1<<30 || accts[1].Available != 512<<20 {
		t.Fatalf("book: %+v", accts)
	}
	release()
	release2()
	if accts := h.GPUAccounts(); accts[1].Reserved != 0 || accts[1].Available != 6<<30-512<<20 {
		t.Fatalf("after release: %+v", accts[1])
	}
}

// Regression: two spawns racing for one GPU must not both pass.
func TestPlaceGPURacingSpawnsForOneDevice(t *testing.T) {
	h := gpuOnlyHive(t, twoGPUInventory)
	req := &apiv1.SpawnRequest{Backend: "cuda", Device: 0, DeviceGiven: true}
	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []string
	var refused int
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "w" + string(rune('a'+i))
			_, _, err := h.placeGPU(context.Background(), id, req, 1<<30) // 1.5 GiB available: room for one
			mu.Lock()
			defer mu.Unlock()
			var ie *gpu.InsufficientVRAMError
			switch {
			case err == nil:
				won = append(won, id)
			case errors.As(err, &ie) && ie.Reserved == 1<<30 && ie.Free == 2<<30 && ie.Reserve == 512<<20 && ie.Need == 1<<30:
				refused++
			default:
				t.Errorf("%s: %v", id, err)
			}
		}()
	}
	wg.Wait()
	if len(won) != 1 || refused != n-1 {
		t.Fatalf("won %v, refused %d", won, refused)
	}
}

func TestPlaceGPUMissingDeviceIsInvalidDevice(t *testing.T) {
	h := gpuOnlyHive(t, twoGPUInventory)
	_, _, err := h.placeGPU(context.Background(), "w", &apiv1.SpawnRequest{Device: 2, DeviceGiven: true}, 1)
	var ve *validate.Error
	if !errors.As(err, &ve) || ve.Code != "INVALID_DEVICE" {
		t.Fatalf("got %v", err)
	}
	none := gpuOnlyHive(t, `{"gpus":[]}`)
	_, _, err = none.placeGPU(context.Background(), "w", &apiv1.SpawnRequest{}, 1)
	if !errors.As(err, &ve) || ve.Code != "INVALID_DEVICE" {
		t.Fatalf("no GPUs: %v", err)
	}
}

// The spawn's settings win over the profile, which wins over the estimate
// from the file; a file that is not GGUF falls back to file size × 1.2.
func TestEstimateOverrides(t *testing.T) {
	model, err := builtinmodel.WriteTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cpu := est1(estimate(nil, model, 0, config.Profile{}, config.Settings{Ctx: 512}, false))
	if cpu != (apiv1.Estimate{RAMBytes: 15046624, Ctx: 512, Source: "gguf"}) {
		t.Fatalf("cpu: %+v", cpu)
	}
	g := est1(estimate(nil, model, 0, config.Profile{}, config.Settings{Ctx: 512}, true))
	if g.VRAMBytes != 11331328 || g.Source != "gguf" {
		t.Fatalf("gpu: %+v", g)
	}
	prof := config.Profile{VRAMBytes: 3 << 30}
	if e := est1(estimate(nil, model, 0, prof, config.Settings{}, true)); e.VRAMBytes != 3<<30 || e.Source != "settings" {
		t.Fatalf("profile vram_bytes: %+v", e)
	}
	if e := est1(estimate(nil, model, 0, prof, config.Settings{VRAMBytes: 1 << 30, MemoryBytes: 2 << 30}, true)); e.VRAMBytes != 1<<30 || e.RAMBytes != 2<<30 {
		t.Fatalf("settings win: %+v", e)
	}
	if e := est1(estimate(nil, model, 0, config.Profile{MemoryBytes: 5 << 20}, config.Settings{}, false)); e.RAMBytes != 5<<20 || e.Source != "settings" {
		t.Fatalf("profile memory_bytes: %+v", e)
	}
	if e := est1(estimate(nil, model, 0, prof, config.Settings{VRAMBytes: 1 << 30}, false)); e.VRAMBytes != 0 {
		t.Fatalf("a CPU worker books no VRAM: %+v", e)
	}
	junk := filepath.Join(t.TempDir(), "junk.gguf")
	if err := os.WriteFile(junk, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	if e := est1(estimate(nil, junk, 1000, config.Profile{}, config.Settings{}, true)); e != (apiv1.Estimate{RAMBytes: 1200, Source: "file_size"}) {
		t.Fatalf("not GGUF: %+v", e)
	}
}

func TestWithGPUEnvReplacesEveryOtherValue(t *testing.T) {
	env := withGPUEnv([]string{"A=1", "CUDA_VISIBLE_DEVICES=0,1", "B=2", "CUDA_VISIBLE_DEVICES=3"}, "GPU-x")
	if !slices.Equal(env, []string{"A=1", "B=2", "CUDA_VISIBLE_DEVICES=GPU-x"}) {
		t.Fatalf("got %v", env)
	}
}

// Regression: a spawn right after an eviction must see the memory the
// evicted worker gave back, not the reading (under a second old) from
// before it ended.
func TestPlaceGPUAfterAWorkerEndedReadsTheInventoryAgain(t *testing.T) {
	h := gpuOnlyHive(t, twoGPUInventory)
	req := &apiv1.SpawnRequest{Device: 0, DeviceGiven: true}
	if _, _, err := h.placeGPU(context.Background(), "w1", req, 3<<30); !errors.Is(err, gpu.ErrInsufficientVRAM) {
		t.Fatalf("before: %v", err)
	}
	// The worker holding GPU 0's memory ends: the driver now reports 1 GiB used.
	path := h.gpu.inv.Source().Name()[len("file:"):]
	freed := `{"gpus":[{"index":0,"uuid":"GPU-a","name":"A","memory_total_bytes":8589934592,"memory_used_bytes":1073741824,"utilization_percent":1}]}`
	if err := os.WriteFile(path, []byte(freed), 0o644); err != nil {
		t.Fatal(err)
	}
	h.gpuChanged(state.Terminated)
	if a, _, err := h.placeGPU(context.Background(), "w2", req, 3<<30); err != nil || a.UUID != "GPU-a" {
		t.Fatalf("after the worker ended: %+v %v", a, err)
	}
}

func est1(e apiv1.Estimate, _ string) apiv1.Estimate { return e }

func TestEstimateRAMBasis(t *testing.T) {
	model, err := builtinmodel.WriteTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    config.Settings
		want string
	}{
		{config.Settings{}, "estimate from the GGUF file"},
		{config.Settings{VRAMBytes: 1 << 30}, "estimate from the GGUF file"}, // a VRAM override says nothing of RAM
		{config.Settings{MemoryBytes: 1 << 30}, "memory_bytes"},
	} {
		if _, basis := estimate(nil, model, 0, config.Profile{}, c.s, true); basis != c.want {
			t.Errorf("%+v: basis %q, want %q", c.s, basis, c.want)
		}
	}
}

func TestReservesUntilReadyUnlessTheInventoryIsStatic(t *testing.T) {
	for _, st := range state.All {
		want := st == state.Spawning || st == state.Loading || st == state.Backoff
		if got := reserves(st, false); got != want {
			t.Errorf("live inventory, %s: %v", st, got)
		}
		if got := reserves(st, true); got != !st.Ended() {
			t.Errorf("static inventory, %s: %v", st, got)
		}
	}
}
