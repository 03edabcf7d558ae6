package queen

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cluster"
	"github.com/rbee/rbee-hive/internal/console"
	"github.com/rbee/rbee-hive/internal/h1"
	"github.com/rbee/rbee-hive/internal/relay"
	"github.com/rbee/rbee-hive/internal/version"
)

// HiveHeader names the hive that answered, on every relayed response.
const HiveHeader = "X-Rbee-Hive"

// Queen routes inference across the hives of a View.
type Queen struct {
	cfg  Config
	view *cluster.View
	log  *slog.Logger
	tr   *relay.Transport
	open bool // no inference tokens on loopback: dev mode

	mu      sync.Mutex
	pending map[string]int      // requests this queen has in flight, by node
	urls    map[string]*url.URL // hive URLs, parsed once
}

// New returns a queen over view. open: no client auth (dev mode).
func New(cfg Config, view *cluster.View, log *slog.Logger, open bool) *Queen {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The hives' front doors over the relay's own HTTP/1.1 round tripper
	// (an https:// hive URL goes through net/http's Transport).
	tr := relay.New(3 * time.Second)
	tr.Fallback = &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &Queen{cfg: cfg, view: view, log: log, tr: tr, open: open, pending: map[string]int{}, urls: map[string]*url.URL{}}
}

// Handler is the queen's HTTP API and its web console (SPEC §13) at /ui/,
// behind the browser guard the hive uses (console.CrossSite): a request
// from a page of another origin is refused with 403 FORBIDDEN, and so, in
// dev mode, is one addressed to a host name that is not loopback (DNS
// rebinding).
func (q *Queen) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", q.health)
	mux.HandleFunc("GET /v1/health", q.health)
	mux.HandleFunc("GET /v1/models", q.auth(q.models))
	mux.HandleFunc("GET /v1/cluster", q.auth(q.clusterView))
	for _, p := range apiv1.InferenceRoutes {
		mux.HandleFunc("POST "+p, q.auth(q.infer))
	}
	// The console's pages are public; what they show comes from
	// /v1/cluster, with the token the operator types.
	ui := console.Handler()
	mux.Handle("GET "+console.Prefix, ui)
	mux.Handle("GET /ui", ui)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, apiv1.CodeNotFound, "no route "+r.Method+" "+r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := console.CrossSite(r, q.open, "queen"); why != "" {
			writeError(w, http.StatusForbidden, apiv1.CodeForbidden, why)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Close releases idle connections.
func (q *Queen) Close() {
	q.tr.CloseIdle("")
	if fb, ok := q.tr.Fallback.(*http.Transport); ok {
		fb.CloseIdleConnections()
	}
}

func (q *Queen) health(w http.ResponseWriter, r *http.Request) {
	// role tells the web console that it is on a queen (a hive's /health
	// has none).
	writeJSON(w, http.StatusOK, map[string]any{"status": "alive", "role": "queen", "version": version.Version, "api_version": apiv1.Version,
		"synced": q.view.Synced(), "revision": q.view.Revision()})
}

func (q *Queen) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if q.open {
			next(w, r)
			return
		}
		h := r.Header.Get("Authorization")
		if h == "" {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeError(w, http.StatusUnauthorized, apiv1.CodeMissingAPIKey, "missing Authorization: Bearer <token> header")
			return
		}
		tok, ok := strings.CutPrefix(h, "Bearer ")
		tok = strings.TrimSpace(tok)
		good := false
		for _, t := range q.cfg.InferenceTokens {
			if subtle.ConstantTimeCompare([]byte(tok), []byte(t)) == 1 {
				good = true
			}
		}
		if !ok || !good {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeError(w, http.StatusUnauthorized, apiv1.CodeInvalidAPIKey, "invalid API token")
			return
		}
		next(w, r)
	}
}

// Cluster is the body of GET /v1/cluster.
type Cluster = cluster.State

// ModelView is one model across the cluster.
type ModelView = cluster.ModelView

// ClusterState builds GET /v1/cluster from the view.
func (q *Queen) ClusterState() Cluster {
	return cluster.Summarize(q.view.Revision(), q.view.Snapshot())
}

func (q *Queen) clusterView(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, q.ClusterState())
}

// models is GET /v1/models: every model some live hive serves, in OpenAI's
// shape, with workers and in_flight summed over the hives.
func (q *Queen) models(w http.ResponseWriter, r *http.Request) {
	st := q.ClusterState()
	out := apiv1.OpenAIModelList{Object: "list", Data: []apiv1.OpenAIModel{}}
	for _, m := range st.Models {
		if len(m.Hives) == 0 {
			continue // workers started by hand, not a served model
		}
		out.Data = append(out.Data, apiv1.OpenAIModel{ID: m.Name, Object: "model", OwnedBy: "rbee-queen",
			Rbee: apiv1.ModelServeState{Workers: m.Workers, InFlight: m.InFlight}})
	}
	writeJSON(w, http.StatusOK, out)
}

// candidate is a hive that serves the model, ranked.
type candidate struct {
	node, url string
	warm      bool  // has a ready worker with a free slot
	load      int   // fewest in flight among its free workers, plus this queen's own
	vram      int64 // a GPU model there: the most VRAM free on one device (a worker takes one)
	free      int64 // memory free
}

// Route ranks the live hives that serve model: first those with a ready
// worker with a free slot (fewest in flight), then by most free memory
// (their front door starts a worker): for a hive that runs the model on a
// GPU (gpu_models), the most VRAM free on one of its devices first, then
// its memory. Hives whose key is gone are not in the view, so never here.
func (q *Queen) Route(model string) []candidate {
	hives := q.view.Snapshot()
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []candidate
	for _, h := range hives {
		serves := false
		for _, n := range h.Models {
			if n == model {
				serves = true
			}
		}
		if !serves || h.URL == "" {
			continue
		}
		c := candidate{node: h.Node, url: h.URL, free: h.Capacity.MemoryFree, load: -1}
		if slices.Contains(h.GPUModels, model) {
			for _, gpu := range h.Capacity.GPUs {
				c.vram = max(c.vram, gpu.MemoryFree)
			}
		}
		// A worker's record names the model, the request may name an
		// alias of it.
		name := model
		if m, ok := h.Aliases[model]; ok {
			name = m
		}
		for _, w := range h.Workers {
			if w.Model == name && w.Free() && (c.load < 0 || w.InFlight < c.load) {
				c.warm, c.load = true, w.InFlight
			}
		}
		c.load = max(c.load, 0) + q.pending[h.Node]
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.warm != b.warm {
			return a.warm
		}
		if a.warm && a.load != b.load {
			return a.load < b.load
		}
		if a.vram != b.vram {
			return a.vram > b.vram
		}
		if a.free != b.free {
			return a.free > b.free
		}
		if a.load != b.load {
			return a.load < b.load
		}
		return a.node < b.node
	})
	return out
}

var errBeforeResponse = errors.New("hive failed before answering")

// infer relays one inference request to a hive (retried once on another
// hive when the first fails before any byte of an answer).
func (q *Queen) infer(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, q.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, apiv1.CodeBodyTooLarge, fmt.Sprintf("request body over %d bytes", q.cfg.MaxBodyBytes))
			return
		}
		writeError(w, http.StatusBadRequest, apiv1.CodeInvalidRequest, "reading body: "+err.Error())
		return
	}
	model, err := relay.Model(body)
	if err != nil || model == "" {
		writeError(w, http.StatusBadRequest, apiv1.CodeInvalidRequest, `the body must be a JSON object naming a "model" (a string)`)
		return
	}
	cands := q.Route(model)
	if len(cands) == 0 {
		names := []string{}
		for _, m := range q.ClusterState().Models {
			if len(m.Hives) > 0 {
				names = append(names, m.Name)
			}
		}
		writeError(w, http.StatusNotFound, apiv1.CodeModelNotFound,
			fmt.Sprintf("model %q is served by no live hive; models: %s", model, strings.Join(names, ", ")))
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	var last error
	c := cands[0]
	for try := 0; ; try++ {
		err := q.relay(w, r, body, c)
		if err == nil {
			return
		}
		if !errors.Is(err, errBeforeResponse) || r.Context().Err() != nil {
			return
		}
		last = err
		if try == 1 {
			break // one retry
		}
		// The retry goes to the best hive of the view as it is now, not
		// of the ranking made before the first try: that try may have
		// taken minutes (a cold start), and a hive whose key went
		// meanwhile gets nothing.
		failed := c.node
		found := false
		for _, n := range q.Route(model) {
			if n.node != failed {
				c, found = n, true
				break
			}
		}
		if !found {
			break
		}
		q.log.Info("Hive failed before answering; trying another", "node", failed, "next", c.node, "model", model, "error", err)
	}
	writeError(w, http.StatusBadGateway, apiv1.CodeWorkerCrashed, fmt.Sprintf("no hive answered for %s: %v", model, last))
}

// relayHeaders are the client's headers a hive gets (its own credentials
// replace the client's).
var relayHeaders = []string{"Content-Type", "Accept", "User-Agent", "Openai-Organization", "X-Request-Id"}

// relay sends body to hive c and streams its answer back. An error wrapping
// errBeforeResponse means nothing was written to w. An answer that breaks
// off after its head cuts the client's connection (http.ErrAbortHandler):
// returning would end a chunked answer as if it were complete.
func (q *Queen) relay(w http.ResponseWriter, r *http.Request, body []byte, c candidate) error {
	q.mu.Lock()
	q.pending[c.node]++
	base := q.urls[c.url]
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		if q.pending[c.node]--; q.pending[c.node] <= 0 {
			delete(q.pending, c.node)
		}
		q.mu.Unlock()
	}()
	if base == nil {
		u, err := url.Parse(c.url)
		if err != nil {
			return fmt.Errorf("%w: hive URL %q: %v", errBeforeResponse, c.url, err)
		}
		base = u
		q.mu.Lock()
		if len(q.urls) > 4096 { // hives come and go: keep the cache bounded
			clear(q.urls)
		}
		q.urls[c.url] = u
		q.mu.Unlock()
	}
	h := make(http.Header, len(relayHeaders)+1)
	for _, k := range relayHeaders {
		if v := r.Header[k]; len(v) > 0 && v[0] != "" {
			h[k] = v[:1]
		}
	}
	if tok := q.cfg.tokenFor(c.node); tok != "" {
		h["Authorization"] = []string{"Bearer " + tok}
	}
	resp, _, err := q.tr.Do(relay.NewRequest(r.Context(), http.MethodPost, relay.Target(base, &url.URL{Path: r.URL.Path}), h, body))
	if err != nil {
		return fmt.Errorf("%w: %v", errBeforeResponse, err)
	}
	w.Header()[HiveHeader] = []string{c.node}
	if _, err := relay.WriteResponse(w, resp); err != nil {
		if r.Context().Err() != nil {
			return err // the client went away
		}
		q.log.Warn("Hive's answer broke off mid-stream", "node", c.node, "error", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiv1.ErrorBody{Error: apiv1.ErrorDetail{Code: code, Message: msg, Type: apiv1.ErrorType(status, code)}})
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	open := len(cfg.InferenceTokens) == 0
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); open && (!ok || !ta.IP.IsLoopback()) {
		ln.Close()
		return fmt.Errorf("inference tokens required for non-loopback listen address %s", ln.Addr())
	}
	cli, err := cluster.NewClient(cfg.Etcd.Endpoints, cfg.Etcd.TLS, cfg.Etcd.Username, cfg.Etcd.Password)
	if err != nil {
		ln.Close()
		return err
	}
	defer cli.Close()
	view := cluster.NewView(cli, cfg.Prefix, log)
	defer view.Close()
	q := New(cfg, view, log, open)
	defer q.Close()
	srv := &http.Server{Handler: q.Handler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 120 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	// The inference routes are read by the lean server; the rest by srv.
	fast := &h1.Server{Handler: srv.Handler, Routes: apiv1.InferenceRoutes, Fallback: srv,
		ReadHeaderTimeout: srv.ReadHeaderTimeout, IdleTimeout: srv.IdleTimeout, Log: log}
	errc := make(chan error, 1)
	go func() { errc <- fast.Serve(ln) }()
	log.Info("rbee-queen listening", "addr", ln.Addr().String(), "version", version.Version, "etcd", strings.Join(cfg.Etcd.Endpoints, ","),
		"prefix", cfg.Prefix, "dev_mode", open)
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = fast.Shutdown(sctx)
	log.Info("rbee-queen stopped")
	return nil
}
