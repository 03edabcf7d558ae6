package supervisor

import (
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/argv"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/policy"
	"github.com/rbee/rbee-hive/internal/ports"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

// owner is the state of one worker that only its owner goroutine touches.
type owner struct {
	w   *Worker
	d   Deps
	log *slog.Logger
	s   config.Settings

	cur       apiv1.WorkerInfo // the working copy; published as snapshots
	proc      proc
	procDone  bool
	cg        *cgroup.Group
	wlog      workerLog
	tokenHash string
	hist      policy.History
	spawnedAt time.Time

	stopReason   state.Reason // why the current stop was asked (restarting: a restart follows)
	stopDetail   string
	stopAsked    time.Time
	stopForce    bool      // the stop is a forced one (kill, ready or heartbeat timeout); recorded for adoption
	forced       bool      // SIGKILL has been sent
	backoffUntil time.Time // when the pending restart is due (state backoff); recorded for adoption
	noRestart    bool      // the incarnation ending is a first start nobody was told of: no restart
	// floor is the shortest delay a timer armed for a deadline gets: 1 ns,
	// minRearm while an adopted worker's timers are re-armed.
	floor time.Duration

	grace, stall, readyCap, hbStale, idle, health, stopT, backoff, readyProbe timer
	// readyProbeDelay is the current gap between readiness probe starts
	// (25 ms, growing to readiness.max_interval); readyProbeAt when the
	// last one started.
	readyProbeDelay time.Duration
	readyProbeAt    time.Time
	// hbHealthy: the last heartbeat said healthy (a fresh one stands in
	// for a liveness probe).
	hbHealthy bool

	firstStart chan error // until the first start grace ends: where Start waits
	probeRes   chan probeResult
	probing    bool
	prober     prober // the held probe connection (nil until the first probe)
	// outputSinceProbe: the worker wrote output while a readiness probe
	// was in flight; a failed probe is then retried at once.
	outputSinceProbe bool
	// helperDone is closed by the helper goroutine doing the slow part of
	// a cleanup (cleanup.go); nil while none runs. afterHelper is what the
	// owner does then; lifecycle requests wait in deferred meanwhile.
	helperDone  chan struct{}
	afterHelper func()
	deferred    []request
	wg          sync.WaitGroup // probe and shutdown-request goroutines
	finished    bool
}

type probeKind int

const (
	probeReadiness probeKind = iota
	probeLiveness
)

type probeResult struct {
	kind probeKind
	pid  int
	err  error
}

// Start creates a worker and starts its process. port must already be held
// in d.Ports for spec.ID. register, when not nil, is called with the new
// worker before its process starts (so that its ready callback, which may
// come at once, finds it). Start blocks for the start grace
// (settings.start_grace): a process that fails to start or dies within it
// makes Start return a *SpawnError; the worker is then recorded
// failed/spawn_failed (and stays visible) and is not restarted.
func Start(d Deps, spec record.Spec, port int, register func(*Worker)) (*Worker, error) {
	w := newWorker(d, spec)
	o := newOwner(w)
	now := w.now()
	o.cur = apiv1.WorkerInfo{
		ID: spec.ID, Port: port, URL: workerURL(port), ModelRef: spec.ModelRef, ModelPath: spec.ModelPath,
		Backend: spec.Backend, Device: spec.Device, Profile: spec.ProfileName, Limits: wireLimits(spec.Settings.Limits),
		Labels: spec.Labels, StartedAt: &now, GPUUUID: spec.GPUUUID, Estimate: spec.Estimate,
	}
	if o.cur.Labels == nil {
		o.cur.Labels = map[string]string{}
	}
	lg, real, err := d.openLog(filepath.Join(d.LogDir, spec.ID+".log"))
	if err != nil {
		d.Ports.Release(port, spec.ID)
		return nil, &SpawnError{Err: fmt.Errorf("open worker log: %w", err)}
	}
	o.wlog, w.wlog = lg, real
	first := make(chan error, 1)
	o.firstStart = first
	o.transition(state.Spawning, state.None)
	if register != nil {
		register(w)
	}
	go o.loop(func() { o.startIncarnation() })
	// Read the local: the owner clears o.firstStart once it has answered.
	err = <-first
	return w, err
}

func newWorker(d Deps, spec record.Spec) *Worker {
	return &Worker{
		spec: spec, d: d,
		log:  d.Logger.With("worker_id", spec.ID),
		reqs: make(chan request),
		done: make(chan struct{}),
	}
}

func newOwner(w *Worker) *owner {
	return &owner{w: w, d: w.d, log: w.log, s: w.spec.Settings, probeRes: make(chan probeResult, 1), floor: time.Nanosecond}
}

func workerURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

func (o *owner) now() time.Time { return o.w.now() }

// loop is the owner goroutine. first runs before the loop starts.
func (o *owner) loop(first func()) {
	defer close(o.w.done)
	defer func() {
		for _, r := range o.deferred {
			r.reply <- ErrEnded
		}
		o.wg.Wait()
		o.probing = false // no probe goroutine is left
		o.closeProber()
	}()
	first()
	for !o.finished {
		var procDone <-chan struct{}
		if o.proc != nil && !o.procDone {
			procDone = o.proc.Done()
		}
		var output <-chan struct{}
		if o.cur.State == state.Loading && o.wlog != nil {
			output = o.wlog.Changed()
		}
		select {
		case r := <-o.w.reqs:
			if o.helperDone != nil && r.kind.lifecycle() {
				o.deferred = append(o.deferred, r) // served once the cleanup is done
				continue
			}
			r.reply <- o.handle(r)
		case <-o.helperDone:
			o.helperFinished()
		case <-procDone:
			o.onExit()
		case <-output:
			o.progress()
		case pr := <-o.probeRes:
			o.onProbe(pr)
		case <-o.grace.C():
			o.grace.fired()
			o.endGrace(nil)
		case <-o.stall.C():
			o.stall.fired()
			_ = o.on(state.Event{Kind: state.EvStallTimeout}, fmt.Sprintf("no loading progress for %s", o.s.ReadyStallTimeout))
		case <-o.readyCap.C():
			o.readyCap.fired()
			_ = o.on(state.Event{Kind: state.EvReadyTimeout}, fmt.Sprintf("not ready after %s", o.s.ReadyTimeout))
		case <-o.hbStale.C():
			o.hbStale.fired()
			_ = o.on(state.Event{Kind: state.EvHeartbeatTimeout}, fmt.Sprintf("no heartbeat for %s", o.s.Heartbeat.Timeout))
		case <-o.idle.C():
			o.idle.fired()
			_ = o.on(state.Event{Kind: state.EvIdleTimeout}, fmt.Sprintf("idle for %s", o.s.IdleTimeout))
		case <-o.health.C():
			o.health.fired()
			o.healthTick()
		case <-o.readyProbe.C():
			o.readyProbe.fired()
			o.startProbe(probeReadiness)
		case <-o.stopT.C():
			o.stopT.fired()
			_ = o.on(state.Event{Kind: state.EvStopTimeout}, "")
		case <-o.backoff.C():
			o.backoff.fired()
			_ = o.on(state.Event{Kind: state.EvBackoffDue}, "")
		}
	}
}

// endGrace reports the first start's result to Start, once.
func (o *owner) endGrace(err error) {
	if o.firstStart == nil {
		return
	}
	o.grace.stop()
	o.firstStart <- err
	o.firstStart = nil
}

// startIncarnation starts the process from the spawning state: cgroup, log,
// argv, env, process. On success the worker is loading.
func (o *owner) startIncarnation() {
	spec := o.w.spec
	if err := o.startProcess(); err != nil {
		o.log.Error("Worker failed to start", "error", err)
		o.cur.Detail = err.Error()
		first := o.firstStart != nil
		o.noRestart = first // nobody was told of this worker yet: the spawn request fails
		_ = o.on(state.Event{Kind: state.EvStartFailed}, err.Error())
		if first {
			o.endGrace(&SpawnError{Err: err, LastLine: o.cur.LastLines})
		}
		return
	}
	if m := o.d.Metrics; m != nil {
		m.Spawned()
	}
	o.log.Info("Worker started", "pid", o.cur.PID, "port", o.cur.Port, "model_ref", spec.ModelRef,
		"profile", spec.ProfileName, "restart_count", o.cur.RestartCount)
	_ = o.on(state.Event{Kind: state.EvStarted}, "")
}

func (o *owner) startProcess() error {
	spec := o.w.spec
	port := o.cur.Port
	// A restart keeps its port when it is still ours and free; else a new
	// one. The first start's port was checked by its Acquire just before.
	first := o.firstStart != nil
	if !o.d.Ports.Holds(port, spec.ID) || (!first && !ports.Bindable(port)) {
		o.d.Ports.Release(port, spec.ID)
		p, err := o.d.Ports.Acquire(spec.ID)
		if err != nil {
			return err
		}
		port = p
		o.cur.Port, o.cur.URL = p, workerURL(p)
	}
	token, err := newToken()
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(token))
	o.tokenHash = hex.EncodeToString(sum[:])
	// The new token must be checkable before the process can call back.
	snap := o.cur
	o.w.rec.Store(o.record(&snap))

	vars := map[string]string{
		"port": strconv.Itoa(port), "model": spec.ModelPath, "model_ref": spec.ModelRef,
		"worker_id": spec.ID, "backend": spec.Backend, "device": strconv.Itoa(spec.Device), "hive_url": spec.HiveURL,
		"ctx":      strconv.Itoa(o.s.Ctx),
		"gpu_uuid": spec.GPUUUID,
	}
	args := argv.Expand(spec.Argv, vars)
	if spec.Profile.Protocol == config.ProtocolRbee {
		args = append(args, "--worker-id", spec.ID, "--model", spec.ModelPath, "--model-ref", spec.ModelRef,
			"--backend", spec.Backend, "--device", strconv.Itoa(spec.Device), "--port", strconv.Itoa(port),
			"--hive-url", spec.HiveURL)
	}
	env := append([]string(nil), spec.Env...)
	env = append(env,
		"RBEE_WORKER_TOKEN="+token,
		"RBEE_WORKER_ID="+spec.ID,
		"RBEE_HEARTBEAT_INTERVAL_MS="+strconv.FormatInt(o.s.Heartbeat.Interval.D().Milliseconds(), 10),
		"RBEE_HIVE_MARKER="+spec.Marker,
	)

	var cgFD = -1
	var join, joinAfter []string
	if o.d.Cgroups != nil && o.d.Cgroups.Mode() != cgroup.ModeNone {
		g, err := o.d.Cgroups.Create(spec.ID, o.s.Limits)
		switch {
		case err != nil && !o.s.Limits.NeedsCgroup() && errors.Is(err, fs.ErrPermission):
			// A hive without cgroup access (not root, no delegated
			// subtree) still runs workers that ask for no cgroup limit;
			// their tree is then their process group only.
			o.log.Warn("No cgroup for this worker: no access to the cgroup hierarchy; its tree is its process group only",
				"error", err)
		case err != nil:
			return fmt.Errorf("create cgroup: %w", err)
		default:
			o.cg = g
			fd, err := g.FD()
			if err != nil {
				return fmt.Errorf("open cgroup: %w", err) // finish removes the cgroup
			}
			cgFD = fd
			defer syscall.Close(fd)
			// v1 cgroups that enforce a limit are joined before the
			// program runs; without limits they only account, and are
			// joined right after the start, off its path.
			if o.s.Limits.NeedsCgroup() {
				join = g.JoinProcs()
			} else {
				joinAfter = g.JoinProcs()
			}
		}
	}
	out, err := o.wlog.ChildFile()
	if err != nil {
		return fmt.Errorf("open worker log: %w", err) // finish removes the cgroup
	}
	defer out.Close()
	if ww, ok := o.d.Observer.(WrittenWaiter); ok {
		ww.WaitWritten(o.w) // the spawning record, written meanwhile
	}
	p, err := o.d.startProc(process.Spec{
		Path: args[0], Args: args, Env: env, Stdout: out, Stderr: out,
		CgroupFD: cgFD, JoinProcs: join, JoinAfter: joinAfter, Nofile: o.s.Limits.Nofile, Credential: spec.Credential,
	})
	if err != nil {
		return err // finish removes the cgroup
	}
	o.proc, o.procDone = p, false
	o.dropSpan()
	now := o.now()
	o.spawnedAt = now
	o.cur.PID = p.ident().PID
	o.cur.StartedAt = &now
	o.cur.ReadyAt, o.cur.Exit, o.cur.Reason, o.cur.Detail = nil, nil, state.None, ""
	o.cur.LastLines, o.cur.EndedAt, o.cur.Progress = nil, nil, nil
	o.cur.FailedHealthChecks = 0
	return nil
}

func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := crand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// handle serves one request in the owner goroutine.
func (o *owner) handle(r request) error {
	st := o.cur.State
	switch r.kind {
	case reqStop, reqKill:
		kind := state.EvStop
		if r.kind == reqKill {
			kind = state.EvKill
		}
		return o.on(state.Event{Kind: kind, Reason: r.reason}, "")
	case reqRestart:
		if err := o.on(state.Event{Kind: state.EvRestart}, "restart asked"); err != nil {
			return fmt.Errorf("%w: worker is %s", ErrInvalidState, st)
		}
		return nil
	case reqReady:
		if err := o.on(state.Event{Kind: state.EvReady}, ""); err != nil {
			return fmt.Errorf("%w: worker is %s, not loading", ErrInvalidState, st)
		}
		return nil
	case reqHeartbeat:
		return o.onHeartbeat(r.hb)
	case reqDetach:
		o.detach()
		return nil
	case reqActivity:
		return o.onActivity(r)
	}
	return fmt.Errorf("unknown request %d", r.kind)
}

func (o *owner) onHeartbeat(hb *apiv1.HeartbeatRequest) error {
	st := o.cur.State
	if err := o.on(state.Event{Kind: state.EvHeartbeat}, ""); err != nil {
		return fmt.Errorf("%w: worker is %s", ErrInvalidState, st)
	}
	now := o.now()
	o.cur.LastHeartbeat = &now
	o.hbHealthy = hb.HealthStatus == "healthy"
	if hb.SlotsTotal != nil {
		o.cur.SlotsTotal = *hb.SlotsTotal
	}
	if hb.SlotsAvailable != nil {
		o.cur.SlotsAvailable = *hb.SlotsAvailable
	}
	switch st {
	case state.Spawning, state.Loading:
		if p := hb.Progress; p != nil {
			old := o.cur.Progress
			if old == nil || p.Done != old.Done || p.Total != old.Total {
				o.cur.Progress = &apiv1.Progress{Done: p.Done, Total: p.Total}
				o.stall.arm(o.s.ReadyStallTimeout.D())
			}
		}
	case state.Idle:
		if hb.State == "busy" {
			_ = o.on(state.Event{Kind: state.EvBusy}, "")
		}
	case state.Busy:
		// Requests running through the front door keep the worker busy
		// whatever its own report says (activity.go).
		if hb.State == "idle" && o.w.span.Load() == nil {
			_ = o.on(state.Event{Kind: state.EvIdle}, "")
		}
	}
	if o.cur.State.Ready() && o.s.Heartbeat.Timeout > 0 {
		o.hbStale.arm(o.s.Heartbeat.Timeout.D())
	}
	o.publish(nil)
	return nil
}

// progress is new output while loading: it resets the stall clock.
//
// For a generic (http) worker it also probes readiness at once: servers
// often print a line when they start listening or finish loading, so
// probing on output notices readiness within a millisecond or two, sooner
// than the next scheduled probe (every 25–50 ms, SPEC §6). At most one
// probe is in flight, so a chatty loader costs no more than a probe at a
// time.
func (o *owner) progress() {
	if o.cur.State != state.Loading {
		return
	}
	o.stall.arm(o.s.ReadyStallTimeout.D())
	if o.w.spec.Profile.Protocol != config.ProtocolHTTP {
		return
	}
	o.readyProbeDelay = config.ReadinessFirstInterval.D()
	if o.probing {
		o.outputSinceProbe = true // probe again as soon as this one fails
		return
	}
	o.readyProbe.stop()
	o.startProbe(probeReadiness)
}

// release lets go of what the worker holds once it has ended for good.
func (o *owner) release() {
	o.d.Ports.Release(o.cur.Port, o.w.spec.ID)
	if o.wlog != nil {
		o.wlog.Close()
	}
	o.finished = true
}

// detach lets go of a live worker without touching its process.
func (o *owner) detach() {
	// A Start still waiting out the first start grace gets its answer now:
	// the process is running and handed over (its timer stops below).
	o.endGrace(nil)
	o.stopLifecycleTimers()
	o.stopT.stop()
	o.log.Info("Leaving worker running", "pid", o.cur.PID, "state", o.cur.State)
	if o.proc != nil {
		o.proc.Close()
		o.proc = nil
	}
	if o.wlog != nil {
		o.wlog.Close()
	}
	o.finished = true
}

// transition moves to state to, publishing an event. Only enter calls it,
// with a step state.Decide returned; a move the table refuses all the same
// is logged, counted and not applied.
func (o *owner) transition(to state.State, reason state.Reason) {
	from := o.cur.State
	if from != "" {
		if err := state.Check(from, to); err != nil {
			o.refused(from, "move to "+string(to), err)
			return
		}
	}
	o.cur.State = to
	if !to.Ready() {
		o.dropSpan()
	}
	if to == state.Stopping || to.Ended() || to == state.Backoff {
		o.cur.Reason = reason
	}
	ev := &apiv1.Event{WorkerID: o.w.spec.ID, From: from, To: to, Reason: reason, PID: o.cur.PID, At: o.now()}
	o.publish(ev)
}

// publish stores a new snapshot and tells the observer; state changes (ev
// != nil) are durable.
func (o *owner) publish(ev *apiv1.Event) { o.publishAs(ev, ev != nil) }

// publishDurable publishes a detail change that must reach the state store.
func (o *owner) publishDurable() { o.publishAs(nil, true) }

func (o *owner) publishAs(ev *apiv1.Event, durable bool) {
	snap := o.cur
	o.w.info.Store(&snap)
	if durable {
		// The record is what the store writes; details that are not
		// durable (a heartbeat's slots) need not rebuild it.
		o.w.rec.Store(o.record(&snap))
	}
	if obs := o.d.Observer; obs != nil {
		obs.Changed(o.w, &snap, ev, durable)
	}
}

func sigName(s syscall.Signal) string {
	for name, v := range config.Signals {
		if v == s {
			return name
		}
	}
	return "signal " + strconv.Itoa(int(s))
}
