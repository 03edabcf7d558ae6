// Package supervisor runs one worker: a single goroutine (the worker's owner)
// holds its state, its process, its cgroup and its timers, and every other
// part of the hive talks to it by request. It starts the process, notices
// its exit the moment it happens, applies the ready, stall, heartbeat, health
// and idle rules, stops it gracefully then by force, and restarts it per the
// restart policy. Readers get an immutable snapshot (Info) without waiting.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/logs"
	"github.com/rbee/rbee-hive/internal/ports"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

// Sentinel errors callers branch on.
var (
	// ErrInvalidState: the request is not allowed in the worker's current
	// state (API 409 INVALID_STATE). Wrapped with the state.
	ErrInvalidState = errors.New("invalid state")
	// ErrEnded: the worker has ended; its owner no longer runs.
	ErrEnded = errors.New("worker has ended")
)

// SpawnError is returned by Start when the process could not be started or
// died within the start grace. It carries the exit facts and the last lines
// of the worker's output.
type SpawnError struct {
	Err      error // the start error, or nil when the process started and then died
	Exit     *apiv1.Exit
	LastLine []string
}

func (e *SpawnError) Error() string {
	msg := "worker failed to start"
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Exit != nil {
		switch {
		case e.Exit.Code != nil:
			msg += fmt.Sprintf(": exited with code %d within the start grace", *e.Exit.Code)
		case e.Exit.Signal != 0:
			msg += fmt.Sprintf(": killed by signal %d within the start grace", e.Exit.Signal)
		default:
			msg += ": exited within the start grace"
		}
	}
	if len(e.LastLine) > 0 {
		msg += "; last output:"
		for _, l := range e.LastLine {
			msg += "\n  " + EscapeControl(l)
		}
	}
	return msg
}

// EscapeControl returns s with its control and format characters (terminal
// escapes such as OSC 52 or a screen clear, bidi overrides) written as Go
// escapes (\x1b, \u202e), so a worker's output quoted in a message cannot
// act on the terminal that shows it (SPEC §14). Tabs stay.
func EscapeControl(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\t':
			b.WriteRune(r)
		case r == utf8.RuneError, unicode.IsControl(r), unicode.Is(unicode.Cf, r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (e *SpawnError) Unwrap() error { return e.Err }

// Observer learns of every change of a worker. Changed is called from the
// worker's owner goroutine, synchronously, before the change is acknowledged
// to anyone; it must be fast and must not call back into the worker. ev is
// the state change, or nil for a change of details; durable is true when the
// change must reach the state store (every state change, and the few detail
// changes a restarted hive needs, such as a stop asked during a restart).
type Observer interface {
	Changed(w *Worker, info *apiv1.WorkerInfo, ev *apiv1.Event, durable bool)
}

// WrittenWaiter is an Observer that writes some durable changes in the
// background: WaitWritten returns once the writes of w's changes made so
// far are done. The owner calls it before a process starts, so that no
// process exists before the record of its start (the spawning record,
// written while the start is prepared).
type WrittenWaiter interface {
	WaitWritten(w *Worker)
}

// Deps are the hive's shared services a worker uses.
type Deps struct {
	Logger   *slog.Logger
	Ports    *ports.Allocator
	Logs     *logs.Watcher
	Cgroups  *cgroup.Manager // nil or mode none: no cgroups
	LogDir   string          // where <id>.log files live
	Client   *http.Client    // graceful shutdown requests (POST /v1/shutdown); probes use internal/probe
	Observer Observer        // may be nil
	Now      func() time.Time
	Metrics  Metrics // may be nil

	seams *seams // tests: fakes for the process, probe and log (seams.go)
}

// Metrics receives lifecycle measurements. All methods must be cheap.
type Metrics interface {
	Spawned()
	ReadyLatency(d time.Duration)
	StopLatency(d time.Duration)
	ForceKill()
	HealthCheckFailed()
	Restarted()
	Ended(r state.Reason)
	// RefusedTransition: an event (or a move) the state machine refuses
	// came in state from; nothing was changed.
	RefusedTransition(from state.State, event string)
}

type reqKind int

const (
	reqStop reqKind = iota
	reqKill
	reqReady
	reqHeartbeat
	reqRestart
	reqDetach
	reqActivity
)

type request struct {
	kind   reqKind
	reason state.Reason
	ready  *apiv1.ReadyRequest
	hb     *apiv1.HeartbeatRequest
	begin  bool   // reqActivity: a request starts (true) or ends
	span   *span  // reqActivity, an end: the span it leaves
	got    **span // reqActivity, a begin: where the owner puts the span joined
	reply  chan error
}

// Worker is one supervised worker. Its methods are safe for concurrent use.
type Worker struct {
	spec record.Spec
	d    Deps
	log  *slog.Logger

	reqs chan request
	info atomic.Pointer[apiv1.WorkerInfo]
	span atomic.Pointer[span] // the open span of front-door requests (activity.go); stored by the owner
	done chan struct{}        // closed when the owner goroutine has returned

	rec  atomic.Pointer[record.Record]
	wlog *logs.Log // set before the owner starts; never changes
}

// Log returns the worker's output log.
func (w *Worker) Log() *logs.Log { return w.wlog }

// ID returns the worker's id.
func (w *Worker) ID() string { return w.spec.ID }

// Spec returns the worker's spec.
func (w *Worker) Spec() record.Spec { return w.spec }

// Info returns the latest snapshot. It never blocks; the result must not be
// modified.
func (w *Worker) Info() *apiv1.WorkerInfo { return w.info.Load() }

// Record returns the latest durable record (for the state store).
func (w *Worker) Record() *record.Record { return w.rec.Load() }

// Done is closed when the worker's owner has returned: the worker has ended
// (or was detached) and its process tree is gone (unless detached).
func (w *Worker) Done() <-chan struct{} { return w.done }

// call sends r to the worker's owner and waits for its answer. An activity
// request, once the owner has it, is waited for whatever ctx says: a begin
// may open a span that only a caller that got it back ends (one whose
// client went away meanwhile left the worker busy for good), and the owner
// answers activity requests at once.
func (w *Worker) call(ctx context.Context, r request) error {
	r.reply = make(chan error, 1)
	select {
	case w.reqs <- r:
	case <-w.done:
		return ErrEnded
	case <-ctx.Done():
		return ctx.Err()
	}
	if r.kind == reqActivity {
		return <-r.reply
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop asks for a graceful stop with escalation; reason must be an asked
// reason (stopped, idle_timeout, hive_shutdown). It returns once the stop has
// begun; it is idempotent. Wait on Done for the end.
func (w *Worker) Stop(ctx context.Context, reason state.Reason) error {
	err := w.call(ctx, request{kind: reqStop, reason: reason})
	if errors.Is(err, ErrEnded) {
		return nil
	}
	return err
}

// Kill SIGKILLs the whole process tree at once. Idempotent.
func (w *Worker) Kill(ctx context.Context, reason state.Reason) error {
	err := w.call(ctx, request{kind: reqKill, reason: reason})
	if errors.Is(err, ErrEnded) {
		return nil
	}
	return err
}

// Restart stops the worker and starts it again with the same id and spec.
func (w *Worker) Restart(ctx context.Context) error {
	err := w.call(ctx, request{kind: reqRestart})
	if errors.Is(err, ErrEnded) {
		return fmt.Errorf("%w: worker has ended (%s)", ErrInvalidState, w.Info().State)
	}
	return err
}

// Ready delivers the worker's ready callback.
func (w *Worker) Ready(ctx context.Context, r *apiv1.ReadyRequest) error {
	err := w.call(ctx, request{kind: reqReady, ready: r})
	if errors.Is(err, ErrEnded) {
		return fmt.Errorf("%w: worker is %s, not loading", ErrInvalidState, w.Info().State)
	}
	return err
}

// Heartbeat delivers a heartbeat.
func (w *Worker) Heartbeat(ctx context.Context, hb *apiv1.HeartbeatRequest) error {
	err := w.call(ctx, request{kind: reqHeartbeat, hb: hb})
	if errors.Is(err, ErrEnded) {
		return fmt.Errorf("%w: worker is %s", ErrInvalidState, w.Info().State)
	}
	return err
}

// Detach makes the owner let go of a live worker without stopping it (the
// hive exits with --keep-workers-on-exit; a later hive adopts the worker).
// It blocks until the owner has returned.
func (w *Worker) Detach(ctx context.Context) error {
	err := w.call(ctx, request{kind: reqDetach})
	if errors.Is(err, ErrEnded) {
		return nil
	}
	if err != nil {
		return err
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Worker) now() time.Time {
	if w.d.Now != nil {
		return w.d.Now()
	}
	return time.Now()
}
