package hive

import (
	"sort"
	"time"

	"github.com/rbee/rbee-hive/internal/supervisor"
	"github.com/rbee/rbee-hive/internal/wallgrid"
)

// pruneEvery is how often ended workers past retention are dropped: rare,
// so an idle hive is not woken for it (retention is counted in minutes).
const pruneEvery = 30 * time.Second

// pruneLoop drops ended workers past the retention window.
func (h *Hive) pruneLoop() {
	defer close(h.pruneDone)
	// On a wall-clock grid, as the health probes are: one wake-up for both.
	t := time.NewTimer(wallgrid.Until(pruneEvery))
	defer t.Stop()
	for {
		select {
		case <-h.stopPrune:
			return
		case <-t.C:
			h.prune(time.Now())
			t.Reset(wallgrid.Until(pruneEvery))
		}
	}
}

// prune drops ended workers past retention. The candidates are collected
// under the hive's lock; their record files are deleted after it is let go
// (a slow disk must not hold up every API call and spawn), and then they
// leave the registry — so a new worker cannot take the id while the old
// record is being deleted, and the delete cannot remove a new worker's
// record. Only workers whose owner has finished are dropped: their last
// record has been written.
func (h *Hive) prune(now time.Time) {
	type ended struct {
		id string
		w  *supervisor.Worker
		at time.Time
	}
	var drop, kept []ended
	h.mu.Lock()
	for id, w := range h.workers {
		info := w.Info()
		if info == nil || !info.State.Ended() || info.EndedAt == nil {
			continue
		}
		select {
		case <-w.Done():
		default:
			continue // its owner is still writing its end
		}
		e := ended{id, w, *info.EndedAt}
		if now.Sub(e.at) > h.cfg.Retention.MaxAge.D() {
			drop = append(drop, e)
			continue
		}
		kept = append(kept, e)
	}
	h.mu.Unlock()
	if extra := len(kept) - h.cfg.Retention.MaxEntries; extra > 0 {
		sort.Slice(kept, func(i, j int) bool { return kept[i].at.Before(kept[j].at) })
		drop = append(drop, kept[:extra]...)
	}
	if len(drop) == 0 {
		return
	}
	for _, e := range drop {
		h.forget(e.id)
	}
	h.mu.Lock()
	for _, e := range drop {
		if h.workers[e.id] == e.w {
			delete(h.workers, e.id)
		}
	}
	h.mu.Unlock()
}
