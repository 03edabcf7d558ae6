package e2e

import (
	"bufio"
	"context"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// A hive SIGTERMed with --keep-workers-on-exit while requests are in
// flight: their contexts end with the server's shutdown. A completion that
// had no answer yet got an empty 200, and a stream ended as if complete,
// with neither [DONE] nor an error event; now the first gets 503
// SHUTTING_DOWN and the second the SSE error event.
func TestFrontDoorRequestsInFlightWhenTheHiveStopsKeepingWorkers(t *testing.T) {
	h := startFD(t, hivetest.Options{Args: []string{"--keep-workers-on-exit"}, Config: "profiles:\n" +
		genericProfile(t, "gen", map[string]string{"GENERIC_TOKENS": "50", "GENERIC_TOKEN_MS": "100"}) +
		"models:\n  m1:\n    model_ref: file:stories260K.gguf\n    profile: gen\n    max_concurrency: 4\n"})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	stream := h.post(ctx, "/v1/chat/completions", "", `{"model":"m1","stream":true,"messages":[]}`)
	defer stream.Body.Close()
	rd := bufio.NewReader(stream.Body)
	if line, err := rd.ReadString('\n'); err != nil || !strings.Contains(line, "tok0") {
		t.Fatalf("first chunk %q %v", line, err)
	}
	type answer struct {
		code int
		body string
		err  error
	}
	plain := make(chan answer, 1)
	go func() {
		resp := h.post(ctx, "/v1/chat/completions", "", `{"model":"m1","messages":[]}`)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		plain <- answer{resp.StatusCode, string(b), err}
	}()
	if !hivetest.Eventually(t, 5*time.Second, func() bool {
		for _, m := range h.models().Data {
			if m.ID == "m1" {
				return m.Rbee.InFlight == 2
			}
		}
		return false
	}) {
		t.Fatalf("the second request never reached the worker: %+v", h.models())
	}
	t0 := time.Now()
	h.Signal(syscall.SIGTERM)
	rest, err := io.ReadAll(rd)
	s := string(rest)
	if err == nil && (!strings.Contains(s, "event: error\n") || !strings.Contains(s, apiv1.CodeShuttingDown)) {
		t.Errorf("the stream ended as if complete (%s after the SIGTERM): %q", time.Since(t0), s)
	}
	if strings.Contains(s, "[DONE]") {
		t.Errorf("the stream was not cut: %q", s)
	}
	a := <-plain
	if a.code != 503 || !strings.Contains(a.body, apiv1.CodeShuttingDown) {
		t.Errorf("the completion awaiting its answer got %d %q (%v)", a.code, a.body, a.err)
	}
	select {
	case <-h.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("the hive did not exit within 10s")
	}
	// A hive without the flag adopts the kept worker; its SIGTERM at
	// cleanup stops it.
	waitBindable(t, h.Addr)
	h.Restart(hivetest.Options{})
}
