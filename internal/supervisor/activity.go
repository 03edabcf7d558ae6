package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/rbee/rbee-hive/internal/state"
)

// A span is a stretch of front-door activity on a worker: it opens with a
// request that finds the worker idle (the owner makes it busy) and closes
// when its last request has ended (the owner makes it idle; last_activity
// is then). Requests that begin while a span is open join it, and all but
// the last leave it, with an atomic add and no call to the owner: under
// load a worker with requests running stays busy for many of them, and two
// calls to the owner per request were a seventh of the hive's CPU per
// proxied request.
//
// Only the owner opens and closes spans, and only the owner takes a span's
// count from 1 to 0 (a leaving request that would is sent to it), so a
// request that joins an open span always finds the worker busy. A span
// the owner dropped (the worker stopped being ready: a crash, a stop) is
// left to the requests still in it; their ends change nothing.
type span struct{ n atomic.Int64 }

// BeginRequest tells the worker's owner that a front-door request is now
// running through it: an idle worker becomes busy (SPEC §10). end, called
// once when the request has been relayed completely (or its client went
// away), says so; when none is left running, the worker becomes idle,
// last_activity is then, and the idle timeout counts from there.
// BeginRequest fails with ErrInvalidState when the worker is not ready
// (the caller picks another). It blocks until the owner has applied it
// (microseconds) unless the request joins a span already open.
func (w *Worker) BeginRequest(ctx context.Context) (end func(), err error) {
	if sp := w.span.Load(); sp != nil {
		for n := sp.n.Load(); n > 0; n = sp.n.Load() {
			if sp.n.CompareAndSwap(n, n+1) {
				return func() { w.endRequest(sp) }, nil
			}
		}
	}
	var sp *span
	if err := w.call(ctx, request{kind: reqActivity, begin: true, got: &sp}); err != nil {
		if errors.Is(err, ErrEnded) {
			return nil, fmt.Errorf("%w: worker has ended", ErrInvalidState)
		}
		return nil, err
	}
	return func() { w.endRequest(sp) }, nil
}

// endRequest leaves sp; the last request out goes through the owner.
func (w *Worker) endRequest(sp *span) {
	if sp == nil {
		return
	}
	for n := sp.n.Load(); n > 1; n = sp.n.Load() {
		if sp.n.CompareAndSwap(n, n-1) {
			return
		}
	}
	_ = w.call(context.Background(), request{kind: reqActivity, span: sp})
}

// onActivity applies the begin of a request that found no open span, or
// the end of one that would close its span.
func (o *owner) onActivity(r request) error {
	if r.begin {
		if !o.cur.State.Ready() {
			return fmt.Errorf("%w: worker is %s", ErrInvalidState, o.cur.State)
		}
		if sp := o.w.span.Load(); sp != nil {
			sp.n.Add(1) // its last request is on its way out: it stays open
			*r.got = sp
			return nil
		}
		if err := o.on(state.Event{Kind: state.EvBusy}, ""); err != nil {
			return fmt.Errorf("%w: worker is %s", ErrInvalidState, o.cur.State)
		}
		sp := &span{}
		sp.n.Store(1)
		o.w.span.Store(sp)
		*r.got = sp
		return nil
	}
	if r.span.n.Add(-1) > 0 || r.span != o.w.span.Load() {
		return nil // joined meanwhile, or a span dropped earlier
	}
	o.w.span.Store(nil)
	if !o.cur.State.Ready() {
		return nil
	}
	return o.on(state.Event{Kind: state.EvIdle}, "")
}

// dropSpan forgets the open span when the worker stops being ready.
func (o *owner) dropSpan() { o.w.span.Store(nil) }
