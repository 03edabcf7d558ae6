package gpu

import "testing"

// FuzzParse feeds arbitrary bytes to the three parsers of outside input:
// nvidia-smi's two CSV outputs and the JSON inventory. Invariant: no panic;
// what is accepted is consistent (no negative memory, used ≤ total for the
// JSON file, sorted indexes).
func FuzzParse(f *testing.F) {
	f.Add([]byte("0, GPU-a, NVIDIA A100, 40960, 1024, 35\n1, GPU-b, T4, 15360, [N/A], [Not Supported]\n"))
	f.Add([]byte("4242, 1000, GPU-a\nNo running processes found\n"))
	f.Add([]byte(`{"gpus":[{"index":0,"uuid":"GPU-x","name":"x","memory_total_bytes":8,"memory_used_bytes":1,"utilization_percent":3}],"processes":[{"pid":1,"gpu_uuid":"GPU-x","used_memory_bytes":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if gs, err := ParseGPUs(b); err == nil {
			for i, g := range gs {
				if g.MemoryTotal < 0 || g.MemoryUsed < 0 || g.Free() < 0 || (i > 0 && gs[i-1].Index > g.Index) {
					t.Fatalf("ParseGPUs accepted %+v", g)
				}
			}
		}
		if ps, _ := ParseProcesses(b); len(ps) > 0 {
			for _, p := range ps {
				if p.PID <= 0 || p.MemoryUsed < 0 {
					t.Fatalf("ParseProcesses accepted %+v", p)
				}
			}
		}
		if inv, err := ParseFile(b); err == nil {
			for _, g := range inv.GPUs {
				if g.MemoryUsed > g.MemoryTotal || g.MemoryUsed < 0 || g.Index < 0 || g.UUID == "" {
					t.Fatalf("ParseFile accepted %+v", g)
				}
			}
		}
	})
}
