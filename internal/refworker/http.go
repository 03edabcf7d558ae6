package refworker

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// apiError is an error answer: {"error":{"code":…,"message":…}}.
type apiError struct {
	status  int
	code    string
	message string
}

func writeJSON(rw http.ResponseWriter, status int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	json.NewEncoder(rw).Encode(v)
}

func writeError(rw http.ResponseWriter, e apiError) {
	type body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	writeJSON(rw, e.status, map[string]body{"error": {e.code, e.message}})
}

func (w *worker) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", w.handleHealth)
	mux.HandleFunc("GET /v1/ready", w.handleReady)
	mux.HandleFunc("GET /v1/loading/progress", w.handleProgress)
	mux.HandleFunc("POST /v1/inference", w.handleInference)
	mux.HandleFunc("POST /v1/completions", w.handleCompletions)
	mux.HandleFunc("POST /v1/chat/completions", w.handleChatCompletions)
	mux.HandleFunc("POST /v1/shutdown", w.handleShutdown)
	return mux
}

func (w *worker) healthHangs() bool {
	f := w.cfg.fake
	if f.hangHealth {
		return true
	}
	if !f.hangHealthAfterSet {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.readyAt.IsZero() && time.Since(w.readyAt) >= f.hangHealthAfter
}

func (w *worker) handleHealth(rw http.ResponseWriter, r *http.Request) {
	if w.healthHangs() {
		select {
		case <-r.Context().Done():
		case <-w.ctx.Done():
		}
		return
	}
	writeJSON(rw, http.StatusOK, map[string]string{"status": "healthy"})
}

func (w *worker) handleReady(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	ready, draining, busy := w.ready, w.draining, w.inflight > 0
	w.mu.Unlock()
	switch {
	case draining:
		writeJSON(rw, http.StatusOK, map[string]any{"ready": false, "state": "draining"})
	case !ready:
		writeJSON(rw, http.StatusOK, map[string]any{"ready": false, "state": "loading", "progress_url": "/v1/loading/progress"})
	default:
		st := "idle"
		if busy {
			st = "busy"
		}
		writeJSON(rw, http.StatusOK, map[string]any{"ready": true, "state": st, "model_loaded": true})
	}
}

// sse starts a Server-Sent Events answer.
func sse(rw http.ResponseWriter) *http.ResponseController {
	h := rw.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	rw.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(rw)
	rc.Flush()
	return rc
}

// sseData writes one "data: …" event and flushes it.
func sseData(rw http.ResponseWriter, rc *http.ResponseController, data []byte) error {
	if _, err := fmt.Fprintf(rw, "data: %s\n\n", data); err != nil {
		return err
	}
	return rc.Flush()
}

// handleProgress streams {"done","total"} as loading moves (at most every
// 50 ms), then [DONE] once the worker is ready.
func (w *worker) handleProgress(rw http.ResponseWriter, r *http.Request) {
	rc := sse(rw)
	var lastDone, lastTotal int64 = -1, -1
	for {
		done, total, finished, changed := w.prog.snapshot()
		if done != lastDone || total != lastTotal {
			b, _ := json.Marshal(apiv1.Progress{Done: done, Total: total})
			if sseData(rw, rc, b) != nil {
				return
			}
			lastDone, lastTotal = done, total
		}
		if finished {
			sseData(rw, rc, []byte("[DONE]"))
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		case <-w.ctx.Done():
			return
		}
		select { // batch fast-moving progress
		case <-time.After(50 * time.Millisecond):
		case <-r.Context().Done():
			return
		case <-w.ctx.Done():
			return
		}
	}
}

type inferenceRequest struct {
	Prompt       string   `json:"prompt"`
	MaxTokens    *int     `json:"max_tokens"`
	TokenDelayMS *int     `json:"token_delay_ms"`
	Temperature  *float64 `json:"temperature"`
	TopK         *int     `json:"top_k"`
	TopP         *float64 `json:"top_p"`
	Seed         *int64   `json:"seed"`
}

const (
	defaultMaxTokens = 16
	maxMaxTokens     = 4096
)

var errInvalidRequest = apiError{http.StatusBadRequest, "INVALID_REQUEST", ""}

func invalid(format string, args ...any) *apiError {
	e := errInvalidRequest
	e.message = fmt.Sprintf(format, args...)
	return &e
}

// decodeBody decodes one JSON value from the request body (at most 1 MiB).
func decodeBody(r *http.Request, v any) *apiError {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		return invalid("malformed JSON body: %v", err)
	}
	if dec.More() {
		return invalid("trailing data after the JSON body")
	}
	return nil
}

func (w *worker) handleInference(rw http.ResponseWriter, r *http.Request) {
	var req inferenceRequest
	if e := decodeBody(r, &req); e != nil {
		writeError(rw, *e)
		return
	}
	delay := w.cfg.tokenDelay
	if req.TokenDelayMS != nil {
		if *req.TokenDelayMS < 0 {
			writeError(rw, *invalid("token_delay_ms must not be negative"))
			return
		}
		delay = time.Duration(*req.TokenDelayMS) * time.Millisecond
	}
	g, e := newGeneration(req.MaxTokens, req.Temperature, req.TopK, req.TopP, req.Seed, 0)
	if e != nil {
		writeError(rw, *e)
		return
	}
	g.delay = delay
	job, refusal := w.start(g, req.Prompt)
	if refusal != nil {
		writeError(rw, *refusal)
		return
	}
	defer job.done()

	rc := sse(rw)
	i := 0
	_, err := job.run(r.Context(), func(piece string) error {
		b, _ := json.Marshal(struct {
			Token string `json:"token"`
			Index int    `json:"index"`
		}{piece, i})
		i++
		return sseData(rw, rc, b)
	})
	if err != nil {
		return
	}
	if sseData(rw, rc, []byte("[DONE]")) != nil {
		return
	}
	job.completed = true
}

func (w *worker) handleShutdown(rw http.ResponseWriter, r *http.Request) {
	if w.cfg.fake.ignoreShutdown {
		w.log.Info("fake: ignoring shutdown request")
		writeJSON(rw, http.StatusAccepted, map[string]string{"message": "Shutting down"})
		return
	}
	writeJSON(rw, http.StatusAccepted, map[string]string{"message": "Shutting down"})
	http.NewResponseController(rw).Flush()
	select {
	case w.shutdownReq <- struct{}{}:
	default:
	}
}
