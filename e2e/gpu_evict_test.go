package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/gpu"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// gpuGenericProfile is a profile block for the generic test worker with
// gpu: true (its workers are placed on a GPU and booked against its VRAM).
func gpuGenericProfile(t *testing.T, name, gate string) string {
	env := ""
	if gate != "" {
		env = fmt.Sprintf("\n    env: {GENERIC_GATE_FILE: %q}", gate)
	}
	return fmt.Sprintf(`  %s:
    command: [%s, --port, "{port}", --model, "{model}"]
    protocol: http
    readiness: {path: /health, status: 200}
    gpu: true%s
`, name, hivetest.GenericWorker(t), env)
}

// Eviction by VRAM (SPEC §10, §11). GPU 0 has 6 GiB for workers (8 GiB,
// 1.5 used, 512 MiB reserve), GPU 1 3.5 GiB. Models a and b need 5 GiB
// each: they fit GPU 0 only, and only alone; c (3 GiB) sits on GPU 1. The
// JSON inventory's used memory is static, so a live worker is booked at
// its estimate (vram_bytes) while it lives.
//
// A request for b evicts idle a on GPU 0, although c on GPU 1 is the least
// recently used worker (stopping it would not make room); b is asked onto
// GPU 0. A busy a is never evicted: b waits in the queue, and proceeds (a
// evicted) once a is idle. A model larger than any GPU is 507
// INSUFFICIENT_VRAM with the numbers.
func TestFrontDoorEvictsByVRAMOnTheRightDevice(t *testing.T) {
	dir := t.TempDir()
	invPath := filepath.Join(dir, "gpus.json")
	writeGPUs(t, invPath, gpu.FileInventory{GPUs: []gpu.GPU{
		{Index: 0, UUID: gpu0, Name: "Fake 8G", MemoryTotal: 8 << 30, MemoryUsed: 1536 << 20},
		{Index: 1, UUID: gpu1, Name: "Fake 4G", MemoryTotal: 4 << 30},
	}})
	gatef := filepath.Join(dir, "gate")
	if err := os.WriteFile(gatef, nil, 0o600); err != nil { // open for now
		t.Fatal(err)
	}
	h := startFD(t, hivetest.Options{Config: fmt.Sprintf(`gpu_inventory: %s
profiles:
%s%smodels:
  a: {model_ref: file:stories260K.gguf, profile: ggated, vram_bytes: %d}
  b: {model_ref: file:stories260K.gguf, profile: ggen, vram_bytes: %d}
  c: {model_ref: file:stories260K.gguf, profile: ggen, vram_bytes: %d}
  huge: {model_ref: file:stories260K.gguf, profile: ggen, vram_bytes: %d}
`, invPath, gpuGenericProfile(t, "ggen", ""), gpuGenericProfile(t, "ggated", gatef), int64(5)<<30, int64(5)<<30, int64(3)<<30, int64(8)<<30)})

	chat := func(model string) {
		t.Helper()
		if code, b, _ := h.chat(model); code != 200 {
			t.Fatalf("%s: %d %s\n%s", model, code, b, h.Log())
		}
	}
	only := func(model string) string {
		t.Helper()
		ws := h.workersOf(model, false)
		if len(ws) != 1 {
			t.Fatalf("live workers of %s: %s", model, dump(ws))
		}
		return ws[0].ID
	}
	chat("a") // GPU 0: the only one it fits
	chat("c") // GPU 1: GPU 0 has 1 GiB left
	chat("a") // c is now the least recently used
	aID, cID := only("a"), only("c")
	if a, c := h.Get(aID), h.Get(cID); a.Device != 0 || c.Device != 1 {
		t.Fatalf("a on GPU %d, c on GPU %d; want 0 and 1", a.Device, c.Device)
	}

	chat("b")
	if end := h.WaitState(aID, wait, "terminated"); end.Reason != "evicted" {
		t.Fatalf("a ended %s/%s", end.State, end.Reason)
	}
	bID := only("b")
	if b := h.Get(bID); b.Device != 0 || b.GPUUUID != gpu0 {
		t.Fatalf("b on GPU %d (%s), want 0", b.Device, b.GPUUUID)
	}
	if c := h.Get(cID); c.State != "idle" {
		t.Fatalf("c (GPU 1, not in the way) is %s/%s", c.State, c.Reason)
	}

	// a again, with its gate closed: it evicts b and stays busy.
	if err := os.Remove(gatef); err != nil {
		t.Fatal(err)
	}
	aDone := make(chan int, 1)
	go func() { code, _, _ := h.chat("a"); aDone <- code }()
	hivetest.Eventually(t, wait, func() bool {
		ws := h.workersOf("a", false)
		return len(ws) == 1 && ws[0].State == "busy"
	})
	if end := h.WaitState(bID, wait, "terminated"); end.Reason != "evicted" {
		t.Fatalf("b ended %s/%s", end.State, end.Reason)
	}
	a2ID := only("a")
	if a := h.Get(a2ID); a.Device != 0 {
		t.Fatalf("a on GPU %d, want 0", a.Device)
	}
	// b now waits: the only device it fits on holds a busy worker.
	bDone := make(chan string, 1)
	go func() {
		code, body, _ := h.chat("b")
		bDone <- fmt.Sprintf("%d %s", code, body)
	}()
	hivetest.Eventually(t, wait, func() bool { return h.models().Data[1].Rbee.Queued == 1 })
	select {
	case r := <-bDone:
		t.Fatalf("b answered %s while only a busy worker stood in the way", r)
	case <-time.After(500 * time.Millisecond):
	}
	if ws := h.workersOf("b", false); len(ws) != 0 {
		t.Fatalf("b started over the busy a: %s", dump(ws))
	}
	if a := h.Get(a2ID); a.State != "busy" {
		t.Fatalf("busy a is %s/%s", a.State, a.Reason)
	}
	// a's request ends; a is idle, evicted, and b is served on GPU 0.
	if err := os.WriteFile(gatef, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := <-aDone; code != 200 {
		t.Fatalf("a %d", code)
	}
	if r := <-bDone; !strings.HasPrefix(r, "200 ") {
		t.Fatalf("b: %s\n%s", r, h.Log())
	}
	if end := h.WaitState(a2ID, wait, "terminated"); end.Reason != "evicted" {
		t.Fatalf("a ended %s/%s", end.State, end.Reason)
	}
	if b := h.Get(only("b")); b.Device != 0 {
		t.Fatalf("b on GPU %d, want 0", b.Device)
	}
	if c := h.Get(cID); c.State != "idle" {
		t.Fatalf("c is %s/%s", c.State, c.Reason)
	}

	// huge fits on no GPU even with every worker stopped.
	code, body, _ := h.chat("huge")
	e := errorOf(t, body)
	if code != 507 || e.Code != "INSUFFICIENT_VRAM" {
		t.Fatalf("huge: %d %s", code, body)
	}
	for _, want := range []string{"8589934592 bytes (8192.0 MiB) of VRAM", "6442450944 bytes (6144.0 MiB) on GPU 0 (" + gpu0 + ")",
		"6656.0 MiB free", "less 512.0 MiB that must stay free", "plus 0.0 MiB in use"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
	}
	if ws := h.workersOf("huge", true); len(ws) != 0 {
		t.Fatalf("huge started: %s", dump(ws))
	}
}

// Regression: two GPU models whose cold starts race for one GPU with room
// for one of them. Planned at once, both saw the GPU free, and the hive's
// preflight refused the second spawn (503 WORKER_FAILED). Now the second
// plan waits until the first spawn is booked, then for its worker to be
// idle, evicts it, and both requests are served.
func TestFrontDoorGPUColdStartsRacingForOneGPUAreBothServed(t *testing.T) {
	dir := t.TempDir()
	invPath := filepath.Join(dir, "gpus.json")
	writeGPUs(t, invPath, gpu.FileInventory{GPUs: []gpu.GPU{
		{Index: 0, UUID: gpu0, Name: "Fake 8G", MemoryTotal: 8 << 30},
	}})
	h := startFD(t, hivetest.Options{Config: fmt.Sprintf(`gpu_inventory: %s
profiles:
%smodels:
  a: {model_ref: file:stories260K.gguf, profile: ggen, vram_bytes: %d}
  b: {model_ref: file:stories260K.gguf, profile: ggen, vram_bytes: %d}
`, invPath, gpuGenericProfile(t, "ggen", ""), int64(5)<<30, int64(5)<<30)})
	for round := range 3 {
		res := make(chan string, 2)
		for _, m := range []string{"a", "b"} {
			go func() {
				code, body, _ := h.chat(m)
				res <- fmt.Sprintf("%s: %d %s", m, code, body)
			}()
		}
		for range 2 {
			if r := <-res; !strings.Contains(r, ": 200 ") {
				t.Fatalf("round %d: %s\n%s", round, r, h.Log())
			}
		}
	}
}
