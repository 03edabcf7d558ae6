package hive

import (
	"errors"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/gpu"
	"github.com/rbee/rbee-hive/internal/models"
	"github.com/rbee/rbee-hive/internal/ports"
	"github.com/rbee/rbee-hive/internal/supervisor"
	"github.com/rbee/rbee-hive/internal/validate"
)

// Sentinel errors of the hive itself, each reached through errors.Is on
// the *Error that carries it.
var (
	ErrWorkerNotFound = errors.New("worker not found")
	ErrShuttingDown   = errors.New("hive is shutting down")
	ErrTooManyWorkers = errors.New("too many workers")
)

// Kind is what went wrong, in the terms a caller acts on. The API turns
// each kind into its HTTP status and error code (SPEC §4) in one switch.
type Kind int

// The kinds. A new kind goes before numKinds, so that Kinds lists it.
const (
	Internal           Kind = iota // anything else: a bug or an I/O failure
	InvalidInput                   // a field of the request is wrong; Error.Code names it
	WorkerNotFound                 // no worker with that id, live or retained
	ModelNotFound                  // no such model file or catalog entry
	InvalidState                   // the worker's state machine refuses the request
	LimitsUnsupported              // limits asked where cgroups cannot enforce them
	SpawnFailed                    // the process could not start or died within start_grace
	NoPorts                        // the port range is used up
	TooManyWorkers                 // max_workers live workers already
	ShuttingDown                   // the hive is shutting down
	InsufficientMemory             // the RAM preflight refused
	InsufficientVRAM               // no GPU can hold the worker
	numKinds
)

var kindNames = [numKinds]string{
	Internal: "internal", InvalidInput: "invalid_input", WorkerNotFound: "worker_not_found",
	ModelNotFound: "model_not_found", InvalidState: "invalid_state", LimitsUnsupported: "limits_unsupported",
	SpawnFailed: "spawn_failed", NoPorts: "no_ports", TooManyWorkers: "too_many_workers",
	ShuttingDown: "shutting_down", InsufficientMemory: "insufficient_memory", InsufficientVRAM: "insufficient_vram",
}

func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return "unknown"
	}
	return kindNames[k]
}

// Kinds returns every kind, Internal first.
func Kinds() []Kind {
	out := make([]Kind, numKinds)
	for i := range out {
		out[i] = Kind(i)
	}
	return out
}

// Error is the one error type the hive's request-facing operations return
// (Spawn, Estimate, Worker, ResolveModel, AddModel, RemoveModel, Stop,
// Kill, Restart, Ready, Heartbeat). Its text is its cause's, a sentence
// fit for the API's caller; the cause stays reachable through errors.Is
// and errors.As.
type Error struct {
	Kind Kind
	// Code is set for InvalidInput only: the SCREAMING_SNAKE code that
	// names the field at fault (INVALID_<FIELD>, MODEL_PATH_NOT_ALLOWED,
	// LIMITS_NOT_ALLOWED).
	Code string
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err: its *Error's, else Internal.
func KindOf(err error) Kind {
	var he *Error
	if errors.As(err, &he) {
		return he.Kind
	}
	return Internal
}

// wrapErr gives err its Kind at the hive's boundary: the one place the
// errors of the packages below (validate, models, gpu, cgroup, ports,
// supervisor) and the hive's own sentinels become an *Error. nil stays
// nil; an *Error is returned as it is.
func wrapErr(err error) error {
	if err == nil {
		return nil
	}
	var (
		he *Error
		ve *validate.Error
		se *supervisor.SpawnError
	)
	if errors.As(err, &he) {
		return err
	}
	e := &Error{Kind: Internal, Err: err}
	switch {
	case errors.As(err, &ve):
		e.Kind, e.Code = InvalidInput, ve.Code
	case errors.Is(err, models.ErrInvalidRef):
		e.Kind, e.Code = InvalidInput, apiv1.CodeInvalidModelRef
	case errors.Is(err, models.ErrNotAllowed):
		e.Kind, e.Code = InvalidInput, apiv1.CodeModelPathNotAllowed
	case errors.Is(err, models.ErrNotFound):
		e.Kind = ModelNotFound
	case errors.Is(err, models.ErrInsufficientMemory):
		e.Kind = InsufficientMemory
	case errors.Is(err, gpu.ErrInsufficientVRAM):
		e.Kind = InsufficientVRAM
	case errors.Is(err, cgroup.ErrLimitsUnsupported):
		e.Kind = LimitsUnsupported
	case errors.Is(err, ports.ErrExhausted):
		e.Kind = NoPorts
	case errors.Is(err, ErrWorkerNotFound):
		e.Kind = WorkerNotFound
	case errors.Is(err, supervisor.ErrInvalidState):
		e.Kind = InvalidState
	case errors.As(err, &se):
		e.Kind = SpawnFailed
	case errors.Is(err, ErrShuttingDown):
		e.Kind = ShuttingDown
	case errors.Is(err, ErrTooManyWorkers):
		e.Kind = TooManyWorkers
	}
	return e
}
