package frontdoor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/h1"
	"github.com/rbee/rbee-hive/internal/state"
)

// A stream in flight when the hive shuts down (its workers kept: the
// daemon's --keep-workers) is cut by the end of the server's base context.
// The front door took that for the client going away and returned without
// a word, so the lean server ended the chunked answer as if it were
// complete: the client, still there, read an event stream that just
// stopped, with neither [DONE] nor an error (or a streamed body that
// looked whole). It gets the SSE error event (SHUTTING_DOWN) a cut stream
// gets (another streamed body is cut), and the worker sees the cancel.
func TestStreamCutByTheHiveShuttingDownEndsWithAnErrorEvent(t *testing.T) {
	for _, sse := range []bool{true, false} {
		t.Run(fmt.Sprintf("sse=%v", sse), func(t *testing.T) { testStreamCutByShutdown(t, sse) })
	}
}

// shutdownRig is a front door with one worker (the test's handler), served
// as the daemon serves it: the inference route read by the lean server,
// every request's context under one that the daemon's shutdown cancels.
type shutdownRig struct {
	fd         *FrontDoor
	addr       string
	endStreams func()
}

// shutdown is the daemon's: the front door closes, then the server's
// streams end.
func (r *shutdownRig) shutdown() {
	r.fd.Close()
	r.endStreams()
}

func startShutdownRig(t *testing.T, worker http.HandlerFunc) *shutdownRig {
	t.Helper()
	wln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ws := &http.Server{Handler: worker}
	go ws.Serve(wln)
	t.Cleanup(func() { ws.Close() })

	cfg := config.Default()
	cfg.Profiles["gen"] = config.Profile{Protocol: config.ProtocolHTTP, Command: []string{"/bin/true"}, MemoryBytes: 100}
	cfg.Models = map[string]config.Model{"m": {ModelRef: "file:/m.gguf", Profile: "gen", MaxWorkers: 1}}
	cfg.MemoryBudgetBytes = 1 << 30
	wk := &fakeWorker{id: "worker-1", done: make(chan struct{}), info: apiv1.WorkerInfo{ID: "worker-1", State: state.Idle,
		URL: "http://" + wln.Addr().String(), SlotsTotal: 1, Labels: map[string]string{ModelLabel: "m"}}}
	src := &fakeSource{events: make(chan apiv1.Event), spawned: make(chan *apiv1.SpawnRequest, 4), workers: []*fakeWorker{wk}}
	fd, err := New(Options{Source: src, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	fd.Start()
	t.Cleanup(func() { close(wk.done) })

	streams, endStreams := context.WithCancel(context.Background())
	t.Cleanup(endStreams)
	// As internal/api's inference wrapper: nothing is written when the
	// error is the client's going away.
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := fd.ServeInference(w, r)
		if err == nil || errors.Is(err, r.Context().Err()) {
			return
		}
		var fe *Error
		if errors.As(err, &fe) {
			http.Error(w, fe.Code+": "+fe.Message, fe.Status)
			return
		}
		http.Error(w, err.Error(), http.StatusInternalServerError)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h1.Server{Handler: handler, Routes: []string{"/v1/chat/completions"}, Fallback: &http.Server{Handler: handler},
		BaseContext: streams, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
		fd.Close()
	})
	return &shutdownRig{fd: fd, addr: ln.Addr().String(), endStreams: endStreams}
}

// post sends an inference request and returns the connection's reader.
func (r *shutdownRig) post(t *testing.T, body string) *bufio.Reader {
	t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: hive\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return bufio.NewReader(c)
}

func testStreamCutByShutdown(t *testing.T, sse bool) {
	cancelled := make(chan struct{})
	rig := startShutdownRig(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		if sse {
			w.Header().Set("Content-Type", "text/event-stream")
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		_, _ = io.WriteString(w, "data: {\"n\":0}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	})
	br := rig.post(t, `{"model":"m","stream":true}`)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	events := bufio.NewReader(resp.Body)
	if line, err := events.ReadString('\n'); err != nil || line != "data: {\"n\":0}\n" {
		t.Fatalf("first event %q, %v", line, err)
	}
	rig.shutdown()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the worker did not see the cancel within 5s")
	}
	rest, err := io.ReadAll(events)
	if !sse {
		if err == nil {
			t.Fatalf("the streamed body ended as if complete: %q", rest)
		}
		return
	}
	if err == nil && !strings.Contains(string(rest), "event: error\n") {
		t.Fatalf("the stream ended as if complete, with no error event: %q", rest)
	}
	if err == nil && !strings.Contains(string(rest), apiv1.CodeShuttingDown) {
		t.Fatalf("the error event does not say the hive is shutting down: %q", rest)
	}
}

// A request whose worker has not answered yet (a completion that is not
// streamed has no head before its end) when the hive shuts down got an
// empty 200: the front door took the end of the server's base context for
// the client going away and returned without a word, and the server
// answered for the handler. It gets 503 SHUTTING_DOWN, and the worker sees
// the cancel.
func TestRequestAwaitingItsAnswerWhenTheHiveShutsDownGets503(t *testing.T) {
	cancelled, arrived := make(chan struct{}), make(chan struct{})
	rig := startShutdownRig(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		close(arrived)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	})
	br := rig.post(t, `{"model":"m"}`)
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the worker within 5s")
	}
	rig.shutdown()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the worker did not see the cancel within 5s")
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), apiv1.CodeShuttingDown) {
		t.Fatalf("answered %s %q, want 503 %s", resp.Status, b, apiv1.CodeShuttingDown)
	}
}
