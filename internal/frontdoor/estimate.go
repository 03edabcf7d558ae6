package frontdoor

import (
	"fmt"
	"os"

	"github.com/rbee/rbee-hive/internal/gguf"
)

// Estimator returns the memory a worker serving the model file at path
// with context size ctx needs, in bytes.
type Estimator func(path string, ctx int) (int64, error)

// EstimateFromFile is the default Estimator: for a GGUF file, its tensors'
// bytes (the weights) plus the KV cache at ctx (f16 K and V for every
// layer, from the header's block_count, embedding_length and head counts;
// ctx 0 takes the model's context_length), plus a tenth for compute
// buffers. A file that is not GGUF is estimated at its size × 1.2, the
// memory preflight's rule (SPEC §3). A model entry's, profile's or
// settings' memory_bytes overrides it. (SPEC §11's per-device split of
// offloaded layers belongs to the GPU work.)
func EstimateFromFile(path string, ctx int) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("estimate: %w", err)
	}
	size := fi.Size()
	f, err := gguf.Open(path)
	if err != nil {
		return size + size/5, nil
	}
	defer f.Close()
	var weights int64
	for _, t := range f.Tensors {
		weights += t.Size
	}
	if weights == 0 {
		weights = size
	}
	arch, _ := f.String("general.architecture")
	layers, _ := f.Uint(arch + ".block_count")
	embd, _ := f.Uint(arch + ".embedding_length")
	heads, _ := f.Uint(arch + ".attention.head_count")
	headsKV, ok := f.Uint(arch + ".attention.head_count_kv")
	if !ok || headsKV == 0 {
		headsKV = heads
	}
	if ctx <= 0 {
		c, _ := f.Uint(arch + ".context_length")
		ctx = int(min(c, 1<<24))
	}
	var kv int64
	if layers > 0 && embd > 0 && heads > 0 && ctx > 0 {
		kv = 2 * int64(layers) * int64(ctx) * int64(embd*headsKV/heads) * 2 // K and V, f16
	}
	return weights + kv + (weights+kv)/10, nil
}
