// Package daemon runs `rbee-hive daemon`: it loads the configuration,
// enforces the binding rules, detects cgroups, serves the API, and turns
// SIGINT/SIGTERM into the hive's bounded, parallel shutdown.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/api"
	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/cluster"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/console"
	"github.com/rbee/rbee-hive/internal/frontdoor"
	"github.com/rbee/rbee-hive/internal/h1"
	"github.com/rbee/rbee-hive/internal/hive"
	"github.com/rbee/rbee-hive/internal/metrics"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/sdnotify"
	"github.com/rbee/rbee-hive/internal/version"
)

// Options are the daemon's command-line settings; each overrides the config.
type Options struct {
	ConfigPath  string
	Addr        string
	StateDir    string
	LogFormat   string
	LogLevel    string
	KeepWorkers bool // --keep-workers-on-exit
	// PprofAddr, when set (--pprof), serves net/http/pprof on that
	// loopback address, for profiling; empty serves nothing.
	PprofAddr string
	Stderr    io.Writer
	// Signals delivers shutdown signals; nil means SIGINT and SIGTERM of
	// this process.
	Signals <-chan os.Signal
}

// ErrTokenRequired: a non-loopback bind without an operator token.
var ErrTokenRequired = errors.New("API token required for non-loopback bind")

// LoadConfig reads the config file (or the embedded defaults) and applies
// the command line and environment.
func LoadConfig(o Options) (config.Config, error) {
	cfg := config.Default()
	if o.ConfigPath != "" {
		c, err := config.Load(o.ConfigPath)
		if err != nil {
			return cfg, err
		}
		cfg = c
	}
	if o.Addr != "" {
		cfg.Addr = o.Addr
	}
	if o.StateDir != "" {
		cfg.StateDir = o.StateDir
	}
	if o.LogFormat != "" {
		cfg.LogFormat = o.LogFormat
	}
	if o.LogLevel != "" {
		cfg.LogLevel = o.LogLevel
	}
	if cfg.APIToken != "" && cfg.APITokenFile != "" {
		return cfg, errors.New("config: api_token and api_token_file are both set; use one")
	}
	if t := os.Getenv("RBEE_API_TOKEN"); t != "" {
		cfg.APIToken = t
	}
	if cfg.APIToken == "" && cfg.APITokenFile != "" {
		b, err := readTokenFile(cfg.APITokenFile)
		if err != nil {
			return cfg, err
		}
		cfg.APIToken = string(b)
		if strings.TrimSpace(cfg.APIToken) == "" {
			return cfg, fmt.Errorf("api_token_file %s is empty", cfg.APITokenFile)
		}
	}
	cfg.APIToken = strings.TrimSpace(cfg.APIToken)
	if err := checkToken(cfg.APIToken); err != nil {
		return cfg, err
	}
	if cfg.InferenceTokensFile != "" {
		b, err := readTokenFile(cfg.InferenceTokensFile)
		if err != nil {
			return cfg, fmt.Errorf("inference_tokens_file: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				cfg.InferenceTokens = append(cfg.InferenceTokens, line)
			}
		}
		if len(cfg.InferenceTokens) == 0 {
			return cfg, fmt.Errorf("inference_tokens_file %s holds no token", cfg.InferenceTokensFile)
		}
	}
	for _, t := range cfg.InferenceTokens {
		if err := checkToken(t); err != nil {
			return cfg, fmt.Errorf("inference token: %w", err)
		}
	}
	if cfg.StateDir == "" {
		cfg.StateDir = config.DefaultStateDir()
	}
	return cfg, cfg.Validate()
}

// readTokenFile reads the operator token file, refusing one that other
// users could replace (group- or world-writable) or read (world-readable).
func readTokenFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("api_token_file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("api_token_file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("api_token_file %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o027 != 0 {
		return nil, fmt.Errorf("api_token_file %s has mode %o: other users can read or change it (chmod 600 it)", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, api.MaxAuthHeaderBytes+1))
	if err != nil {
		return nil, fmt.Errorf("api_token_file: %w", err)
	}
	return b, nil
}

// checkToken refuses an operator token that no client could send: spaces
// or control characters inside it, or longer than the API accepts.
func checkToken(tok string) error {
	if len(tok) > api.MaxAuthHeaderBytes-len("Bearer ") {
		return fmt.Errorf("API token is %d bytes long; at most %d are accepted", len(tok), api.MaxAuthHeaderBytes-len("Bearer "))
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c < 0x21 || c == 0x7f {
			return errors.New("API token contains spaces or control characters")
		}
	}
	return nil
}

// NewLogger returns the daemon's slog logger.
func NewLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	switch level {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// IsLoopback reports whether addr (host:port) binds only loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Run runs the daemon until a shutdown signal (or ctx) ends it. A clean
// shutdown returns nil.
func Run(ctx context.Context, o Options) error {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	// SIGINT and SIGTERM are caught from the start: one that comes while
	// the hive recovers or before it serves is a graceful shutdown once it
	// can take one, never Go's default exit with the workers unaccounted.
	sigs := o.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 2)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(ch)
		sigs = ch
	}
	cfg, err := LoadConfig(o)
	if err != nil {
		return err
	}
	log := NewLogger(o.Stderr, cfg.LogFormat, cfg.LogLevel)
	for _, w := range cfg.Warnings() {
		log.Warn("Config: " + w)
	}
	loopback := IsLoopback(cfg.Addr)
	if cfg.APIToken == "" && !loopback {
		return fmt.Errorf("%w (addr %s): set RBEE_API_TOKEN or api_token_file", ErrTokenRequired, cfg.Addr)
	}
	if cc := cfg.Cluster.WithDefaults(cfg.Addr); cfg.Cluster.Enabled() && cfg.APIToken == "" && !cc.AdvertisesLoopback() {
		return fmt.Errorf("%w (cluster.advertise %s): set RBEE_API_TOKEN or api_token_file", ErrTokenRequired, cc.Advertise)
	}
	if cfg.APIToken == "" {
		log.Warn("Dev mode: no API token, operator API open to local users on loopback", "addr", cfg.Addr)
	} else {
		log.Info("Operator auth enabled", "token_fingerprint", api.Fingerprint(cfg.APIToken))
		if len(cfg.APIToken) < 16 {
			log.Warn("The API token is short; use at least 32 random characters (openssl rand -hex 32)")
		}
	}

	if err := hive.PrepareStateDir(cfg.StateDir); err != nil {
		return err
	}
	// One hive per state dir, for the daemon's whole life (SPEC §3).
	lock, err := hive.LockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	hardenSelf(log)
	// The built-in model, so the embedded default config serves out of the box.
	if len(cfg.ModelRoots) == 0 {
		if p, err := builtinmodel.WriteTo(filepath.Join(cfg.StateDir, "models")); err != nil {
			log.Warn("Cannot write the built-in model", "error", err)
		} else {
			log.Info("Built-in model available", "path", p)
		}
	}
	// Grandchildren orphaned by a dying worker are re-parented to the hive
	// and reaped here, so none is left as a zombie.
	if err := process.BecomeSubreaper(); err != nil {
		log.Warn("Cannot become child subreaper; orphaned grandchildren go to PID 1", "error", err)
	}
	instance := hive.InstanceID(cfg.StateDir)
	// A process that escaped its worker and is handed to the hive is
	// killed at once (SPEC §14).
	reaper, err := process.StartReaperKillingEscapes(log, hive.MarkerEnv, instance)
	if err != nil {
		return err
	}
	defer reaper.Close()
	cg, err := cgroup.New(cgroup.Options{Scope: "rbee-hive/" + instance, Logger: log})
	if err != nil {
		log.Warn("cgroups unavailable", "error", err)
		cg = nil
	} else {
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	// A name such as "localhost" passed the check above; what counts is the
	// address it resolved to.
	if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		if cfg.APIToken == "" {
			ln.Close()
			return fmt.Errorf("%w (addr %s is %s): set RBEE_API_TOKEN or api_token_file", ErrTokenRequired, cfg.Addr, ln.Addr())
		}
		loopback = false
	}
	hiveURL := "http://" + callbackAddr(ln.Addr().(*net.TCPAddr))
	notifier, err := sdnotify.FromEnv(nil)
	if err != nil {
		log.Warn("Not notifying the service manager", "error", err)
	}
	mx := metrics.New(metrics.Options{Version: version.Version, StateDir: cfg.StateDir})
	h, err := hive.New(cfg, hive.Options{Logger: log, HiveURL: hiveURL, Cgroups: cg, Metrics: mx})
	if err != nil {
		ln.Close()
		return err
	}
	// Re-adopt the workers an earlier hive left (SIGKILL, crash, or
	// --keep-workers-on-exit) and kill its orphans, before serving.
	if _, err := h.Recover(ctx); err != nil {
		log.Error("Recovering workers failed", "error", err)
	}
	mx.WatchWorkers(h)
	fdm := frontdoor.NewMetrics()
	if err := mx.Register(fdm.Collectors()...); err != nil {
		return fmt.Errorf("front door metrics: %w", err)
	}
	fd, err := frontdoor.New(frontdoor.Options{Source: frontdoor.HiveSource{H: h}, Config: cfg, Logger: log, Metrics: fdm})
	if err != nil {
		h.Shutdown(ctx)
		ln.Close()
		return err
	}
	fd.Start()
	var member *cluster.Member
	if cfg.Cluster.Enabled() {
		if member, err = cluster.Join(cfg, h, fd, log); err != nil {
			fd.Close()
			h.Shutdown(ctx)
			ln.Close()
			return err
		}
	}
	log.Info("Front door serving models", "models", strings.Join(fd.Names(), ","), "memory_budget_bytes", fd.Budget(),
		"inference_tokens", len(cfg.InferenceTokens))
	conns := api.NewConns(cfg.MaxConnections, log)
	ln = conns.Listener(ln)
	srv := &http.Server{
		ConnContext: conns.ConnContext,
		ConnState:   conns.ConnState,
		Handler: api.New(api.Options{
			Hive: h, Logger: log, Token: cfg.APIToken,
			MetricsPublic: cfg.MetricsPublic, MetricsLoopback: loopback,
			Metrics: mx.Handler(), Observe: mx.Observe, OpenAPI: api.OpenAPIDocument(),
			FrontDoor: fd, InferenceTokens: cfg.InferenceTokens,
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	// Long-lived streams (/v1/events, logs --follow) end when the server
	// shuts down; otherwise each open one would hold srv.Shutdown for its
	// whole 2 s grace.
	streams, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	srv.BaseContext = func(net.Listener) context.Context { return streams }
	srv.RegisterOnShutdown(endStreams)
	// The inference routes are read by the lean server; everything else
	// (and anything unusual on those routes) by srv.
	fast := &h1.Server{
		Handler: srv.Handler, Routes: apiv1.InferenceRoutes, Fallback: srv,
		BaseContext: streams, ConnContext: conns.ConnContext, ConnState: conns.ConnState,
		ReadHeaderTimeout: srv.ReadHeaderTimeout, ReadTimeout: srv.ReadTimeout,
		WriteTimeout: srv.WriteTimeout, IdleTimeout: srv.IdleTimeout, Log: log,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- fast.Serve(ln) }()
	if o.PprofAddr != "" {
		stop, err := ServePprof(o.PprofAddr, log)
		if err != nil {
			log.Error("pprof not served", "addr", o.PprofAddr, "error", err)
		} else {
			defer stop()
		}
	}
	log.Info("rbee-hive listening", "addr", ln.Addr().String(), "version", version.Version,
		"state_dir", cfg.StateDir, "pid", os.Getpid())
	if err := notifier.Notify(sdnotify.Ready, "STATUS=serving on "+ln.Addr().String()); err != nil {
		log.Warn("sd_notify READY failed", "error", err)
	}
	wdCtx, wdStop := context.WithCancel(context.Background())
	wdDone := make(chan struct{})
	go func() {
		defer close(wdDone)
		notifier.RunWatchdog(wdCtx, func(err error) { log.Warn("sd_notify WATCHDOG failed", "error", err) })
	}()
	defer func() { wdStop(); <-wdDone }()
	if wd := notifier.WatchdogTimeout(); wd > 0 {
		log.Info("systemd watchdog enabled", "timeout", wd.String(), "ping_every", (wd / 2).String())
	}

	var runErr error
	select {
	case s := <-sigs:
		log.Info("Received signal, shutting down", "signal", s.String())
	case <-ctx.Done():
		log.Info("Context ended, shutting down")
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
		log.Error("API server failed", "error", err)
	}
	// The API takes no spawn from here on (503 SHUTTING_DOWN); the hive's
	// shutdown snapshot comes after.
	h.StopAdmitting()

	if err := notifier.Notify(sdnotify.Stopping, "STATUS=stopping workers"); err != nil {
		log.Warn("sd_notify STOPPING failed", "error", err)
	}
	start := time.Now()
	budget, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	go func() {
		select {
		case s := <-sigs:
			log.Warn("Second signal: killing remaining workers now", "signal", s.String())
			cancel()
		case <-budget.Done():
		}
	}()
	// The front door stops starting workers (and answers what waits)
	// before the workers are stopped.
	if member != nil {
		// Queens stop routing here at once, not when the lease expires.
		leaveCtx, leaveCancel := context.WithTimeout(context.Background(), 2*time.Second)
		member.Leave(leaveCtx)
		leaveCancel()
	}
	fd.Close()
	if o.KeepWorkers {
		h.Detach(budget)
	} else {
		h.Shutdown(budget)
	}
	shutCtx, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	_ = fast.Shutdown(shutCtx)
	took := time.Since(start)
	if err := mx.ShutdownDone(took); err != nil {
		log.Warn("Recording the shutdown duration failed", "error", err)
	}
	log.Info("rbee-hive stopped", "shutdown_seconds", took.Seconds())
	return runErr
}

// callbackAddr is the address workers use to reach the hive: loopback when
// the hive listens on every address.
func callbackAddr(a *net.TCPAddr) string {
	if a.IP == nil || a.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(a.Port))
	}
	return a.String()
}

// ServePprof serves net/http/pprof on addr, which must be a loopback
// address, and only to requests whose Host is loopback (a web page cannot
// reach it through DNS rebinding). The returned func stops it.
func ServePprof(addr string, log *slog.Logger) (func(), error) {
	if !IsLoopback(addr) {
		return nil, fmt.Errorf("--pprof %s: only a loopback address is allowed", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	// A name passed the check above; what counts is what it resolved to.
	if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("--pprof %s resolves to %s: only a loopback address is allowed", addr, ln.Addr())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	guard := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The API's browser guard, as in dev mode: a loopback Host only
		// (DNS rebinding), and nothing a page of another site sends.
		if why := console.CrossSite(r, true, "pprof listener"); why != "" {
			http.Error(w, why, http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: guard, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("pprof listening", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}
