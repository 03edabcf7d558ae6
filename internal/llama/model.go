// Package llama runs Llama-architecture models from GGUF files on the CPU in
// pure Go: token embeddings, RMSNorm, rotary positions (llama.cpp's "normal"
// rope: adjacent pairs rotated), grouped-query attention over a per-session
// KV cache, a SwiGLU feed-forward and the output head (tied to the token
// embeddings when output.weight is absent), with llama.cpp's SentencePiece
// tokenizer and its samplers (greedy, temperature, top-k, top-p, seeded).
//
// To match llama.cpp token for token, the KV cache holds keys and values
// rounded to half precision and the attention products are taken in half
// precision as llama.cpp's default f16 cache does; everything else is f32.
package llama

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/rbee/rbee-hive/internal/gguf"
)

// ErrModel marks a GGUF file this package cannot run.
var ErrModel = errors.New("llama: unsupported model")

// Config is the model's shape, from the GGUF metadata.
type Config struct {
	Vocab, Dim, Hidden, Layers, Heads, KVHeads, HeadDim, RopeDim, ContextLength int
	NormEps, RopeBase                                                           float32
}

type layer struct {
	attnNorm, ffnNorm []float32
	wq, wk, wv, wo    *matrix
	wGate, wUp, wDown *matrix
}

// Model is a loaded model. It holds views into the GGUF mapping, so the
// gguf.File must stay open while the model is used. Safe for concurrent use
// by sessions.
type Model struct {
	Config
	Tok     *Tokenizer
	embd    *matrix
	norm    []float32
	out     *matrix
	layers  []layer
	threads int
}

// Options tune Load.
type Options struct {
	// Threads splits the matrix products across this many goroutines; 0 or
	// 1 computes on the calling goroutine.
	Threads int
	// Progress, when set, is called as the tensors are read, with bytes done
	// and the total (first with done 0, last with done == total). An error
	// from it stops the load and is returned.
	Progress func(done, total int64) error
}

// Load builds a model from an open GGUF file. It reads (touches) every
// tensor the model uses, in file order, so the pages are resident and
// Progress tracks real reads.
func Load(f *gguf.File, opt Options) (*Model, error) {
	if arch, _ := f.String("general.architecture"); arch != "llama" {
		return nil, fmt.Errorf("%w: architecture %q (only \"llama\" is supported)", ErrModel, arch)
	}
	u := func(key string, def int) (int, error) {
		v, ok := f.Uint("llama." + key)
		if !ok {
			if def >= 0 {
				return def, nil
			}
			return 0, fmt.Errorf("%w: metadata llama.%s is missing", ErrModel, key)
		}
		if v == 0 || v > 1<<24 {
			return 0, fmt.Errorf("%w: metadata llama.%s is %d", ErrModel, key, v)
		}
		return int(v), nil
	}
	var c Config
	var err error
	if c.Dim, err = u("embedding_length", -1); err != nil {
		return nil, err
	}
	if c.Hidden, err = u("feed_forward_length", -1); err != nil {
		return nil, err
	}
	if c.Layers, err = u("block_count", -1); err != nil {
		return nil, err
	}
	if c.Heads, err = u("attention.head_count", -1); err != nil {
		return nil, err
	}
	if c.KVHeads, err = u("attention.head_count_kv", c.Heads); err != nil {
		return nil, err
	}
	if c.ContextLength, err = u("context_length", 2048); err != nil {
		return nil, err
	}
	if c.Dim%c.Heads != 0 || c.Heads%c.KVHeads != 0 {
		return nil, fmt.Errorf("%w: %d heads, %d KV heads and width %d do not divide", ErrModel, c.Heads, c.KVHeads, c.Dim)
	}
	c.HeadDim = c.Dim / c.Heads
	if c.RopeDim, err = u("rope.dimension_count", c.HeadDim); err != nil {
		return nil, err
	}
	if c.RopeDim > c.HeadDim || c.RopeDim%2 != 0 {
		return nil, fmt.Errorf("%w: rope dimension %d with head size %d", ErrModel, c.RopeDim, c.HeadDim)
	}
	c.NormEps = 1e-5
	if v, ok := f.Float("llama.attention.layer_norm_rms_epsilon"); ok {
		c.NormEps = float32(v)
	}
	c.RopeBase = 10000
	if v, ok := f.Float("llama.rope.freq_base"); ok {
		c.RopeBase = float32(v)
	}
	tok, err := newTokenizer(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	c.Vocab = tok.VocabSize()
	m := &Model{Config: c, Tok: tok, threads: max(opt.Threads, 1)}

	// Touch every tensor in file order, reporting progress.
	var total, done int64
	for _, t := range f.Tensors {
		total += t.Size
	}
	report := func() error {
		if opt.Progress != nil {
			return opt.Progress(done, total)
		}
		return nil
	}
	if err := report(); err != nil {
		return nil, err
	}
	var sink byte
	for _, t := range f.Tensors {
		if !t.Type.Supported() {
			return nil, fmt.Errorf("%w: %w: tensor %s has type %s (supported: F32, F16, Q8_0, Q4_0)", ErrModel, gguf.ErrUnsupportedType, t.Name, t.Type)
		}
		for i := 0; i < len(t.Data); i += 4096 {
			sink ^= t.Data[i]
		}
		done += t.Size
		if err := report(); err != nil {
			return nil, err
		}
	}
	_ = sink

	get := func(name string, cols, rows int) (*matrix, error) {
		t := f.Tensor(name)
		if t == nil {
			return nil, fmt.Errorf("%w: tensor %s is missing", ErrModel, name)
		}
		mm, err := newMatrix(t, cols, rows)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrModel, err)
		}
		return mm, nil
	}
	vec := func(name string, n int) ([]float32, error) {
		t := f.Tensor(name)
		if t == nil {
			return nil, fmt.Errorf("%w: tensor %s is missing", ErrModel, name)
		}
		v, err := vector(t, n)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrModel, err)
		}
		return v, nil
	}
	kvDim := c.KVHeads * c.HeadDim
	if m.embd, err = get("token_embd.weight", c.Dim, c.Vocab); err != nil {
		return nil, err
	}
	if m.norm, err = vec("output_norm.weight", c.Dim); err != nil {
		return nil, err
	}
	if f.Tensor("output.weight") != nil {
		if m.out, err = get("output.weight", c.Dim, c.Vocab); err != nil {
			return nil, err
		}
	} else {
		m.out = m.embd
	}
	m.layers = make([]layer, c.Layers)
	for i := range m.layers {
		l := &m.layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		if l.attnNorm, err = vec(p+"attn_norm.weight", c.Dim); err != nil {
			return nil, err
		}
		if l.ffnNorm, err = vec(p+"ffn_norm.weight", c.Dim); err != nil {
			return nil, err
		}
		for _, w := range []struct {
			dst        **matrix
			name       string
			cols, rows int
		}{
			{&l.wq, "attn_q", c.Dim, c.Dim},
			{&l.wk, "attn_k", c.Dim, kvDim},
			{&l.wv, "attn_v", c.Dim, kvDim},
			{&l.wo, "attn_output", c.Dim, c.Dim},
			{&l.wGate, "ffn_gate", c.Dim, c.Hidden},
			{&l.wUp, "ffn_up", c.Dim, c.Hidden},
			{&l.wDown, "ffn_down", c.Hidden, c.Dim},
		} {
			if *w.dst, err = get(p+w.name+".weight", w.cols, w.rows); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// matmul computes out[r] = W[r,:]·x for every row, split across the model's
// threads when the product is large enough to be worth it: at least 16K
// multiply-adds (about 5 µs of work against about 1 µs to start and join a
// goroutine). For stories260K only the output head (32K) is split. buf holds the
// converted x between calls.
func (m *Model) matmul(w *matrix, x, out []float32, buf *prepared) {
	px := w.prepare(x, buf)
	n := m.threads
	if n <= 1 || w.rows*w.cols < 1<<14 {
		for r := range w.rows {
			out[r] = w.dotRow(r, px)
		}
		return
	}
	n = min(n, w.rows)
	var wg sync.WaitGroup
	chunk := (w.rows + n - 1) / n
	for lo := 0; lo < w.rows; lo += chunk {
		hi := min(lo+chunk, w.rows)
		wg.Go(func() {
			for r := lo; r < hi; r++ {
				out[r] = w.dotRow(r, px)
			}
		})
	}
	wg.Wait()
}

// rmsNorm writes x normalised and scaled by weight into out, as ggml's
// rms_norm (sum of squares in float64) followed by mul.
func rmsNorm(out, x, weight []float32, eps float32) {
	var sum float64
	for _, v := range x {
		sum += float64(v * v)
	}
	mean := float32(sum / float64(len(x)))
	scale := 1 / float32(math.Sqrt(float64(mean+eps)))
	for i, v := range x {
		out[i] = v * scale * weight[i]
	}
}
