package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/validate"
)

func (s *Server) spawn(w http.ResponseWriter, r *http.Request) error {
	var req apiv1.SpawnRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	wk, err := s.h.Spawn(r.Context(), &req)
	if err != nil {
		return err
	}
	info := wk.Info()
	writeJSON(w, http.StatusCreated, apiv1.SpawnResponse{
		WorkerID: info.ID, URL: info.URL, Port: info.Port, PID: info.PID, State: info.State,
		Device: info.Device, GPUUUID: info.GPUUUID, Estimate: info.Estimate,
	})
	return nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) error {
	all := false
	if v := r.URL.Query().Get("all"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "all must be true or false")
		}
		all = b
	}
	writeJSON(w, http.StatusOK, apiv1.WorkerList{Workers: s.h.List(all)})
	return nil
}

func (s *Server) lookup(r *http.Request) (*workerRef, error) {
	id := r.PathValue("id")
	if e := validate.WorkerID(id); e != nil {
		return nil, errorf(http.StatusBadRequest, e.Code, "%s", e.Message)
	}
	wk, err := s.h.Worker(id)
	if err != nil {
		return nil, err
	}
	return &workerRef{wk}, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.lookup(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.h.WithStats(ref.w.Info()))
	return nil
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.lookup(r)
	if err != nil {
		return err
	}
	if err := s.h.Stop(r.Context(), ref.w); err != nil {
		return err
	}
	return s.accepted(w, ref)
}

func (s *Server) kill(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.lookup(r)
	if err != nil {
		return err
	}
	if err := s.h.Kill(r.Context(), ref.w); err != nil {
		return err
	}
	return s.accepted(w, ref)
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.lookup(r)
	if err != nil {
		return err
	}
	if err := s.h.Restart(r.Context(), ref.w); err != nil {
		return err
	}
	return s.accepted(w, ref)
}

func (s *Server) accepted(w http.ResponseWriter, ref *workerRef) error {
	info := ref.w.Info()
	writeJSON(w, http.StatusAccepted, apiv1.StateResponse{WorkerID: info.ID, State: info.State})
	return nil
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) error {
	var req apiv1.ReadyRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	wk, err := s.workerAuth(r, req.WorkerID)
	if err != nil {
		return err
	}
	if err := s.h.Ready(r.Context(), wk, &req); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Message{Message: "Worker registered as ready"})
	return nil
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) error {
	data, err := readBody(w, r)
	if err != nil {
		return err
	}
	hb, ok := parseHeartbeat(data) // what workers send, without reflection
	if !ok {
		if err := decodeJSON(data, &hb); err != nil {
			return err
		}
	}
	wk, err := s.workerAuth(r, hb.WorkerID)
	if err != nil {
		return err
	}
	if _, err := time.Parse(time.RFC3339Nano, hb.Timestamp); err != nil {
		return errorf(http.StatusBadRequest, "INVALID_TIMESTAMP", "timestamp must be RFC 3339")
	}
	switch hb.HealthStatus {
	case "healthy", "degraded":
	default:
		return errorf(http.StatusBadRequest, "INVALID_HEALTH_STATUS", `health_status must be "healthy" or "degraded"`)
	}
	switch hb.State {
	case "", "loading", "idle", "busy":
	default:
		return errorf(http.StatusBadRequest, "INVALID_STATE_FIELD", `state must be "loading", "idle" or "busy"`)
	}
	if p := hb.Progress; p != nil && (p.Done < 0 || p.Total < 0) {
		return errorf(http.StatusBadRequest, "INVALID_PROGRESS", "progress values must not be negative")
	}
	for _, n := range []*int{hb.SlotsTotal, hb.SlotsAvailable} {
		if n != nil && (*n < 0 || *n > 1<<20) {
			return errorf(http.StatusBadRequest, "INVALID_SLOTS", "slots must be 0..1048576")
		}
	}
	if err := s.h.Heartbeat(r.Context(), wk, &hb); err != nil {
		return err
	}
	// The answer is bytes made once, and has no Date header (formatting
	// one was a visible share of an idle hive's CPU at 1000 workers).
	hd := w.Header()
	hd["Content-Type"] = []string{"application/json"}
	hd["X-Content-Type-Options"] = []string{"nosniff"}
	hd["Date"] = nil
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(heartbeatAnswer)
	return nil
}

// heartbeatAnswer is what writeJSON writes for the heartbeat's answer.
var heartbeatAnswer = []byte(`{"message":"Heartbeat received"}` + "\n")
