// Package hive is the daemon's core: it wires configuration, ports, logs,
// cgroups, models and the per-worker supervisors together, keeps the
// registry of workers (live and recently ended), fans out events, and runs
// the hive's own shutdown. The HTTP API is a thin layer over it.
//
// Its files, by job: hive.go (New, the wiring, the supervisors' observer),
// spawn.go (a spawn request to a started worker, admission), registry.go
// (lookups, lists, status), actions.go (stop, kill, restart, ready and
// heartbeat on a worker), errors.go (the one error type, Error, and its
// kinds), models.go (model references and roots), gpu.go
// (GPU placement and VRAM books), env.go (a worker's environment and user),
// events.go (the event hub), liststats.go (the stats cache behind List),
// recover.go (re-adoption after a restart), statedir.go and lock.go (the
// state directory and its lock), prune.go (retention of ended workers),
// shutdown.go (stopping or detaching every worker).
package hive

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/logs"
	"github.com/rbee/rbee-hive/internal/models"
	"github.com/rbee/rbee-hive/internal/ports"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/stats"
	"github.com/rbee/rbee-hive/internal/store"
	"github.com/rbee/rbee-hive/internal/supervisor"

	cliputil "github.com/rbee/rbee-hive/internal/clip"
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

	// order keeps each worker's record writes in order (id →
	// *recordOrder; recover.go); writes counts the background ones, which
	// close waits for.
	order  sync.Map
	writes sync.WaitGroup

	spare spare // the next worker's id and cgroup, made ahead (spare.go)
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
	removeSpareLogs(logDir)
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
	// The first ready state of a start is written after the news, off the
	// owner (persistLater): requests waiting for the worker go to it
	// without waiting on the disk. So is the spawning state, while the
	// owner prepares the process (cgroup, token), which waits for it
	// before the process starts (WaitWritten).
	later := durable && ev != nil && (firstReady(ev) || ev.To == state.Spawning)
	if durable && !failed && !later {
		h.persist(w, ev)
	}
	if ev != nil {
		if info != nil && info.GPUUUID != "" {
			h.gpuChanged(ev.To)
		}
		h.events.Publish(*ev)
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
	switch {
	case later:
		h.persistLater(w, ev.To != state.Spawning)
	case durable && ev != nil:
		h.syncSoon(w, ev)
	}
	if ev != nil && ev.From == state.Busy && ev.To == state.Idle {
		h.persistActivity(w)
		// A request has been served: a good moment to make the next
		// worker's spare if there is none (spare.go).
		h.refillSpare()
	}
}

func (h *Hive) deps() supervisor.Deps {
	return supervisor.Deps{
		Logger: h.log, Ports: h.ports, Logs: h.logs, Cgroups: h.cgroups, LogDir: h.logDir,
		Client: h.client, Observer: h, Metrics: h.metrics,
	}
}

func clip(s string) string { return cliputil.String(s, 64) }
