package cli

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Regression: when the hive dropped an `events` stream that fell behind
// (`event: lagged`, SPEC'd in docs/api.md), the CLI said only "event
// stream ended", as if the hive had gone: the operator was not told that
// events had been missed.
func TestEventsLaggedSaidOnlyThatTheStreamEnded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/events" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": rbee-hive events\n\n")
		io.WriteString(w, "event: state\ndata: {\"worker_id\":\"worker-1\",\"from\":\"loading\",\"to\":\"idle\",\"pid\":42,\"at\":\"2026-11-28T10:00:00Z\"}\n\n")
		io.WriteString(w, "event: lagged\ndata: {}\n\n")
	}))
	defer srv.Close()
	for _, o := range []string{"table", "json"} {
		out, errb, code := runMain(t, map[string]string{"RBEE_HIVE_URL": srv.URL}, "events", "-o", o)
		if code != 1 || !strings.Contains(out, "worker-1") || !strings.Contains(errb, "fell behind") ||
			!strings.Contains(errb, "missed events") {
			t.Fatalf("-o %s: exit %d\nstdout: %q\nstderr: %q", o, code, out, errb)
		}
	}
}
