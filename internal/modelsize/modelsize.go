// Package modelsize estimates the RAM and VRAM a GGUF model needs when
// llama.cpp (or a worker like it) runs it (SPEC §11): the weights of the
// layers on each side, the KV cache at the context size, and the compute
// buffers, read from the file's header (its metadata and tensor table; the
// weights themselves are not read).
//
// The arithmetic is github.com/gpustack/gguf-parser-go's, which GPUStack
// uses to place models on GPUs: it mirrors llama.cpp's own allocation
// (the per-layer split of -ngl, f16 KV cache, the graph's compute buffers
// for a 2048/512 batch) across architectures, which a hand-written
// formula here would only approximate for llama alone.
//
// This package is a leaf: it imports nothing of the hive's.
package modelsize

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"

	ggufparser "github.com/gpustack/gguf-parser-go"
)

// DefaultCtx is the context size used when none is given: llama.cpp's own
// default (common_params.n_ctx = 4096), capped at the model's trained
// context.
const DefaultCtx = 4096

// AllLayers asks for every layer, and the output layer, on the GPU (-ngl
// 999 in llama.cpp terms).
const AllLayers = -1

// Breakdown is an estimate with its parts. Bytes throughout.
type Breakdown struct {
	RAM  int64 // host memory: what stays on the CPU, plus llama.cpp's own footprint
	VRAM int64 // memory on the one GPU; 0 when no layer is offloaded

	Ctx           int // the context size estimated for
	Layers        int // the model's block count
	OffloadLayers int // blocks on the GPU (the output layer counts once more when all are)

	// The parts, host + device.
	WeightsRAM, WeightsVRAM int64
	KVCacheRAM, KVCacheVRAM int64
	ComputeRAM, ComputeVRAM int64
}

// maxBlocks bounds a model's block count, far above any real model's (a
// few hundred).
const maxBlocks = 1 << 16

// ErrNotGGUF: the file is not a GGUF model the estimator understands.
var ErrNotGGUF = errors.New("not a GGUF model")

// Estimate returns the RAM and VRAM needed to run the GGUF model at path
// with a context of ctx tokens (0: DefaultCtx, capped at the model's
// trained context) and gpuLayers of its layers on one GPU (AllLayers: all,
// 0: none, and then VRAM is 0). Weights are counted resident (no mmap
// sharing), so the RAM figure is what a CPU worker holds once loaded.
//
// It reads the file's header only (milliseconds); a Cache avoids reading
// it again. Safe for concurrent use.
func Estimate(path string, ctx, gpuLayers int) (ram, vram int64, err error) {
	b, err := Detail(path, ctx, gpuLayers)
	return b.RAM, b.VRAM, err
}

// Detail is Estimate with the parts.
func Detail(path string, ctx, gpuLayers int) (Breakdown, error) {
	if _, err := os.Stat(path); err != nil {
		return Breakdown{}, fmt.Errorf("modelsize: %w", err)
	}
	return detail(path, ctx, gpuLayers)
}

// Cache remembers estimates per file (path, size, modification time) and
// arguments, so that spawning the same model again does not parse its
// header again; a changed file is estimated afresh. At most 256 entries
// (then it starts over). The zero value is ready; safe for concurrent use.
type Cache struct {
	mu sync.Mutex
	m  map[cacheKey]Breakdown
}

type cacheKey struct {
	path           string
	size           int64
	mtime          time.Time
	ctx, gpuLayers int
}

// Detail is the package's Detail, cached.
func (c *Cache) Detail(path string, ctx, gpuLayers int) (Breakdown, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Breakdown{}, fmt.Errorf("modelsize: %w", err)
	}
	k := cacheKey{path, fi.Size(), fi.ModTime(), ctx, gpuLayers}
	c.mu.Lock()
	b, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err = detail(path, ctx, gpuLayers)
	if err != nil {
		return Breakdown{}, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= 256 {
		c.m = map[cacheKey]Breakdown{}
	}
	c.m[k] = b
	c.mu.Unlock()
	return b, nil
}

func detail(path string, ctx, gpuLayers int) (b Breakdown, err error) {
	if ctx < 0 || ctx > math.MaxInt32 {
		return Breakdown{}, fmt.Errorf("modelsize: context size %d out of range", ctx)
	}
	// The parser trusts the file: a malformed one can make it panic.
	defer func() {
		if r := recover(); r != nil {
			b, err = Breakdown{}, fmt.Errorf("modelsize: %s: %w (%v)", path, ErrNotGGUF, r)
		}
	}()
	if err := checkSplitTensorsCount(path); err != nil {
		return Breakdown{}, fmt.Errorf("modelsize: %s: %w (%v)", path, ErrNotGGUF, err)
	}
	gf, err := ggufparser.ParseGGUFFile(path, ggufparser.SkipLargeMetadata())
	if err != nil {
		return Breakdown{}, fmt.Errorf("modelsize: %s: %w (%v)", path, ErrNotGGUF, err)
	}
	a := gf.Architecture()
	// The estimate walks the layers one by one: a block count no model has
	// (2^40 kept a hive handler busy for hours) is refused.
	if a.Type != "model" || a.BlockCount == 0 || a.BlockCount > maxBlocks {
		return Breakdown{}, fmt.Errorf("modelsize: %s: %w (type %q, %d blocks)", path, ErrNotGGUF, a.Type, a.BlockCount)
	}
	if ctx == 0 {
		ctx = DefaultCtx
		if a.MaximumContextLength > 0 && a.MaximumContextLength < uint64(ctx) {
			ctx = int(a.MaximumContextLength)
		}
	}
	ngl := uint64(math.MaxUint64 >> 1)
	if gpuLayers >= 0 {
		ngl = uint64(gpuLayers)
	}
	e := gf.EstimateLLaMACppRun(ggufparser.WithLLaMACppContextSize(int32(ctx)), ggufparser.WithLLaMACppOffloadLayers(ngl))
	s := e.SummarizeItem(false, 0, 0)
	b = Breakdown{
		RAM: int64(s.RAM.NonUMA), Ctx: int(e.ContextSize), Layers: int(a.BlockCount), OffloadLayers: int(e.OffloadLayers),
		WeightsRAM: int64(e.Devices[0].Weight.Sum()), KVCacheRAM: int64(e.Devices[0].KVCache.Sum()),
		ComputeRAM: int64(e.Devices[0].Computation.Sum()),
	}
	if gpuLayers != 0 && len(s.VRAMs) > 0 {
		d := e.Devices[1]
		b.VRAM = int64(s.VRAMs[0].NonUMA)
		b.WeightsVRAM, b.KVCacheVRAM, b.ComputeVRAM = int64(d.Weight.Sum()), int64(d.KVCache.Sum()), int64(d.Computation.Sum())
	}
	return b, nil
}
