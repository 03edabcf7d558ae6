package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/gpu"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

const (
	gpu0 = "GPU-00000000-1111-2222-3333-444444444444"
	gpu1 = "GPU-11111111-2222-3333-4444-555555555555"
)

// writeGPUs writes a JSON inventory atomically (the hive re-reads it when
// it changes).
func writeGPUs(t *testing.T, path string, inv gpu.FileInventory) {
	t.Helper()
	b, err := json.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// twoGPUs: GPU 0 has 2 GiB free, GPU 1 has 6 GiB free.
func twoGPUs() gpu.FileInventory {
	return gpu.FileInventory{GPUs: []gpu.GPU{
		{Index: 0, UUID: gpu0, Name: "Fake 8G", MemoryTotal: 8 << 30, MemoryUsed: 6 << 30, Utilization: 50},
		{Index: 1, UUID: gpu1, Name: "Fake 8G", MemoryTotal: 8 << 30, MemoryUsed: 2 << 30, Utilization: 5},
	}}
}

// envDumper writes a script that records its environment and arguments
// under dir/<worker_id>.{env,args}, then runs the generic test worker: a
// generic profile with gpu: true runs it.
func envDumper(t *testing.T, dir string) string {
	t.Helper()
	script := filepath.Join(dir, "dump-env.sh")
	body := fmt.Sprintf("#!/bin/sh\nout=$1; shift\nenv > \"$out.env.tmp\" && mv \"$out.env.tmp\" \"$out.env\"\necho \"$@\" > \"$out.args\"\nexec %s --port \"$1\" --model \"$2\"\n",
		hivetest.GenericWorker(t))
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

func gpuHive(t *testing.T, inv gpu.FileInventory, extra string) (*hivetest.Hive, string, string) {
	t.Helper()
	dir := t.TempDir()
	invPath := filepath.Join(dir, "gpus.json")
	writeGPUs(t, invPath, inv)
	script := envDumper(t, dir)
	// gpuhang never answers its readiness probe: it stays loading.
	hang := filepath.Join(dir, "hang.sh")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 300\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`gpu_inventory: %s
profiles:
  gpuenv:
    command: [%s, "%s/{worker_id}", "{port}", "{model}", "{device}", "{gpu_uuid}"]
    protocol: http
    gpu: true
    env: {CUDA_VISIBLE_DEVICES: "0,1"}
  gpuhang:
    command: [%s]
    protocol: http
    gpu: true
%s`, invPath, script, dir, hang, extra)
	h := hivetest.Start(t, hivetest.Options{Config: cfg})
	return h, invPath, dir
}

// spawnRaw posts a spawn body as JSON text and returns the status and the
// decoded answer (a SpawnResponse or an error body).
func spawnRaw(t *testing.T, h *hivetest.Hive, body string) (int, apiv1.SpawnResponse, apiv1.ErrorBody) {
	t.Helper()
	resp, err := http.Post(h.URL+"/v1/workers/spawn", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ok apiv1.SpawnResponse
	var bad apiv1.ErrorBody
	if resp.StatusCode == 201 {
		if err := json.Unmarshal(b, &ok); err != nil {
			t.Fatalf("spawn answer %s: %v", b, err)
		}
	} else {
		_ = json.Unmarshal(b, &bad)
	}
	return resp.StatusCode, ok, bad
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	var data []byte
	if !hivetest.Eventually(t, wait, func() bool {
		var err error
		data, err = os.ReadFile(path)
		return err == nil
	}) {
		t.Fatalf("%s never written", path)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	return env
}

// Two GPUs: auto (and a request that names no device) picks the one with
// more free VRAM; the worker sees that GPU, and only it, through
// CUDA_VISIBLE_DEVICES, and {device}/{gpu_uuid} in its argv; an asked
// index is honoured; a missing one is 400 INVALID_DEVICE.
func TestGPUAutoPicksTheFreerDeviceAndTheWorkerSeesIt(t *testing.T) {
	h, _, dir := gpuHive(t, twoGPUs(), "")
	ref := fmt.Sprintf("%q", h.Ref)

	code, r, e := spawnRaw(t, h, `{"model_ref":`+ref+`,"profile":"gpuenv","settings":{"vram_bytes":1073741824}}`)
	if code != 201 {
		t.Fatalf("spawn: %d %+v", code, e)
	}
	if r.Device != 1 || r.GPUUUID != gpu1 || r.Estimate == nil || r.Estimate.VRAMBytes != 1<<30 || r.Estimate.Source != "settings" {
		t.Fatalf("auto placement: %+v %+v", r, r.Estimate)
	}
	env := readEnv(t, filepath.Join(dir, r.WorkerID+".env"))
	if env["CUDA_VISIBLE_DEVICES"] != gpu1 {
		t.Fatalf("worker saw CUDA_VISIBLE_DEVICES=%q, want %s (the hive's value wins over the profile's 0,1)", env["CUDA_VISIBLE_DEVICES"], gpu1)
	}
	args, _ := os.ReadFile(filepath.Join(dir, r.WorkerID+".args"))
	if f := strings.Fields(string(args)); len(f) != 4 || f[2] != "1" || f[3] != gpu1 {
		t.Fatalf("argv after the port and model: %q, want device 1 and %s", args, gpu1)
	}
	info := h.WaitState(r.WorkerID, wait, "idle")
	if info.Device != 1 || info.GPUUUID != gpu1 || info.Estimate == nil || info.Estimate.VRAMBytes != 1<<30 {
		t.Fatalf("worker info: device %d uuid %q estimate %+v", info.Device, info.GPUUUID, info.Estimate)
	}

	code, r2, e := spawnRaw(t, h, `{"model_ref":`+ref+`,"profile":"gpuenv","device":0,"settings":{"vram_bytes":1073741824}}`)
	if code != 201 || r2.Device != 0 || r2.GPUUUID != gpu0 {
		t.Fatalf("asked device 0: %d %+v %+v", code, r2, e)
	}
	if env := readEnv(t, filepath.Join(dir, r2.WorkerID+".env")); env["CUDA_VISIBLE_DEVICES"] != gpu0 {
		t.Fatalf("device 0 worker saw %q", env["CUDA_VISIBLE_DEVICES"])
	}
	code, r3, e := spawnRaw(t, h, `{"model_ref":`+ref+`,"profile":"gpuenv","device":"auto","settings":{"vram_bytes":1073741824}}`)
	if code != 201 || r3.Device != 1 {
		t.Fatalf(`"device":"auto": %d %+v %+v`, code, r3, e)
	}

	code, _, e = spawnRaw(t, h, `{"model_ref":`+ref+`,"backend":"cuda","device":7}`)
	if code != 400 || e.Error.Code != "INVALID_DEVICE" || !strings.Contains(e.Error.Message, "GPUs 0, 1") {
		t.Fatalf("device 7: %d %+v", code, e)
	}

	// GET /v1/status lists both GPUs and who is on them.
	st, err := h.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GPUs) != 2 || st.GPUInventory == "" || st.GPUs[1].UUID != gpu1 || st.GPUs[1].MemoryFreeBytes != 6<<30 ||
		st.GPUs[1].ReserveBytes != 512<<20 || st.GPUs[0].UtilizationPercent != 50 {
		t.Fatalf("status gpus: %+v", st.GPUs)
	}
	// A JSON inventory does not see workers load: every live worker on a
	// GPU keeps its estimate booked, ready or not.
	if st.GPUs[1].ReservedBytes != 2<<30 || st.GPUs[0].ReservedBytes != 1<<30 || st.GPUs[1].AvailableBytes != 6<<30-512<<20-2<<30 {
		t.Fatalf("book: %+v", st.GPUs)
	}
	on1 := strings.Join(st.GPUs[1].Workers, ",")
	if !strings.Contains(on1, r.WorkerID) || !strings.Contains(on1, r3.WorkerID) || strings.Join(st.GPUs[0].Workers, ",") != r2.WorkerID {
		t.Fatalf("workers by GPU: 0 %v, 1 %v", st.GPUs[0].Workers, st.GPUs[1].Workers)
	}
	if st.Memory.TotalBytes <= 0 || st.Memory.AvailableBytes <= 0 {
		t.Fatalf("status memory: %+v", st.Memory)
	}
	// rbee-hive status shows them too.
	out, err := runCLI(t, h, "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"gpus", "2", "gpu 1", gpu1, "2.0/8.0 GiB used, 6.0 free", "util 5%", r.WorkerID} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}

// A model that fits on no GPU is refused before anything starts, with the
// numbers of the GPU that came closest.
func TestGPUModelThatFitsNowhereIs507WithTheNumbers(t *testing.T) {
	h, _, _ := gpuHive(t, twoGPUs(), "")
	code, _, e := spawnRaw(t, h, fmt.Sprintf(`{"model_ref":%q,"backend":"cuda","settings":{"vram_bytes":%d}}`, h.Ref, int64(7)<<30))
	if code != 507 || e.Error.Code != "INSUFFICIENT_VRAM" {
		t.Fatalf("got %d %+v", code, e)
	}
	for _, want := range []string{"needs 7168.0 MiB", "GPU 1 (" + gpu1 + ")", "6144.0 MiB free", "512.0 MiB must stay free", "0.0 MiB is reserved"} {
		if !strings.Contains(e.Error.Message, want) {
			t.Errorf("message %q lacks %q", e.Error.Message, want)
		}
	}
	code, _, e = spawnRaw(t, h, fmt.Sprintf(`{"model_ref":%q,"backend":"cuda","device":0,"settings":{"vram_bytes":%d}}`, h.Ref, int64(1800)<<20))
	if code != 507 || !strings.Contains(e.Error.Message, "GPU 0") || !strings.Contains(e.Error.Message, "2048.0 MiB free") {
		t.Fatalf("device 0: %d %+v", code, e)
	}
	if l, _ := h.Client.List(context.Background(), true); len(l) != 0 {
		t.Fatalf("a refused spawn left workers: %+v", l)
	}
}

// Regression: two spawns racing for one GPU must not both pass the
// preflight. GPU 0 has 2 GiB free, 1.5 GiB after the reserve: room for one
// 1 GiB worker. The workers (a GPU profile whose server never answers) stay
// loading, so the winner keeps its reservation; once it is stopped, there
// is room again.
func TestGPURacingSpawnsDoNotBothPassThePreflight(t *testing.T) {
	one := gpu.FileInventory{GPUs: twoGPUs().GPUs[:1]}
	h, _, _ := gpuHive(t, one, "")
	const n = 4
	var wg sync.WaitGroup
	codes := make([]int, n)
	ids := make([]string, n)
	msgs := make([]string, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			body := fmt.Sprintf(`{"model_ref":%q,"profile":"gpuhang","device":0,"settings":{"vram_bytes":%d}}`, h.Ref, 1<<30)
			resp, err := http.Post(h.URL+"/v1/workers/spawn", "application/json", strings.NewReader(body))
			if err != nil {
				msgs[i] = err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			codes[i], msgs[i] = resp.StatusCode, string(b)
			var r apiv1.SpawnResponse
			if resp.StatusCode == 201 && json.Unmarshal(b, &r) == nil {
				ids[i] = r.WorkerID
			}
		}()
	}
	close(start)
	wg.Wait()
	won := ""
	for i := range n {
		switch codes[i] {
		case 201:
			if won != "" {
				t.Fatalf("two racing spawns both passed: %s and %s", won, ids[i])
			}
			won = ids[i]
		case 507:
			if !strings.Contains(msgs[i], "INSUFFICIENT_VRAM") || !strings.Contains(msgs[i], "1024.0 MiB is reserved for workers that are loading") {
				t.Errorf("loser %d: %s", i, msgs[i])
			}
		default:
			t.Fatalf("spawn %d: %d %s", i, codes[i], msgs[i])
		}
	}
	if won == "" {
		t.Fatalf("no spawn passed: %v %v", codes, msgs)
	}
	st, _ := h.Client.Status(context.Background())
	if st.GPUs[0].ReservedBytes != 1<<30 {
		t.Fatalf("reserved on GPU 0: %d", st.GPUs[0].ReservedBytes)
	}
	if _, err := h.Client.Stop(context.Background(), won); err != nil {
		t.Fatal(err)
	}
	h.WaitState(won, wait, "terminated")
	body := fmt.Sprintf(`{"model_ref":%q,"backend":"cuda","settings":{"vram_bytes":%d}}`, h.Ref, 1<<30)
	if code, r, e := spawnRaw(t, h, body); code != 201 || r.Device != 0 {
		t.Fatalf("after the stop: %d %+v", code, e)
	}
}

// Adoption keeps the device: it is in the durable record.
func TestGPUAdoptionKeepsTheDevice(t *testing.T) {
	h, _, _ := gpuHive(t, twoGPUs(), "")
	r := h.MustSpawn(apiv1.SpawnRequest{Backend: "cuda", Settings: json.RawMessage(`{"vram_bytes":1073741824}`)})
	if r.Device != 1 || r.GPUUUID != gpu1 {
		t.Fatalf("placement: %+v", r)
	}
	before := h.WaitState(r.WorkerID, wait, "idle")
	h.Kill9()
	h.Restart(hivetest.Options{})
	after := h.Get(r.WorkerID)
	if after.PID != before.PID || after.Device != 1 || after.GPUUUID != gpu1 || after.Estimate == nil || *after.Estimate != *before.Estimate {
		t.Fatalf("after adoption: pid %d→%d device %d uuid %q estimate %+v", before.PID, after.PID, after.Device, after.GPUUUID, after.Estimate)
	}
	st, err := h.Client.Status(context.Background())
	if err != nil || len(st.GPUs) != 2 || strings.Join(st.GPUs[1].Workers, ",") != r.WorkerID {
		t.Fatalf("status after adoption: %+v %v", st.GPUs, err)
	}
}

// The JSON inventory is read again when it changes; the per-process
// figures give a worker its GPU memory in stats, the list and metrics.
func TestGPUInventoryFileReReadAndPerWorkerMemory(t *testing.T) {
	inv := twoGPUs()
	h, invPath, _ := gpuHive(t, inv, "")
	r := h.MustSpawn(apiv1.SpawnRequest{Backend: "cuda", Settings: json.RawMessage(`{"vram_bytes":1073741824}`)})
	info := h.WaitState(r.WorkerID, wait, "idle")
	inv.GPUs[1].MemoryUsed = 3 << 30
	inv.GPUs[1].Utilization = 77
	inv.Processes = []gpu.Process{{PID: info.PID, UUID: gpu1, MemoryUsed: 900 << 20}, {PID: 1, UUID: gpu1, MemoryUsed: 100 << 20}}
	writeGPUs(t, invPath, inv)
	var got *apiv1.WorkerInfo
	if !hivetest.Eventually(t, 3*gpu.DefaultInterval, func() bool {
		got = h.Get(r.WorkerID)
		return got.Stats != nil && got.Stats.GPUMemoryBytes == 900<<20
	}) {
		t.Fatalf("worker GPU memory never seen: %+v", got.Stats)
	}
	list, err := h.Client.List(context.Background(), false)
	if err != nil || len(list) != 1 || list[0].Stats == nil || list[0].Stats.GPUMemoryBytes != 900<<20 {
		t.Fatalf("list: %+v %v", list, err)
	}
	st, _ := h.Client.Status(context.Background())
	if st.GPUs[1].MemoryUsedBytes != 3<<30 || st.GPUs[1].UtilizationPercent != 77 || st.Totals.GPUMemoryBytes != 900<<20 {
		t.Fatalf("status after the change: %+v totals %+v", st.GPUs[1], st.Totals)
	}
	resp, err := http.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`rbee_hive_gpu_memory_total_bytes{gpu="1",name="Fake 8G",uuid="%s"} 8.589934592e+09`, gpu1),
		fmt.Sprintf(`rbee_hive_gpu_memory_used_bytes{gpu="1",name="Fake 8G",uuid="%s"} 3.221225472e+09`, gpu1),
		fmt.Sprintf(`rbee_hive_gpu_memory_free_bytes{gpu="0",name="Fake 8G",uuid="%s"} 2.147483648e+09`, gpu0),
		fmt.Sprintf(`rbee_hive_gpu_utilization_percent{gpu="1",name="Fake 8G",uuid="%s"} 77`, gpu1),
		fmt.Sprintf(`rbee_hive_worker_gpu_memory_bytes{model_ref=%q,uuid="%s",worker_id="%s"} 9.437184e+08`, h.Ref, gpu1, r.WorkerID),
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// With gpu_inventory auto and nvidia-smi on PATH (a fake printing
// fixtures in NVIDIA's documented CSV format), the hive reads the devices
// and each worker's GPU memory from --query-compute-apps.
func TestGPUFakeNvidiaSMI(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"nvidia-smi", "query-gpu.csv"} {
		b, err := os.ReadFile(filepath.Join("..", "internal", "gpu", "testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h := hivetest.Start(t, hivetest.Options{Env: []string{"PATH=" + dir + ":" + os.Getenv("PATH"), "FAKE_NVIDIA_SMI_DIR=" + dir}})
	st, err := h.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.GPUInventory != "nvidia-smi" || len(st.GPUs) != 2 || st.GPUs[0].Name != "NVIDIA A100-SXM4-40GB" ||
		st.GPUs[1].MemoryFreeBytes != 4552<<20 || st.GPUs[1].UtilizationPercent != 97 {
		t.Fatalf("status: %s %+v", st.GPUInventory, st.GPUs)
	}
	r := h.MustSpawn(apiv1.SpawnRequest{Backend: "cuda", Settings: json.RawMessage(`{"vram_bytes":8589934592}`)})
	if r.Device != 0 || r.GPUUUID != "GPU-6b2c4a2e-7a3a-3c5b-9e1e-0c9d4a1f2b3c" {
		t.Fatalf("auto on the fixture: %+v", r)
	}
	info := h.WaitState(r.WorkerID, wait, "idle")
	// nvidia-smi sees what runs: a ready worker's memory is in the used
	// figure, so it no longer holds a reservation.
	if st, err := h.Client.Status(context.Background()); err != nil || st.GPUs[0].ReservedBytes != 0 ||
		strings.Join(st.GPUs[0].Workers, ",") != r.WorkerID {
		t.Fatalf("book after ready: %+v %v", st.GPUs, err)
	}
	apps := fmt.Sprintf("%d, 2048, %s\n4243, 24, %s\n", info.PID, r.GPUUUID, r.GPUUUID)
	if err := os.WriteFile(filepath.Join(dir, "query-compute-apps.csv"), []byte(apps), 0o644); err != nil {
		t.Fatal(err)
	}
	var got *apiv1.WorkerInfo
	if !hivetest.Eventually(t, 3*gpu.DefaultInterval, func() bool {
		got = h.Get(r.WorkerID)
		return got.Stats != nil && got.Stats.GPUMemoryBytes == 2048<<20
	}) {
		t.Fatalf("per-worker GPU memory from nvidia-smi never seen: %+v", got.Stats)
	}
}

// The estimate comes from the GGUF file: the real test model, on the CPU,
// at ctx 512 (numbers as internal/modelsize pins them).
func TestGPUEstimateFromTheGGUFFile(t *testing.T) {
	h, _, _ := gpuHive(t, twoGPUs(), "")
	path := h.Model // the built-in stories260K
	r := h.MustSpawn(apiv1.SpawnRequest{ModelRef: "file:" + path, Settings: json.RawMessage(`{"ctx":512}`)})
	if e := r.Estimate; e == nil || e.Source != "gguf" || e.RAMBytes != 15046624 || e.VRAMBytes != 0 || e.Ctx != 512 || r.GPUUUID != "" {
		t.Fatalf("cpu estimate: %+v %+v", r, r.Estimate)
	}
	r = h.MustSpawn(apiv1.SpawnRequest{ModelRef: "file:" + path, Backend: "cuda", Settings: json.RawMessage(`{"ctx":512}`)})
	if e := r.Estimate; e == nil || e.Source != "gguf" || e.VRAMBytes != 11331328 || r.Device != 1 {
		t.Fatalf("cuda estimate: %+v %+v", r, r.Estimate)
	}
	if got := h.Get(r.WorkerID); got.Estimate == nil || *got.Estimate != *r.Estimate {
		t.Fatalf("worker get: %+v", got.Estimate)
	}
}

// The memory preflight uses the estimate from the GGUF file (not the file
// size × 1.2), or memory_bytes when set.
func TestMemoryPreflightUsesTheGGUFEstimate(t *testing.T) {
	reserve := int64(1) << 50 // 1 PiB must stay free: never true
	h := hivetest.Start(t, hivetest.Options{MemoryReserve: &reserve, Config: "gpu_inventory: none\n"})
	path := h.Model // the built-in stories260K
	_, err := h.Spawn(apiv1.SpawnRequest{ModelRef: "file:" + path, Settings: json.RawMessage(`{"ctx":512}`)})
	ae := apiErr(t, err)
	if ae.Status != 507 || ae.Code != "INSUFFICIENT_MEMORY" || !strings.Contains(ae.Message, "needs about 14.3 MiB (estimate from the GGUF file)") {
		t.Fatalf("got %+v", ae)
	}
	_, err = h.Spawn(apiv1.SpawnRequest{ModelRef: "file:" + path, Settings: json.RawMessage(`{"memory_bytes":104857600}`)})
	if ae := apiErr(t, err); ae.Status != 507 || !strings.Contains(ae.Message, "needs about 100.0 MiB (memory_bytes)") {
		t.Fatalf("memory_bytes: %+v", ae)
	}
	// No GPUs here: a cuda worker cannot be placed.
	_, err = h.Spawn(apiv1.SpawnRequest{Backend: "cuda"})
	if ae := apiErr(t, err); ae.Status != 400 || ae.Code != "INVALID_DEVICE" || !strings.Contains(ae.Message, "no GPUs") {
		t.Fatalf("cuda without GPUs: %+v", ae)
	}
}
