package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/frontdoor"
	"github.com/rbee/rbee-hive/internal/gpu"
	"github.com/rbee/rbee-hive/internal/hive"
	"github.com/rbee/rbee-hive/internal/models"
	"github.com/rbee/rbee-hive/internal/ports"
	"github.com/rbee/rbee-hive/internal/supervisor"
	"github.com/rbee/rbee-hive/internal/validate"
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

// toAPIError maps the errors of the hive's packages to API errors. Unknown
// errors are 500 INTERNAL.
func toAPIError(err error) *Error {
	var ae *Error
	var ve *validate.Error
	var me *models.Error
	var se *supervisor.SpawnError
	var ime *models.InsufficientMemoryError
	var fe *frontdoor.Error
	var ive *gpu.InsufficientVRAMError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &fe):
		e := errorf(fe.Status, fe.Code, "%s", fe.Message)
		if fe.RetryAfter > 0 {
			e.Header = http.Header{"Retry-After": {strconv.Itoa(fe.RetryAfter)}}
		}
		return e
	case errors.As(err, &ve):
		return errorf(http.StatusBadRequest, ve.Code, "%s", ve.Message)
	case errors.As(err, &me):
		return errorf(me.Status, me.Code, "%s", me.Message)
	case errors.As(err, &ime):
		return errorf(http.StatusInsufficientStorage, apiv1.CodeInsufficientMemory, "%s", ime.Error())
	case errors.As(err, &ive):
		return errorf(http.StatusInsufficientStorage, apiv1.CodeInsufficientVRAM, "%s", ive.Error())
	case errors.Is(err, cgroup.ErrLimitsUnsupported):
		return errorf(http.StatusUnprocessableEntity, apiv1.CodeLimitsUnsupported, "%s", err.Error())
	case errors.Is(err, ports.ErrExhausted):
		return errorf(http.StatusServiceUnavailable, apiv1.CodeNoAvailablePorts, "%s", err.Error())
	case errors.Is(err, hive.ErrWorkerNotFound):
		return errorf(http.StatusNotFound, apiv1.CodeWorkerNotFound, "%s", err.Error())
	case errors.Is(err, supervisor.ErrInvalidState):
		return errorf(http.StatusConflict, apiv1.CodeInvalidState, "%s", err.Error())
	case errors.As(err, &se):
		return errorf(http.StatusInternalServerError, apiv1.CodeSpawnFailed, "%s", se.Error())
	case errors.Is(err, hive.ErrShuttingDown):
		return errorf(http.StatusServiceUnavailable, "SHUTTING_DOWN", "%s", err.Error())
	case errors.Is(err, hive.ErrTooManyWorkers):
		return errorf(http.StatusServiceUnavailable, "TOO_MANY_WORKERS", "%s", err.Error())
	}
	return errorf(http.StatusInternalServerError, apiv1.CodeInternal, "internal error: %v", err)
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
