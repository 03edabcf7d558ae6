package supervisor

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"

	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/policy"
	"github.com/rbee/rbee-hive/internal/state"
)

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

	// Recovery timers (adopt.go). StopAsked is when the current stop was
	// asked and Forced whether it has escalated to SIGKILL (state
	// stopping only); BackoffUntil is when a worker in backoff restarts.
	StopAsked    time.Time `json:"stop_asked,omitzero"`
	Forced       bool      `json:"forced,omitempty"`
	BackoffUntil time.Time `json:"backoff_until,omitzero"`
}

func (o *owner) record(info *apiv1.WorkerInfo) *Record {
	r := &Record{Info: *info, TokenHash: o.tokenHash, History: o.hist, Spec: o.w.spec, Cgroup: o.cg != nil}
	r.Spec.Token = ""
	if o.proc != nil {
		r.StartTime, r.BootID, r.PGID = o.proc.StartTime, o.proc.BootID, o.proc.PGID
	}
	if o.wlog != nil {
		r.LogPath = o.wlog.Path()
	}
	switch info.State {
	case state.Stopping:
		r.StopAsked, r.Forced = o.stopAsked, o.forced
	case state.Backoff:
		r.BackoffUntil = o.backoffUntil
	}
	return r
}

// TokenHash returns the sha256 (hex) of the current incarnation's worker
// token, or "" before the first start.
func (w *Worker) TokenHash() string {
	if r := w.rec.Load(); r != nil {
		return r.TokenHash
	}
	return ""
}

// Authorize reports whether token is the current incarnation's worker
// token, compared in constant time through its hash.
func (w *Worker) Authorize(token string) bool {
	want := w.TokenHash()
	if want == "" || token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	got := hex.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
