package frontdoor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/relay"

	"github.com/rbee/rbee-hive/internal/clip"
)

// attempt is one try of relaying a request to one worker.
type attempt struct {
	target   *url.URL
	err      error // the round trip's error (nothing was relayed)
	reused   bool  // the request went out on a kept-alive connection
	header   bool  // the worker's response head was received
	sse      bool  // the response is an event stream
	at       time.Time
	firstAt  time.Time
	workerID string
}

// target is a worker URL, parsed once per URL (a restart may move the
// worker to another port).
type target struct {
	raw string
	u   *url.URL
}

// targetOf returns the parsed URL of s's worker as info gives it.
func targetOf(s *slot, raw string) (*url.URL, error) {
	if t := s.target.Load(); t != nil && t.raw == raw {
		return t.u, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	s.target.Store(&target{raw: raw, u: u})
	return u, nil
}

// notRelayed are the client's headers a worker does not get besides the
// hop-by-hop ones: the client's credentials are the hive's business, and
// forwarding headers are not set by this hop (as httputil's Rewrite).
var notRelayed = []string{"Authorization", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// ServeInference serves POST /v1/chat/completions, /v1/completions and
// /v1/embeddings: the body goes unchanged to a worker of its "model" and
// the answer comes back unchanged, chunk by chunk. It blocks while the
// request waits in the model's queue or through a cold start. Errors before
// anything was relayed are returned (*Error, or the context's error when
// the client went away) for the API to render.
func (fd *FrontDoor) ServeInference(w http.ResponseWriter, r *http.Request) error {
	start := time.Now()
	limit := fd.cfg.MaxInferenceBodyBytes
	if limit <= 0 {
		limit = 16 << 20
	}
	body, err := readBody(w, r, limit)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, apiv1.CodeBodyTooLarge, "request body over %d bytes", limit)
		}
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "reading body: %v", err)
	}
	name, err := relay.Model(body)
	if err != nil {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "the body must be a JSON object with a \"model\": %s", clip.String(err.Error(), 200))
	}
	if name == "" {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "the body must name a \"model\" (a string)")
	}
	m := fd.lookup(name)
	if m == nil {
		names := fd.Names()
		sort.Strings(names)
		return errorf(http.StatusNotFound, apiv1.CodeModelNotFound, "model %q is not served here; models: %s",
			clip.String(name, 200), strings.Join(names, ", "))
	}
	code := 0
	worker := ""
	defer func() {
		took := time.Since(start)
		if fd.metrics != nil {
			fd.metrics.request(m.name, code, took)
		}
		if fd.log.Enabled(r.Context(), slog.LevelDebug) {
			fd.log.Debug("Inference request", "model", m.name, "path", r.URL.Path, "status", code,
				"worker_id", worker, "duration", took.String())
		}
	}()
	// Answers may stream for far longer than the server's write timeout.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	exclude := ""
	notReady := 0
	for try := 0; ; try++ {
		s, waited, err := fd.acquire(r.Context(), m, exclude)
		if fd.metrics != nil {
			fd.metrics.queueWait(m.name, waited)
		}
		if err != nil {
			err = fd.notCancelled(err, r)
			code = statusOf(err, r)
			return err
		}
		worker = s.id
		a, err := fd.relay(w, r, body, s)
		if errors.Is(err, errNotReady) && notReady < 8 {
			// Picked as it stopped being ready (a crash or a stop the
			// event of which is on its way): pick again, or wait in the
			// queue for a restart. Not a try.
			notReady++
			fd.notReady(s)
			try--
			continue
		}
		if err == nil && a.header && fd.metrics != nil {
			fd.metrics.firstByte(m.name, a.firstAt.Sub(start))
		}
		if errors.Is(err, errRefused) && notReady < 8 && fd.wentDown(s, 200*time.Millisecond) {
			// The worker died (or is stopping) and the hive has now seen
			// it: as above, pick again or wait for its restart.
			notReady++
			fd.notReady(s)
			try--
			continue
		}
		retry := errors.Is(err, errRefused) && try == 0
		if retry {
			fd.log.Info("Worker refused the connection; retrying once on another", "model", m.name, "worker_id", s.id)
			exclude = s.id
			continue
		}
		switch {
		case err == nil:
			code = a.status
		case errors.Is(err, errRefused), errors.Is(err, errCrashed):
			code = http.StatusBadGateway
			return errorf(http.StatusBadGateway, apiv1.CodeWorkerCrashed, "worker %s of %s failed before answering: %v",
				s.id, m.name, a.err)
		default:
			err = fd.notCancelled(err, r)
			code = statusOf(err, r)
		}
		return err
	}
}

// notCancelled is err, unless it is the end of r's context while the hive
// shuts down: its server ends the requests' contexts, and the client, still
// there, is told (the context's error is taken for the client going away:
// nothing would be written, and the server would answer an empty 200).
func (fd *FrontDoor) notCancelled(err error, r *http.Request) error {
	if ce := r.Context().Err(); ce != nil && errors.Is(err, ce) && fd.ctx.Err() != nil {
		return errorf(http.StatusServiceUnavailable, apiv1.CodeShuttingDown, "the hive is shutting down")
	}
	return err
}

// readBody reads r's body, at most limit bytes (*http.MaxBytesError past
// that): into a buffer of its declared length when it has one.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	switch n := r.ContentLength; {
	case n > limit:
		return nil, &http.MaxBytesError{Limit: limit}
	case n > 0:
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

var (
	errNotReady = errors.New("worker is no longer ready")
	errRefused  = errors.New("worker refused the connection")
	errCrashed  = errors.New("worker failed before answering")
)

// relayed is what relay saw.
type relayed struct {
	*attempt
	status int
}

// relay sends the request through s and the answer back. It takes care of
// the worker's busy/idle bracket and releases s.
func (fd *FrontDoor) relay(w http.ResponseWriter, r *http.Request, body []byte, s *slot) (res relayed, err error) {
	defer fd.release(s)
	info := s.w.Info()
	if info.URL == "" {
		return res, errRefused
	}
	u, perr := targetOf(s, info.URL)
	if perr != nil {
		return res, errRefused
	}
	a := &attempt{target: u, at: time.Now(), workerID: s.id}
	res.attempt = a
	end, err := s.w.BeginRequest(r.Context())
	if err != nil {
		if r.Context().Err() != nil {
			return res, r.Context().Err()
		}
		// Stopping or gone since it was picked.
		a.err = err
		return res, errNotReady
	}
	wrote := false
	defer func() {
		// The answer is complete (or cut): flush it before telling the
		// owner, so that the client does not wait for the bookkeeping.
		// (Nothing written yet: the caller writes an error.)
		if wrote {
			_ = http.NewResponseController(w).Flush()
		}
		end()
	}()
	h := make(http.Header, len(r.Header))
	relay.CopyHeader(h, r.Header, notRelayed...)
	resp, reused, rerr := fd.tr.Do(relay.NewRequest(r.Context(), r.Method, relay.Target(u, r.URL), h, body))
	if rerr != nil {
		a.err, a.reused = rerr, reused
		if r.Context().Err() != nil {
			return res, r.Context().Err()
		}
		// Refused, or a kept-alive connection the worker had already
		// dropped (it died or restarted since): the request never reached
		// a worker that could answer it.
		if isRefused(rerr) || reused || errors.Is(rerr, syscall.ECONNRESET) {
			return res, errRefused
		}
		return res, errCrashed
	}
	a.header, a.firstAt, a.sse = true, time.Now(), relay.IsEventStream(resp)
	res.status = resp.StatusCode
	wrote, err = relay.WriteResponse(w, resp)
	if err == nil {
		return res, nil
	}
	// The worker's answer broke off after its head was relayed, the
	// client went away, or the hive is shutting down (its server ends the
	// requests' contexts; the client is still there).
	status, code, msg := http.StatusBadGateway, apiv1.CodeWorkerCrashed, fmt.Sprintf("worker %s of %s ended mid-stream", s.id, s.m.name)
	switch {
	case r.Context().Err() != nil && fd.ctx.Err() == nil:
		return res, r.Context().Err()
	case r.Context().Err() != nil:
		status, code = http.StatusServiceUnavailable, apiv1.CodeShuttingDown
		msg = fmt.Sprintf("the hive is shutting down: the answer of worker %s of %s was cut", s.id, s.m.name)
	default:
		fd.log.Warn("Worker's answer broke off mid-stream", "worker_id", s.id, "model", s.m.name, "error", err)
	}
	if a.sse {
		// Cut the stream with an error event the client can read (a
		// handler that returns without one ends it as if complete).
		b, _ := json.Marshal(apiv1.ErrorBody{Error: apiv1.ErrorDetail{Code: code, Message: msg,
			Type: apiv1.ErrorType(status, code)}})
		_, _ = fmt.Fprintf(w, "event: error\ndata: %s\n\n", b)
		return res, nil
	}
	panic(http.ErrAbortHandler) // nothing else to say: the connection is cut
}

// wentDown waits up to d for the hive to see s's worker stop being ready
// (its exit is noticed within milliseconds) and reports whether it did.
func (fd *FrontDoor) wentDown(s *slot, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if info := s.w.Info(); info == nil || !info.State.Ready() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// statusOf is the status an error will be answered with (for metrics).
func statusOf(err error, r *http.Request) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	if r.Context().Err() != nil {
		return 499 // client closed the request
	}
	return http.StatusInternalServerError
}
