package browser

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/etcdtest"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// TestConsoleScreenshots takes the README's pictures of the console: the
// worker table, a worker's detail (history plot and log), the models view,
// and the table on a phone-sized screen. They go to t.TempDir(), or to the
// directory in RBEE_CONSOLE_SCREENSHOTS; the committed ones in docs/ come
// from
//
//	RBEE_CONSOLE_SCREENSHOTS=$PWD/docs go test ./e2e/browser -run TestConsoleScreenshots
func TestConsoleScreenshots(t *testing.T) {
	out := os.Getenv("RBEE_CONSOLE_SCREENSHOTS")
	if out == "" {
		out = t.TempDir()
	}
	// A GPU from a JSON inventory, so that the picture has a GPU bar (this
	// machine has none; the workers themselves run on the CPU).
	inv := filepath.Join(t.TempDir(), "gpus.json")
	if err := os.WriteFile(inv, []byte(`{"gpus":[{"index":0,"uuid":"GPU-00000000-0000-0000-0000-000000000001","name":"NVIDIA L4",`+
		`"memory_total_bytes":24152899584,"memory_used_bytes":9126805504,"utilization_percent":34}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := hivetest.Start(t, hivetest.Options{Config: "gpu_inventory: " + inv + "\n"})
	ctx := context.Background()
	if _, err := h.Client.AddModel(ctx, "hf:rbee/tiny-stories-260k", h.Model); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Client.AddModel(ctx, "hf:rbee/tiny-stories-chat", h.Model); err != nil {
		t.Fatal(err)
	}
	var live []*apiv1.SpawnResponse
	for _, l := range []string{"chat", "batch", "eval"} {
		live = append(live, h.MustSpawn(apiv1.SpawnRequest{ModelRef: "hf:rbee/tiny-stories-260k", Labels: map[string]string{"team": l}}))
	}
	crashed := h.MustSpawn(apiv1.SpawnRequest{ModelRef: "hf:rbee/tiny-stories-chat", Settings: noRestart})
	stopped := h.MustSpawn(apiv1.SpawnRequest{ModelRef: "hf:rbee/tiny-stories-chat"})
	for _, r := range append(live, crashed, stopped) {
		h.WaitState(r.WorkerID, 20*time.Second, "idle")
	}
	if err := syscall.Kill(crashed.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Client.Stop(ctx, stopped.WorkerID); err != nil {
		t.Fatal(err)
	}
	h.WaitState(crashed.WorkerID, 10*time.Second, "failed")
	h.WaitState(stopped.WorkerID, 20*time.Second, "terminated")

	b := newBrowser(t)
	openConsole(t, b, h)
	// A few samples of history in every live row's plot.
	b.waitJS(30*time.Second, "four history samples per live worker",
		`[...document.querySelectorAll('#workers tr[data-state="idle"] svg.spark polyline.rss')].filter(p => p.getAttribute('points').split(' ').length >= 4).length === 3`)
	shot := func(name string, action chromedp.Action[[]byte]) {
		t.Helper()
		c, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		defer cancel()
		png, err := chromedp.Run(c, action)
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10<<10 {
			t.Fatalf("screenshot %s: not a plausible PNG (%d bytes)", name, len(png))
		}
		if err := os.WriteFile(filepath.Join(out, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b.must(chromedp.EmulateViewport(1280, 640))
	shot("console-workers.png", chromedp.CaptureScreenshot())

	b.click(rowSel(live[0].WorkerID))
	b.waitJS(5*time.Second, "the log", `document.querySelector('#log').textContent.includes('ready')`)
	b.waitJS(5*time.Second, "the plot", `document.querySelector('#detail-plot polyline.rss')`)
	b.must(chromedp.EmulateViewport(1280, 900))
	var ok bool
	_ = eval(b, `(document.querySelector('#detail').scrollIntoView(), true)`, &ok)
	shot("console-worker-detail.png", chromedp.CaptureScreenshot())

	b.click(`#detail-close`)
	b.click(`nav button[data-tab="models"]`)
	b.waitJS(5*time.Second, "the models view", `document.querySelector('#models table')`)
	b.must(chromedp.EmulateViewport(1280, 420))
	_ = eval(b, `(window.scrollTo(0, 0), true)`, &ok)
	shot("console-models.png", chromedp.CaptureScreenshot())

	b.click(`nav button[data-tab="workers"]`)
	b.must(chromedp.EmulateViewport(390, 760, chromedp.EmulateMobile))
	b.waitJS(5*time.Second, "the narrow layout", `getComputedStyle(document.querySelector('#workers thead')).display === 'none'`)
	shot("console-phone.png", chromedp.CaptureScreenshot())
	b.noProblems()
}

// TestQueenConsoleScreenshot takes the README's picture of the queen's
// console: two hives on a real etcd (one with a GPU from a JSON inventory),
// each with workers. Like TestConsoleScreenshots it writes to
// RBEE_CONSOLE_SCREENSHOTS (or t.TempDir()):
//
//	RBEE_CONSOLE_SCREENSHOTS=$PWD/docs go test ./e2e/browser -run TestQueenConsoleScreenshot
func TestQueenConsoleScreenshot(t *testing.T) {
	out := os.Getenv("RBEE_CONSOLE_SCREENSHOTS")
	if out == "" {
		out = t.TempDir()
	}
	inv := filepath.Join(t.TempDir(), "gpus.json")
	if err := os.WriteFile(inv, []byte(`{"gpus":[{"index":0,"uuid":"GPU-00000000-0000-0000-0000-000000000001","name":"NVIDIA L4",`+
		`"memory_total_bytes":24152899584,"memory_used_bytes":9126805504,"utilization_percent":34}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	et := etcdtest.Start(t)
	prefix := et.Prefix("queenshot")
	cfg := func(node, extra string) hivetest.Options {
		return hivetest.Options{Config: extra + "models:\n  stories:\n    model_ref: file:stories260K.gguf\n  stories-chat:\n    model_ref: file:stories260K.gguf\n" +
			fmt.Sprintf("cluster: {etcd: [%s], node: %s, lease_ttl: 2s, prefix: %s}\n", et.Endpoint, node, prefix)}
	}
	a := hivetest.Start(t, cfg("gpu-box-1", "gpu_inventory: "+inv+"\n"))
	b := hivetest.Start(t, cfg("cpu-box-2", ""))
	for _, h := range []*hivetest.Hive{a, a, b} {
		r := h.MustSpawn(apiv1.SpawnRequest{Labels: map[string]string{"rbee.model": "stories"}})
		h.WaitState(r.WorkerID, 20*time.Second, "idle")
	}
	q := startQueen(t, et.Endpoint, prefix)

	br := newBrowser(t)
	br.must(chromedp.EmulateViewport(1280, 820))
	br.must(chromedp.Navigate(q.URL + "/ui/"))
	br.waitJS(10*time.Second, "the cluster poll to be live", `document.querySelector('#conn').dataset.state === 'live'`)
	br.waitJS(10*time.Second, "three idle workers", `document.querySelectorAll('#hives tr[data-state="idle"]').length === 3`)
	br.waitJS(5*time.Second, "the GPU bar", `document.querySelector('`+hiveSel("gpu-box-1")+`').textContent.includes('GPU 0 NVIDIA L4')`)
	c, cancel := context.WithTimeout(br.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10<<10 {
		t.Fatalf("not a plausible PNG (%d bytes)", len(png))
	}
	if err := os.WriteFile(filepath.Join(out, "console-queen.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	br.noProblems()
}
