package gpu

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee/rbee-hive/internal/wallgrid"
)

// DefaultInterval is how often a Refresher reads its source.
const DefaultInterval = 5 * time.Second

// Refresher keeps a snapshot of a Source: read every Interval in its own
// goroutine, and on demand (Refresh) around spawns and stops. Readers get
// the latest snapshot without locking. Safe for concurrent use.
type Refresher struct {
	src      Source
	interval time.Duration
	log      *slog.Logger

	snap atomic.Pointer[Snapshot]

	mu      sync.Mutex // serialises reads of the source
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	started bool
	logged  string // the last error logged, so a lasting failure is logged once
}

// NewRefresher returns a refresher of src (nil: None). interval 0 means
// DefaultInterval. It reads nothing until Start or Refresh.
func NewRefresher(src Source, interval time.Duration, log *slog.Logger) *Refresher {
	if src == nil {
		src = None{}
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Refresher{src: src, interval: interval, log: log, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	first := &Snapshot{Source: src.Name()}
	if st, ok := src.(interface{ Static() bool }); ok {
		first.Static = st.Static()
	}
	r.snap.Store(first)
	return r
}

// Source returns the refresher's source.
func (r *Refresher) Source() Source { return r.src }

// Start reads the source once, synchronously, then keeps reading it in a
// goroutine until Close. Call it at most once.
//
// A None source (no GPUs) is read once and never again: a background read
// of nothing would only wake an idle hive up.
func (r *Refresher) Start(ctx context.Context) {
	r.Refresh(ctx)
	if _, none := r.src.(None); none {
		return
	}
	r.started = true
	go r.loop()
}

// Close stops the background reads and waits for them. Safe to call more
// than once, and without Start.
func (r *Refresher) Close() {
	r.once.Do(func() {
		close(r.stop)
		if r.started {
			<-r.done
		}
	})
}

func (r *Refresher) loop() {
	defer close(r.done)
	// Reads fall on a wall-clock grid of the interval, like the hive's
	// health probes (internal/supervisor: armHealth), so that an idle hive
	// wakes up for both at once.
	t := time.NewTimer(wallgrid.Until(r.interval))
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			t.Reset(wallgrid.Until(r.interval))
		case <-r.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		r.Refresh(ctx)
		cancel()
	}
}

// Snapshot returns the latest reading. It never blocks and never returns
// nil; the result must not be modified.
func (r *Refresher) Snapshot() *Snapshot { return r.snap.Load() }

// Refresh reads the source now and publishes the result. It blocks for the
// read (a run of nvidia-smi: tens of milliseconds). A failed read keeps the
// previous devices and records the error.
func (r *Refresher) Refresh(ctx context.Context) *Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	gpus, procs, err := r.src.List(ctx)
	s := &Snapshot{GPUs: gpus, Processes: procs, At: time.Now(), Err: err, Source: r.src.Name()}
	if st, ok := r.src.(interface{ Static() bool }); ok {
		s.Static = st.Static()
	}
	if err != nil {
		prev := r.snap.Load()
		s.GPUs, s.Processes = prev.GPUs, prev.Processes
		if msg := err.Error(); msg != r.logged {
			r.log.Warn("Reading the GPU inventory failed", "source", r.src.Name(), "error", err)
			r.logged = msg
		}
	} else {
		r.logged = ""
	}
	r.snap.Store(s)
	return s
}

// Fresh returns a snapshot at most maxAge old, reading the source first if
// the latest one is older.
func (r *Refresher) Fresh(ctx context.Context, maxAge time.Duration) *Snapshot {
	if s := r.Snapshot(); !s.At.IsZero() && time.Since(s.At) <= maxAge {
		return s
	}
	return r.Refresh(ctx)
}

// Kick asks the background goroutine for a read soon, without waiting (a
// worker stopped: its memory is free again).
func (r *Refresher) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}
