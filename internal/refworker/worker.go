package refworker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// Main runs the worker with the command-line arguments args (without the
// program name) and the environment read through getenv, and returns the
// process exit code (ExitOK, ExitFailure, ExitUsage, ExitCrash, or the code
// asked for by LLMW_FAKE_EXIT_CODE). It blocks until the worker is done.
//
// Main is meant to own the process: it installs handlers for SIGTERM and
// SIGINT (or ignores them, for LLMW_FAKE_IGNORE_SHUTDOWN), tunes GOMAXPROCS
// and GOGC, and may deliver a fatal signal to its own process
// (LLMW_FAKE_CRASH_SIGNAL). If ChildModeEnv is set, Main instead runs the
// sleeping child of LLMW_FAKE_FORK_CHILD / LLMW_FAKE_FORK_MANY and never
// returns unless the mode is unknown. stdout gets lines meant for tests
// ("fake: child pid N"); lifecycle logs go to stderr.
func Main(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if mode := getenv(ChildModeEnv); mode != "" {
		return runChild(mode, getenv, stderr)
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "llm-worker-rbee: %v\n", err)
		return ExitUsage
	}
	if cfg.fake.exitCodeSet {
		fmt.Fprintf(stderr, "fake: exiting with code %d\n", cfg.fake.exitCode)
		return cfg.fake.exitCode
	}
	tuneRuntime(getenv, cfg.threads)
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("worker_id", cfg.workerID)

	sigs := make(chan os.Signal, 1)
	if cfg.fake.ignoreShutdown {
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		log.Info("fake: ignoring SIGTERM and SIGINT")
	} else {
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(sigs)
	}

	if cfg.fake.forkChild != "" {
		pid, err := startChild(cfg.fake.forkChild, stdout, stderr)
		if err != nil {
			log.Error("fake: cannot start child", "err", err)
		}
		if pid != 0 {
			fmt.Fprintf(stdout, "fake: child pid %d\n", pid)
		}
	}

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.port)))
	if err != nil {
		fmt.Fprintf(stderr, "llm-worker-rbee: cannot listen on 127.0.0.1:%d: %v\n", cfg.port, err)
		return ExitUsage
	}
	w := newWorker(cfg, log, stdout, ln.Addr().(*net.TCPAddr).Port)
	return w.run(ln, sigs)
}

// tuneRuntime keeps an idle worker small, unless the environment says
// otherwise: GOMAXPROCS 2, or --threads when that is more.
func tuneRuntime(getenv func(string) string, threads int) {
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(min(max(2, threads), runtime.NumCPU()))
	}
	if getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
}

// worker is one running worker. Its mutable serving state is guarded by mu;
// the lifecycle goroutine, the heartbeat goroutine and the HTTP handlers all
// go through it.
type worker struct {
	cfg    config
	log    *slog.Logger
	stdout io.Writer
	port   int
	url    string

	ctx    context.Context // cancelled when the worker stops; ends every goroutine
	cancel context.CancelFunc
	bg     sync.WaitGroup // background goroutines owned by run

	prog *progress
	eng  *engine     // set once loaded, before ready; never changes afterwards
	hive *hiveClient // nil: standalone or never ready

	mu        sync.Mutex
	ready     bool      // serving: inference accepted
	readyAt   time.Time // when the hive accepted the ready callback; zero before
	draining  bool
	inflight  int
	completed int
	reqs      sync.WaitGroup // in-flight inference requests; Add only under mu while !draining

	shutdownReq chan struct{}    // POST /v1/shutdown; cap 1
	fatal       chan exitRequest // a fake crash; cap 1

	alloc [][]byte // LLMW_FAKE_ALLOC_MB mappings
}

// exitRequest is a crash asked for by a fake: exit with code, or die by
// signal when signal is non-zero.
type exitRequest struct {
	code   int
	signal syscall.Signal
	why    string
}

func newWorker(cfg config, log *slog.Logger, stdout io.Writer, port int) *worker {
	w := &worker{
		cfg:         cfg,
		log:         log,
		stdout:      stdout,
		port:        port,
		url:         "http://127.0.0.1:" + strconv.Itoa(port),
		prog:        newProgress(),
		shutdownReq: make(chan struct{}, 1),
		fatal:       make(chan exitRequest, 1),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	if cfg.hiveURL != "" && !cfg.fake.neverReady {
		w.hive = newHiveClient(cfg, log)
	}
	return w
}

func (w *worker) goBG(f func()) {
	w.bg.Add(1)
	go func() {
		defer w.bg.Done()
		f()
	}()
}

// run serves on ln, loads the model, announces readiness and then waits for
// the end: a signal, a shutdown request, a fake crash, or a failed load or
// ready callback. It returns the exit code.
func (w *worker) run(ln net.Listener, sigs <-chan os.Signal) int {
	srv := &http.Server{
		Handler:           w.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(w.log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	w.goBG(func() { serveErr <- srv.Serve(ln) })
	w.log.Info("listening on " + ln.Addr().String())

	if w.hive != nil {
		w.goBG(func() { w.hive.run(w.ctx, w.cfg.heartbeatInterval, w.periodicHeartbeat) })
	}
	lifeDone := make(chan error, 1)
	w.goBG(func() { lifeDone <- w.lifecycle(w.ctx) })

	for {
		select {
		case err := <-lifeDone:
			lifeDone = nil
			if err != nil {
				w.log.Error(err.Error())
				w.stop(srv)
				return ExitFailure
			}
		case sig := <-sigs:
			w.log.Info("received " + sig.String())
			return w.drain(srv)
		case <-w.shutdownReq:
			w.log.Info("shutdown requested")
			return w.drain(srv)
		case ex := <-w.fatal:
			return w.crash(srv, ex)
		case err := <-serveErr:
			w.log.Error("server stopped", "err", err)
			w.stop(srv)
			return ExitFailure
		}
	}
}

// lifecycle loads the model and announces readiness. It returns nil when the
// worker is ready (or told never to be), an error when it must exit 1.
func (w *worker) lifecycle(ctx context.Context) error {
	eng, err := w.load(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	w.mu.Lock()
	w.eng = eng
	w.mu.Unlock()
	if mb := w.cfg.fake.allocMB; mb > 0 {
		if err := w.allocate(ctx, mb); err != nil {
			w.log.Error("fake: allocation failed", "err", err)
		}
	}
	if w.cfg.fake.neverReady {
		w.log.Info("fake: never ready")
		return nil
	}
	if d := w.cfg.fake.readyDelay; d > 0 {
		if sleepUntil(ctx, time.Now().Add(d)) != nil {
			return nil
		}
	}
	w.mu.Lock()
	w.ready = true
	w.mu.Unlock()
	w.prog.finish()
	if w.hive != nil {
		err := w.hive.announceReady(ctx, apiv1.ReadyRequest{
			WorkerID: w.cfg.workerID,
			URL:      w.url,
			ModelRef: w.cfg.modelRef,
			Backend:  w.cfg.backend,
			Device:   w.cfg.device,
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	w.mu.Lock()
	w.readyAt = time.Now()
	if !w.cfg.fake.noHeartbeat {
		w.hive.ready(w.inflight > 0, w.cfg.slots, w.cfg.slots-w.inflight, false)
	}
	w.mu.Unlock()
	w.log.Info("ready", "url", w.url)
	w.startPostReadyFakes()
	return nil
}

// periodicHeartbeat is the heartbeat sent every interval once ready.
func (w *worker) periodicHeartbeat() (apiv1.HeartbeatRequest, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.readyAt.IsZero() || w.cfg.fake.noHeartbeat {
		return apiv1.HeartbeatRequest{}, false
	}
	st := "idle"
	if w.inflight > 0 {
		st = "busy"
	}
	b := w.hive.newBody(st)
	total, avail := w.cfg.slots, w.cfg.slots-w.inflight
	b.SlotsTotal, b.SlotsAvailable = &total, &avail
	return b, true
}

// Reasons an inference request is refused.
var (
	errNotReady     = apiError{http.StatusServiceUnavailable, "NOT_READY", "the model is still loading"}
	errDraining     = apiError{http.StatusServiceUnavailable, "DRAINING", "the worker is shutting down"}
	errAllSlotsBusy = apiError{http.StatusServiceUnavailable, "ALL_SLOTS_BUSY", "all inference slots are busy"}
)

// acquireSlot takes an inference slot in two parts: free gives the slot
// back (call it as soon as generation has ended, before the last bytes of
// the answer go out, so a client that sends its next request the moment it
// reads the end finds the slot free); finish ends the request (call it when
// the handler is done, with whether the answer went out whole). Each must
// be called exactly once; finish calls free if it was not called.
func (w *worker) acquireSlot() (free func(), finish func(completed bool), refusal *apiError) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.draining:
		return nil, nil, &errDraining
	case !w.ready:
		return nil, nil, &errNotReady
	case w.inflight >= w.cfg.slots:
		return nil, nil, &errAllSlotsBusy
	}
	w.inflight++
	w.reqs.Add(1)
	if w.inflight == 1 {
		w.stateChangedLocked()
	}
	var once sync.Once
	free = func() {
		once.Do(func() {
			w.mu.Lock()
			w.inflight--
			if w.inflight == 0 {
				w.stateChangedLocked()
			}
			w.mu.Unlock()
		})
	}
	return free, func(completed bool) { free(); w.finishRequest(completed) }, nil
}

func (w *worker) finishRequest(completed bool) {
	n := 0
	if completed {
		w.mu.Lock()
		w.completed++
		n = w.completed
		w.mu.Unlock()
	}
	w.reqs.Done()
	if lim := w.cfg.fake.crashAfterRequests; completed && lim > 0 && n == lim {
		w.requestCrash(fmt.Sprintf("after %d completed requests", n))
	}
}

func (w *worker) stateChangedLocked() {
	if !w.readyAt.IsZero() && !w.cfg.fake.noHeartbeat {
		w.hive.ready(w.inflight > 0, w.cfg.slots, w.cfg.slots-w.inflight, true)
	}
}

// requestCrash asks run to crash the process as the fakes say.
func (w *worker) requestCrash(why string) {
	select {
	case w.fatal <- exitRequest{code: ExitCrash, signal: w.cfg.fake.crashSignal, why: why}:
	default:
	}
}

// drain stops taking requests, waits up to the drain timeout for in-flight
// ones, stops everything and returns ExitOK.
func (w *worker) drain(srv *http.Server) int {
	w.mu.Lock()
	w.draining = true
	n := w.inflight
	w.mu.Unlock()
	w.log.Info("draining", "in_flight", n)
	idle := make(chan struct{})
	go func() { // ends when the last request does; the cancel in stop bounds that
		w.reqs.Wait()
		close(idle)
	}()
	t := time.NewTimer(w.cfg.drainTimeout)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		w.mu.Lock()
		n = w.inflight
		w.mu.Unlock()
		w.log.Warn("drain timeout: cutting off in-flight requests", "in_flight", n, "timeout", w.cfg.drainTimeout)
	}
	w.stop(srv)
	return ExitOK
}

// crash ends the process the way a fake asked.
func (w *worker) crash(srv *http.Server, ex exitRequest) int {
	if ex.signal != 0 {
		w.log.Error(fmt.Sprintf("fake: crashing with signal %v %s", ex.signal, ex.why))
		dieBySignal(ex.signal)
		w.log.Error("fake: still alive after the signal, exiting instead")
	} else if ex.code == ExitOK {
		w.log.Warn(fmt.Sprintf("fake: exiting with code 0 %s", ex.why))
	} else {
		w.log.Error(fmt.Sprintf("fake: crashing with exit code %d %s", ex.code, ex.why))
	}
	w.cancel()
	srv.Close()
	return ex.code
}

// stop cancels everything, closes the server and waits for the background
// goroutines.
func (w *worker) stop(srv *http.Server) {
	w.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		w.log.Warn("server shutdown", "err", err)
	}
	srv.Close()
	w.bg.Wait()
	w.freeAlloc()
	w.log.Info("exiting")
}
