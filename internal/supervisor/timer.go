package supervisor

import "time"

// timer is a one-shot timer owned by the worker's goroutine. Its channel is
// nil while it is not armed, so a select on C() never fires for it.
type timer struct {
	t     *time.Timer
	armed bool
	last  time.Duration // the d of the last arm (for tests)
}

// arm (re)starts the timer to fire after d. d <= 0 disarms it.
func (t *timer) arm(d time.Duration) {
	if d <= 0 {
		t.stop()
		return
	}
	if t.t == nil {
		t.t = time.NewTimer(d)
	} else {
		t.t.Reset(d) // Go ≥ 1.23: Reset discards a pending fire.
	}
	t.armed = true
	t.last = d
}

func (t *timer) stop() {
	if t.t != nil {
		t.t.Stop()
	}
	t.armed = false
}

// C returns the timer's channel while armed, else nil.
func (t *timer) C() <-chan time.Time {
	if !t.armed {
		return nil
	}
	return t.t.C
}

// fired must be called when C() delivered.
func (t *timer) fired() { t.armed = false }
