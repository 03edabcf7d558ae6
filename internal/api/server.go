// Package api serves the hive's HTTP API v1 (SPEC §4): routing, auth
// (operator token, per-worker tokens), strict JSON decoding with bounded
// bodies, and one renderer for every error. It holds no worker state: it
// calls the hive.
//
// Its files, by job: server.go (the routes, the handler wrapper, health,
// metrics, status), auth.go (operator, browser and worker tokens),
// decode.go (request bodies), workers.go (the worker routes and the
// worker's own ready and heartbeat calls), streams.go (events and logs),
// peer.go (which client a stream counts against), logfile.go (a log's
// tail), models.go (the model catalog), inference.go (the OpenAI front
// door's routes), conns.go (the connection bound), errors.go (the one
// error renderer), openapi.go (the embedded OpenAPI document).
package api

import (
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/console"
	"github.com/rbee/rbee-hive/internal/frontdoor"
	"github.com/rbee/rbee-hive/internal/hive"
	"github.com/rbee/rbee-hive/internal/version"

	"github.com/rbee/rbee-hive/internal/clip"
)

// Limits of the HTTP surface.
const (
	MaxBodyBytes        = 1 << 20
	MaxAuthHeaderBytes  = 8 << 10
	MaxStreamsPerClient = 16
	maxLogTail          = 10000
	defaultLogTail      = 100
	// sseKeepAliveInterval: an event stream gets a comment line at the
	// multiples of it on the wall clock (internal/wallgrid), the ticks of
	// the default health interval: an idle hive with a stream open (the
	// console, `rbee-hive events`) wakes up once for both.
	sseKeepAliveInterval = 10 * time.Second
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
	// MetricsLoopback serves /metrics without a token to requests
	// addressed to a loopback host (the hive is bound to loopback): not to
	// a page whose DNS name was rebound to 127.0.0.1.
	MetricsLoopback bool
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
	for _, p := range apiv1.InferenceRoutes {
		s.handle("POST "+p, inf(s.infer))
	}
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
	var pattern string
	if err := s.checkBrowser(r); err != nil {
		writeError(sw, s.log, err)
		_, pattern = s.mux.Handler(r)
	} else {
		s.mux.ServeHTTP(sw, r) // sets r.Pattern: the route is matched once
		pattern = r.Pattern
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
