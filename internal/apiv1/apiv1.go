// Package apiv1 holds the wire types of the hive's HTTP API v1 (SPEC §4):
// request and response bodies, WorkerInfo, events, and the error shape. The
// server, the Go client and the CLI all speak these types.
package apiv1

import (
	"encoding/json"
	"time"

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
// InferenceRoutes are the paths of the OpenAI-compatible POST routes of the
// hive's front door and of rbee-queen (SPEC §10).
var InferenceRoutes = []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}

const (
	CodeInvalidRequest      = "INVALID_REQUEST"
	CodeWorkerNotFound      = "WORKER_NOT_FOUND"
	CodeModelNotFound       = "MODEL_NOT_FOUND"
	CodeInvalidModelRef     = "INVALID_MODEL_REF"
	CodeModelPathNotAllowed = "MODEL_PATH_NOT_ALLOWED"
	CodeNoAvailablePorts    = "NO_AVAILABLE_PORTS"
	CodeInsufficientMemory  = "INSUFFICIENT_MEMORY"
	CodeInsufficientVRAM    = "INSUFFICIENT_VRAM"
	CodeInvalidDevice       = "INVALID_DEVICE"
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
	CodeTooManyWorkers      = "TOO_MANY_WORKERS"
	CodeShuttingDown        = "SHUTTING_DOWN"
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
	// Type is set on the front door's routes (SPEC §10) so that OpenAI
	// clients show the error: see ErrorType.
	Type string `json:"type,omitempty"`
}

// Front-door error codes (SPEC §10).
const (
	CodeQueueFull     = "QUEUE_FULL"
	CodeQueueTimeout  = "QUEUE_TIMEOUT"
	CodeWorkerFailed  = "WORKER_FAILED"
	CodeWorkerCrashed = "WORKER_CRASHED"
)

// ErrorType is the OpenAI-style error type for a front-door error.
func ErrorType(status int, code string) string {
	switch {
	case status == 401:
		return "authentication_error"
	case status == 403:
		return "permission_error"
	case status == 404:
		return "not_found_error"
	case code == CodeQueueFull || code == CodeQueueTimeout:
		return "rate_limit_error"
	case status < 500:
		return "invalid_request_error"
	}
	return "server_error"
}

// OpenAIModelList is the body of GET /v1/models (SPEC §10).
type OpenAIModelList struct {
	Object string        `json:"object"` // "list"
	Data   []OpenAIModel `json:"data"`
}

// OpenAIModel is one served model in OpenAI's shape, with the hive's
// view of it under "rbee".
type OpenAIModel struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"` // "model"
	OwnedBy string          `json:"owned_by"`
	Created int64           `json:"created"` // Unix seconds
	Rbee    ModelServeState `json:"rbee"`
}

// ModelServeState is a served model's workers (by state), requests in
// flight and requests queued.
type ModelServeState struct {
	Workers  map[string]int `json:"workers"`
	InFlight int            `json:"in_flight"`
	Queued   int            `json:"queued"`
}

// SpawnRequest is the body of POST /v1/workers/spawn.
type SpawnRequest struct {
	ModelRef string `json:"model_ref"`
	Backend  string `json:"backend,omitempty"` // default "cpu"
	// Device is the GPU index a GPU worker (backend cuda, or a profile with
	// gpu: true) runs on, or DeviceAuto. On the wire it is a number or the
	// string "auto"; absent means auto for a GPU worker (0 for others).
	Device int `json:"device"`
	// DeviceGiven says the request named a device (set when decoding);
	// a Go caller that sets Device for a GPU worker sets it too.
	DeviceGiven bool              `json:"-"`
	ModelPath   string            `json:"model_path,omitempty"`
	Profile     string            `json:"profile,omitempty"`
	Settings    json.RawMessage   `json:"settings,omitempty"` // keys of config defaults; overrides them
	Env         map[string]string `json:"env,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// SpawnResponse is the 201 body of a spawn.
type SpawnResponse struct {
	WorkerID string      `json:"worker_id"`
	URL      string      `json:"url"`
	Port     int         `json:"port"`
	PID      int         `json:"pid"`
	State    state.State `json:"state"`
	// Device and GPUUUID name the GPU a GPU worker was placed on.
	Device   int       `json:"device"`
	GPUUUID  string    `json:"gpu_uuid,omitempty"`
	Estimate *Estimate `json:"estimate,omitempty"`
}

// Estimate is a worker's memory need as the hive booked it (SPEC §11).
type Estimate struct {
	RAMBytes  int64 `json:"ram_bytes"`
	VRAMBytes int64 `json:"vram_bytes"` // 0 for a CPU worker
	Ctx       int   `json:"ctx,omitempty"`
	// Source says where the numbers come from: "gguf" (the model file's
	// header), "settings" (memory_bytes / vram_bytes), or "file_size" (not
	// a GGUF file: file size × 1.2, no VRAM figure).
	Source string `json:"source"`
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
	// GPUMemoryBytes is GPU memory held by the worker's processes (summed
	// over its process tree, from the GPU driver's per-process figures).
	GPUMemoryBytes int64 `json:"gpu_memory_bytes"`
}

// Limits are a worker's resource limits as the API shows them (SPEC §3
// "limits"; the config's defaults.limits with the request's overrides).
// 0 means unset.
type Limits struct {
	MemoryMaxBytes int64   `json:"memory_max_bytes"` // bytes
	CPUMax         float64 `json:"cpu_max"`          // cores, e.g. 1.5
	PidsMax        int64   `json:"pids_max"`         // processes and threads
	Nofile         uint64  `json:"nofile"`           // open files (RLIMIT_NOFILE)
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
	Limits             Limits            `json:"limits"`
	Labels             map[string]string `json:"labels"`
	Stats              *Stats            `json:"stats,omitempty"`
	LastLines          []string          `json:"last_lines,omitempty"` // the last lines of output, for ended workers
	EndedAt            *time.Time        `json:"ended_at,omitempty"`
	GPUUUID            string            `json:"gpu_uuid,omitempty"` // the GPU of a GPU worker (Device is its index)
	Estimate           *Estimate         `json:"estimate,omitempty"` // the memory need booked for it
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
	Memory        MemoryStatus   `json:"memory"`
	GPUInventory  string         `json:"gpu_inventory"`         // the inventory's source: nvidia-smi, file:PATH or none
	GPUError      string         `json:"gpu_error,omitempty"`   // the last inventory read's error
	GPUs          []GPUStatus    `json:"gpus"`                  // empty without GPUs
	GPUReadAt     *time.Time     `json:"gpu_read_at,omitempty"` // when the inventory was read
}

// MemoryStatus is the machine's memory as the preflight sees it.
type MemoryStatus struct {
	TotalBytes     int64 `json:"total_bytes"`
	AvailableBytes int64 `json:"available_bytes"`
	ReserveBytes   int64 `json:"reserve_bytes"` // memory_reserve_bytes
}

// GPUStatus is one GPU and the hive's book of it.
type GPUStatus struct {
	Index              int    `json:"index"`
	UUID               string `json:"uuid"`
	Name               string `json:"name"`
	MemoryTotalBytes   int64  `json:"memory_total_bytes"`
	MemoryUsedBytes    int64  `json:"memory_used_bytes"`
	MemoryFreeBytes    int64  `json:"memory_free_bytes"`
	UtilizationPercent int    `json:"utilization_percent"` // -1: not reported
	ReserveBytes       int64  `json:"reserve_bytes"`       // vram_reserve_bytes
	ReservedBytes      int64  `json:"reserved_bytes"`      // reserved for workers not yet holding their estimate
	AvailableBytes     int64  `json:"available_bytes"`     // free − reserve − reserved (may be negative)
	// Workers are the live workers placed on this GPU.
	Workers []string `json:"workers"`
}

// ModelEntry is one catalog entry.
type ModelEntry struct {
	Ref       string    `json:"ref"`
	Path      string    `json:"path"`
	SizeBytes int64     `json:"size_bytes"`
	AddedAt   time.Time `json:"added_at"`
}

// ModelList is the body of GET /v1/catalog (the model catalog).
type ModelList struct {
	Models []ModelEntry `json:"models"`
}

// ModelAddRequest is the body of POST /v1/models.
type ModelAddRequest struct {
	Ref  string `json:"ref"`
	Path string `json:"path"`
}
