// Package frontdoor is the hive's OpenAI-compatible front door (SPEC §10):
// it routes inference requests by their body's "model" to ready workers of
// that model (fewest in flight among those with a free slot), starts
// workers on demand and keeps min_workers running, queues requests per
// model (FIFO, bounded, with a timeout), tells each worker when requests
// start and end (so busy/idle and the idle timeout follow real traffic),
// and evicts least-recently-used idle workers of other models when a spawn
// would not fit the memory budget or (GPU models) a GPU's VRAM. It sits
// above the hive: it asks the hive for workers (Source) and learns of their
// changes from the event hub; it never reaches into a supervisor. The
// eviction choice is a pure function of worker snapshots (Plan, and per
// device PlanGPU).
package frontdoor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/relay"
	"github.com/rbee/rbee-hive/internal/state"
)

// ModelLabel is the worker label naming the front-door model a worker
// serves. Workers spawned by the front door carry it; an operator may set
// it on a spawn to add a worker to a model's pool.
const ModelLabel = "rbee.model"

// spawnLabel names the front door's spawn that started a worker.
const spawnLabel = "rbee.spawn"

// Worker is what the front door needs of one worker.
type Worker interface {
	ID() string
	// Info is the worker's latest snapshot; never blocks.
	Info() *apiv1.WorkerInfo
	// Done is closed once the worker has ended and its processes are gone.
	Done() <-chan struct{}
	Stop(ctx context.Context, reason state.Reason) error
	// BeginRequest and the end it returns bracket every request relayed
	// through the worker: busy while any runs, idle (and last_activity)
	// after.
	BeginRequest(ctx context.Context) (end func(), err error)
}

// Source is the hive as the front door sees it.
type Source interface {
	Spawn(ctx context.Context, req *apiv1.SpawnRequest) (Worker, error)
	Worker(id string) (Worker, error)
	// LiveWorkers are the workers that have not ended.
	LiveWorkers() []Worker
	// Subscribe returns a channel of state-change events, closed when the
	// subscriber fell behind; cancel ends the subscription.
	Subscribe() (events <-chan apiv1.Event, cancel func())
	// ResolveModel finds a model reference's file.
	ResolveModel(ref string) (path string, size int64, err error)
	ModelRoots() []string
}

// Options configure a FrontDoor.
type Options struct {
	Source Source
	Config config.Config
	Logger *slog.Logger
	// Estimate is the memory estimate; nil: EstimateFromFile.
	Estimate Estimator
	// MemTotal is the machine's memory, for the default budget; 0: read
	// /proc/meminfo.
	MemTotal int64
	// Metrics receives per-model measurements; nil: none.
	Metrics *Metrics
}

// Error is a front-door error, rendered by the API in the error shape with
// a "type" (apiv1.ErrorType).
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter int // seconds; 0: no Retry-After header
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, a ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

// FrontDoor routes inference to workers. Its methods are safe for
// concurrent use.
type FrontDoor struct {
	src     Source
	cfg     config.Config
	log     *slog.Logger
	est     Estimator
	budget  int64
	metrics *Metrics
	created int64
	tr      *relay.Transport // the relay to the workers

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	models []*model          // in name order
	names  map[string]*model // every name and alias

	mu       sync.Mutex
	byID     map[string]*slot
	fileMem  map[string]int64 // estimates of hand-started workers' models, by file
	spawnSeq atomic.Uint64
}

// model is one entry of `models:` and the front door's state for it
// (guarded by FrontDoor.mu).
type model struct {
	name    string
	entry   config.Model
	ref     string          // model_ref, a relative file: reference resolved
	profile config.Profile  // the profile its workers run
	conc    int             // max_concurrency; 0: the worker's slots_total
	setJSON json.RawMessage // the entry's settings for spawn requests

	mem int64 // estimated bytes per worker; 0: not known yet
	// VRAM per worker and whether its workers run on a GPU, once vramKnown
	// (vram.go).
	vram             int64
	onGPU, vramKnown bool

	slots     []*slot
	pending   map[string]time.Time // spawns under way that have no slot yet, by their spawn label: when they were decided
	queue     []*waiter
	inflight  int
	minTries  int             // consecutive min_workers starts that failed (spawn error, or the worker ended failed before it was ready)
	minFailed map[string]bool // the spawn labels of those starts
}

// slot is one worker of a model.
type slot struct {
	w        Worker
	id       string
	m        *model
	ready    bool // idle or busy as last heard
	inflight int
	evicting bool
	ended    bool // terminated: not live, its cleanup under way (watchEnd removes it)
	pinned   bool // started for min_workers
	// everReady: the worker has been ready since the front door knew it
	// (a min_workers worker that ends failed without ever being ready is
	// a failed start).
	everReady bool
	mem       int64
	cold      time.Time // when the front door decided to start it; zero once ready
	lastUsed  time.Time
	target    atomic.Pointer[target] // the worker's parsed URL (proxy.go)
}

type waiter struct {
	ch      chan grant
	exclude string
	since   time.Time
}

type grant struct {
	s   *slot
	err error
}

// New prepares the front door for cfg.Models. It starts nothing: call Start.
func New(o Options) (*FrontDoor, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	est := o.Estimate
	if est == nil {
		est = EstimateFromFile
	}
	fd := &FrontDoor{
		src: o.Source, cfg: o.Config, log: log.With("component", "frontdoor"), est: est, metrics: o.Metrics,
		created: time.Now().Unix(), names: map[string]*model{}, byID: map[string]*slot{}, fileMem: map[string]int64{},
	}
	fd.budget = o.Config.MemoryBudgetBytes
	if fd.budget == 0 {
		total := o.MemTotal
		if total == 0 {
			var si syscall.Sysinfo_t
			if err := syscall.Sysinfo(&si); err != nil {
				return nil, fmt.Errorf("frontdoor: memory budget: %w", err)
			}
			total = int64(si.Totalram) * int64(si.Unit)
		}
		reserve := max(o.Config.MemoryReserveBytes, 0)
		fd.budget = max(total-reserve, 0)
	}
	roots := o.Source.ModelRoots()
	names := make([]string, 0, len(o.Config.Models))
	for n := range o.Config.Models {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		e := o.Config.Models[n]
		m := &model{name: n, entry: e, ref: e.ModelRef, pending: map[string]time.Time{}}
		if rest, ok := strings.CutPrefix(e.ModelRef, "file:"); ok && !filepath.IsAbs(rest) && len(roots) > 0 {
			m.ref = "file:" + filepath.Join(roots[0], rest)
		}
		pn := e.Profile
		if pn == "" {
			pn = o.Config.Defaults.Profile
		}
		m.profile = o.Config.Profiles[pn]
		m.conc = e.MaxConcurrency
		if m.conc == 0 {
			m.conc = m.profile.MaxConcurrency
		}
		if m.conc == 0 && m.profile.Protocol != config.ProtocolRbee {
			m.conc = 1
		}
		raw, err := e.SettingsJSON()
		if err != nil {
			return nil, fmt.Errorf("frontdoor: models.%s: %w", n, err)
		}
		m.setJSON = raw
		fd.models = append(fd.models, m)
		fd.names[n] = m
		for _, a := range e.Aliases {
			fd.names[a] = m
		}
	}
	// The relay to the workers: the request written and the answer's head
	// read in the handler's goroutine; an event stream (or a body of
	// unknown length) relayed chunk by chunk with a flush per chunk, a
	// body of known length through the server's write buffer (flushing
	// every write cost a separate write for the head of each answer).
	fd.tr = relay.New(5 * time.Second)
	fd.ctx, fd.cancel = context.WithCancel(context.Background())
	return fd, nil
}

// Budget returns the memory budget in bytes.
func (fd *FrontDoor) Budget() int64 { return fd.budget }

// Start attaches the live workers that carry a model label (adopted after
// a hive restart), starts each model's min_workers, and follows the hive's
// events until Close. It does not block.
func (fd *FrontDoor) Start() {
	events, cancel := fd.src.Subscribe()
	fd.mu.Lock()
	fd.resyncLocked()
	for _, m := range fd.models {
		fd.ensureMinLocked(m)
	}
	fd.mu.Unlock()
	fd.wg.Add(1)
	go fd.follow(events, cancel)
}

// Close stops following the hive and waits for the front door's own
// goroutines (spawns under way end with the hive's shutdown). Requests in
// flight are not interrupted. Call it before the hive's Shutdown.
func (fd *FrontDoor) Close() {
	fd.cancel()
	fd.mu.Lock()
	for _, m := range fd.models {
		fd.failAllLocked(m, errorf(http.StatusServiceUnavailable, apiv1.CodeShuttingDown, "the hive is shutting down"))
	}
	fd.mu.Unlock()
	fd.wg.Wait()
	fd.tr.Close()
}

// follow applies the hive's events until Close. A subscription that fell
// behind is renewed and the state read again.
func (fd *FrontDoor) follow(events <-chan apiv1.Event, cancel func()) {
	defer fd.wg.Done()
	defer func() { cancel() }()
	for {
		select {
		case <-fd.ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				fd.log.Warn("Event subscription fell behind; reading the workers again")
				events, cancel = fd.src.Subscribe()
				fd.mu.Lock()
				fd.resyncLocked()
				fd.mu.Unlock()
				continue
			}
			if ev.From.Ready() && ev.To.Ready() {
				// idle ⇄ busy: the front door's own requests (it
				// already knows) or an rbee worker's report of its
				// own; neither changes routing. A worker idle again
				// may be evicted now (evictableLocked): a cold start
				// waiting for memory plans again.
				if ev.To == state.Idle {
					fd.mu.Lock()
					fd.kickLocked()
					fd.mu.Unlock()
				}
				continue
			}
			fd.mu.Lock()
			fd.onEventLocked(ev)
			fd.mu.Unlock()
		}
	}
}

// resyncLocked attaches every live labelled worker and refreshes each
// slot's readiness from its snapshot.
func (fd *FrontDoor) resyncLocked() {
	for _, w := range fd.src.LiveWorkers() {
		fd.attachLocked(w, false)
	}
	for _, s := range fd.byID {
		if info := s.w.Info(); info != nil {
			s.ready = info.State.Ready()
		}
	}
	fd.kickLocked()
}

func (fd *FrontDoor) onEventLocked(ev apiv1.Event) {
	s := fd.byID[ev.WorkerID]
	if s == nil {
		if ev.To.Ended() {
			// A worker the front door does not serve through (started
			// by hand, or of a model not in models:) ended: the memory
			// it held (fitLocked) is free for a cold start that waits.
			fd.kickLocked()
			return
		}
		w, err := fd.src.Worker(ev.WorkerID)
		if err != nil {
			return
		}
		if s = fd.attachLocked(w, false); s == nil {
			return
		}
	}
	m := s.m
	switch ev.To {
	case state.Idle, state.Busy:
		if !s.ready {
			s.ready = true
			s.everReady = true
			if s.lastUsed.IsZero() {
				s.lastUsed = ev.At
			}
			fd.readyLocked(s)
		}
		if s.pinned {
			minReadyLocked(m)
		}
		fd.dispatchLocked(m)
		if ev.To == state.Idle {
			fd.kickLocked()
		}
	case state.Failed:
		wasStarting := ev.From == state.Loading || ev.From == state.Spawning || (ev.From == state.Stopping && !s.ready)
		s.ready = false
		if wasStarting {
			detail := ""
			if info := s.w.Info(); info != nil && info.Detail != "" {
				detail = ": " + info.Detail
			}
			fd.coldFailedLocked(m, fmt.Sprintf("worker %s failed while loading (%s%s)", s.id, ev.Reason, detail))
		}
	case state.Terminated:
		// Terminal: the process is gone, and the slot no longer counts
		// against max_workers, so that a request that came for the model
		// meanwhile starts its worker now rather than after the hive's
		// cleanup of this one (watchEnd). Its memory still counts until
		// then.
		s.ready = false
		s.ended = true
		fd.kickLocked()
	default:
		s.ready = false
	}
}

// attachLocked adds w to its model's pool if it carries a model label (the
// model's name or an alias) and is not known yet; it returns the slot (nil
// for a worker of no model).
func (fd *FrontDoor) attachLocked(w Worker, pinned bool) *slot {
	if s := fd.byID[w.ID()]; s != nil {
		return s
	}
	info := w.Info()
	if info == nil || info.State.Ended() {
		return nil
	}
	// By the model's name or one of its aliases: a worker labelled with an
	// alias is the model's too (fitLocked leaves every labelled worker to
	// its model's slots).
	m := fd.names[info.Labels[ModelLabel]]
	if m == nil {
		return nil
	}
	mem, _ := fd.memory(m)
	s := &slot{w: w, id: w.ID(), m: m, ready: info.State.Ready(), mem: mem, pinned: pinned || info.Labels["rbee.min"] == "1"}
	if info.LastActivity != nil {
		s.lastUsed = *info.LastActivity
	}
	fd.byID[s.id] = s
	m.slots = append(m.slots, s)
	// The worker of a spawn under way counts from now as a slot, not as
	// pending (its ready event may come before the spawn call returns).
	if t, ok := m.pending[info.Labels[spawnLabel]]; ok {
		s.cold = t
		delete(m.pending, info.Labels[spawnLabel])
	}
	if s.ready {
		fd.readyLocked(s)
		if s.pinned {
			minReadyLocked(m)
		}
	}
	s.everReady = s.ready
	fd.wg.Add(1)
	go fd.watchEnd(s)
	if s.ready {
		fd.dispatchLocked(m)
	}
	return s
}

// readyLocked notes a worker becoming ready: the end of its cold start.
func (fd *FrontDoor) readyLocked(s *slot) {
	if s.cold.IsZero() {
		return
	}
	fd.log.Info("Worker ready for the front door", "model", s.m.name, "worker_id", s.id, "cold_start", time.Since(s.cold).String())
	if fd.metrics != nil {
		fd.metrics.coldStart(s.m.name, s.cold)
	}
	s.cold = time.Time{}
}

// watchEnd removes a slot once its worker has ended for good.
func (fd *FrontDoor) watchEnd(s *slot) {
	defer fd.wg.Done()
	select {
	case <-s.w.Done():
	case <-fd.ctx.Done():
		return
	}
	fd.mu.Lock()
	defer fd.mu.Unlock()
	m := s.m
	delete(fd.byID, s.id)
	for i, x := range m.slots {
		if x == s {
			m.slots = append(m.slots[:i], m.slots[i+1:]...)
			break
		}
	}
	s.ready = false
	if t := s.target.Load(); t != nil {
		fd.tr.CloseIdle(t.u.Host)
	}
	info := s.w.Info()
	if info != nil && info.Reason == state.Evicted && fd.metrics != nil {
		fd.metrics.evicted(m.name)
	}
	if s.pinned && !s.everReady && info != nil && info.State == state.Failed {
		// A min_workers start that failed: ensureMinLocked gives up
		// after three in a row rather than respawning a broken model
		// for ever.
		minFailedLocked(m, info.Labels[spawnLabel])
	}
	if !fd.hasCapacityLocked(m) && len(m.queue) > 0 {
		fd.planLocked(m)
	}
	fd.ensureMinLocked(m)
	fd.kickLocked()
}

// memory returns the model's estimated need per worker. A failure (the
// model file is not there yet) is not remembered. Called with fd.mu held.
func (fd *FrontDoor) memory(m *model) (int64, error) {
	if m.mem > 0 {
		return m.mem, nil
	}
	s, err := config.Override(fd.cfg.Defaults, m.setJSON)
	switch {
	case err == nil && s.MemoryBytes > 0:
		m.mem = s.MemoryBytes
	case m.profile.MemoryBytes > 0:
		m.mem = m.profile.MemoryBytes
	default:
		path, _, err := fd.src.ResolveModel(m.ref)
		if err != nil {
			return 0, err
		}
		mem, err := fd.est(path, m.entry.Ctx)
		if err != nil {
			return 0, err
		}
		m.mem = max(mem, 1)
	}
	return m.mem, nil
}

// lookup finds a model by name or alias.
func (fd *FrontDoor) lookup(name string) *model { return fd.names[name] }

// Names lists the models' names.
func (fd *FrontDoor) Names() []string {
	out := make([]string, 0, len(fd.models))
	for _, m := range fd.models {
		out = append(out, m.name)
	}
	return out
}

// slotConc is how many requests s takes at once.
func slotConc(s *slot) int {
	if s.m.conc > 0 {
		return s.m.conc
	}
	if info := s.w.Info(); info != nil && info.SlotsTotal > 0 {
		return info.SlotsTotal
	}
	return 1
}

// pickLocked returns the ready worker of m with a free slot and the fewest
// requests in flight (among equals the most recently used), preferring any
// but exclude.
func (fd *FrontDoor) pickLocked(m *model, exclude string) *slot {
	var best, fallback *slot
	for _, s := range m.slots {
		if !s.ready || s.evicting || s.inflight >= slotConc(s) {
			continue
		}
		if s.id == exclude {
			fallback = s
			continue
		}
		// Fewest in flight; among equals the most recently used, so
		// that traffic stays on warm workers and the spare ones idle out.
		if best == nil || s.inflight < best.inflight || (s.inflight == best.inflight && s.lastUsed.After(best.lastUsed)) {
			best = s
		}
	}
	if best == nil {
		return fallback
	}
	return best
}

func (fd *FrontDoor) hasCapacityLocked(m *model) bool { return fd.pickLocked(m, "") != nil }

// evictableLocked reports whether s is idle enough to be evicted: ready,
// with no front-door request in flight, and not busy in the hive's eyes
// either (an rbee worker reports requests sent to its own port in its
// heartbeats).
func evictableLocked(s *slot) bool {
	if !s.ready || s.inflight > 0 {
		return false
	}
	info := s.w.Info()
	return info == nil || info.State != state.Busy
}

// dispatchLocked hands queued requests of m, in order, to free workers.
func (fd *FrontDoor) dispatchLocked(m *model) {
	for len(m.queue) > 0 {
		w := m.queue[0]
		s := fd.pickLocked(m, w.exclude)
		if s == nil {
			return
		}
		m.queue = m.queue[1:]
		s.inflight++
		m.inflight++
		w.ch <- grant{s: s}
	}
}

// kickLocked retries every model that has requests waiting: capacity or
// memory may have freed up.
func (fd *FrontDoor) kickLocked() {
	for _, m := range fd.models {
		if len(m.queue) == 0 {
			continue
		}
		fd.dispatchLocked(m)
		if len(m.queue) > 0 {
			fd.planLocked(m)
		}
	}
}

// startingLocked counts m's workers that are on their way to ready: those
// spawning or loading, and those the hive has seen become ready whose ready
// event is not applied yet (planning again in that moment must not start
// another worker for the requests this one is about to take).
func (fd *FrontDoor) startingLocked(m *model) int {
	n := len(m.pending)
	for _, s := range m.slots {
		if s.ready || s.evicting || s.ended {
			continue
		}
		if info := s.w.Info(); info != nil && (info.State == state.Spawning || info.State == state.Loading || info.State.Ready()) {
			n++
		}
	}
	return n
}

func (fd *FrontDoor) liveLocked(m *model) int {
	n := len(m.pending)
	for _, s := range m.slots {
		if !s.evicting && !s.ended {
			n++
		}
	}
	return n
}

// planLocked starts a worker for m when its queue needs one and
// max_workers allows: at once when it fits the memory budget, after
// evicting idle workers of other models when that makes it fit; it waits
// when only busy workers stand in the way, and fails the queue with 507
// when the model can never fit.
func (fd *FrontDoor) planLocked(m *model) {
	if len(m.queue) == 0 || fd.ctx.Err() != nil {
		return
	}
	if fd.liveLocked(m) >= m.entry.MaxWorkers {
		return
	}
	conc := m.conc
	if conc == 0 {
		conc = 1
	}
	if len(m.queue) <= fd.startingLocked(m)*conc {
		return
	}
	// Both must fit: VRAM on one device (vram.go), then RAM with the VRAM
	// plan's victims gone.
	g, never, err := fd.planGPULocked(m)
	verdict, victims := Fits, []string(nil)
	if err == nil {
		verdict, victims, err = fd.fitLocked(m, g.Victims)
	}
	switch {
	case err != nil:
		fd.failAllLocked(m, errorf(http.StatusServiceUnavailable, apiv1.CodeWorkerFailed,
			"model %s cannot start: %v", m.name, err))
	case verdict == Never:
		fd.failAllLocked(m, errorf(http.StatusInsufficientStorage, apiv1.CodeInsufficientMemory,
			"model %s needs an estimated %d bytes; the memory budget is %d bytes", m.name, m.mem, fd.budget))
	case g.Verdict == Never:
		fd.failAllLocked(m, never)
	case verdict == Wait:
		fd.log.Debug("Spawn waits for memory held by busy workers", "model", m.name, "need", m.mem)
	case g.Verdict == Wait:
		fd.log.Debug("Spawn waits for VRAM held by busy workers", "model", m.name, "need", m.vram)
	default:
		var vs []*slot
		for _, id := range append(g.Victims, victims...) {
			v := fd.byID[id]
			v.evicting = true
			v.ready = false
			vs = append(vs, v)
		}
		fd.spawnLocked(m, vs, false, g.Device)
	}
}

// fitLocked asks Plan where a new worker of m fits, the workers named in
// gone (to be stopped already) left out.
func (fd *FrontDoor) fitLocked(m *model, gone []string) (Verdict, []string, error) {
	need, err := fd.memory(m)
	if err != nil {
		return 0, nil, err
	}
	var live []Snapshot
	for _, o := range fd.models {
		if n := len(o.pending); n > 0 {
			mem, _ := fd.memory(o)
			live = append(live, Snapshot{ID: "pending:" + o.name, Model: o.name, Memory: mem * int64(n), Pinned: true})
		}
		for _, s := range o.slots {
			if slices.Contains(gone, s.id) {
				continue
			}
			live = append(live, Snapshot{ID: s.id, Model: o.name, Memory: s.mem,
				Idle: evictableLocked(s), Pinned: s.pinned || s.evicting, LastUsed: s.lastUsed})
		}
	}
	// Workers started by hand (no model label) hold memory too; the
	// front door never stops them.
	for _, w := range fd.src.LiveWorkers() {
		if fd.byID[w.ID()] != nil {
			continue
		}
		info := w.Info()
		if info == nil || info.State.Ended() || fd.names[info.Labels[ModelLabel]] != nil {
			continue
		}
		mem, ok := fd.fileMem[info.ModelPath]
		if !ok {
			if est, err := fd.est(info.ModelPath, 0); err == nil {
				mem = est
				fd.fileMem[info.ModelPath] = mem
			}
		}
		live = append(live, Snapshot{ID: info.ID, Model: "", Memory: mem, Pinned: true})
	}
	v, victims := Plan(need, fd.budget, m.name, live)
	fd.log.Debug("Memory plan", "model", m.name, "need", need, "budget", fd.budget, "verdict", v.String(), "victims", victims, "live", fmt.Sprint(live))
	return v, victims, nil
}

// spawnLocked starts one worker of m in the background, after stopping
// victims (evicted) and waiting for them to end; a GPU worker on device
// (apiv1.DeviceAuto: the hive picks).
func (fd *FrontDoor) spawnLocked(m *model, victims []*slot, pinned bool, device int) {
	tok := strconv.FormatUint(fd.spawnSeq.Add(1), 10)
	m.pending[tok] = time.Now()
	labels := map[string]string{ModelLabel: m.name, spawnLabel: tok}
	settings := m.setJSON
	if pinned {
		labels["rbee.min"] = "1"
		// A min_workers worker is kept: it does not idle out.
		settings = withIdleTimeoutOff(settings)
	}
	req := &apiv1.SpawnRequest{ModelRef: m.ref, Profile: m.entry.Profile, Settings: settings, Labels: labels}
	if device != apiv1.DeviceAuto {
		req.Device, req.DeviceGiven = device, true
	}
	fd.wg.Add(1)
	go func() {
		defer fd.wg.Done()
		for _, v := range victims {
			fd.log.Info("Evicting idle worker to make room", "worker_id", v.id, "model", v.m.name,
				"for_model", m.name, "need_bytes", m.mem, "budget_bytes", fd.budget)
			_ = v.w.Stop(fd.ctx, state.Evicted)
		}
		for _, v := range victims {
			select {
			case <-v.w.Done():
			case <-fd.ctx.Done():
			}
		}
		var w Worker
		err := fd.ctx.Err()
		if err == nil {
			fd.log.Info("Cold start", "model", m.name, "model_ref", m.ref, "min_workers", pinned)
			w, err = fd.spawn(req)
		}
		fd.mu.Lock()
		defer fd.mu.Unlock()
		delete(m.pending, tok)
		if fd.ctx.Err() != nil {
			return // closed: what waited has been answered; the hive's shutdown stops the worker
		}
		// A plan that waited for this spawn to be booked plans again.
		defer fd.kickLocked()
		if err != nil {
			fd.log.Warn("Cold start failed", "model", m.name, "error", err)
			if pinned {
				minFailedLocked(m, tok)
				fd.retryMinLocked(m)
			}
			fd.coldFailedLocked(m, fmt.Sprintf("starting a worker of %s failed: %v", m.name, err))
			return
		}
		fd.attachLocked(w, pinned)
	}()
}

// minFailedLocked counts the failed min_workers start of the spawn
// labelled tok, once (its spawn call and its worker's end may both report
// it).
func minFailedLocked(m *model, tok string) {
	if m.minFailed == nil {
		m.minFailed = map[string]bool{}
	}
	if !m.minFailed[tok] {
		m.minFailed[tok] = true
		m.minTries++
	}
}

// retryMinLocked tries m's min_workers again after a spawn the hive
// refused (no worker of it ends to call ensureMinLocked): after 1 s, then
// 2 s, until three starts in a row have failed.
func (fd *FrontDoor) retryMinLocked(m *model) {
	if m.minTries >= 3 {
		return
	}
	d := time.Second << max(m.minTries-1, 0)
	fd.wg.Add(1)
	go func() {
		defer fd.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-fd.ctx.Done():
			return
		}
		fd.mu.Lock()
		defer fd.mu.Unlock()
		fd.ensureMinLocked(m)
	}()
}

// minReadyLocked notes a min_workers worker of m ready: the failed starts
// are no longer consecutive.
func minReadyLocked(m *model) {
	m.minTries = 0
	clear(m.minFailed)
}

// spawn asks the hive for a worker. The hive's Spawn returns only once the
// start grace is over (SPEC §3), but nothing waits for that: the worker is
// attached, and the requests it was started for routed to it, the moment
// its loading and ready events arrive (onEventLocked), and a process that
// dies within the grace fails them through its failed event. spawn gives
// up at Close, so that a long start_grace does not hold up the hive's
// shutdown (the Spawn call itself ends when the shutdown stops the worker).
func (fd *FrontDoor) spawn(req *apiv1.SpawnRequest) (Worker, error) {
	type result struct {
		w   Worker
		err error
	}
	ch := make(chan result, 1)
	go func() {
		w, err := fd.src.Spawn(fd.ctx, req)
		ch <- result{w, err}
	}()
	select {
	case r := <-ch:
		return r.w, r.err
	case <-fd.ctx.Done():
		return nil, fd.ctx.Err()
	}
}

// coldFailedLocked fails every request waiting for m when no worker of m
// is ready or on its way (SPEC §10: 503 WORKER_FAILED naming the reason).
func (fd *FrontDoor) coldFailedLocked(m *model, reason string) {
	if fd.hasCapacityLocked(m) || fd.startingLocked(m) > 0 {
		return
	}
	for _, s := range m.slots {
		if s.ready {
			return // busy, but it will take the queue
		}
	}
	fd.failAllLocked(m, errorf(http.StatusServiceUnavailable, apiv1.CodeWorkerFailed, "%s", reason))
}

func (fd *FrontDoor) failAllLocked(m *model, err error) {
	for _, w := range m.queue {
		w.ch <- grant{err: err}
	}
	m.queue = nil
}

// ensureMinLocked starts workers until m has min_workers live. A model
// whose min_workers starts keep failing (the spawn, or the worker before it
// is ready) is left alone after three in a row.
func (fd *FrontDoor) ensureMinLocked(m *model) {
	if fd.ctx.Err() != nil || m.minTries >= 3 {
		return
	}
	for fd.liveLocked(m) < m.entry.MinWorkers {
		fd.spawnLocked(m, nil, true, apiv1.DeviceAuto)
	}
}

// acquire returns a worker of m with a request slot taken for the caller,
// waiting in m's queue (and through a cold start) when none is free. The
// caller must release it.
func (fd *FrontDoor) acquire(ctx context.Context, m *model, exclude string) (*slot, time.Duration, error) {
	fd.mu.Lock()
	if fd.ctx.Err() != nil {
		fd.mu.Unlock()
		return nil, 0, errorf(http.StatusServiceUnavailable, apiv1.CodeShuttingDown, "the hive is shutting down")
	}
	if len(m.queue) == 0 {
		if s := fd.pickLocked(m, exclude); s != nil {
			s.inflight++
			m.inflight++
			fd.mu.Unlock()
			return s, 0, nil
		}
	}
	if len(m.queue) >= fd.cfg.Queue.Max {
		fd.mu.Unlock()
		e := errorf(http.StatusServiceUnavailable, apiv1.CodeQueueFull, "model %s has %d requests waiting (queue.max)", m.name, fd.cfg.Queue.Max)
		e.RetryAfter = 1
		return nil, 0, e
	}
	w := &waiter{ch: make(chan grant, 1), exclude: exclude, since: time.Now()}
	m.queue = append(m.queue, w)
	fd.planLocked(m)
	fd.mu.Unlock()
	if fd.metrics != nil {
		fd.metrics.queued(m.name, 1)
		defer fd.metrics.queued(m.name, -1)
	}
	timeout := fd.cfg.Queue.Timeout.D()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case g := <-w.ch:
			return g.s, time.Since(w.since), g.err
		case <-ctx.Done():
			if g, ok := fd.leave(m, w); ok {
				fd.release(g.s)
			}
			return nil, time.Since(w.since), ctx.Err()
		case <-t.C:
			fd.mu.Lock()
			starting := fd.startingLocked(m) > 0
			fd.mu.Unlock()
			if starting {
				// The timeout is queue.timeout plus any cold start.
				t.Reset(timeout)
				continue
			}
			if g, ok := fd.leave(m, w); ok {
				if g.err != nil {
					return nil, time.Since(w.since), g.err
				}
				return g.s, time.Since(w.since), nil
			}
			return nil, time.Since(w.since), errorf(http.StatusServiceUnavailable, apiv1.CodeQueueTimeout,
				"no worker of %s became free within %s", m.name, timeout)
		}
	}
}

// leave takes w out of m's queue; when it was granted meanwhile, the grant
// is returned (ok) and the caller owns it.
func (fd *FrontDoor) leave(m *model, w *waiter) (grant, bool) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	for i, x := range m.queue {
		if x == w {
			m.queue = append(m.queue[:i], m.queue[i+1:]...)
			return grant{}, false
		}
	}
	return <-w.ch, true // granted (or failed) under the lock: it is in the channel
}

// release gives back a request slot taken by acquire.
func (fd *FrontDoor) release(s *slot) {
	if s == nil {
		return
	}
	fd.mu.Lock()
	defer fd.mu.Unlock()
	s.inflight--
	s.m.inflight--
	s.lastUsed = time.Now()
	fd.dispatchLocked(s.m)
	if s.inflight == 0 {
		fd.kickLocked()
	}
}

// notReady marks s as not ready after its owner refused a request,
// unless it has become ready again meanwhile; the next event sets it.
func (fd *FrontDoor) notReady(s *slot) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if info := s.w.Info(); info == nil || !info.State.Ready() {
		s.ready = false
	}
}

// Models returns GET /v1/models: each model in OpenAI's shape with its
// workers by state, requests in flight and queued.
func (fd *FrontDoor) Models() apiv1.OpenAIModelList {
	out := apiv1.OpenAIModelList{Object: "list", Data: make([]apiv1.OpenAIModel, 0, len(fd.models))}
	fd.mu.Lock()
	defer fd.mu.Unlock()
	for _, m := range fd.models {
		st := apiv1.ModelServeState{Workers: map[string]int{}, InFlight: m.inflight, Queued: len(m.queue)}
		for _, s := range m.slots {
			if info := s.w.Info(); info != nil {
				st.Workers[string(info.State)]++
			}
		}
		out.Data = append(out.Data, apiv1.OpenAIModel{ID: m.name, Object: "model", OwnedBy: "rbee-hive", Created: fd.created, Rbee: st})
	}
	return out
}

// withIdleTimeoutOff returns settings with idle_timeout 0.
func withIdleTimeoutOff(raw json.RawMessage) json.RawMessage {
	s := map[string]any{}
	_ = json.Unmarshal(raw, &s)
	s["idle_timeout"] = "0"
	b, _ := json.Marshal(s)
	return b
}

// WorkerLoad is one front-door worker's routing state, for those outside
// the hive that route to it (the cluster registry, SPEC §12).
type WorkerLoad struct {
	ID             string
	Model          string
	Ready          bool
	InFlight       int
	MaxConcurrency int
}

// Loads lists the routing state of the front door's workers.
func (fd *FrontDoor) Loads() []WorkerLoad {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	out := make([]WorkerLoad, 0, len(fd.byID))
	for _, m := range fd.models {
		for _, s := range m.slots {
			out = append(out, WorkerLoad{ID: s.id, Model: m.name, Ready: s.ready, InFlight: s.inflight, MaxConcurrency: slotConc(s)})
		}
	}
	return out
}
