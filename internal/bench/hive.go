package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/client"
	"github.com/rbee/rbee-hive/internal/hive"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/testutil/daemonkit"
)

// Bins are the binaries the benchmark runs.
type Bins struct {
	Hive    string // rbee-hive (the reference worker is looked up beside it)
	Worker  string // llm-worker-rbee
	Generic string // the generic HTTP test worker (internal/testutil/genericworker)
}

// FindBins checks that dir holds the three binaries and returns their
// absolute paths.
func FindBins(dir string) (Bins, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Bins{}, err
	}
	b := Bins{
		Hive:    filepath.Join(abs, "rbee-hive"),
		Worker:  filepath.Join(abs, "llm-worker-rbee"),
		Generic: filepath.Join(abs, "genericworker"),
	}
	for _, p := range []string{b.Hive, b.Worker, b.Generic} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			return b, fmt.Errorf("binary %s missing (build with: go build -o bin/ ./cmd/... && go build -o bin/genericworker ./internal/testutil/genericworker; or run make bench)", p)
		}
	}
	return b, nil
}

// HiveOptions shape one benchmark daemon.
type HiveOptions struct {
	// Settings is YAML for the defaults block, each line indented by two
	// spaces.
	Settings string
	// Extra is YAML appended at the top level (profiles, shutdown_timeout).
	Extra string
	// Ports is the width of the worker port range.
	Ports int
	// Args are extra daemon flags.
	Args []string
	// TmpDir is where the temporary directory (and so the state dir with
	// its durable registry) is made; "" means os.TempDir().
	TmpDir string
	// Keep leaves the temporary directory (config, state, hive.log) after
	// Close, for a look at the daemon's log.
	Keep bool
}

// Hive is a running benchmark daemon.
type Hive struct {
	Dir     string // temporary directory (state dir, config, log)
	Model   string // the small model file
	Ref     string // "file:" + Model
	URL     string
	PID     int
	Client  *client.Client
	Events  *Events
	Marker  string
	Config  string
	LogPath string
	keep    bool

	cmd       *exec.Cmd
	closeOnce sync.Once
	leftovers int
	exited    chan struct{}
	exitErr   error
	cancel    context.CancelFunc
	evDone    chan struct{}
}

// benchClient is an API client whose transport keeps enough idle
// connections for bounded-concurrency spawning.
func benchClient(base string) *client.Client {
	c := client.New(base, "")
	c.HTTP = &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        128,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     time.Minute,
	}}
	return c
}

// writeModel writes the built-in stories260K model (the reference worker
// loads it for real).
func writeModel(path string) error {
	return os.WriteFile(path, builtinmodel.Bytes(), 0o600)
}

// StartHive starts bin/rbee-hive on a fresh state directory with a config
// generated from o, waits for /health and subscribes to /v1/events.
func StartHive(bins Bins, o HiveOptions) (*Hive, error) {
	dir, err := os.MkdirTemp(o.TmpDir, "hivebench-")
	if err != nil {
		return nil, err
	}
	state := filepath.Join(dir, "state")
	_, model, err := daemonkit.PrepareStateDir(state)
	if err != nil {
		return nil, err
	}
	width := max(o.Ports, 16)
	base, err := daemonkit.FreeRange(width + 1)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(base)
	// The scale scenario runs up to a worker per port: above the default
	// max_workers (256), and with each worker's heartbeat connection held
	// open, near the default max_connections (1024).
	caps := fmt.Sprintf("max_workers: %d\nmax_connections: %d\n", max(width, 256), max(4*width, 1024))
	cfg := daemonkit.Config{Addr: addr, StateDir: state, PortMin: base + 1, PortMax: base + width,
		MemoryReserve: -1, Settings: o.Settings, Extra: caps + o.Extra}.YAML()
	h := &Hive{
		Dir: dir, Model: model, Ref: "file:" + model, URL: "http://" + addr,
		Marker: hive.InstanceID(state), Config: filepath.Join(dir, "hive.yaml"),
		LogPath: filepath.Join(dir, "hive.log"), exited: make(chan struct{}), keep: o.Keep,
	}
	if err := os.WriteFile(h.Config, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(h.LogPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	h.cmd = exec.Command(bins.Hive, append([]string{"daemon", "--config", h.Config}, o.Args...)...)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The daemon runs in dev mode (loopback, no token): an operator token
	// or hive URL from the caller's environment must not reach it.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RBEE_") {
			h.cmd.Env = append(h.cmd.Env, kv)
		}
	}
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	h.PID = h.cmd.Process.Pid
	go func() {
		h.exitErr = h.cmd.Wait()
		close(h.exited)
	}()
	h.Client = benchClient(h.URL)
	switch err := daemonkit.WaitHealthy(h.URL, h.exited, 20*time.Second); {
	case errors.Is(err, daemonkit.ErrExited):
		h.Close()
		return nil, fmt.Errorf("rbee-hive exited at start: %v\n%s", h.exitErr, h.LogTail(20))
	case err != nil:
		h.Close()
		return nil, fmt.Errorf("rbee-hive: %w\n%s", err, h.LogTail(20))
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.Events = newEvents()
	h.evDone = make(chan struct{})
	opened := make(chan error, 1)
	go func() {
		defer close(h.evDone)
		h.Events.fail(stream(ctx, h.URL+"/v1/events", opened, h.Events.put))
	}()
	// The hive subscribes before it writes the stream's headers, so once
	// they are in no event can be missed.
	select {
	case err := <-opened:
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("event stream: %w", err)
		}
	case <-time.After(10 * time.Second):
		h.Close()
		return nil, errors.New("event stream did not open within 10s")
	}
	return h, nil
}

// LogTail returns the last n lines of the daemon's log.
func (h *Hive) LogTail(n int) string {
	b, _ := os.ReadFile(h.LogPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Running reports whether the daemon has not exited.
func (h *Hive) Running() bool {
	select {
	case <-h.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits up to timeout for the daemon to exit. It
// returns the wall time from the signal to the exit (observed by wait(2)).
func (h *Hive) Stop(timeout time.Duration) (time.Duration, error) {
	took, err := daemonkit.Stop(h.PID, h.exited, timeout)
	if err == nil && h.exitErr != nil {
		err = fmt.Errorf("rbee-hive exited with %v", h.exitErr)
	}
	return took, err
}

// Leftovers returns live processes carrying this hive's marker.
func (h *Hive) Leftovers() []int { return process.FindByEnv("RBEE_HIVE_MARKER", h.Marker) }

// Close kills the daemon if it still runs, kills any process of its that
// survived (returning how many), and removes its directory unless something
// survived. Idempotent.
func (h *Hive) Close() (leftovers int) {
	h.closeOnce.Do(func() { h.leftovers = h.close() })
	return h.leftovers
}

func (h *Hive) close() int {
	if h.Running() {
		if _, err := h.Stop(60 * time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "hivebench: %v\n", err)
		}
	}
	if h.cancel != nil {
		h.cancel()
		<-h.evDone
	}
	var left []int
	for i := 0; i < 100; i++ {
		if left = h.Leftovers(); len(left) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range left {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	switch {
	case len(left) == 0 && !h.keep:
		os.RemoveAll(h.Dir)
	case len(left) > 0:
		fmt.Fprintf(os.Stderr, "hivebench: %d processes of the hive in %s survived its shutdown (killed)\n", len(left), h.Dir)
	}
	return len(left)
}

// Spawn spawns one reference (or profile) worker with env and settings.
func (h *Hive) Spawn(ctx context.Context, profile string, env map[string]string, settings string) (*apiv1.SpawnResponse, error) {
	req := &apiv1.SpawnRequest{ModelRef: h.Ref, Profile: profile, Env: env}
	if settings != "" {
		req.Settings = []byte(settings)
	}
	return h.Client.Spawn(ctx, req)
}

// SpawnMany spawns n workers with at most conc spawn requests in flight;
// envFor gives each worker's env. It returns the ids in order, and the time
// from the first request until the last worker was idle (as the events
// report it).
func (h *Hive) SpawnMany(n, conc int, profile string, envFor func(i int) map[string]string) ([]string, time.Duration, error) {
	ids := make([]string, n)
	errs := make([]error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var env map[string]string
			if envFor != nil {
				env = envFor(i)
			}
			r, err := h.Spawn(ctx, profile, env, "")
			if err != nil {
				errs[i] = err
				return
			}
			ids[i] = r.WorkerID
			_, errs[i] = h.Events.WaitFor(r.WorkerID, 120*time.Second, isState("idle"))
		}()
	}
	wg.Wait()
	took := time.Since(t0)
	return ids, took, errors.Join(errs...)
}

// Pids returns the pid of each live worker, by id.
func (h *Hive) Pids() (map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, err := h.Client.List(ctx, false)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, w := range ws {
		out[w.ID] = w.PID
	}
	return out, nil
}
