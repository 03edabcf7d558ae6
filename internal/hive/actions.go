package hive

import (
	"context"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/supervisor"
)

// The operator's and the worker's own requests on one worker (SPEC §4),
// with the supervisor's refusals given their Kind (InvalidState). Errors
// are *Error.

// Stop asks w for a graceful stop (reason stopped). Idempotent.
func (h *Hive) Stop(ctx context.Context, w *supervisor.Worker) error {
	return wrapErr(w.Stop(ctx, state.Stopped))
}

// Kill SIGKILLs w's process tree (reason killed). Idempotent.
func (h *Hive) Kill(ctx context.Context, w *supervisor.Worker) error {
	return wrapErr(w.Kill(ctx, state.Killed))
}

// Restart stops w and starts it again with the same id and spec.
func (h *Hive) Restart(ctx context.Context, w *supervisor.Worker) error {
	return wrapErr(w.Restart(ctx))
}

// Ready delivers w's ready callback.
func (h *Hive) Ready(ctx context.Context, w *supervisor.Worker, r *apiv1.ReadyRequest) error {
	return wrapErr(w.Ready(ctx, r))
}

// Heartbeat delivers w's heartbeat.
func (h *Hive) Heartbeat(ctx context.Context, w *supervisor.Worker, hb *apiv1.HeartbeatRequest) error {
	return wrapErr(w.Heartbeat(ctx, hb))
}
