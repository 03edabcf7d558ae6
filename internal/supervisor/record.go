package supervisor

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

func (o *owner) record(info *apiv1.WorkerInfo) *record.Record {
	r := &record.Record{Info: *info, TokenHash: o.tokenHash, History: o.hist, Spec: o.w.spec, Cgroup: o.cg != nil}
	r.Spec.Token = ""
	if o.proc != nil {
		id := o.proc.ident()
		r.StartTime, r.BootID, r.PGID = id.StartTime, id.BootID, id.PGID
	}
	if o.wlog != nil {
		r.LogPath = o.wlog.Path()
	}
	switch info.State {
	case state.Stopping:
		r.StopAsked, r.Forced = o.stopAsked, o.forced || o.stopForce
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
