package refworker

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"time"
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

const (
	readChunk          = 256 << 10
	progressHBInterval = 250 * time.Millisecond
)

// load reads the model file from disk in chunks, discarding the bytes but
// keeping a CRC-32C, and reports progress. With loadDelay set, the reading is
// spread over that long. It blocks until the file is read or ctx is done.
func (w *worker) load(ctx context.Context) (uint32, error) {
	f, err := os.Open(w.cfg.modelPath)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrModel, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrModel, err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%w: %s is not a regular file", ErrModel, w.cfg.modelPath)
	}
	total := fi.Size()
	w.log.Info(fmt.Sprintf("loading model %s (%d bytes)", w.cfg.modelPath, total))

	chunk := int64(readChunk)
	if d := w.cfg.loadDelay; d > 0 && total > 0 {
		// About one chunk every 20 ms, so progress keeps moving.
		steps := max(int64(d/(20*time.Millisecond)), 1)
		chunk = min(max((total+steps-1)/steps, 1), readChunk)
	}
	buf := make([]byte, chunk)
	sum := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	start := time.Now()
	var done int64
	w.prog.set(0, total)
	w.hive.loading(0, total)
	lastHB := time.Now()
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			sum.Write(buf[:n])
			done += int64(n)
			total = max(total, done)
			w.prog.set(done, total)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return 0, fmt.Errorf("%w: %w", ErrModel, rerr)
		}
		if d := w.cfg.loadDelay; d > 0 {
			due := start.Add(time.Duration(float64(d) * float64(done) / float64(total)))
			if err := sleepUntil(ctx, due); err != nil {
				return 0, err
			}
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if time.Since(lastHB) >= progressHBInterval {
			w.hive.loading(done, total)
			lastHB = time.Now()
		}
	}
	if total == 0 && w.cfg.loadDelay > 0 {
		if err := sleepUntil(ctx, start.Add(w.cfg.loadDelay)); err != nil {
			return 0, err
		}
	}
	w.hive.loading(done, total)
	return sum.Sum32(), nil
}

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
