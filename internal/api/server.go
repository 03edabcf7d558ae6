// Package api serves the hive's HTTP API v1 (SPEC §4): routing, auth
// (operator token, per-worker tokens), strict JSON decoding with bounded
// bodies, and one renderer for every error. It holds no worker state: it
// calls the hive.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/console"
	"github.com/rbee/rbee-hive/internal/frontdoor"
	"github.com/rbee/rbee-hive/internal/hive"
	"github.com/rbee/rbee-hive/internal/models"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/supervisor"
	"github.com/rbee/rbee-hive/internal/validate"

	"github.com/rbee/rbee-hive/internal/clip"
	"github.com/rbee/rbee-hive/internal/version"
)

// Limits of the HTTP surface.
const (
	MaxBodyBytes         = 1 << 20
	MaxAuthHeaderBytes   = 8 << 10
	MaxStreamsPerClient  = 16
	maxLogTail           = 10000
	defaultLogTail       = 100
	sseKeepAliveInterval = 15 * time.Second
)

// Options configure the API server.
type Options struct {
	Hive   *hive.Hive
	Logger *slog.Logger
	// Token is the operator token; empty means dev mode (no operator auth),
	// which the daemon allows only on loopback.
	Token string
	// MetricsPublic serves /metrics without a token.
	MetricsPublic bool
	// Metrics serves /metrics; nil answers 404.
	Metrics http.Handler
	// Observe, when set, is called after each request with its route
	// pattern and status (API request metrics).
	Observe func(route string, status int, d time.Duration)
	// OpenAPI, when set, is served at /v1/openapi.json.
	OpenAPI []byte
	// FrontDoor serves the inference routes (SPEC §10); nil: no models
	// are served (GET /v1/models lists none, inference is 404).
	FrontDoor *frontdoor.FrontDoor
	// InferenceTokens are good for the inference routes only; the
	// operator token is good there too. With neither, those routes are
	// open (dev mode on loopback).
	InferenceTokens []string
}

// Server is the API's http.Handler.
type Server struct {
	o   Options
	h   *hive.Hive
	log *slog.Logger
	mux *http.ServeMux

	streamsMu sync.Mutex
	streams   map[string]int // open streams per client IP

	rejects rateLog // rejected-token log lines (conns.go)
}

// New returns the API handler.
func New(o Options) *Server {
	s := &Server{o: o, h: o.Hive, log: o.Logger, mux: http.NewServeMux(), streams: map[string]int{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	pub, op, wk := s.public, s.operator, s.worker
	s.handle("GET /health", pub(s.health))
	s.handle("GET /v1/health", pub(s.health))
	s.handle("GET /metrics", s.metricsAuth(s.metrics))
	s.handle("GET /v1/openapi.json", pub(s.openapi))
	s.handle("GET /v1/status", op(s.status))
	s.handle("POST /v1/workers/spawn", op(s.spawn))
	s.handle("GET /v1/workers/list", op(s.list))
	s.handle("GET /v1/workers/{id}", op(s.get))
	s.handle("POST /v1/workers/{id}/stop", op(s.stop))
	s.handle("DELETE /v1/workers/{id}", op(s.stop))
	s.handle("POST /v1/workers/{id}/kill", op(s.kill))
	s.handle("POST /v1/workers/{id}/restart", op(s.restart))
	s.handle("GET /v1/workers/{id}/logs", op(s.logs))
	s.handle("GET /v1/events", op(s.eventsStream))
	s.handle("GET /v1/catalog", op(s.modelList))
	s.handle("POST /v1/models", op(s.modelAdd))
	s.handle("DELETE /v1/models", op(s.modelRemove))
	inf := s.inference
	s.handle("GET /v1/models", inf(s.openaiModels))
	s.handle("POST /v1/chat/completions", inf(s.infer))
	s.handle("POST /v1/completions", inf(s.infer))
	s.handle("POST /v1/embeddings", inf(s.infer))
	s.handle("POST /v1/workers/ready", wk(s.ready))
	s.handle("POST /v1/heartbeat", wk(s.heartbeat))
	// The web console (SPEC §13): static pages, public; what they show
	// comes from the operator routes above.
	ui := console.Handler()
	s.mux.Handle("GET "+console.Prefix, ui)
	s.mux.Handle("GET /ui", ui)
	s.handle("/", pub(s.noRoute))
	return s
}

type handlerFunc func(http.ResponseWriter, *http.Request) error

// noRoute answers what no pattern took: 405 with Allow when the path exists
// under another method, else 404.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) error {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "/" && p != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		e := errorf(http.StatusMethodNotAllowed, apiv1.CodeMethodNotAllowed, "%s is not allowed on %s (allowed: %s)",
			r.Method, clip.String(r.URL.Path, 200), strings.Join(allow, ", "))
		e.Header = http.Header{"Allow": {strings.Join(allow, ", ")}}
		return e
	}
	return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no route %s %s", r.Method, clip.String(r.URL.Path, 200))
}

func (s *Server) handle(pattern string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, h)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	_, pattern := s.mux.Handler(r)
	if err := s.checkBrowser(r); err != nil {
		writeError(sw, s.log, err)
	} else {
		s.mux.ServeHTTP(sw, r)
	}
	if s.o.Observe != nil {
		if pattern == "" {
			pattern = "unmatched"
		}
		s.o.Observe(pattern, sw.status, time.Since(start))
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) run(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(w, s.log, err)
		}
	}
}

func (s *Server) public(h handlerFunc) http.HandlerFunc { return s.run(h) }

// operator requires the operator token unless the hive runs in dev mode.
func (s *Server) operator(h handlerFunc) http.HandlerFunc {
	return s.run(func(w http.ResponseWriter, r *http.Request) error {
		if err := s.checkOperator(r); err != nil {
			return err
		}
		return h(w, r)
	})
}

func (s *Server) checkOperator(r *http.Request) error {
	if s.o.Token == "" {
		return nil
	}
	tok, err := bearer(r)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.o.Token)) != 1 {
		s.rejects.warn(s.log, "Rejected operator token", "fingerprint", Fingerprint(tok), "remote", r.RemoteAddr)
		return unauthorized(apiv1.CodeInvalidAPIKey, "invalid API token")
	}
	markAuthenticated(r)
	return nil
}

// checkBrowser refuses (403 FORBIDDEN) what a web browser sends on behalf
// of a page of another site: the guard the queen shares, console.CrossSite;
// dev mode is no operator token.
func (s *Server) checkBrowser(r *http.Request) error {
	if why := console.CrossSite(r, s.o.Token == "", "hive"); why != "" {
		return errorf(http.StatusForbidden, apiv1.CodeForbidden, "%s", why)
	}
	return nil
}

// worker marks routes that workers call; the per-worker token is checked
// by the handler, against the worker id in the body.
func (s *Server) worker(h handlerFunc) http.HandlerFunc { return s.run(h) }

func (s *Server) metricsAuth(h handlerFunc) http.HandlerFunc {
	return s.run(func(w http.ResponseWriter, r *http.Request) error {
		if !s.o.MetricsPublic {
			if err := s.checkOperator(r); err != nil {
				return err
			}
		}
		return h(w, r)
	})
}

func unauthorized(code, msg string) *Error {
	e := errorf(http.StatusUnauthorized, code, "%s", msg)
	e.Header = http.Header{"Www-Authenticate": {`Bearer realm="rbee-hive"`}}
	return e
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
// The prefix is case-sensitive; the token is trimmed; empty, over-long or
// control-character tokens are refused.
func bearer(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", unauthorized(apiv1.CodeMissingAPIKey, "missing Authorization: Bearer <token> header")
	}
	if len(vals) > 1 {
		return "", unauthorized(apiv1.CodeInvalidAPIKey, "more than one Authorization header")
	}
	h := vals[0]
	if len(h) > MaxAuthHeaderBytes {
		return "", unauthorized(apiv1.CodeInvalidAPIKey, "Authorization header too long")
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return "", unauthorized(apiv1.CodeInvalidAPIKey, `Authorization must be "Bearer <token>" (case-sensitive)`)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", unauthorized(apiv1.CodeInvalidAPIKey, "empty bearer token")
	}
	for _, c := range tok {
		if c < 0x21 || c == 0x7f {
			return "", unauthorized(apiv1.CodeInvalidAPIKey, "bearer token contains control characters or spaces")
		}
	}
	return tok, nil
}

// Fingerprint returns a short, non-reversible name for a token for logs.
func Fingerprint(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:3])
}

// decode reads a JSON body strictly: bounded size, no unknown fields, no
// trailing data.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, apiv1.CodeBodyTooLarge, "request body over %d bytes", MaxBodyBytes)
		}
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "reading body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "invalid JSON body: %s", clip.String(err.Error(), 200))
	}
	// Only the end of the input may follow (dec.More would let a stray
	// "}" or "]" through).
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "invalid JSON body: trailing data after the object")
	}
	return nil
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, apiv1.Health{Status: "alive", Version: version.Version, APIVersion: apiv1.Version})
	return nil
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) error {
	if s.o.Metrics == nil {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "metrics are not enabled")
	}
	s.o.Metrics.ServeHTTP(w, r)
	return nil
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) error {
	if s.o.OpenAPI == nil {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no OpenAPI document")
	}
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(s.o.OpenAPI)
	return err
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.h.Status())
	return nil
}

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
	if err := ref.w.Stop(r.Context(), state.Stopped); err != nil {
		return err
	}
	return s.accepted(w, ref)
}

func (s *Server) kill(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.lookup(r)
	if err != nil {
		return err
	}
	if err := ref.w.Kill(r.Context(), state.Killed); err != nil {
		return err
	}
	return s.accepted(w, ref)
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.lookup(r)
	if err != nil {
		return err
	}
	if err := ref.w.Restart(r.Context()); err != nil {
		return err
	}
	return s.accepted(w, ref)
}

func (s *Server) accepted(w http.ResponseWriter, ref *workerRef) error {
	info := ref.w.Info()
	writeJSON(w, http.StatusAccepted, apiv1.StateResponse{WorkerID: info.ID, State: info.State})
	return nil
}

// workerAuth checks the calling worker's own token for id and returns the
// worker.
func (s *Server) workerAuth(r *http.Request, id string) (*supervisor.Worker, error) {
	if e := validate.WorkerID(id); e != nil {
		return nil, errorf(http.StatusBadRequest, e.Code, "%s", e.Message)
	}
	wk, err := s.h.Worker(id)
	if err != nil {
		return nil, err
	}
	tok, err := bearer(r)
	if err != nil {
		return nil, err
	}
	if !wk.Authorize(tok) {
		s.rejects.warn(s.log, "Rejected worker token", "worker_id", id, "fingerprint", Fingerprint(tok), "remote", r.RemoteAddr)
		return nil, unauthorized(apiv1.CodeInvalidAPIKey, "token is not this worker's token")
	}
	markAuthenticated(r)
	return wk, nil
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
	if err := wk.Ready(r.Context(), &req); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Message{Message: "Worker registered as ready"})
	return nil
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) error {
	var hb apiv1.HeartbeatRequest
	if err := decode(w, r, &hb); err != nil {
		return err
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
	if err := wk.Heartbeat(r.Context(), &hb); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Message{Message: "Heartbeat received"})
	return nil
}

// acquireStream counts a long-lived stream against the client's bound.
func (s *Server) acquireStream(r *http.Request) (func(), error) {
	host := streamClient(r)
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	if s.streams[host] >= MaxStreamsPerClient {
		return nil, errorf(http.StatusTooManyRequests, apiv1.CodeTooManyStreams,
			"at most %d open streams per client", MaxStreamsPerClient)
	}
	s.streams[host]++
	return func() {
		s.streamsMu.Lock()
		defer s.streamsMu.Unlock()
		if s.streams[host]--; s.streams[host] <= 0 {
			delete(s.streams, host)
		}
	}, nil
}

func (s *Server) eventsStream(w http.ResponseWriter, r *http.Request) error {
	release, err := s.acquireStream(r)
	if err != nil {
		return err
	}
	defer release()
	sub := s.h.Events().Subscribe(1024)
	defer sub.Close()
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, ": rbee-hive events\n\n")
	_ = rc.Flush()
	keep := time.NewTicker(sseKeepAliveInterval)
	defer keep.Stop()
	var buf []byte
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-keep.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			_ = rc.Flush()
		case ev, ok := <-sub.C:
			// Every event already queued goes out in the same write: a
			// front-door request flips its worker busy and idle again
			// within a millisecond, and a write per event was a sixth of
			// the hive's CPU per request with one stream open.
			for {
				if !ok {
					_, _ = io.WriteString(w, "event: lagged\ndata: {}\n\n")
					return nil
				}
				buf = append(buf[:0], "event: state\ndata: "...)
				b, _ := json.Marshal(ev)
				buf = append(append(buf, b...), "\n\n"...)
				if _, err := w.Write(buf); err != nil {
					return nil
				}
				select {
				case ev, ok = <-sub.C:
					continue
				default:
				}
				break
			}
			_ = rc.Flush()
		}
	}
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.lookup(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	n := defaultLogTail
	if v := q.Get("tail"); v != "" {
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 || n > maxLogTail {
			return errorf(http.StatusBadRequest, "INVALID_TAIL", "tail must be 0..%d", maxLogTail)
		}
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		follow, err = strconv.ParseBool(v)
		if err != nil {
			return errorf(http.StatusBadRequest, "INVALID_FOLLOW", "follow must be true or false")
		}
	}
	lg := ref.w.Log()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !follow {
		lines, err := tailFile(lg.Path(), n)
		if err != nil {
			return err
		}
		for _, l := range lines {
			_, _ = io.WriteString(w, l+"\n")
		}
		return nil
	}
	release, err := s.acquireStream(r)
	if err != nil {
		return err
	}
	defer release()
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-ref.w.Done():
		case <-ctx.Done():
		}
		cancel()
	}()
	_ = lg.TailFollow(ctx, n, func(line string) error {
		if _, err := io.WriteString(w, line+"\n"); err != nil {
			return err
		}
		return rc.Flush()
	})
	return nil
}

func (s *Server) modelList(w http.ResponseWriter, r *http.Request) error {
	out := apiv1.ModelList{Models: []apiv1.ModelEntry{}}
	for _, e := range s.h.Catalog().List() {
		out.Models = append(out.Models, apiv1.ModelEntry{Ref: e.Ref, Path: e.Path, SizeBytes: e.SizeBytes, AddedAt: e.AddedAt})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) modelAdd(w http.ResponseWriter, r *http.Request) error {
	var req apiv1.ModelAddRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	e, err := s.h.AddModel(req.Ref, req.Path)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apiv1.ModelEntry{Ref: e.Ref, Path: e.Path, SizeBytes: e.SizeBytes, AddedAt: e.AddedAt})
	return nil
}

func (s *Server) modelRemove(w http.ResponseWriter, r *http.Request) error {
	ref := r.URL.Query().Get("ref")
	if _, _, err := models.ParseRef(ref); err != nil {
		return err
	}
	if err := s.h.Catalog().Remove(ref); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Message{Message: "Model removed"})
	return nil
}
