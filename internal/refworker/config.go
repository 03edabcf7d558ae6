package refworker

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Exit codes of Main.
const (
	// ExitOK: a clean exit after a drain (shutdown request, SIGTERM, SIGINT).
	ExitOK = 0
	// ExitFailure: the model could not be loaded, the hive refused the ready
	// callback (4xx), or the hive stayed unreachable for the whole retry budget.
	ExitFailure = 1
	// ExitUsage: bad flags or environment, or the port could not be bound.
	ExitUsage = 2
	// ExitCrash: a crash asked for through LLMW_FAKE_CRASH_AFTER_*.
	ExitCrash = 3
)

// ErrUsage marks a bad command line or environment value.
var ErrUsage = errors.New("usage")

// config is everything the worker was told, from flags and environment.
type config struct {
	workerID  string
	modelPath string
	modelRef  string
	backend   string
	device    int
	port      int
	hiveURL   string // without a trailing slash; "" runs standalone
	// testMode (--test-mode) is the only way the LLMW_FAKE_* misbehaviours
	// and the ready stamp are honoured: without it they are ignored, so a
	// spawn request's env can never switch them on (SPEC §5, §14).
	testMode bool

	ctx     int // --ctx: tokens per slot; 0: the model's, at least defaultCtx
	threads int // --threads: goroutines per matrix product
	// parallel is --parallel as given (0: not given); slots is the
	// effective slot count: --parallel, else RBEE_WORKER_SLOTS, else 1.
	parallel int

	token             string
	heartbeatInterval time.Duration
	slots             int
	drainTimeout      time.Duration
	loadDelay         time.Duration // LLMW_FAKE_LOAD_MS
	tokenDelay        time.Duration // LLMW_FAKE_TOKEN_DELAY_MS
	// readyStamp (LLMW_FAKE_READY_STAMP) is a file that gets "PID NS" after
	// the hive accepted the ready callback, NS being the wall-clock time in
	// Unix nanoseconds just before the accepted POST was sent.
	readyStamp string

	fake fakes
}

// fakes are the misbehaviours switched on by LLMW_FAKE_* variables.
type fakes struct {
	exitCode           int
	exitCodeSet        bool
	neverReady         bool
	readyDelay         time.Duration
	crashAfterRequests int           // 0: off
	crashAfter         time.Duration // 0: off
	exitAfter          time.Duration // 0: off; a clean exit 0 nobody asked for
	crashSignal        syscall.Signal
	hangHealth         bool
	hangHealthAfter    time.Duration
	hangHealthAfterSet bool
	noHeartbeat        bool
	ignoreShutdown     bool
	forkChild          string // "", "1" or "setsid"
	allocMB            int
	forkMany           int
	busyLoop           bool
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("llm-worker-rbee", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.workerID, "worker-id", "", "worker id given by the hive (required)")
	fs.StringVar(&c.modelPath, "model", "", "path of the model file to load (required)")
	fs.StringVar(&c.modelRef, "model-ref", "", "model reference, reported back in the ready callback")
	fs.StringVar(&c.backend, "backend", "cpu", "backend name")
	fs.IntVar(&c.device, "device", 0, "device index")
	fs.IntVar(&c.port, "port", -1, "port to bind on 127.0.0.1 (0: any free port) (required)")
	fs.StringVar(&c.hiveURL, "hive-url", "", "hive base URL, e.g. http://127.0.0.1:9200 (empty: standalone)")
	fs.IntVar(&c.ctx, "ctx", 0, "context size per slot in tokens (0: the model's context length, within 512..4096)")
	fs.IntVar(&c.parallel, "parallel", 0, "inference slots, each with its own KV cache (default: RBEE_WORKER_SLOTS, else 1)")
	fs.IntVar(&c.threads, "threads", 1, "goroutines each matrix product is split across")
	fs.BoolVar(&c.testMode, "test-mode", false, "honour the LLMW_FAKE_* misbehaviour variables (tests and benchmarks only)")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	switch {
	case c.workerID == "":
		return c, fmt.Errorf("%w: --worker-id is required", ErrUsage)
	case c.modelPath == "":
		return c, fmt.Errorf("%w: --model is required", ErrUsage)
	case c.port < 0 || c.port > 65535:
		return c, fmt.Errorf("%w: --port is required and must be 0..65535", ErrUsage)
	case c.ctx < 0 || c.ctx > 1<<20:
		return c, fmt.Errorf("%w: --ctx must be 0..1048576", ErrUsage)
	case c.parallel < 0 || c.parallel > 1024:
		return c, fmt.Errorf("%w: --parallel must be 1..1024", ErrUsage)
	case c.threads < 1 || c.threads > 1024:
		return c, fmt.Errorf("%w: --threads must be 1..1024", ErrUsage)
	}
	if c.hiveURL != "" {
		u, err := url.Parse(c.hiveURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("%w: --hive-url %q is not an http(s) URL", ErrUsage, c.hiveURL)
		}
		c.hiveURL = strings.TrimRight(c.hiveURL, "/")
	}

	e := envReader{getenv: getenv}
	c.token = getenv("RBEE_WORKER_TOKEN")
	c.heartbeatInterval = e.ms("RBEE_HEARTBEAT_INTERVAL_MS", 5000)
	c.slots = e.int("RBEE_WORKER_SLOTS", 1)
	if c.parallel > 0 {
		c.slots = c.parallel
	}
	c.drainTimeout = e.ms("RBEE_DRAIN_TIMEOUT_MS", 5000)
	if c.heartbeatInterval <= 0 {
		e.fail("RBEE_HEARTBEAT_INTERVAL_MS", "must be positive")
	}
	if c.slots <= 0 {
		e.fail("RBEE_WORKER_SLOTS", "must be positive")
	}
	if !c.testMode {
		return c, e.err
	}

	c.loadDelay = e.ms("LLMW_FAKE_LOAD_MS", 0)
	c.tokenDelay = e.ms("LLMW_FAKE_TOKEN_DELAY_MS", 0)
	c.readyStamp = getenv("LLMW_FAKE_READY_STAMP")
	f := &c.fake
	if getenv("LLMW_FAKE_EXIT_CODE") != "" {
		f.exitCode, f.exitCodeSet = e.int("LLMW_FAKE_EXIT_CODE", 0), true
	}
	f.neverReady = e.bool("LLMW_FAKE_NEVER_READY")
	f.readyDelay = e.ms("LLMW_FAKE_READY_DELAY_MS", 0)
	f.crashAfterRequests = e.int("LLMW_FAKE_CRASH_AFTER_REQUESTS", 0)
	f.crashAfter = e.ms("LLMW_FAKE_CRASH_AFTER_MS", 0)
	f.exitAfter = e.ms("LLMW_FAKE_EXIT_AFTER_MS", 0)
	switch s := strings.TrimPrefix(strings.ToUpper(getenv("LLMW_FAKE_CRASH_SIGNAL")), "SIG"); s {
	case "":
	case "ABRT":
		f.crashSignal = syscall.SIGABRT
	case "SEGV":
		f.crashSignal = syscall.SIGSEGV
	case "KILL":
		f.crashSignal = syscall.SIGKILL
	default:
		e.fail("LLMW_FAKE_CRASH_SIGNAL", "must be ABRT, SEGV or KILL")
	}
	f.hangHealth = e.bool("LLMW_FAKE_HANG_HEALTH")
	if getenv("LLMW_FAKE_HANG_HEALTH_AFTER_MS") != "" {
		f.hangHealthAfter, f.hangHealthAfterSet = e.ms("LLMW_FAKE_HANG_HEALTH_AFTER_MS", 0), true
	}
	f.noHeartbeat = e.bool("LLMW_FAKE_NO_HEARTBEAT")
	f.ignoreShutdown = e.bool("LLMW_FAKE_IGNORE_SHUTDOWN")
	switch s := getenv("LLMW_FAKE_FORK_CHILD"); s {
	case "", "0":
	case "1", "setsid":
		f.forkChild = s
	default:
		e.fail("LLMW_FAKE_FORK_CHILD", "must be 1 or setsid")
	}
	f.allocMB = e.int("LLMW_FAKE_ALLOC_MB", 0)
	f.forkMany = e.int("LLMW_FAKE_FORK_MANY", 0)
	f.busyLoop = e.bool("LLMW_FAKE_BUSY_LOOP")
	return c, e.err
}

// envReader parses environment variables, keeping the first error.
type envReader struct {
	getenv func(string) string
	err    error
}

func (e *envReader) fail(name, why string) {
	if e.err == nil {
		e.err = fmt.Errorf("%w: %s=%q %s", ErrUsage, name, e.getenv(name), why)
	}
}

func (e *envReader) int(name string, def int) int {
	s := e.getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		e.fail(name, "is not a non-negative integer")
		return def
	}
	return n
}

func (e *envReader) ms(name string, def int) time.Duration {
	return time.Duration(e.int(name, def)) * time.Millisecond
}

func (e *envReader) bool(name string) bool {
	switch strings.ToLower(strings.TrimSpace(e.getenv(name))) {
	case "", "0", "false", "no":
		return false
	case "1", "true", "yes":
		return true
	}
	e.fail(name, "is not a boolean (1 or 0)")
	return false
}

// testProfile overrides the built-in rbee profile so that the hive starts
// the reference worker with --test-mode.
const testProfile = "  rbee: {command: [llm-worker-rbee, --test-mode, --ctx, \"{ctx}\"], protocol: rbee, allow_env: [\"LLMW_FAKE_*\"]}\n"

// WithTestMode returns hive config YAML (a whole document) in which the
// rbee profile starts the reference worker with --test-mode, so tests and
// benchmarks can drive its LLMW_FAKE_* misbehaviours through spawn
// requests' env. A `profiles:` block already in cfg gets the override as
// its first entry; otherwise one is appended.
func WithTestMode(cfg string) string {
	if i := strings.Index(cfg, "profiles:\n"); i >= 0 && (i == 0 || cfg[i-1] == '\n') {
		j := i + len("profiles:\n")
		return cfg[:j] + testProfile + cfg[j:]
	}
	if cfg != "" && !strings.HasSuffix(cfg, "\n") {
		cfg += "\n"
	}
	return cfg + "profiles:\n" + testProfile
}
