// Package config holds the hive's configuration (SPEC §9): the YAML file, its
// embedded defaults, per-worker Settings that a spawn request may override,
// and fast, side-effect-free validation.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as a string such as "250ms" or "5m"
// in YAML and JSON. The bare number 0 is also accepted and means zero.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

func parseDuration(s string) (Duration, error) {
	if s == "0" {
		return 0, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want a string such as \"250ms\", \"30s\", \"5m\")", s)
	}
	return Duration(v), nil
}

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string (or the number 0).
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "0" {
		*d = 0
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("invalid duration %s (want a string such as \"30s\")", b)
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML writes d as a duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a string such as \"30s\"", n.Line)
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// RestartPolicy says when a failed worker is started again.
type RestartPolicy string

const (
	RestartNever     RestartPolicy = "never"      // never restart
	RestartOnFailure RestartPolicy = "on-failure" // restart after any failure
	RestartAlways    RestartPolicy = "always"     // restart after a failure or an unasked clean exit
)

// Health configures the liveness probe.
type Health struct {
	Interval         Duration `yaml:"interval" json:"interval"`                   // between probes; default 10s; 0 disables probes
	Timeout          Duration `yaml:"timeout" json:"timeout"`                     // per probe; default 5s
	FailureThreshold int      `yaml:"failure_threshold" json:"failure_threshold"` // consecutive failures that stop the worker; default 3
}

// Heartbeat configures worker heartbeats (rbee protocol only).
type Heartbeat struct {
	Interval Duration `yaml:"interval" json:"interval"` // how often the worker sends; default 5s
	Timeout  Duration `yaml:"timeout" json:"timeout"`   // silence after which the worker is stopped; default 15s; 0 disables
}

// Restart configures the restart policy and its back-off.
type Restart struct {
	Policy      RestartPolicy `yaml:"policy" json:"policy"`             // default on-failure
	BaseDelay   Duration      `yaml:"base_delay" json:"base_delay"`     // delay of the first restart; default 1s
	MaxDelay    Duration      `yaml:"max_delay" json:"max_delay"`       // cap on the delay; default 60s
	Jitter      float64       `yaml:"jitter" json:"jitter"`             // ± fraction of the delay, 0..1; default 0.2
	MaxFailures int           `yaml:"max_failures" json:"max_failures"` // failures within Window that end in crash_loop; default 5
	Window      Duration      `yaml:"window" json:"window"`             // default 300s
	ResetAfter  Duration      `yaml:"reset_after" json:"reset_after"`   // healthy running that forgets past failures; default 300s
}

// Limits are per-worker resource limits; 0 means no limit.
type Limits struct {
	MemoryMaxBytes int64   `yaml:"memory_max_bytes" json:"memory_max_bytes"` // bytes
	CPUMax         float64 `yaml:"cpu_max" json:"cpu_max"`                   // cores, e.g. 1.5
	PidsMax        int64   `yaml:"pids_max" json:"pids_max"`                 // processes and threads
	Nofile         uint64  `yaml:"nofile" json:"nofile"`                     // open files (RLIMIT_NOFILE)
}

// Any reports whether any limit is set.
func (l Limits) Any() bool {
	return l.MemoryMaxBytes > 0 || l.CPUMax > 0 || l.PidsMax > 0 || l.Nofile > 0
}

// NeedsCgroup reports whether a limit needs a cgroup controller.
func (l Limits) NeedsCgroup() bool { return l.MemoryMaxBytes > 0 || l.CPUMax > 0 || l.PidsMax > 0 }

// Settings are the per-worker lifecycle settings (SPEC §3). The config's
// `defaults` holds them for every worker; a spawn request's `settings`
// overrides any subset.
type Settings struct {
	Profile           string    `yaml:"profile" json:"profile"`                         // default "rbee"
	StartGrace        Duration  `yaml:"start_grace" json:"start_grace"`                 // default 100ms
	ReadyStallTimeout Duration  `yaml:"ready_stall_timeout" json:"ready_stall_timeout"` // default 60s; 0 disables
	ReadyTimeout      Duration  `yaml:"ready_timeout" json:"ready_timeout"`             // default 30m; 0 disables
	Health            Health    `yaml:"health" json:"health"`
	Heartbeat         Heartbeat `yaml:"heartbeat" json:"heartbeat"`
	IdleTimeout       Duration  `yaml:"idle_timeout" json:"idle_timeout"` // default 5m; 0 disables
	StopTimeout       Duration  `yaml:"stop_timeout" json:"stop_timeout"` // default 10s
	Restart           Restart   `yaml:"restart" json:"restart"`
	Limits            Limits    `yaml:"limits" json:"limits"`

	// GPU and memory estimates (SPEC §11).

	// Ctx is the context size, in tokens, the model's memory is estimated
	// for and {ctx} in argv templates (SPEC §6, §10: model entries set
	// it); 0: llama.cpp's default 4096, capped at the model's trained
	// context.
	Ctx int `yaml:"ctx" json:"ctx"`
	// MemoryBytes is the worker's RAM need in bytes, replacing the
	// estimate from the model file; 0: estimate.
	MemoryBytes int64 `yaml:"memory_bytes" json:"memory_bytes"`
	// VRAMBytes is the worker's GPU memory need in bytes, replacing the
	// estimate from the model file; 0: estimate.
	VRAMBytes int64 `yaml:"vram_bytes" json:"vram_bytes"`
}

// Probe is an HTTP probe of a generic worker.
type Probe struct {
	Path   string `yaml:"path" json:"path"`     // default /health
	Status int    `yaml:"status" json:"status"` // expected status; default 200
}

// ReadinessProbe is the readiness probe of an http worker: a Probe and how
// far its interval backs off.
type ReadinessProbe struct {
	Probe `yaml:",inline"`
	// MaxInterval is the longest wait between two readiness probes of a
	// loading worker: probing starts every 25 ms and backs off to this
	// (SPEC §6). Default 50ms; at least 25ms.
	MaxInterval Duration `yaml:"max_interval,omitempty" json:"max_interval,omitempty"`
}

// ReadinessFirstInterval is the wait before the first readiness probe and
// between the first few (SPEC §6).
const ReadinessFirstInterval = Duration(25 * time.Millisecond)

// DefaultReadinessMaxInterval is readiness.max_interval's default.
const DefaultReadinessMaxInterval = Duration(50 * time.Millisecond)

// Protocols a profile may speak.
const (
	ProtocolRbee = "rbee" // ready callback + heartbeats (SPEC §5)
	ProtocolHTTP = "http" // readiness and liveness by probes only (SPEC §6)
)

// Profile says how to run one kind of worker.
type Profile struct {
	// Command is the argv template. {port}, {model}, {worker_id},
	// {model_ref}, {backend}, {device}, {gpu_uuid} and {hive_url} are substituted token
	// by token; nothing goes through a shell. A bare command name is looked
	// up beside the rbee-hive binary, then on PATH. For the rbee protocol the
	// worker contract's flags are appended.
	Command    []string       `yaml:"command" json:"command"`
	Protocol   string         `yaml:"protocol" json:"protocol"`       // "rbee" or "http"; default "http" for custom profiles
	Readiness  ReadinessProbe `yaml:"readiness" json:"readiness"`     // http protocol: probed until it answers Status
	Liveness   Probe          `yaml:"liveness" json:"liveness"`       // probed every health.interval
	StopSignal string         `yaml:"stop_signal" json:"stop_signal"` // default SIGTERM
	// StopTimeout, when set, replaces defaults.stop_timeout for this
	// profile's workers (a spawn's settings still win).
	StopTimeout Duration          `yaml:"stop_timeout" json:"stop_timeout"`
	Env         map[string]string `yaml:"env" json:"env"`
	// MaxConcurrency is how many requests a worker takes at once through
	// the front door (SPEC §6, §10); 0: 1 for the http protocol, the
	// worker's reported slots_total (at least 1) for rbee.
	MaxConcurrency int `yaml:"max_concurrency" json:"max_concurrency"`
	// AllowEnv lists the env names (or prefixes written PREFIX_*) a spawn
	// request may set for this profile's workers (SPEC §14); empty: none.
	// No RBEE_ name can be allowed.
	AllowEnv []string `yaml:"allow_env" json:"allow_env"`
	// RunAs, when its user is set, replaces the config's run_as for this
	// profile's workers.
	RunAs RunAs `yaml:"run_as" json:"run_as"`
	// GPU makes every worker of this profile a GPU worker (SPEC §11), as
	// backend cuda does: it gets a device, CUDA_VISIBLE_DEVICES and a VRAM
	// preflight. Default false.
	GPU bool `yaml:"gpu" json:"gpu"`
	// GPULayers is how many of the model's layers a GPU worker offloads
	// (llama.cpp's -ngl), for the VRAM estimate; 0: all of them.
	GPULayers int `yaml:"gpu_layers" json:"gpu_layers"`
	// VRAMBytes, when set, is the GPU memory need of this profile's
	// workers in bytes (a spawn's vram_bytes wins); 0: estimate.
	VRAMBytes int64 `yaml:"vram_bytes" json:"vram_bytes"`
	// MemoryBytes, when set, is the memory need of this profile's workers
	// in bytes (a model entry's or spawn's memory_bytes wins); 0: estimate.
	MemoryBytes int64 `yaml:"memory_bytes" json:"memory_bytes"`
}

// RunAs names the user (and group) workers run as (SPEC §14). Empty user:
// the hive's own user, except that a root hive uses the user "rbee" where
// it exists. Group empty: the user's primary group.
type RunAs struct {
	User  string `yaml:"user" json:"user"`
	Group string `yaml:"group" json:"group"`
}

// Ports is the inclusive range workers' ports come from.
type Ports struct {
	Min int `yaml:"min" json:"min"` // default 8081
	Max int `yaml:"max" json:"max"` // default 9000
}

// Retention bounds how long ended workers stay visible.
type Retention struct {
	MaxAge     Duration `yaml:"max_age" json:"max_age"`         // default 1h
	MaxEntries int      `yaml:"max_entries" json:"max_entries"` // default 1000
}

// Config is the whole configuration file.
type Config struct {
	Addr               string    `yaml:"addr" json:"addr"`                                 // default 127.0.0.1:9200
	StateDir           string    `yaml:"state_dir" json:"state_dir"`                       // default $XDG_STATE_HOME/rbee-hive, /var/lib/rbee-hive as root
	APIToken           string    `yaml:"api_token" json:"-"`                               // or env RBEE_API_TOKEN
	APITokenFile       string    `yaml:"api_token_file" json:"api_token_file"`             // a file holding the token
	MetricsPublic      bool      `yaml:"metrics_public" json:"metrics_public"`             // /metrics without a token off loopback
	ModelRoots         []string  `yaml:"model_roots" json:"model_roots"`                   // default: <state_dir>/models
	Ports              Ports     `yaml:"ports" json:"ports"`                               //
	MemoryReserveBytes int64     `yaml:"memory_reserve_bytes" json:"memory_reserve_bytes"` // default 2 GiB; negative disables the preflight
	ShutdownTimeout    Duration  `yaml:"shutdown_timeout" json:"shutdown_timeout"`         // default 30s
	Retention          Retention `yaml:"retention" json:"retention"`
	// MaxWorkers caps live workers (SPEC §14); default 256.
	MaxWorkers int `yaml:"max_workers" json:"max_workers"`
	// MaxConnections caps open API connections (SPEC §14); default 1024.
	MaxConnections int `yaml:"max_connections" json:"max_connections"`
	// LimitsMax caps every limit a spawn may ask for; 0 in a field: no
	// ceiling for it. A request can tighten, never loosen (SPEC §14).
	LimitsMax Limits `yaml:"limits_max" json:"limits_max"`
	// RunAs is the user workers run as (per profile too).
	RunAs     RunAs              `yaml:"run_as" json:"run_as"`
	LogFormat string             `yaml:"log_format" json:"log_format"` // text (default) or json
	LogLevel  string             `yaml:"log_level" json:"log_level"`   // debug, info (default), warn, error
	Defaults  Settings           `yaml:"defaults" json:"defaults"`
	Profiles  map[string]Profile `yaml:"profiles" json:"profiles"`

	// The front door (SPEC §10).

	// Models are the models served by name on the inference routes.
	Models map[string]Model `yaml:"models" json:"models"`
	// Queue bounds each model's request queue.
	Queue Queue `yaml:"queue" json:"queue"`
	// MemoryBudgetBytes is what the front door's workers may hold together,
	// by their estimates; 0: total memory minus memory_reserve_bytes.
	MemoryBudgetBytes int64 `yaml:"memory_budget_bytes" json:"memory_budget_bytes"`
	// InferenceTokens are bearer tokens good for the inference routes only
	// (SPEC §4); the operator token is good there too.
	InferenceTokens []string `yaml:"inference_tokens" json:"-"`
	// InferenceTokensFile names a file with one inference token per line
	// (blank lines and lines starting with # are skipped).
	InferenceTokensFile string `yaml:"inference_tokens_file" json:"inference_tokens_file"`
	// MaxInferenceBodyBytes bounds an inference request's body; default 16 MiB.
	MaxInferenceBodyBytes int64 `yaml:"max_inference_body_bytes" json:"max_inference_body_bytes"`
	// Cluster registers the hive in etcd (SPEC §12); empty: single machine.
	Cluster Cluster `yaml:"cluster" json:"cluster"`

	// GPUInventory says where the GPU inventory comes from (SPEC §11):
	// "auto" (default: nvidia-smi when it is on PATH, else no GPUs),
	// "none", or the absolute path of a JSON file.
	GPUInventory string `yaml:"gpu_inventory" json:"gpu_inventory"`
	// VRAMReserveBytes is the GPU memory the VRAM preflight leaves free on
	// every device; default 512 MiB.
	VRAMReserveBytes int64 `yaml:"vram_reserve_bytes" json:"vram_reserve_bytes"`
}

// Model is one entry of `models:` (SPEC §10): the name clients put in
// "model" maps to a model reference, a profile and per-worker settings.
type Model struct {
	// ModelRef is the model's reference. A relative file: reference
	// (file:stories260K.gguf) names a file in the first model root.
	ModelRef string `yaml:"model_ref" json:"model_ref"`
	// Profile runs the model's workers; empty: defaults.profile.
	Profile string `yaml:"profile" json:"profile,omitempty"`
	// Ctx is the context size ({ctx} in argv templates; estimates); 0: none given.
	Ctx int `yaml:"ctx" json:"ctx,omitempty"`
	// MinWorkers are started when the hive starts and kept running; default 0.
	MinWorkers int `yaml:"min_workers" json:"min_workers"`
	// MaxWorkers bounds the workers started on demand; default 1.
	MaxWorkers int `yaml:"max_workers" json:"max_workers"`
	// MaxConcurrency, when set, overrides the profile's max_concurrency.
	MaxConcurrency int `yaml:"max_concurrency" json:"max_concurrency,omitempty"`
	// Aliases are other names for the model.
	Aliases []string `yaml:"aliases" json:"aliases,omitempty"`
	// Settings are any other keys: per-worker settings (idle_timeout,
	// restart, limits, memory_bytes, …) overriding `defaults` for this
	// model's workers. Checked by Validate.
	Settings map[string]any `yaml:",inline" json:"settings,omitempty"`
}

// SettingsJSON returns the model's per-worker settings (its extra keys,
// with ctx) as the JSON object a spawn request's `settings` carries.
func (m Model) SettingsJSON() (json.RawMessage, error) {
	s := map[string]any{}
	for k, v := range m.Settings {
		s[k] = v
	}
	if m.Ctx > 0 {
		s["ctx"] = m.Ctx
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	return b, nil
}

// Queue bounds the front door's per-model FIFO queues.
type Queue struct {
	Max     int      `yaml:"max" json:"max"`         // requests waiting per model; default 128
	Timeout Duration `yaml:"timeout" json:"timeout"` // longest wait, plus any cold start; default 60s
}

// DefaultSettings returns the per-worker defaults of SPEC §3.
func DefaultSettings() Settings {
	return Settings{
		Profile:           "rbee",
		StartGrace:        Duration(100 * time.Millisecond),
		ReadyStallTimeout: Duration(60 * time.Second),
		ReadyTimeout:      Duration(30 * time.Minute),
		Health:            Health{Interval: Duration(10 * time.Second), Timeout: Duration(5 * time.Second), FailureThreshold: 3},
		Heartbeat:         Heartbeat{Interval: Duration(10 * time.Second), Timeout: Duration(30 * time.Second)},
		IdleTimeout:       Duration(5 * time.Minute),
		StopTimeout:       Duration(10 * time.Second),
		Restart: Restart{Policy: RestartOnFailure, BaseDelay: Duration(time.Second), MaxDelay: Duration(time.Minute),
			Jitter: 0.2, MaxFailures: 5, Window: Duration(300 * time.Second), ResetAfter: Duration(300 * time.Second)},
	}
}

// Default returns the embedded default configuration.
func Default() Config {
	return Config{
		Addr:               "127.0.0.1:9200",
		Ports:              Ports{Min: 8081, Max: 9000},
		MemoryReserveBytes: 2 << 30,
		ShutdownTimeout:    Duration(30 * time.Second),
		Retention:          Retention{MaxAge: Duration(time.Hour), MaxEntries: 1000},
		LogFormat:          "text",
		LogLevel:           "info",
		MaxWorkers:         256,
		MaxConnections:     1024,
		Defaults:           DefaultSettings(),
		Queue:              Queue{Max: 128, Timeout: Duration(60 * time.Second)},
		Models: map[string]Model{
			// The demo model the hive writes into the default model
			// root; `make run` serves it by this name.
			"stories": {ModelRef: "file:stories260K.gguf", Ctx: 256, MaxWorkers: 1},
		},
		MaxInferenceBodyBytes: 16 << 20,
		GPUInventory:          "auto",
		VRAMReserveBytes:      512 << 20,
		Profiles: map[string]Profile{
			// The model entry's ctx reaches the worker (0: the model's own).
			"rbee": Profile{Command: []string{"llm-worker-rbee", "--ctx", "{ctx}"}, Protocol: ProtocolRbee}.withDefaults("rbee"),
		},
	}
}

// Parse reads a YAML configuration on top of the defaults. Unknown keys are
// errors naming the key, its line and the nearest known key; a wrong value
// names the key, what was given and what is wanted. Sizes ("8GiB") are
// accepted for every *_bytes key. Profiles' argv templates are checked for
// unknown placeholders. Parse touches nothing outside data; Load also checks
// that each configured profile's command can be found.
func Parse(data []byte) (Config, error) {
	cfg, _, err := parse(data)
	return cfg, err
}

func parse(data []byte) (Config, *yaml.Node, error) {
	cfg := Default()
	builtin := cfg.Profiles["rbee"]
	cfg.Profiles = nil
	// A config file's models: replace the embedded demo model; without
	// the key the demo stays.
	cfg.Models = nil
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return Config{}, nil, fmt.Errorf("config: %w", err)
	}
	if err := checkNode(&root, Config{}, true, ConfigKeys()); err != nil {
		return Config{}, nil, prefixErrs("config: ", err)
	}
	if root.Kind != 0 {
		var err error
		if data, err = yaml.Marshal(&root); err != nil {
			return Config{}, nil, fmt.Errorf("config: %w", err)
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, nil, fmt.Errorf("config: %w", err)
	}
	if cfg.Profiles == nil {
		cfg.Profiles = map[string]Profile{}
	}
	if cfg.Models == nil {
		cfg.Models = Default().Models
	}
	for name, m := range cfg.Models {
		if m.MaxWorkers == 0 {
			m.MaxWorkers = 1
		}
		cfg.Models[name] = m
	}
	if _, ok := cfg.Profiles["rbee"]; !ok {
		cfg.Profiles["rbee"] = builtin
	}
	for name, p := range cfg.Profiles {
		cfg.Profiles[name] = p.withDefaults(name)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, nil, err
	}
	if err := checkPlaceholders(cfg.Profiles, &root); err != nil {
		return Config{}, nil, err
	}
	return cfg, &root, nil
}

// Load reads and parses the file at path, and checks that the command of
// every profile the file configures is found (beside the rbee-hive binary,
// then on PATH), as the hive will look for it at spawn time.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, root, err := parse(data)
	if err == nil {
		err = checkCommands(cfg.Profiles, root)
	}
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

func (p Profile) withDefaults(name string) Profile {
	if p.Protocol == "" {
		if name == "rbee" {
			p.Protocol = ProtocolRbee
		} else {
			p.Protocol = ProtocolHTTP
		}
	}
	if p.Readiness.Path == "" {
		p.Readiness.Path = "/health"
	}
	if p.Readiness.Status == 0 {
		p.Readiness.Status = 200
	}
	if p.Readiness.MaxInterval == 0 {
		p.Readiness.MaxInterval = DefaultReadinessMaxInterval
	}
	if p.Liveness.Path == "" {
		p.Liveness.Path = "/health"
	}
	if p.Liveness.Status == 0 {
		p.Liveness.Status = 200
	}
	if p.StopSignal == "" {
		p.StopSignal = "SIGTERM"
	}
	return p
}

// Signals a profile may name as its stop signal.
var Signals = map[string]syscall.Signal{
	"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGHUP": syscall.SIGHUP, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
	"SIGKILL": syscall.SIGKILL,
}

// StopSig returns the profile's stop signal.
func (p Profile) StopSig() syscall.Signal {
	if s, ok := Signals[strings.ToUpper(p.StopSignal)]; ok {
		return s
	}
	return syscall.SIGTERM
}

// Validate checks the configuration without touching the system.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("config: "+format, a...)) }
	if c.Addr == "" {
		bad("addr must not be empty")
	}
	if err := c.Cluster.Validate(); err != nil {
		errs = append(errs, err)
	} else if c.Cluster.Enabled() {
		if adv := c.Cluster.WithDefaults(c.Addr).Advertise; unspecifiedHost(adv) {
			bad("cluster.advertise: %s names no machine (other machines would dial themselves); "+
				"set the URL queens use to reach this hive, e.g. http://10.0.0.21:9200", adv)
		}
	}
	if c.Ports.Min < 1 || c.Ports.Max > 65535 || c.Ports.Min > c.Ports.Max {
		bad("ports: want 1 <= min <= max <= 65535, got %d..%d", c.Ports.Min, c.Ports.Max)
	}
	if c.ShutdownTimeout < 0 {
		bad("shutdown_timeout must not be negative")
	}
	if c.Retention.MaxAge < 0 || c.Retention.MaxEntries < 0 {
		bad("retention values must not be negative")
	}
	for _, r := range c.ModelRoots {
		if !filepath.IsAbs(r) {
			bad("model_roots: %q is not an absolute path", r)
		}
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		bad("log_format: want text or json, got %q", c.LogFormat)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		bad("log_level: want debug, info, warn or error, got %q", c.LogLevel)
	}
	if err := c.Defaults.Validate(); err != nil {
		bad("defaults: %v", err)
	}
	if c.Queue.Max < 1 || c.Queue.Max > 1<<20 {
		bad("queue.max must be 1..1048576 (got %d)", c.Queue.Max)
	}
	if c.Queue.Timeout <= 0 || c.Queue.Timeout > maxDuration {
		bad("queue.timeout must be positive and at most %s (got %s)", maxDuration, c.Queue.Timeout)
	}
	if c.MemoryBudgetBytes < 0 {
		bad("memory_budget_bytes must not be negative")
	}
	if c.MaxInferenceBodyBytes < 0 {
		bad("max_inference_body_bytes must not be negative")
	}
	if len(c.InferenceTokens) > 0 && c.InferenceTokensFile != "" {
		bad("inference_tokens and inference_tokens_file are both set; use one")
	}
	for i, t := range c.InferenceTokens {
		if !ValidToken(t) {
			bad("inference_tokens[%d] is empty or contains spaces or control characters", i)
		}
	}
	names := map[string]string{}
	for name, m := range c.Models {
		if err := c.validateModel(name, m, names); err != nil {
			bad("%v", err)
		}
	}
	if c.MaxWorkers < 1 || c.MaxWorkers > 100000 {
		bad("max_workers must be 1..100000 (got %d)", c.MaxWorkers)
	}
	if c.MaxConnections < 16 || c.MaxConnections > 1<<20 {
		bad("max_connections must be 16..1048576 (got %d)", c.MaxConnections)
	}
	lm := c.LimitsMax
	if err := (&Settings{Limits: lm}).validateLimits(); err != nil {
		bad("limits_max: %v", err)
	}
	if _, err := ApplyCeilings(c.Defaults.Limits, c.Defaults.Limits, lm); err != nil {
		bad("defaults.limits: %v", err)
	}
	if g := c.GPUInventory; g != "auto" && g != "none" && g != "" && !filepath.IsAbs(g) {
		bad("gpu_inventory: want auto, none or an absolute path to a JSON file, got %q", g)
	}
	if c.VRAMReserveBytes < 0 {
		bad("vram_reserve_bytes must not be negative")
	}
	if _, ok := c.Profiles[c.Defaults.Profile]; !ok {
		bad("defaults.profile: no profile named %q", c.Defaults.Profile)
	}
	for name, p := range c.Profiles {
		if len(p.Command) == 0 || p.Command[0] == "" {
			bad("profiles.%s.command must name a program", name)
		}
		if p.Protocol != ProtocolRbee && p.Protocol != ProtocolHTTP {
			bad("profiles.%s.protocol: want rbee or http, got %q", name, p.Protocol)
		}
		if _, ok := Signals[strings.ToUpper(p.StopSignal)]; !ok {
			bad("profiles.%s.stop_signal: unknown signal %q", name, p.StopSignal)
		}
		if p.StopTimeout < 0 {
			bad("profiles.%s.stop_timeout must not be negative", name)
		}
		if p.MaxConcurrency < 0 || p.MaxConcurrency > 1<<16 {
			bad("profiles.%s.max_concurrency must be 0..65536", name)
		}
		if p.Readiness.MaxInterval < ReadinessFirstInterval || p.Readiness.MaxInterval > maxDuration {
			bad("profiles.%s.readiness.max_interval %s: want %s to %s", name, p.Readiness.MaxInterval, ReadinessFirstInterval, maxDuration)
		}
		for _, a := range p.AllowEnv {
			if err := CheckAllowEnv(a); err != nil {
				bad("profiles.%s.allow_env: %v", name, err)
			}
		}
		for k := range p.Env {
			if strings.HasPrefix(k, "RBEE_") {
				bad("profiles.%s.env: %s is reserved (every RBEE_ name is the hive's)", name, k)
			}
		}
		if p.GPULayers < 0 || p.GPULayers > 1<<16 || p.VRAMBytes < 0 || p.MemoryBytes < 0 {
			bad("profiles.%s: gpu_layers, vram_bytes and memory_bytes must not be negative", name)
		}
		for _, pr := range []Probe{p.Readiness.Probe, p.Liveness} {
			if !strings.HasPrefix(pr.Path, "/") {
				bad("profiles.%s: probe path %q must start with /", name, pr.Path)
			}
			if pr.Status < 100 || pr.Status > 599 {
				bad("profiles.%s: probe status %d is not an HTTP status", name, pr.Status)
			}
		}
	}
	return errors.Join(errs...)
}

// validateModel checks one models: entry; names collects every name and
// alias seen so far, so that two models cannot claim one name.
func (c *Config) validateModel(name string, m Model, names map[string]string) error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("models.%s: "+format, append([]any{name}, a...)...))
	}
	for _, n := range append([]string{name}, m.Aliases...) {
		if !validModelName(n) {
			bad("name %q must be 1-128 characters of [A-Za-z0-9_.:/-]", n)
			continue
		}
		if other, ok := names[n]; ok && other != name {
			bad("name %q is also a name of model %s", n, other)
		}
		names[n] = name
	}
	if m.ModelRef == "" {
		bad("model_ref is required")
	}
	if m.Profile != "" {
		if _, ok := c.Profiles[m.Profile]; !ok {
			bad("profile: no profile named %q", m.Profile)
		}
	}
	if m.Ctx < 0 || m.Ctx > 1<<24 {
		bad("ctx must be 0..16777216 (got %d)", m.Ctx)
	}
	if m.MinWorkers < 0 || m.MaxWorkers < 1 || m.MinWorkers > m.MaxWorkers || m.MaxWorkers > 1024 {
		bad("want 0 <= min_workers <= max_workers, 1 <= max_workers <= 1024 (got %d, %d)", m.MinWorkers, m.MaxWorkers)
	}
	if m.MaxConcurrency < 0 || m.MaxConcurrency > 1<<16 {
		bad("max_concurrency must be 0..65536")
	}
	raw, err := m.SettingsJSON()
	if err != nil {
		bad("%v", err)
	} else if _, err := Override(c.Defaults, raw); err != nil {
		bad("%v", err)
	}
	return errors.Join(errs...)
}

// unspecifiedHost reports whether the URL u has no host a machine can
// dial: empty, 0.0.0.0 or [::] (a listener's "every address").
func unspecifiedHost(u string) bool {
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	h := pu.Hostname()
	if h == "" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsUnspecified()
}

func validModelName(n string) bool {
	if n == "" || len(n) > 128 {
		return false
	}
	for _, r := range n {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("_.:/-", r):
		default:
			return false
		}
	}
	return true
}

// Bounds on settings, so a typo cannot ask for something absurd.
const (
	maxDuration = Duration(24 * time.Hour)
	maxLimitPid = 1 << 22
)

// Validate checks s: no negative or absurd durations, bounded numbers.
func (s *Settings) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	durs := []struct {
		name string
		d    Duration
	}{
		{"start_grace", s.StartGrace}, {"ready_stall_timeout", s.ReadyStallTimeout},
		{"ready_timeout", s.ReadyTimeout}, {"health.interval", s.Health.Interval},
		{"health.timeout", s.Health.Timeout}, {"heartbeat.interval", s.Heartbeat.Interval},
		{"heartbeat.timeout", s.Heartbeat.Timeout}, {"idle_timeout", s.IdleTimeout},
		{"stop_timeout", s.StopTimeout}, {"restart.base_delay", s.Restart.BaseDelay},
		{"restart.max_delay", s.Restart.MaxDelay}, {"restart.window", s.Restart.Window},
		{"restart.reset_after", s.Restart.ResetAfter},
	}
	for _, d := range durs {
		if d.d < 0 {
			bad("%s must not be negative (got %s)", d.name, d.d)
		} else if d.d > maxDuration {
			bad("%s must be at most %s (got %s)", d.name, maxDuration, d.d)
		}
	}
	if s.StartGrace > Duration(time.Minute) {
		bad("start_grace must be at most 1m (got %s)", s.StartGrace)
	}
	if s.Health.FailureThreshold < 1 || s.Health.FailureThreshold > 100 {
		bad("health.failure_threshold must be 1..100 (got %d)", s.Health.FailureThreshold)
	}
	if s.Health.Interval > 0 && s.Health.Timeout <= 0 {
		bad("health.timeout must be positive when health.interval is set")
	}
	if s.Heartbeat.Interval < MinInterval {
		bad("heartbeat.interval must be at least %s (got %s)", MinInterval, s.Heartbeat.Interval)
	}
	if s.Health.Interval != 0 && s.Health.Interval < MinInterval {
		bad("health.interval must be 0 (off) or at least %s (got %s)", MinInterval, s.Health.Interval)
	}
	if s.Heartbeat.Timeout > 0 && s.Heartbeat.Timeout < s.Heartbeat.Interval {
		bad("heartbeat.timeout (%s) must be at least heartbeat.interval (%s)", s.Heartbeat.Timeout, s.Heartbeat.Interval)
	}
	switch s.Restart.Policy {
	case RestartNever, RestartOnFailure, RestartAlways:
	default:
		bad("restart.policy: want never, on-failure or always, got %q", s.Restart.Policy)
	}
	if s.Restart.Jitter < 0 || s.Restart.Jitter > 1 || math.IsNaN(s.Restart.Jitter) {
		bad("restart.jitter must be within 0..1 (got %v)", s.Restart.Jitter)
	}
	if s.Restart.MaxFailures < 1 || s.Restart.MaxFailures > 1000 {
		bad("restart.max_failures must be 1..1000 (got %d)", s.Restart.MaxFailures)
	}
	if s.Restart.MaxDelay < s.Restart.BaseDelay {
		bad("restart.max_delay (%s) must be at least restart.base_delay (%s)", s.Restart.MaxDelay, s.Restart.BaseDelay)
	}
	if s.Ctx < 0 || s.Ctx > 1<<24 {
		bad("ctx must be 0..16777216 (got %d)", s.Ctx)
	}
	if s.MemoryBytes < 0 || s.VRAMBytes < 0 {
		bad("memory_bytes and vram_bytes must not be negative")
	}
	if err := s.validateLimits(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Settings) validateLimits() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	l := s.Limits
	if l.MemoryMaxBytes < 0 || (l.MemoryMaxBytes > 0 && l.MemoryMaxBytes < 4<<20) {
		bad("limits.memory_max_bytes must be 0 or at least 4 MiB (got %d)", l.MemoryMaxBytes)
	}
	if l.CPUMax < 0 || l.CPUMax > 4096 || math.IsNaN(l.CPUMax) || (l.CPUMax > 0 && l.CPUMax < 0.01) {
		bad("limits.cpu_max must be 0 or 0.01..4096 cores (got %v)", l.CPUMax)
	}
	if l.PidsMax < 0 || l.PidsMax > maxLimitPid {
		bad("limits.pids_max must be 0..%d (got %d)", maxLimitPid, l.PidsMax)
	}
	if l.Nofile > 1<<20 || (l.Nofile > 0 && l.Nofile < 16) {
		bad("limits.nofile must be 0 or 16..1048576 (got %d)", l.Nofile)
	}
	return errors.Join(errs...)
}

// Override returns base with the JSON object raw applied on top: only the
// keys present change. Unknown keys and wrong types are errors. The result is
// validated.
func Override(base Settings, raw json.RawMessage) (Settings, error) {
	s := base
	if len(bytes.TrimSpace(raw)) > 0 && string(bytes.TrimSpace(raw)) != "null" {
		// JSON is YAML: check it key by key for readable errors, and
		// turn sizes such as "8GiB" into numbers.
		if !json.Valid(raw) {
			return base, errors.New("settings: not valid JSON (want an object such as {\"idle_timeout\":\"10m\"})")
		}
		var n yaml.Node
		if yaml.Unmarshal(raw, &n) == nil {
			if err := checkNode(&n, Settings{}, false, settingsKeys()); err != nil {
				return base, prefixErrs("settings: ", err)
			}
			var v any
			if n.Decode(&v) == nil {
				if b, err := json.Marshal(v); err == nil {
					raw = b
				}
			}
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return base, fmt.Errorf("settings: %w", err)
		}
		if dec.More() {
			return base, errors.New("settings: trailing data after the object")
		}
	}
	if err := s.Validate(); err != nil {
		return base, fmt.Errorf("settings: %w", err)
	}
	return s, nil
}

// DefaultStateDir returns $XDG_STATE_HOME/rbee-hive, ~/.local/state/rbee-hive,
// or /var/lib/rbee-hive for root.
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/rbee-hive"
	}
	if x := os.Getenv("XDG_STATE_HOME"); x != "" {
		return filepath.Join(x, "rbee-hive")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "rbee-hive")
	}
	return filepath.Join(os.TempDir(), "rbee-hive")
}

// ValidToken reports whether t may be a bearer token in a config (the
// hive's inference_tokens, rbee-queen's): not empty, and no spaces or
// control characters. An empty one would let "Bearer " followed by
// anything a trim removes through.
func ValidToken(t string) bool {
	return t != "" && strings.IndexFunc(t, func(r rune) bool { return r < 0x21 || r == 0x7f }) < 0
}
