// Package models turns model references into model files the hive may load
// (SPEC §4 validation, §9 model references) and checks there is memory to
// load them (SPEC §3 memory preflight).
//
//   - ParseRef validates a `provider:reference` string.
//   - Resolver maps a reference (and an optional model_path override) to a
//     regular file that lies inside an allowed model root, symlinks resolved.
//   - Catalog is the persistent map from non-file references (hf:org/repo,
//     …) to files, kept in <state_dir>/models.json.
//   - MemAvailable and Preflight implement the memory preflight.
//
// Every error a caller may branch on is a sentinel (ErrNotFound,
// ErrNotAllowed, ErrInvalidRef, ErrInsufficientMemory), reached through
// errors.Is; *Error and *InsufficientMemoryError carry the data an API
// renderer needs.
package models

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors. Test with errors.Is; the returned errors are *Error (or
// *InsufficientMemoryError) values that unwrap to these.
var (
	// ErrNotFound: the model file or catalog entry does not exist.
	// API: 404 MODEL_NOT_FOUND.
	ErrNotFound = errors.New("model not found")
	// ErrNotAllowed: the file lies outside every model root.
	// API: 400 MODEL_PATH_NOT_ALLOWED.
	ErrNotAllowed = errors.New("model path not allowed")
	// ErrInvalidRef: the reference is malformed. API: 400 INVALID_MODEL_REF.
	ErrInvalidRef = errors.New("invalid model reference")
	// ErrInsufficientMemory: the memory preflight failed.
	// API: 507 INSUFFICIENT_MEMORY.
	ErrInsufficientMemory = errors.New("insufficient memory")
)

// API error codes of the sentinels.
const (
	CodeNotFound           = "MODEL_NOT_FOUND"
	CodeNotAllowed         = "MODEL_PATH_NOT_ALLOWED"
	CodeInvalidRef         = "INVALID_MODEL_REF"
	CodeInsufficientMemory = "INSUFFICIENT_MEMORY"
)

// Error is a model error the API layer can render as
// {"error":{"code":Code,"message":Message}} with status Status. It unwraps to
// one of the sentinels.
type Error struct {
	Code    string // SCREAMING_SNAKE API code, e.g. MODEL_NOT_FOUND
	Status  int    // HTTP status, e.g. 404
	Field   string // the request field at fault: "model_ref" or "model_path"; "" if none
	Message string // a human sentence, safe to show to the API caller
	err     error  // the sentinel
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel (ErrNotFound, ErrNotAllowed or ErrInvalidRef).
func (e *Error) Unwrap() error { return e.err }

func newError(sentinel error, field, format string, a ...any) *Error {
	e := &Error{Field: field, Message: fmt.Sprintf(format, a...), err: sentinel}
	switch sentinel {
	case ErrNotFound:
		e.Code, e.Status = CodeNotFound, http.StatusNotFound
	case ErrNotAllowed:
		e.Code, e.Status = CodeNotAllowed, http.StatusBadRequest
	case ErrInvalidRef:
		e.Code, e.Status = CodeInvalidRef, http.StatusBadRequest
	default:
		panic("models: newError with an unknown sentinel")
	}
	return e
}
