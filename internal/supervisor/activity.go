package supervisor

import (
	"context"
	"errors"
	"fmt"

	"github.com/rbee/rbee-hive/internal/state"
)

// BeginRequest tells the worker's owner that a front-door request is now
// running through it: an idle worker becomes busy (SPEC §10). It fails with
// ErrInvalidState when the worker is not ready (the caller picks another).
// It blocks until the owner has applied it (microseconds).
func (w *Worker) BeginRequest(ctx context.Context) error {
	err := w.call(ctx, request{kind: reqActivity, begin: true})
	if errors.Is(err, ErrEnded) {
		return fmt.Errorf("%w: worker has ended", ErrInvalidState)
	}
	return err
}

// EndRequest tells the owner that a request begun with BeginRequest has
// been relayed completely (or its client went away). When none is left
// running, the worker becomes idle, last_activity is now, and the idle
// timeout counts from here. Safe to call after the worker ended.
func (w *Worker) EndRequest(ctx context.Context) error {
	err := w.call(ctx, request{kind: reqActivity, begin: false})
	if errors.Is(err, ErrEnded) {
		return nil
	}
	return err
}

// onActivity applies a front-door request's start or end. The owner counts
// the requests of the current incarnation; a restart starts from zero, and
// an end with none counted (a request of an earlier incarnation) is
// ignored.
func (o *owner) onActivity(begin bool) error {
	st := o.cur.State
	if begin {
		if err := o.on(state.Event{Kind: state.EvBusy}, ""); err != nil {
			return fmt.Errorf("%w: worker is %s", ErrInvalidState, st)
		}
		o.inflight++
		return nil
	}
	if o.inflight == 0 {
		return nil
	}
	o.inflight--
	if o.inflight > 0 || !st.Ready() {
		return nil
	}
	return o.on(state.Event{Kind: state.EvIdle}, "")
}
