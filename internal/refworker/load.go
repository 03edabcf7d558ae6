package refworker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/gguf"
	"github.com/rbee/rbee-hive/internal/llama"
)

// ErrModel marks a model file that cannot be loaded.
var ErrModel = errors.New("cannot load model")

// progress is the loading progress, broadcast to SSE readers. Safe for
// concurrent use.
type progress struct {
	mu       sync.Mutex
	done     int64
	total    int64
	finished bool          // the worker is ready: readers end with [DONE]
	changed  chan struct{} // closed and replaced on every change
}

func newProgress() *progress { return &progress{changed: make(chan struct{})} }

func (p *progress) set(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.total = done, total
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished = true
	close(p.changed)
	p.changed = make(chan struct{})
}

// snapshot returns the current values and a channel closed on the next change.
func (p *progress) snapshot() (done, total int64, finished bool, changed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done, p.total, p.finished, p.changed
}

const progressHBInterval = 250 * time.Millisecond

// engine is the loaded model and the slots' sessions. Sessions (each with its
// own KV cache) are made on first use and kept for reuse; the worker's slot
// count (acquire) bounds how many exist.
type engine struct {
	file  *gguf.File
	model *llama.Model
	ctx   int

	mu   sync.Mutex
	free []*llama.Session
}

func (e *engine) session() *llama.Session {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n := len(e.free); n > 0 {
		s := e.free[n-1]
		e.free = e.free[:n-1]
		return s
	}
	return e.model.NewSession(e.ctx)
}

func (e *engine) put(s *llama.Session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.free = append(e.free, s)
}

// load memory-maps the GGUF model and builds the model from it, touching
// every tensor in file order and reporting progress in bytes (loading
// heartbeats at the start, at most every 250 ms, and at the end). With
// loadDelay set, the reading is spread over that long. A file that is not a
// loadable GGUF Llama model gives an error wrapping ErrModel.
func (w *worker) load(ctx context.Context) (*engine, error) {
	w.log.Info("loading model " + w.cfg.modelPath)
	f, err := gguf.Open(w.cfg.modelPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	start := time.Now()
	var lastHB time.Time
	m, err := llama.Load(f, llama.Options{
		Threads: w.cfg.threads,
		Progress: func(done, total int64) error {
			w.prog.set(done, total)
			if d := w.cfg.loadDelay; d > 0 && total > 0 {
				due := start.Add(time.Duration(float64(d) * float64(done) / float64(total)))
				if err := sleepUntil(ctx, due); err != nil {
					return err
				}
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if done == 0 || done == total || time.Since(lastHB) >= progressHBInterval {
				w.hive.loading(done, total)
				lastHB = time.Now()
			}
			return nil
		},
	})
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrModel, w.cfg.modelPath, err)
	}
	n := w.cfg.ctx
	if n == 0 {
		n = min(max(m.ContextLength, defaultCtx), maxDefaultCtx)
	}
	w.log.Info(fmt.Sprintf("model loaded: %s; context %d, %d slots, %d threads", f.Describe(), n, w.cfg.slots, max(w.cfg.threads, 1)))
	return &engine{file: f, model: m, ctx: n}, nil
}

// Without --ctx a slot gets the model's own context length, but at least
// defaultCtx and at most maxDefaultCtx (as llama-server's 4096: a model
// trained on 128K tokens would otherwise ask for a huge KV cache).
const (
	defaultCtx    = 512
	maxDefaultCtx = 4096
)

// sleepUntil waits until t or until ctx is done, whichever is first.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
