package api_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// The GPU parts of the answers (a status with GPUs, a GPU worker with its
// estimate and GPU memory, a GPU spawn's answer) match the document; the
// server test above sees them only on a hive without GPUs.
func TestOpenAPIGPUShapes(t *testing.T) {
	doc := loadDoc(t)
	now := time.Now()
	for name, v := range map[string]any{
		"Status": apiv1.Status{Version: "x", APIVersion: "v1", StartedAt: now, CgroupMode: "v2", Workers: map[string]int{"idle": 1},
			Totals: apiv1.Stats{GPUMemoryBytes: 1 << 30}, Memory: apiv1.MemoryStatus{TotalBytes: 8 << 30, AvailableBytes: 4 << 30, ReserveBytes: -1},
			GPUInventory: "nvidia-smi", GPUError: "boom", GPUReadAt: &now,
			GPUs: []apiv1.GPUStatus{{Index: 0, UUID: "GPU-a", Name: "A", MemoryTotalBytes: 8 << 30, MemoryUsedBytes: 1 << 30,
				MemoryFreeBytes: 7 << 30, UtilizationPercent: -1, ReserveBytes: 512 << 20, ReservedBytes: 1 << 30,
				AvailableBytes: -(1 << 20), Workers: []string{"worker-1"}}}},
		"WorkerInfo": apiv1.WorkerInfo{ID: "worker-1", State: "idle", Labels: map[string]string{}, Device: 1, GPUUUID: "GPU-a",
			Estimate: &apiv1.Estimate{RAMBytes: 1, VRAMBytes: 2, Ctx: 512, Source: "gguf"},
			Stats:    &apiv1.Stats{RSSBytes: 1, GPUMemoryBytes: 2 << 30}},
		"SpawnResponse": apiv1.SpawnResponse{WorkerID: "worker-1", URL: "http://127.0.0.1:1", Port: 1, PID: 2, State: "loading",
			Device: 1, GPUUUID: "GPU-a", Estimate: &apiv1.Estimate{RAMBytes: 1, VRAMBytes: 2, Source: "settings"}},
		"SpawnRequest": json.RawMessage(`{"model_ref":"hf:a/b","backend":"cuda","device":"auto","settings":{"ctx":2048,"vram_bytes":1,"memory_bytes":2}}`),
	} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var val any
		if err := json.Unmarshal(b, &val); err != nil {
			t.Fatal(err)
		}
		ref := doc.Components.Schemas[name]
		if ref == nil {
			t.Fatalf("no schema %s", name)
		}
		if err := ref.Value.VisitJSON(val); err != nil {
			t.Errorf("%s %s does not match the document: %v", name, b, err)
		}
	}
}
