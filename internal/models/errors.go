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
// errors.Is; *Error and *InsufficientMemoryError carry the field at fault
// and the numbers. What a sentinel becomes on the wire (status, code) is
// the API's business, not this package's.
package models

import (
	"errors"
	"fmt"
)

// Sentinel errors. Test with errors.Is; the returned errors are *Error (or
// *InsufficientMemoryError) values that unwrap to these.
var (
	// ErrNotFound: the model file or catalog entry does not exist.
	ErrNotFound = errors.New("model not found")
	// ErrNotAllowed: the file lies outside every model root.
	ErrNotAllowed = errors.New("model path not allowed")
	// ErrInvalidRef: the reference is malformed.
	ErrInvalidRef = errors.New("invalid model reference")
	// ErrInsufficientMemory: the memory preflight failed.
	ErrInsufficientMemory = errors.New("insufficient memory")
)

// Error is a model error: which sentinel it is (errors.Is), the request
// field at fault and a sentence for the API's caller.
type Error struct {
	Field   string // the request field at fault: "model_ref" or "model_path"; "" if none
	Message string // a human sentence, safe to show to the API caller
	err     error  // the sentinel
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel (ErrNotFound, ErrNotAllowed or ErrInvalidRef).
func (e *Error) Unwrap() error { return e.err }

func newError(sentinel error, field, format string, a ...any) *Error {
	switch sentinel {
	case ErrNotFound, ErrNotAllowed, ErrInvalidRef:
	default:
		panic("models: newError with an unknown sentinel")
	}
	return &Error{Field: field, Message: fmt.Sprintf(format, a...), err: sentinel}
}
