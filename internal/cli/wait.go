package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/client"
	"github.com/rbee/rbee-hive/internal/state"
)

var errTimeout = errors.New("timeout")

// follower watches one worker for a waiting command: state changes from
// the event stream (opened before the action, so none is missed), progress
// and the goal from polling the worker.
type follower struct {
	c      *call
	ctx    context.Context
	cl     *client.Client
	id     string
	out    io.Writer
	events chan apiv1.Event
	stop   context.CancelFunc
	done   chan struct{}
	open   bool // the event stream is open: state changes come from it
	shown  state.State
	bar    *progressbar.ProgressBar
	step   int64 // last progress step printed on a non-terminal (tenths)
}

// newFollower opens the event stream (waiting at most 2 s for it); id may
// be set later (spawn).
func (c *call) newFollower(ctx context.Context, cl *client.Client, id string) *follower {
	f := &follower{c: c, ctx: ctx, cl: cl, id: id, out: c.env.Stdout, events: make(chan apiv1.Event, 1024),
		done: make(chan struct{}), step: -1}
	if c.g.output == "json" {
		f.out = c.env.Stderr
	}
	sctx, stop := context.WithCancel(ctx)
	f.stop = stop
	opened := make(chan struct{})
	go func() {
		defer close(f.done)
		_ = cl.Events(sctx, func() { close(opened) }, func(ev apiv1.Event) error {
			select {
			case f.events <- ev:
			default: // a flood of other workers' events: drop; polling still sees the state
			}
			return nil
		})
	}()
	select {
	case <-opened:
		f.open = true
	case <-f.done:
	case <-time.After(2 * time.Second):
	}
	return f
}

func (f *follower) close() {
	f.stop()
	<-f.done
}

func (f *follower) line(format string, a ...any) {
	if f.bar != nil {
		_ = f.bar.Clear()
	}
	fmt.Fprintf(f.out, format+"\n", a...)
}

// show prints one state change of the followed worker.
func (f *follower) show(ev apiv1.Event) {
	if ev.WorkerID != f.id || ev.To == f.shown {
		return
	}
	f.shown = ev.To
	s := fmt.Sprintf("%s  %s", ev.At.Local().Format("15:04:05.000"), transition(ev.From, ev.To))
	if ev.Reason != "" {
		s += " (" + string(ev.Reason) + ")"
	}
	if ev.PID > 0 {
		s += fmt.Sprintf("  pid %d", ev.PID)
	}
	f.line("%s", s)
}

func transition(from, to state.State) string {
	if from == "" {
		return string(to)
	}
	return string(from) + " → " + string(to)
}

// progress shows w's load progress: a bar on a terminal, a line per tenth
// otherwise.
func (f *follower) progress(w *apiv1.WorkerInfo) {
	p := w.Progress
	if p == nil || p.Total <= 0 || w.State != state.Loading || f.c.g.output == "json" {
		return
	}
	if f.c.env.terminal() {
		if f.bar == nil {
			f.bar = progressbar.NewOptions64(p.Total, progressbar.OptionSetWriter(f.out),
				progressbar.OptionSetDescription("loading"), progressbar.OptionShowBytes(true),
				progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
		}
		f.bar.ChangeMax64(p.Total)
		_ = f.bar.Set64(p.Done)
		return
	}
	if step := p.Done * 10 / p.Total; step > f.step {
		f.step = step
		f.line("%s  loading %d%% (%d of %d)", time.Now().Format("15:04:05.000"), step*10, p.Done, p.Total)
	}
}

// until polls the worker until goal says done, the timeout passes
// (errTimeout) or ctx ends (its error).
func (f *follower) until(timeout time.Duration, goal func(*apiv1.WorkerInfo) (bool, error)) (*apiv1.WorkerInfo, error) {
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	defer func() {
		if f.bar != nil {
			_ = f.bar.Clear()
		}
	}()
	for {
		f.pending()
		w, err := f.cl.Get(f.ctx, f.id)
		if err != nil {
			if f.ctx.Err() != nil {
				return nil, f.ctx.Err()
			}
			return nil, err
		}
		if !f.open && w.State != f.shown {
			f.show(apiv1.Event{WorkerID: f.id, From: f.shown, To: w.State, Reason: w.Reason, PID: w.PID, At: time.Now()})
		}
		f.progress(w)
		if ok, gerr := goal(w); ok {
			f.drain(w.State)
			return w, gerr
		}
		select {
		case <-f.ctx.Done():
			return nil, f.ctx.Err()
		case <-deadline:
			return w, errTimeout
		case ev := <-f.events:
			f.show(ev)
		case <-tick.C:
		}
	}
}

// pending prints the state changes already received.
func (f *follower) pending() {
	for {
		select {
		case ev := <-f.events:
			f.show(ev)
		default:
			return
		}
	}
}

// drain prints the buffered state changes, waiting briefly for the one into
// final that the poll saw first.
func (f *follower) drain(final state.State) {
	if !f.open {
		return
	}
	t := time.NewTimer(200 * time.Millisecond)
	defer t.Stop()
	for f.shown != final {
		select {
		case ev := <-f.events:
			f.show(ev)
		case <-t.C:
			return
		}
	}
}

// waitErr turns the end of a wait that did not reach its goal into the
// message and exit code the user needs.
func (c *call) waitErr(ctx context.Context, err error, id, verb string) error {
	goesOn := map[string]string{"spawn": "keeps loading", "stop": "is still being stopped", "kill": "is still being killed",
		"restart": "is still restarting"}[verb]
	next := fmt.Sprintf("stop it with `rbee-hive worker stop %s`", id)
	if verb == "stop" || verb == "kill" {
		next = fmt.Sprintf("see it with `rbee-hive worker get %s`", id)
	}
	switch {
	case interrupted(ctx):
		return &exitError{code: exitInterrupt, err: fmt.Errorf("interrupted; worker %s %s in the hive; %s", id, goesOn, next)}
	case errors.Is(err, errTimeout):
		return &exitError{code: exitTimeout, err: fmt.Errorf("gave up waiting (--timeout); worker %s %s in the hive; %s", id, goesOn, next)}
	}
	return err
}

// spawn sends the spawn request and, with wait, follows the worker until
// it is ready or has failed.
func (c *call) spawn(req *apiv1.SpawnRequest, wait bool, timeout time.Duration) error {
	ctx, cancel := signalContext()
	defer cancel()
	cl := c.g.client()
	if !wait {
		resp, err := cl.Spawn(ctx, req)
		if err != nil {
			return err
		}
		if c.g.output == "json" {
			w, err := cl.Get(ctx, resp.WorkerID)
			if err != nil {
				return err
			}
			return c.printWorker(w)
		}
		return c.print(resp, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "WORKER\tSTATE\tPID\tPORT\tURL")
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", resp.WorkerID, resp.State, pidText(resp.PID), resp.Port, resp.URL)
		})
	}
	f := c.newFollower(ctx, cl, "")
	defer f.close()
	resp, err := cl.Spawn(ctx, req)
	if err != nil {
		if interrupted(ctx) {
			return &exitError{code: exitInterrupt, err: errors.New("interrupted before the hive answered; `rbee-hive worker list` shows whether the worker started")}
		}
		return err
	}
	f.id = resp.WorkerID
	f.line("%s spawned (pid %d, port %d); waiting until it is ready (Ctrl-C stops the waiting, not the worker)",
		resp.WorkerID, resp.PID, resp.Port)
	w, err := f.until(timeout, func(w *apiv1.WorkerInfo) (bool, error) {
		switch {
		case w.State.Ready():
			return true, nil
		case w.State.Ended():
			return true, failedErr(w)
		case w.State == state.Backoff:
			e := failedErr(w)
			return true, &exitError{code: exitFailure, err: fmt.Errorf("%v; its restart policy will start it again (stop it with `rbee-hive worker stop %s`)", e, short(w.ID))}
		}
		return false, nil
	})
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if w != nil && c.g.output == "json" {
				_ = c.printWorker(w)
			}
			return err
		}
		return c.waitErr(ctx, err, resp.WorkerID, "spawn")
	}
	if c.g.output == "json" {
		return c.printWorker(w)
	}
	ready := "-"
	if w.ReadyAt != nil && w.StartedAt != nil {
		ready = w.ReadyAt.Sub(*w.StartedAt).Round(time.Millisecond).String()
	}
	fmt.Fprintf(c.env.Stdout, "%s is %s at %s (pid %d), ready after %s\n", w.ID, w.State, w.URL, w.PID, ready)
	return nil
}
