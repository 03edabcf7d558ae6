package refworker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// ErrReadyRejected is wrapped by *ReadyRejectedError.
var ErrReadyRejected = errors.New("hive rejected the ready callback")

// ReadyRejectedError is a 4xx answer to the ready callback.
type ReadyRejectedError struct {
	Status int    // HTTP status
	Body   string // start of the answer's body
}

func (e *ReadyRejectedError) Error() string {
	return fmt.Sprintf("hive rejected the ready callback: HTTP %d: %s", e.Status, e.Body)
}

func (e *ReadyRejectedError) Unwrap() error { return ErrReadyRejected }

// hiveClient talks to the hive: the ready callback and heartbeats. A nil
// *hiveClient (standalone, or a worker told never to be ready) sends nothing.
//
// Heartbeats go through a small FIFO drained by one goroutine (run), so every
// idle ⇄ busy change reaches the hive in order, while periodic and loading
// heartbeats, which only say "still here", coalesce with a queued one of their
// kind. Methods are safe for concurrent use.
type hiveClient struct {
	base     string
	token    string
	workerID string
	client   *http.Client
	log      *slog.Logger
	stamp    string // LLMW_FAKE_READY_STAMP; "" writes nothing

	mu    sync.Mutex
	queue []queuedHB
	kick  chan struct{}

	failing bool // only touched by run's goroutine
}

type queuedHB struct {
	body      apiv1.HeartbeatRequest
	mergeable bool
}

const maxQueuedHeartbeats = 64

func newHiveClient(cfg config, log *slog.Logger) *hiveClient {
	return &hiveClient{
		base:     cfg.hiveURL,
		token:    cfg.token,
		workerID: cfg.workerID,
		stamp:    cfg.readyStamp,
		client: &http.Client{
			Timeout: 5 * time.Second,
			// One idle connection: heartbeats are sent one at a time, and
			// a second kept-alive connection (left by the ready callback
			// racing a loading heartbeat) would cost the hive a connection,
			// a goroutine and 8 KiB of buffers per worker for nothing.
			Transport: &http.Transport{
				MaxIdleConns:        1,
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     90 * time.Second,
			},
		},
		log:  log,
		kick: make(chan struct{}, 1),
	}
}

func (h *hiveClient) newBody(state string) apiv1.HeartbeatRequest {
	return apiv1.HeartbeatRequest{
		WorkerID:     h.workerID,
		Timestamp:    time.Now().UTC().Format(time.RFC3339Nano),
		HealthStatus: "healthy",
		State:        state,
	}
}

// loading queues a loading heartbeat with progress. It does not block.
func (h *hiveClient) loading(done, total int64) {
	if h == nil {
		return
	}
	b := h.newBody("loading")
	b.Progress = &apiv1.Progress{Done: done, Total: total}
	h.enqueue(b, true)
}

// ready queues an idle/busy heartbeat. change says it reports an idle ⇄ busy
// change, which is never merged away. It does not block.
func (h *hiveClient) ready(busy bool, slotsTotal, slotsAvailable int, change bool) {
	if h == nil {
		return
	}
	st := "idle"
	if busy {
		st = "busy"
	}
	b := h.newBody(st)
	b.SlotsTotal, b.SlotsAvailable = &slotsTotal, &slotsAvailable
	h.enqueue(b, !change)
}

func (h *hiveClient) enqueue(b apiv1.HeartbeatRequest, mergeable bool) {
	h.mu.Lock()
	// A heartbeat replaces a queued one of the same state only: the last
	// loading one (progress at the total) is not lost to the first idle
	// one when the hive is slow to take them.
	if n := len(h.queue); mergeable && n > 0 && h.queue[n-1].mergeable && h.queue[n-1].body.State == b.State {
		h.queue[n-1].body = b
	} else {
		h.queue = append(h.queue, queuedHB{b, mergeable})
		if len(h.queue) > maxQueuedHeartbeats {
			h.queue = h.queue[1:]
		}
	}
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func (h *hiveClient) pop() (apiv1.HeartbeatRequest, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.queue) == 0 {
		return apiv1.HeartbeatRequest{}, false
	}
	b := h.queue[0].body
	h.queue = h.queue[1:]
	return b, true
}

// run sends queued heartbeats, and every interval the one periodic() makes
// (when it says ok), until ctx is done. Errors are logged, not fatal.
func (h *hiveClient) run(ctx context.Context, interval time.Duration, periodic func() (apiv1.HeartbeatRequest, bool)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	defer h.client.CloseIdleConnections()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if b, ok := periodic(); ok {
				h.enqueue(b, true)
			}
		case <-h.kick:
		}
		for b, ok := h.pop(); ok && ctx.Err() == nil; b, ok = h.pop() {
			status, _, err := h.post(ctx, "/v1/heartbeat", b)
			if err == nil && status/100 != 2 {
				err = fmt.Errorf("HTTP %d", status)
			}
			switch {
			case err != nil && !h.failing && ctx.Err() == nil:
				h.failing = true
				h.log.Warn("heartbeat failed (further failures not logged until one succeeds)", "err", err)
			case err == nil && h.failing:
				h.failing = false
				h.log.Info("heartbeat delivered again")
			}
		}
	}
}

// post sends v as JSON to the hive path, with the worker token. It returns
// the status and the start of the body.
func (h *hiveClient) post(ctx context.Context, path string, v any) (int, string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.base+path, bytes.NewReader(data))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(bytes.TrimSpace(body)), nil
}

const (
	readyFirstDelay = 50 * time.Millisecond
	readyMaxDelay   = 2 * time.Second
	readyBudget     = 2 * time.Minute
)

// announceReady posts the ready callback, retrying with back-off while the
// hive is unreachable or answers 5xx. It blocks until the hive accepts, a 4xx
// answer (*ReadyRejectedError), the retry budget is spent, or ctx is done.
func (h *hiveClient) announceReady(ctx context.Context, body apiv1.ReadyRequest) error {
	deadline := time.Now().Add(readyBudget)
	delay := readyFirstDelay
	for attempt := 1; ; attempt++ {
		sent := time.Now()
		status, text, err := h.post(ctx, "/v1/workers/ready", body)
		switch {
		case err == nil && status/100 == 2:
			h.writeStamp(sent)
			return nil
		case err == nil && status/100 == 4:
			return &ReadyRejectedError{Status: status, Body: text}
		case err == nil:
			err = fmt.Errorf("HTTP %d: %s", status, text)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().Add(delay).After(deadline) {
			return fmt.Errorf("ready callback: hive unreachable for %v after %d attempts: %w", readyBudget, attempt, err)
		}
		if attempt == 1 || attempt%10 == 0 {
			h.log.Warn("ready callback failed, retrying", "attempt", attempt, "err", err)
		}
		if err := sleepUntil(ctx, time.Now().Add(delay)); err != nil {
			return err
		}
		delay = min(delay*2, readyMaxDelay)
	}
}

// writeStamp records, for benchmarks, when the accepted ready callback was
// sent: "PID UNIX_NANOS\n" written to a new file named
// LLMW_FAKE_READY_STAMP + "." + PID. The file is created with
// O_EXCL|O_NOFOLLOW, so the worker never overwrites an existing file nor
// follows a planted symlink. Failures are logged and otherwise ignored.
func (h *hiveClient) writeStamp(sent time.Time) {
	if h.stamp == "" {
		return
	}
	line := fmt.Sprintf("%d %d\n", os.Getpid(), sent.UnixNano())
	if err := writeNewFile(StampPath(h.stamp, os.Getpid()), []byte(line)); err != nil {
		h.log.Warn("writing the ready stamp failed", "err", err)
	}
}

// StampPath is the file a worker with this pid writes for the stamp base
// path given in LLMW_FAKE_READY_STAMP.
func StampPath(base string, pid int) string { return base + "." + strconv.Itoa(pid) }

// writeNewFile creates path (which must not exist, and is never followed if
// it is a symlink) with mode 0600 and writes b to it.
func writeNewFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
