package browser

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rbee/rbee-hive/internal/console"
)

// The page renders the documented shapes of answers that a hive gives only
// with a GPU (SPEC §11: /v1/status lists "gpus") or with served models
// (SPEC §10: GET /v1/models in OpenAI's shape): served by a stand-in for
// the API, since this machine has no GPU.
func TestConsoleRendersGPUBarsAndServedModels(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET /ui/", console.Handler())
	js := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, body)
		}
	}
	mux.HandleFunc("GET /v1/status", js(`{"version":"test","api_version":"v1","uptime_seconds":42,"dev_mode":true,"cgroup_mode":"v2",
		"workers":{},"totals":{"rss_bytes":0,"cpu_seconds":0,"threads":0,"open_fds":0},
		"memory":{"total_bytes":68719476736,"available_bytes":34359738368},
		"gpus":[{"index":0,"uuid":"GPU-aaaa","name":"Test GPU 80GB","memory_total_bytes":85899345920,"memory_used_bytes":21474836480,"memory_free_bytes":64424509440,"utilization_percent":37,"workers":["worker-1"]},
		        {"index":1,"uuid":"GPU-bbbb","name":"Test GPU 24GB","memory_total_bytes":25769803776,"memory_used_bytes":0,"memory_free_bytes":25769803776,"utilization_percent":0,"workers":[]}]}`))
	mux.HandleFunc("GET /v1/workers/list", js(`{"workers":[]}`))
	mux.HandleFunc("GET /v1/models", js(`{"object":"list","data":[
		{"id":"stories","object":"model","owned_by":"rbee-hive","created":1700000000,"rbee":{"workers":{"idle":1,"busy":2},"in_flight":3,"queued":5}},
		{"id":"cold","object":"model","owned_by":"rbee-hive","created":1700000000,"rbee":{"workers":{},"in_flight":0,"queued":0}}]}`))
	mux.HandleFunc("GET /v1/catalog", js(`{"models":[{"ref":"hf:org/stories","path":"/srv/models/stories.gguf","size_bytes":1048576,"added_at":"2026-01-01T00:00:00Z"}]}`))
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, ": test\n\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer srv.CloseClientConnections()

	b := newBrowser(t)
	b.must(chromedp.Navigate(srv.URL + "/ui/"))
	b.waitJS(10*time.Second, "the stream", `document.querySelector('#conn').dataset.state === 'live'`)
	b.waitJS(5*time.Second, "two GPU bars and the memory bar", `document.querySelectorAll('#bars .bar').length === 3`)
	bars := b.text(`#bars`)
	for _, want := range []string{"Memory", "32 GiB of 64 GiB used (50%)", "GPU 0 Test GPU 80GB, 37% busy", "20 GiB of 80 GiB used (25%)", "1 worker(s)", "GPU 1 Test GPU 24GB", "0 B of 24 GiB used (0%)"} {
		if !strings.Contains(bars, want) {
			t.Errorf("bars lack %q: %q", want, bars)
		}
	}
	b.click(`nav button[data-tab="models"]`)
	b.waitJS(5*time.Second, "the served models", `document.querySelector('#model-table')`)
	row := b.text(`#model-table tr[data-model="stories"]`)
	for _, want := range []string{"stories", "1 idle", "2 busy", "3", "5"} {
		if !strings.Contains(row, want) {
			t.Errorf("model row %q lacks %q", row, want)
		}
	}
	if row := b.text(`#model-table tr[data-model="cold"]`); !strings.Contains(row, "none") {
		t.Errorf("a model with no workers: %q", row)
	}
	b.waitJS(5*time.Second, "the catalog", `document.querySelector('#catalog-table tr[data-model="hf:org/stories"]')`)
	b.noProblems()
}
