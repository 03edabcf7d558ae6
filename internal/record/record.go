// Package record holds what the hive keeps of a worker beyond its public
// info: the Spec it is started (and restarted) from, and the Record the
// state store writes so that a later hive can re-adopt or restart it. It
// sits below both the supervisor, which fills them, and the store, which
// persists them; its JSON shapes are the state files' format.
package record

import (
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/policy"
)

// Spec is everything needed to start (and restart) a worker. It does not
// change over the worker's life, except the port when a restart needs a new
// one.
type Spec struct {
	ID          string
	ModelRef    string
	ModelPath   string
	ModelSize   int64
	Backend     string
	Device      int
	ProfileName string
	Profile     config.Profile
	Settings    config.Settings
	// Argv is the profile's command with placeholders still in place and
	// argv[0] resolved to an absolute path; the rbee protocol's flags are
	// appended at each start.
	Argv []string
	// Env is the worker's environment without the per-start entries
	// (port-dependent values, the worker token).
	Env    []string
	Labels map[string]string
	// Token is the worker's own secret for its ready and heartbeat calls.
	Token   string
	HiveURL string
	// Marker is put in the worker's environment (RBEE_HIVE_MARKER) so an
	// orphan of this hive can be recognised.
	Marker string
	// Credential, when not nil, is the user the worker runs as (run_as,
	// SPEC §14), supplementary groups cleared. Nil: the hive's user.
	Credential *syscall.Credential
	// GPUUUID is the GPU a GPU worker was placed on (Device is its index);
	// empty for a CPU worker. {gpu_uuid} in the argv template.
	GPUUUID string `json:",omitempty"`
	// Estimate is the worker's booked memory need (SPEC §11); nil in
	// records of older hives.
	Estimate *apiv1.Estimate `json:",omitempty"`
}

// Record is what the state store keeps of a worker so that a later hive can
// verify and re-adopt its process, or restart it: the public info, the
// process identity, and the spec without secrets.
type Record struct {
	Info      apiv1.WorkerInfo `json:"info"`
	StartTime uint64           `json:"start_time"` // clock ticks since boot (/proc/PID/stat field 22)
	BootID    string           `json:"boot_id"`
	PGID      int              `json:"pgid"`
	Cgroup    bool             `json:"cgroup"`     // the worker has its own cgroup (named by its id)
	TokenHash string           `json:"token_hash"` // sha256 of the worker token, hex
	LogPath   string           `json:"log_path"`
	History   policy.History   `json:"history"`
	Spec      Spec             `json:"spec"`

	// Recovery timers (supervisor/adopt.go). StopAsked is when the current stop was
	// asked and Forced whether it is a forced one (a kill, a ready or
	// heartbeat timeout) or has escalated to SIGKILL (state stopping only);
	// BackoffUntil is when a worker in backoff restarts.
	StopAsked    time.Time `json:"stop_asked,omitzero"`
	Forced       bool      `json:"forced,omitempty"`
	BackoffUntil time.Time `json:"backoff_until,omitzero"`
}
