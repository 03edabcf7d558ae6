package frontdoor

import (
	"sort"
	"time"
)

// Snapshot is what the eviction choice knows of one live worker (or of a
// spawn under way, which holds its memory like a busy worker).
type Snapshot struct {
	ID       string
	Model    string
	Memory   int64     // estimated bytes it holds
	Idle     bool      // ready with no request in flight: may be evicted
	Pinned   bool      // kept by min_workers or already being stopped: never evicted
	LastUsed time.Time // end of its last request (or when it became ready)
}

// Verdict is the outcome of Plan.
type Verdict int

const (
	// Fits: the spawn fits the budget as things stand.
	Fits Verdict = iota
	// Evict: the spawn fits once the returned victims have stopped.
	Evict
	// Wait: only busy (or pinned) workers stand in the way; try again
	// when one becomes idle or ends.
	Wait
	// Never: the model alone exceeds the budget.
	Never
)

func (v Verdict) String() string {
	return [...]string{"fits", "evict", "wait", "never"}[v]
}

// Plan decides how a spawn needing need bytes for model fits budget given
// the live workers: it fits, or it fits after stopping the returned idle
// workers of other models (least recently used first, as few as needed),
// or it must wait, or it never can. It is pure.
func Plan(need, budget int64, model string, live []Snapshot) (Verdict, []string) {
	if need > budget {
		return Never, nil
	}
	var used int64
	for _, s := range live {
		used += s.Memory
	}
	if used+need <= budget {
		return Fits, nil
	}
	var cands []Snapshot
	for _, s := range live {
		if s.Idle && !s.Pinned && s.Model != model && s.Memory > 0 {
			cands = append(cands, s)
		}
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].LastUsed.Before(cands[j].LastUsed) })
	var victims []string
	for _, c := range cands {
		victims = append(victims, c.ID)
		used -= c.Memory
		if used+need <= budget {
			return Evict, victims
		}
	}
	return Wait, nil
}
