// Package hive is the daemon's core: it wires configuration, ports, logs,
// cgroups, models and the per-worker supervisors together, keeps the
// registry of workers (live and recently ended), fans out events, and runs
// the hive's own shutdown. The HTTP API is a thin layer over it.
package hive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/logs"
	"github.com/rbee/rbee-hive/internal/models"
	"github.com/rbee/rbee-hive/internal/ports"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/stats"
	"github.com/rbee/rbee-hive/internal/store"
	"github.com/rbee/rbee-hive/internal/supervisor"
	"github.com/rbee/rbee-hive/internal/validate"
	"github.com/rbee/rbee-hive/internal/version"

	cliputil "github.com/rbee/rbee-hive/internal/clip"
)

// Sentinel errors the API maps to responses.
var (
	ErrWorkerNotFound = errors.New("worker not found")
	ErrUnknownProfile = errors.New("unknown profile")
	ErrShuttingDown   = errors.New("hive is shutting down")
)

// Options are what the daemon passes besides the config.
type Options struct {
	Logger *slog.Logger
	// HiveURL is the base URL workers call back on.
	HiveURL string
	// Cgroups is the cgroup manager; nil means none.
	Cgroups *cgroup.Manager
	// Metrics receives lifecycle measurements; may be nil.
	Metrics supervisor.Metrics
}

// Hive is safe for concurrent use.
type Hive struct {
	cfg      config.Config
	log      *slog.Logger
	stateDir string
	logDir   string
	hiveURL  string
	marker   string
	started  time.Time

	ports    *ports.Allocator
	logs     *logs.Watcher
	cgroups  *cgroup.Manager
	catalog  *models.Catalog
	resolver *models.Resolver
	client   *http.Client
	events   *Hub
	metrics  supervisor.Metrics
	stats    *stats.Sampler
	lstats   *listStats            // List's stats, refreshed in the background (liststats.go)
	users    map[string]WorkerUser // per profile: who its workers run as (env.go)
	store    *store.Store          // durable registry (recover.go)
	gpu      *gpuBook              // GPU inventory and placement (gpu.go)
	// forgetHook, when set (tests), replaces deleting a pruned record.
	forgetHook func(id string)

	mu           sync.RWMutex
	workers      map[string]*supervisor.Worker
	shuttingDown bool
	// admitting counts spawns admitted (under mu, while not shutting
	// down) that have not yet registered their worker or given up:
	// Shutdown waits for them before it takes its snapshot.
	admitting sync.WaitGroup
	pending   int // admitted spawns not yet registered, for max_workers

	stopPrune chan struct{}
	pruneDone chan struct{}
}

// New prepares the state directory and the shared services. It starts no
// worker.
func New(cfg config.Config, opts Options) (*Hive, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.StateDir == "" {
		cfg.StateDir = config.DefaultStateDir()
	}
	if err := PrepareStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	logDir := filepath.Join(cfg.StateDir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, fmt.Errorf("hive: %w", err)
	}
	if err := os.Chmod(logDir, 0o700); err != nil {
		return nil, fmt.Errorf("hive: %w", err)
	}
	roots := cfg.ModelRoots
	if len(roots) == 0 {
		def := filepath.Join(cfg.StateDir, "models")
		if err := os.MkdirAll(def, 0o700); err != nil {
			return nil, fmt.Errorf("hive: %w", err)
		}
		roots = []string{def}
	}
	cat, err := models.OpenCatalog(filepath.Join(cfg.StateDir, "models.json"))
	if err != nil {
		return nil, fmt.Errorf("hive: %w", err)
	}
	res, err := models.NewResolver(roots, cat)
	if err != nil {
		return nil, fmt.Errorf("hive: %w", err)
	}
	st, err := store.Open(cfg.StateDir, log)
	if err != nil {
		return nil, fmt.Errorf("hive: %w", err)
	}
	lw, err := logs.NewWatcher(logs.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("hive: %w", err)
	}
	h := &Hive{
		cfg: cfg, log: log, stateDir: cfg.StateDir, logDir: logDir, hiveURL: opts.HiveURL,
		marker:  InstanceID(cfg.StateDir),
		started: time.Now(),
		ports:   ports.New(cfg.Ports.Min, cfg.Ports.Max, log),
		logs:    lw, cgroups: opts.Cgroups, catalog: cat, resolver: res,
		client: &http.Client{Transport: &http.Transport{
			Proxy:       nil,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			// Only a worker's one shutdown request goes through this
			// client (probes hold their own connection): nothing to reuse.
			DisableKeepAlives: true,
		}},
		events:    NewHub(),
		metrics:   opts.Metrics,
		stats:     stats.New(stats.Options{Cgroups: opts.Cgroups}),
		lstats:    newListStats(opts.Cgroups),
		users:     map[string]WorkerUser{},
		store:     st,
		workers:   map[string]*supervisor.Worker{},
		stopPrune: make(chan struct{}),
		pruneDone: make(chan struct{}),
	}
	warned := false
	for name, p := range cfg.Profiles {
		ra := cfg.RunAs
		if p.RunAs.User != "" {
			ra = p.RunAs
		}
		u, rootDefault, err := resolveRunAs(ra)
		if err != nil {
			lw.Close()
			return nil, fmt.Errorf("hive: profiles.%s: %w", name, err)
		}
		if rootDefault && !warned {
			warned = true
			log.Warn("Workers run as root: no run_as is configured and there is no user \"rbee\" (SPEC §14; see SECURITY.md)")
		}
		h.users[name] = u
	}
	if err := h.initGPU(); err != nil {
		return nil, err
	}
	go h.pruneLoop()
	return h, nil
}

// InstanceID names this hive (by its state directory): the scope of its
// cgroups and the marker in its workers' environment.
func InstanceID(stateDir string) string {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		abs = stateDir
	}
	sum := sha256.Sum256([]byte(abs))
	return hex.EncodeToString(sum[:8])
}

// PrepareStateDir creates dir (0700), refuses one that other users can
// write (group/other write bits, or another owner), and tightens a
// readable one to 0700.
func PrepareStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state dir %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("state dir %s is writable by other users (mode %o); refusing to start (chmod 700 it)", dir, fi.Mode().Perm())
	}
	// A directory another user owns is one that user can write (and fill
	// with symlinks the hive would follow).
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("state dir %s is owned by uid %d, not by this user (uid %d); refusing to start", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	return nil
}

// Config returns the hive's configuration.
func (h *Hive) Config() config.Config { return h.cfg }

// Events returns the event hub.
func (h *Hive) Events() *Hub { return h.events }

// Catalog returns the model catalog.
func (h *Hive) Catalog() *models.Catalog { return h.catalog }

// StateDir returns the state directory.
func (h *Hive) StateDir() string { return h.stateDir }

// Changed implements supervisor.Observer.
func (h *Hive) Changed(w *supervisor.Worker, info *apiv1.WorkerInfo, ev *apiv1.Event, durable bool) {
	// A change is durable before anyone hears of it (recover.go), except an
	// end (failed, terminated): the process is already dead, a restarted hive
	// finds that out again by itself (a dead worker recorded stopping ends
	// as asked), and a slow fsync must not delay the news of a crash or of
	// a stop.
	failed := ev != nil && (ev.To == state.Failed || ev.To == state.Terminated)
	if durable && !failed {
		h.persist(w, ev)
	}
	if ev != nil {
		if info != nil && info.GPUUUID != "" {
			h.gpuChanged(ev.To)
		}
		h.events.Publish(*ev)
		if durable {
			h.syncSoon(w, ev)
		}
		// Crash detection: from the reaper seeing an exit nobody asked for
		// to the failure being recorded (this call).
		crash := ev.Reason == state.Crashed || ev.Reason == state.Exited || ev.Reason == state.OOMKilled
		if cd, ok := h.metrics.(interface{ CrashDetected(time.Duration) }); ok && crash &&
			ev.To == state.Failed && info.Exit != nil && !info.Exit.At.IsZero() && !ev.At.Before(info.Exit.At) {
			cd.CrashDetected(ev.At.Sub(info.Exit.At))
		}
	}
	if durable && failed {
		h.persist(w, ev)
	}
}

func (h *Hive) deps() supervisor.Deps {
	return supervisor.Deps{
		Logger: h.log, Ports: h.ports, Logs: h.logs, Cgroups: h.cgroups, LogDir: h.logDir,
		Client: h.client, Observer: h, Metrics: h.metrics,
	}
}

// Spawn validates req, resolves the model, checks limits and memory, and
// starts a worker. It blocks for the start grace. On a start-grace failure
// the worker stays listed as failed/spawn_failed and the error is a
// *supervisor.SpawnError.
func (h *Hive) Spawn(ctx context.Context, req *apiv1.SpawnRequest) (*supervisor.Worker, error) {
	if req.Backend == "" {
		req.Backend = "cpu"
	}
	if req.ModelRef == "" {
		return nil, &validate.Error{Code: "INVALID_MODEL_REF", Message: "model_ref is required"}
	}
	if _, _, err := models.ParseRef(req.ModelRef); err != nil {
		return nil, err
	}
	if e := validate.Backend(req.Backend); e != nil {
		return nil, e
	}
	if req.Device != apiv1.DeviceAuto {
		if e := validate.Device(req.Device); e != nil {
			return nil, e
		}
	}
	if e := validate.Labels(req.Labels); e != nil {
		return nil, e
	}
	// The profile decides the base settings (its stop_timeout), so find it
	// first: the request's profile, else the settings' profile, else the
	// default.
	probe, err := config.Override(h.cfg.Defaults, req.Settings)
	if err != nil {
		return nil, &validate.Error{Code: "INVALID_SETTINGS", Message: err.Error()}
	}
	name := probe.Profile
	if req.Profile != "" {
		name = req.Profile
	}
	prof, ok := h.cfg.Profiles[name]
	if !ok {
		return nil, &validate.Error{Code: "INVALID_PROFILE", Message: fmt.Sprintf("no profile named %q", clip(name))}
	}
	if e := validate.Env(req.Env, prof.AllowEnv); e != nil {
		return nil, e
	}
	base := h.cfg.Defaults
	if prof.StopTimeout > 0 {
		base.StopTimeout = prof.StopTimeout
	}
	settings, err := config.Override(base, req.Settings)
	if err != nil {
		return nil, &validate.Error{Code: "INVALID_SETTINGS", Message: err.Error()}
	}
	settings.Profile = name
	lim, err := config.ApplyCeilings(h.cfg.Defaults.Limits, settings.Limits, h.cfg.LimitsMax)
	if err != nil {
		return nil, &validate.Error{Code: "LIMITS_NOT_ALLOWED", Message: err.Error()}
	}
	settings.Limits = lim

	path, size, err := h.resolver.Resolve(req.ModelRef, req.ModelPath)
	if err != nil {
		return nil, err
	}
	if settings.Limits.NeedsCgroup() {
		if h.cgroups == nil {
			return nil, &cgroup.UnsupportedError{Problems: []string{"cgroups are not available to this hive"}}
		}
		if err := h.cgroups.Supports(settings.Limits); err != nil {
			return nil, err
		}
	}
	onGPU := wantsGPU(req.Backend, prof)
	est, ramBasis := estimate(&h.gpu.estimates, path, size, prof, settings, onGPU)
	id := "worker-" + uuid.NewString()
	device, gpuUUID := req.Device, ""
	if onGPU {
		dev, release, err := h.placeGPU(ctx, id, req, est.VRAMBytes)
		if err != nil {
			return nil, err
		}
		defer release() // the registered worker's own state holds the reservation from then on
		device, gpuUUID = dev.Index, dev.UUID
	} else if device == apiv1.DeviceAuto {
		device = 0
	}
	if err := h.preflightRAM(est, ramBasis); err != nil {
		return nil, err
	}
	cmd, err := resolveCommand(prof.Command)
	if err != nil {
		return nil, &supervisor.SpawnError{Err: err}
	}

	// Admission (SPEC §14, §3): decided under the lock Shutdown takes its
	// snapshot under, so a spawn is either refused or registered before
	// that snapshot (Shutdown waits for admitted spawns to register).
	if err := h.admit(); err != nil {
		return nil, err
	}
	registered := false
	defer func() {
		if !registered {
			h.mu.Lock()
			h.pending--
			h.mu.Unlock()
			h.admitting.Done()
		}
	}()
	port, err := h.ports.Acquire(id)
	if err != nil {
		return nil, err
	}
	wu := h.users[name]
	env := BuildEnv(BaseEnv(wu.Home, os.Getenv), prof.Env, req.Env)
	if gpuUUID != "" {
		env = withGPUEnv(env, gpuUUID)
	}
	spec := record.Spec{
		ID: id, ModelRef: req.ModelRef, ModelPath: path, ModelSize: size, Backend: req.Backend,
		Device: device, ProfileName: name, Profile: prof, Settings: settings, Argv: cmd,
		Env: env, Labels: req.Labels, HiveURL: h.hiveURL, Marker: h.marker, Credential: wu.Credential,
		GPUUUID: gpuUUID, Estimate: &est,
	}
	w, err := supervisor.Start(h.deps(), spec, port, func(w *supervisor.Worker) {
		registered = true
		h.mu.Lock()
		h.workers[w.ID()] = w
		h.pending--
		h.mu.Unlock()
		h.admitting.Done()
	})
	if err != nil && w == nil {
		h.ports.Release(port, id)
	}
	return w, err
}

// ErrTooManyWorkers: max_workers live workers already.
var ErrTooManyWorkers = errors.New("too many workers")

// admit decides, under h.mu, whether a spawn may go ahead: not while the
// hive shuts down, not beyond max_workers live workers. An admitted spawn
// must end with exactly one admitting.Done (and pending--).
func (h *Hive) admit() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shuttingDown {
		return ErrShuttingDown
	}
	live := h.pending
	for _, w := range h.workers {
		if info := w.Info(); info != nil && !info.State.Ended() {
			live++
		}
	}
	if max := h.cfg.MaxWorkers; max > 0 && live >= max {
		return fmt.Errorf("%w: %d live workers; max_workers is %d", ErrTooManyWorkers, live, max)
	}
	h.pending++
	h.admitting.Add(1)
	return nil
}

// resolveCommand makes argv[0] absolute: a bare name is looked up beside the
// rbee-hive binary, then on PATH.
func resolveCommand(cmd []string) ([]string, error) {
	if len(cmd) == 0 {
		return nil, errors.New("profile has no command")
	}
	out := append([]string(nil), cmd...)
	name := out[0]
	switch {
	case filepath.IsAbs(name):
	case strings.Contains(name, "/"):
		abs, err := filepath.Abs(name)
		if err != nil {
			return nil, err
		}
		out[0] = abs
	default:
		if exe, err := os.Executable(); err == nil {
			beside := filepath.Join(filepath.Dir(exe), name)
			if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				out[0] = beside
				return out, nil
			}
		}
		p, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("worker command %q: not found beside rbee-hive or on PATH", name)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		out[0] = abs
	}
	return out, nil
}

// ResolveModel resolves a model reference (as a spawn would) to its file
// and size.
func (h *Hive) ResolveModel(ref string) (string, int64, error) { return h.resolver.Resolve(ref, "") }

// ModelRoots returns the directories model files must lie in; the first
// is where relative file: references of `models:` entries point.
func (h *Hive) ModelRoots() []string {
	if len(h.cfg.ModelRoots) > 0 {
		return append([]string(nil), h.cfg.ModelRoots...)
	}
	return []string{filepath.Join(h.stateDir, "models")}
}

// LiveWorkers returns the workers that have not ended.
func (h *Hive) LiveWorkers() []*supervisor.Worker {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*supervisor.Worker, 0, len(h.workers))
	for _, w := range h.workers {
		if info := w.Info(); info != nil && !info.State.Ended() {
			out = append(out, w)
		}
	}
	return out
}

// Worker returns the worker with id, live or retained.
func (h *Hive) Worker(id string) (*supervisor.Worker, error) {
	h.mu.RLock()
	w, ok := h.workers[id]
	h.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrWorkerNotFound, clip(id))
	}
	return w, nil
}

// WithStats returns info with its resource stats filled (a copy; info is
// not modified) when the worker has a process. The numbers are at most a
// couple of seconds old (stats.DefaultMaxAge).
func (h *Hive) WithStats(info *apiv1.WorkerInfo) *apiv1.WorkerInfo {
	return h.withGPUUse([]*apiv1.WorkerInfo{h.stats.Get(info)})[0]
}

// List returns snapshots of the workers, sorted by start time then id; ended
// ones only when all is set. Live workers carry their resource stats, a few
// seconds old at most: they come from a refresh that runs in the background
// (liststats.go), so List only measures inline the workers that refresh has
// not seen yet.
func (h *Hive) List(all bool) []*apiv1.WorkerInfo {
	h.mu.RLock()
	out := make([]*apiv1.WorkerInfo, 0, len(h.workers))
	for _, w := range h.workers {
		info := w.Info()
		if info == nil || (!all && info.State.Ended()) {
			continue
		}
		out = append(out, info)
	}
	h.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.StartedAt != nil && b.StartedAt != nil && !a.StartedAt.Equal(*b.StartedAt) {
			return a.StartedAt.Before(*b.StartedAt)
		}
		return a.ID < b.ID
	})
	return h.withGPUUse(h.lstats.fill(out, h.stats))
}

// Status summarises the hive.
func (h *Hive) Status() apiv1.Status {
	st := apiv1.Status{
		Version: version.Version, APIVersion: apiv1.Version, StartedAt: h.started,
		UptimeSeconds: time.Since(h.started).Seconds(), StateDir: h.stateDir,
		Addr: h.cfg.Addr, DevMode: h.cfg.APIToken == "",
		CgroupMode: string(cgroup.ModeNone), Workers: map[string]int{},
	}
	if h.cgroups != nil {
		st.CgroupMode = string(h.cgroups.Mode())
		st.Cgroups = h.cgroups.Describe()
	}
	for _, s := range state.All {
		st.Workers[string(s)] = 0
	}
	for _, info := range h.List(true) {
		st.Workers[string(info.State)]++
		if info.Stats != nil {
			st.Totals.RSSBytes += info.Stats.RSSBytes
			st.Totals.CPUSeconds += info.Stats.CPUSeconds
			st.Totals.Threads += info.Stats.Threads
			st.Totals.OpenFDs += info.Stats.OpenFDs
			st.Totals.GPUMemoryBytes += info.Stats.GPUMemoryBytes
		}
	}
	h.gpuStatus(&st)
	return st
}

// Shutdown stops every live worker in parallel within ctx (the shutdown
// budget); what is still alive when ctx ends is killed. It then releases the
// hive's services. It logs the progress lines of SPEC §3.
//
//  1. Under h.mu, refuse every later spawn (ErrShuttingDown).
//  2. Wait for the spawns admitted before that to register their worker.
//  3. Snapshot the workers under h.mu: none can be added after it.
//  4. Stop the live ones and wait on their endings (no polling); at the
//     budget, kill what is left and wait (bounded) for those endings too.
//     Only workers that ended are counted as stopped.
func (h *Hive) Shutdown(ctx context.Context) {
	h.beginClosing(ctx)
	h.mu.Lock()
	var live, ending []*supervisor.Worker
	for _, w := range h.workers {
		if info := w.Info(); info != nil && !info.State.Ended() {
			live = append(live, w)
		} else {
			ending = append(ending, w) // its owner may still be cleaning up its tree
		}
	}
	h.mu.Unlock()
	n := len(live)
	h.log.Info(fmt.Sprintf("Shutting down %d workers...", n), "workers", n)
	start := time.Now()
	ended := make(chan *supervisor.Worker, n) // buffered: a waiter never blocks
	remaining := make(map[*supervisor.Worker]bool, n)
	for _, w := range live {
		remaining[w] = true
		go func() {
			_ = w.Stop(context.Background(), state.HiveShutdown)
			<-w.Done()
			ended <- w
		}()
	}
	stopped := 0
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	budget := ctx.Done()
	var killWait <-chan time.Time
wait:
	for len(remaining) > 0 {
		select {
		case w := <-ended:
			delete(remaining, w)
			stopped++
		case <-tick.C:
			h.log.Info(fmt.Sprintf("%d/%d workers stopped", stopped, n))
		case <-budget:
			budget = nil
			h.log.Warn(fmt.Sprintf("Shutdown budget spent, killing %d workers", len(remaining)))
			for w := range remaining {
				go func() { _ = w.Kill(context.Background(), state.HiveShutdown) }()
			}
			killWait = time.After(10 * time.Second)
		case <-killWait:
			for w := range remaining {
				h.log.Error("Worker did not end after kill", "worker_id", w.ID())
			}
			break wait
		}
	}
	h.log.Info(fmt.Sprintf("%d/%d workers stopped", stopped, n), "after", time.Since(start).String())
	if stopped == n {
		h.log.Info("All workers stopped, exiting")
	} else {
		h.log.Error(fmt.Sprintf("%d workers did not end, exiting", n-stopped))
	}
	// Workers that had just ended may still be removing their trees and
	// cgroups; let them finish (bounded) before the scope goes.
	for _, w := range ending {
		select {
		case <-w.Done():
		case <-time.After(10 * time.Second):
			h.log.Error("Ended worker's owner did not finish", "worker_id", w.ID())
		}
	}
	// Every worker's cgroup is gone with it; the hive's (now empty) scope
	// goes too, so a clean exit leaves nothing under the cgroup roots.
	if h.cgroups != nil {
		if err := h.cgroups.RemoveScope(); err != nil {
			h.log.Warn("Removing the hive's cgroup scope failed", "scope", h.cgroups.Scope(), "error", err)
		}
	}
	h.close()
}

// beginClosing refuses every later spawn (under h.mu, where admission is
// decided) and waits, within ctx, for the spawns already admitted to
// register their worker.
func (h *Hive) beginClosing(ctx context.Context) {
	h.mu.Lock()
	h.shuttingDown = true
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.admitting.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		h.log.Error("Spawns admitted before the shutdown did not register in time")
	}
}

// StopAdmitting makes every later spawn fail with ErrShuttingDown; the
// daemon calls it first when a shutdown begins, before it stops serving.
func (h *Hive) StopAdmitting() {
	h.mu.Lock()
	h.shuttingDown = true
	h.mu.Unlock()
}

// Detach lets every live worker keep running (for --keep-workers-on-exit)
// and releases the hive's services.
func (h *Hive) Detach(ctx context.Context) {
	h.beginClosing(ctx)
	h.mu.Lock()
	ws := make([]*supervisor.Worker, 0, len(h.workers))
	for _, w := range h.workers {
		ws = append(ws, w)
	}
	h.mu.Unlock()
	h.log.Info(fmt.Sprintf("Leaving %d workers running for the next hive", len(ws)))
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Detach(ctx) }()
	}
	wg.Wait()
	h.close()
}

func (h *Hive) close() {
	close(h.stopPrune)
	<-h.pruneDone
	h.lstats.close()
	h.gpu.inv.Close()
	h.logs.Close()
	h.client.CloseIdleConnections()
}

// pruneEvery is how often ended workers past retention are dropped: rare,
// so an idle hive is not woken for it (retention is counted in minutes).
const pruneEvery = 30 * time.Second

// pruneLoop drops ended workers past the retention window.
func (h *Hive) pruneLoop() {
	defer close(h.pruneDone)
	// On a wall-clock grid, as the health probes are: one wake-up for both.
	next := func() time.Duration { return time.Until(time.Now().Truncate(pruneEvery).Add(pruneEvery)) }
	t := time.NewTimer(next())
	defer t.Stop()
	for {
		select {
		case <-h.stopPrune:
			return
		case <-t.C:
			h.prune(time.Now())
			t.Reset(next())
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

func clip(s string) string { return cliputil.String(s, 64) }

// AddModel adds a catalog entry after checking that path lies inside a model
// root.
func (h *Hive) AddModel(ref, path string) (models.Entry, error) {
	if _, _, err := models.ParseRef(ref); err != nil {
		return models.Entry{}, err
	}
	resolved, _, err := h.resolver.CheckPath(path)
	if err != nil {
		return models.Entry{}, err
	}
	return h.catalog.Add(ref, resolved)
}
