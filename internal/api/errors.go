package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/frontdoor"
	"github.com/rbee/rbee-hive/internal/hive"
)

// Error is an API error: an HTTP status, a SCREAMING_SNAKE code and a human
// sentence. Handlers return it (or any error, which toAPIError maps); one
// renderer writes it.
type Error struct {
	Status  int
	Code    string
	Message string
	Header  http.Header // extra response headers (WWW-Authenticate)
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, a ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

// toAPIError maps an error to an API error: an *Error as it is, a
// front-door error (already an HTTP answer: frontdoor serves its own
// routes) with its status, and a *hive.Error by its kind (kindStatus).
// Anything else is 500 INTERNAL.
func toAPIError(err error) *Error {
	var ae *Error
	var fe *frontdoor.Error
	var he *hive.Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &fe):
		e := errorf(fe.Status, fe.Code, "%s", fe.Message)
		if fe.RetryAfter > 0 {
			e.Header = http.Header{"Retry-After": {strconv.Itoa(fe.RetryAfter)}}
		}
		return e
	case errors.As(err, &he) && he.Kind != hive.Internal:
		status, code := kindStatus(he.Kind, he.Code)
		return errorf(status, code, "%s", he.Error())
	}
	return errorf(http.StatusInternalServerError, apiv1.CodeInternal, "internal error: %v", err)
}

// kindStatus is the HTTP status and error code of a hive error kind (SPEC
// §4); code is the field's code of an InvalidInput error.
func kindStatus(k hive.Kind, code string) (int, string) {
	switch k {
	case hive.InvalidInput:
		return http.StatusBadRequest, code
	case hive.WorkerNotFound:
		return http.StatusNotFound, apiv1.CodeWorkerNotFound
	case hive.ModelNotFound:
		return http.StatusNotFound, apiv1.CodeModelNotFound
	case hive.InvalidState:
		return http.StatusConflict, apiv1.CodeInvalidState
	case hive.LimitsUnsupported:
		return http.StatusUnprocessableEntity, apiv1.CodeLimitsUnsupported
	case hive.SpawnFailed:
		return http.StatusInternalServerError, apiv1.CodeSpawnFailed
	case hive.NoPorts:
		return http.StatusServiceUnavailable, apiv1.CodeNoAvailablePorts
	case hive.TooManyWorkers:
		return http.StatusServiceUnavailable, apiv1.CodeTooManyWorkers
	case hive.ShuttingDown:
		return http.StatusServiceUnavailable, apiv1.CodeShuttingDown
	case hive.InsufficientMemory:
		return http.StatusInsufficientStorage, apiv1.CodeInsufficientMemory
	case hive.InsufficientVRAM:
		return http.StatusInsufficientStorage, apiv1.CodeInsufficientVRAM
	}
	return http.StatusInternalServerError, apiv1.CodeInternal
}

// writeError renders err in the one error shape.
func writeError(w http.ResponseWriter, log *slog.Logger, err error) { writeErrorAs(w, log, err, false) }

// writeErrorAs renders err; withType adds the OpenAI-style "type" (the
// front door's routes, SPEC §10).
func writeErrorAs(w http.ResponseWriter, log *slog.Logger, err error, withType bool) {
	ae := toAPIError(err)
	if ae.Status >= 500 && ae.Code == apiv1.CodeInternal {
		log.Error("API internal error", "error", err)
	}
	for k, vs := range ae.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	d := apiv1.ErrorDetail{Code: ae.Code, Message: ae.Message}
	if withType {
		d.Type = apiv1.ErrorType(ae.Status, ae.Code)
	}
	writeJSON(w, ae.Status, apiv1.ErrorBody{Error: d})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}
