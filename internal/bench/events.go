package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/sse"
)

// Event is a state-change event and when the benchmark received it.
type Event struct {
	apiv1.Event
	Recv time.Time
}

// Events routes the hive's state-change events to per-worker queues, so a
// scenario can wait for "worker X reached state S" without polling. Safe for
// concurrent use.
type Events struct {
	mu   sync.Mutex
	byID map[string]chan Event
	err  error
	dead chan struct{} // closed when the stream has ended
}

const perWorkerEvents = 256

func newEvents() *Events {
	return &Events{byID: map[string]chan Event{}, dead: make(chan struct{})}
}

func (e *Events) queue(id string) chan Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	q, ok := e.byID[id]
	if !ok {
		q = make(chan Event, perWorkerEvents)
		e.byID[id] = q
	}
	return q
}

func (e *Events) put(ev apiv1.Event) {
	q := e.queue(ev.WorkerID)
	select {
	case q <- Event{Event: ev, Recv: time.Now()}:
	default: // nobody reads this worker's events; drop the oldest
		select {
		case <-q:
		default:
		}
		q <- Event{Event: ev, Recv: time.Now()}
	}
}

func (e *Events) fail(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		if err == nil {
			err = errors.New("event stream ended")
		}
		e.err = err
		close(e.dead)
	}
}

// Err returns why the stream ended, or nil while it runs.
func (e *Events) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// Forget drops the queue of worker id.
func (e *Events) Forget(id string) {
	e.mu.Lock()
	delete(e.byID, id)
	e.mu.Unlock()
}

// ErrEnded: the worker reached a final state other than the one waited for.
var ErrEnded = errors.New("worker ended")

// WaitFor consumes worker id's events until match accepts one, which it
// returns. A failed or terminated event that match refuses is an error
// wrapping ErrEnded (failed events followed by backoff are skipped, since the
// worker restarts).
func (e *Events) WaitFor(id string, timeout time.Duration, match func(apiv1.Event) bool) (Event, error) {
	q := e.queue(id)
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case ev := <-q:
			if match(ev.Event) {
				return ev, nil
			}
			if ev.To == "terminated" {
				return ev, fmt.Errorf("%w: %s %s/%s", ErrEnded, id, ev.To, ev.Reason)
			}
		case <-tm.C:
			return Event{}, fmt.Errorf("worker %s: no matching event within %s", id, timeout)
		case <-e.dead:
			return Event{}, fmt.Errorf("event stream: %w", e.Err())
		}
	}
}

func isState(s string) func(apiv1.Event) bool {
	return func(ev apiv1.Event) bool { return string(ev.To) == s }
}

// stream reads the SSE stream at url, reporting on opened once the
// response headers are in, and calls put for each event until ctx ends.
func stream(ctx context.Context, url string, opened chan<- error, put func(apiv1.Event)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		opened <- err
		return err
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		opened <- err
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
		opened <- err
		return err
	}
	opened <- nil
	err = sse.Read(resp.Body, 1<<20, func(e sse.Event) error {
		if e.Data == "{}" { // lagged
			return nil
		}
		var ev apiv1.Event
		if err := json.Unmarshal([]byte(e.Data), &ev); err == nil {
			put(ev)
		}
		return nil
	})
	if ctx.Err() != nil {
		return context.Canceled
	}
	if err != nil {
		return err
	}
	return errors.New("event stream ended (lagged or hive gone)")
}
