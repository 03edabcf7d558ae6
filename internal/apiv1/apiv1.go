// Package apiv1 holds the wire types of the hive's HTTP API v1 (SPEC §4):
// request and response bodies, WorkerInfo, events, and the error shape. The
// server, the Go client and the CLI all speak these types.
package apiv1

import (
	"encoding/json"
	"time"

	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
)

// Version is the API version string reported by /health.
const Version = "v1"

// Health is the body of GET /health.
type Health struct {
	Status     string `json:"status"`
	Version    string `json:"version"`
	APIVersion string `json:"api_version"`
}

// Error codes (SPEC §4). Validation codes name the field: INVALID_<FIELD>.
const (
	CodeInvalidRequest      = "INVALID_REQUEST"
	CodeWorkerNotFound      = "WORKER_NOT_FOUND"
	CodeModelNotFound       = "MODEL_NOT_FOUND"
	CodeModelPathNotAllowed = "MODEL_PATH_NOT_ALLOWED"
	CodeNoAvailablePorts    = "NO_AVAILABLE_PORTS"
	CodeInsufficientMemory  = "INSUFFICIENT_MEMORY"
	CodeLimitsUnsupported   = "LIMITS_UNSUPPORTED"
	CodeSpawnFailed         = "SPAWN_FAILED"
	CodeInvalidState        = "INVALID_STATE"
	CodeMissingAPIKey       = "MISSING_API_KEY"
	CodeInvalidAPIKey       = "INVALID_API_KEY"
	CodeForbidden           = "FORBIDDEN"
	CodeBodyTooLarge        = "BODY_TOO_LARGE"
	CodeNotFound            = "NOT_FOUND"
	CodeMethodNotAllowed    = "METHOD_NOT_ALLOWED"
	CodeTooManyStreams      = "TOO_MANY_STREAMS"
	CodeInternal            = "INTERNAL"
)

// ErrorBody is every error response: {"error":{"code":…,"message":…}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// SpawnRequest is the body of POST /v1/workers/spawn.
type SpawnRequest struct {
	ModelRef  string            `json:"model_ref"`
	Backend   string            `json:"backend,omitempty"` // default "cpu"
	Device    int               `json:"device"`
	ModelPath string            `json:"model_path,omitempty"`
	Profile   string            `json:"profile,omitempty"`
	Settings  json.RawMessage   `json:"settings,omitempty"` // keys of config defaults; overrides them
	Env       map[string]string `json:"env,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// SpawnResponse is the 201 body of a spawn.
type SpawnResponse struct {
	WorkerID string      `json:"worker_id"`
	URL      string      `json:"url"`
	Port     int         `json:"port"`
	PID      int         `json:"pid"`
	State    state.State `json:"state"`
}

// StateResponse answers stop, kill and restart (202).
type StateResponse struct {
	WorkerID string      `json:"worker_id"`
	State    state.State `json:"state"`
}

// Message is a {"message": …} body.
type Message struct {
	Message string `json:"message"`
}

// ReadyRequest is a worker's POST /v1/workers/ready.
type ReadyRequest struct {
	WorkerID string `json:"worker_id"`
	URL      string `json:"url"`
	ModelRef string `json:"model_ref"`
	Backend  string `json:"backend"`
	Device   int    `json:"device"`
}

// Progress is loading progress in arbitrary units (bytes for the reference worker).
type Progress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
}

// HeartbeatRequest is a worker's POST /v1/heartbeat.
type HeartbeatRequest struct {
	WorkerID       string    `json:"worker_id"`
	Timestamp      string    `json:"timestamp"`
	HealthStatus   string    `json:"health_status"`
	State          string    `json:"state,omitempty"`
	SlotsTotal     *int      `json:"slots_total,omitempty"`
	SlotsAvailable *int      `json:"slots_available,omitempty"`
	Progress       *Progress `json:"progress,omitempty"`
}

// Exit records how a worker's process ended.
type Exit struct {
	Code      *int      `json:"code"`   // exit code, or null when killed by a signal or unknown
	Signal    int       `json:"signal"` // signal number, or 0
	OOMKilled bool      `json:"oom_killed"`
	Known     bool      `json:"known"` // false when the hive could not learn the code (an adopted process)
	At        time.Time `json:"at"`
}

// Stats are a worker's resource use.
type Stats struct {
	RSSBytes   int64   `json:"rss_bytes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	Threads    int     `json:"threads"`
	OpenFDs    int     `json:"open_fds"`
}

// WorkerInfo is everything the hive knows about one worker.
type WorkerInfo struct {
	ID                 string            `json:"id"`
	URL                string            `json:"url"`
	Port               int               `json:"port"`
	PID                int               `json:"pid"`
	ModelRef           string            `json:"model_ref"`
	ModelPath          string            `json:"model_path"`
	Backend            string            `json:"backend"`
	Device             int               `json:"device"`
	Profile            string            `json:"profile"`
	State              state.State       `json:"state"`
	Reason             state.Reason      `json:"reason,omitempty"`
	Detail             string            `json:"detail,omitempty"` // a sentence about the reason
	StartedAt          *time.Time        `json:"started_at"`
	ReadyAt            *time.Time        `json:"ready_at"`
	LastActivity       *time.Time        `json:"last_activity"`
	LastHeartbeat      *time.Time        `json:"last_heartbeat"`
	FailedHealthChecks int               `json:"failed_health_checks"`
	RestartCount       int               `json:"restart_count"`
	LastRestart        *time.Time        `json:"last_restart"`
	SlotsTotal         int               `json:"slots_total"`
	SlotsAvailable     int               `json:"slots_available"`
	Progress           *Progress         `json:"progress,omitempty"`
	Exit               *Exit             `json:"exit"`
	Limits             config.Limits     `json:"limits"`
	Labels             map[string]string `json:"labels"`
	Stats              *Stats            `json:"stats,omitempty"`
	LastLines          []string          `json:"last_lines,omitempty"` // the last lines of output, for ended workers
	EndedAt            *time.Time        `json:"ended_at,omitempty"`
}

// WorkerList is the body of GET /v1/workers/list.
type WorkerList struct {
	Workers []*WorkerInfo `json:"workers"`
}

// Event is one state change, as sent on GET /v1/events.
type Event struct {
	WorkerID string       `json:"worker_id"`
	From     state.State  `json:"from"`
	To       state.State  `json:"to"`
	Reason   state.Reason `json:"reason,omitempty"`
	PID      int          `json:"pid"`
	At       time.Time    `json:"at"`
}

// Status is the body of GET /v1/status.
type Status struct {
	Version       string         `json:"version"`
	APIVersion    string         `json:"api_version"`
	StartedAt     time.Time      `json:"started_at"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Addr          string         `json:"addr"`
	StateDir      string         `json:"state_dir"`
	CgroupMode    string         `json:"cgroup_mode"`
	Cgroups       string         `json:"cgroups"`
	DevMode       bool           `json:"dev_mode"`
	Workers       map[string]int `json:"workers"` // by state
	Totals        Stats          `json:"totals"`
	Memory        *HostMemory    `json:"memory,omitempty"` // the machine's memory; absent where /proc/meminfo is unreadable
}

// HostMemory is the machine's memory (from /proc/meminfo), in bytes.
type HostMemory struct {
	TotalBytes     int64 `json:"total_bytes"`
	AvailableBytes int64 `json:"available_bytes"` // MemAvailable: what new work can use
}

// ModelEntry is one catalog entry.
type ModelEntry struct {
	Ref       string    `json:"ref"`
	Path      string    `json:"path"`
	SizeBytes int64     `json:"size_bytes"`
	AddedAt   time.Time `json:"added_at"`
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	Models []ModelEntry `json:"models"`
}

// ModelAddRequest is the body of POST /v1/models.
type ModelAddRequest struct {
	Ref  string `json:"ref"`
	Path string `json:"path"`
}
