package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// llama.cpp b4748's greedy 48-token completion of "Once upon a time" for
// stories260K (shared/models/README.md).
const onceUponATime = ", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it,"

// sseData posts body to url and returns the data lines of the SSE answer,
// [DONE] excluded, failing unless the stream ends with [DONE].
func sseData(t *testing.T, url, body string) []string {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d", url, resp.StatusCode)
	}
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		d, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if d == "[DONE]" {
			return out
		}
		out = append(out, d)
	}
	t.Fatalf("POST %s: stream ended without [DONE] after %q", url, out)
	return nil
}

// The hive spawns the reference worker on the real stories260K model; its
// greedy stream equals llama.cpp's, through the rbee route and the OpenAI one.
func TestRealModelThroughTheHiveMatchesLlamaCpp(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	if info := h.Get(r.WorkerID); info.SlotsTotal != 1 {
		t.Errorf("slots_total %d, want 1 (the default --parallel)", info.SlotsTotal)
	}

	var text strings.Builder
	for i, d := range sseData(t, r.URL+"/v1/inference", `{"prompt":"Once upon a time","max_tokens":48}`) {
		var ev struct {
			Token string `json:"token"`
			Index int    `json:"index"`
		}
		if err := json.Unmarshal([]byte(d), &ev); err != nil || ev.Index != i {
			t.Fatalf("event %d %q: %v", i, d, err)
		}
		text.WriteString(ev.Token)
	}
	if text.String() != onceUponATime {
		t.Fatalf("/v1/inference gave %q\nwant %q", text.String(), onceUponATime)
	}

	text.Reset()
	chunks := sseData(t, r.URL+"/v1/completions", `{"prompt":"Once upon a time","max_tokens":48,"temperature":0,"stream":true}`)
	var finish string
	for _, d := range chunks {
		var c struct {
			Choices []struct {
				Text         string  `json:"text"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(d), &c); err != nil || len(c.Choices) != 1 {
			t.Fatalf("chunk %q: %v", d, err)
		}
		text.WriteString(c.Choices[0].Text)
		if f := c.Choices[0].FinishReason; f != nil {
			finish = *f
		}
	}
	if text.String() != onceUponATime || finish != "length" {
		t.Fatalf("/v1/completions gave %q (finish %q)\nwant %q", text.String(), finish, onceUponATime)
	}
}

// The daemon writes the built-in model into its default model root on
// start (model_roots empty), so the embedded default config can name it;
// an existing file is left alone.
func TestDaemonWritesTheBuiltinModel(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	if err := h.Stop(wait); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(h.Model); err != nil {
		t.Fatal(err)
	}
	h.Restart(hivetest.Options{})
	fi, err := os.Stat(h.Model)
	if err != nil {
		t.Fatalf("the daemon did not write the built-in model: %v", err)
	}
	b, _ := os.ReadFile(h.Model)
	if fi.Mode().Perm() != 0o644 || !bytes.Equal(b, builtinmodel.Bytes()) || filepath.Base(h.Model) != builtinmodel.FileName {
		t.Fatalf("%s: mode %v, %d bytes", h.Model, fi.Mode(), len(b))
	}
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
}

// The demo model's ctx (256 in the embedded defaults) reaches the worker
// as --ctx: the first version's rbee profile passed no {ctx}, so the worker
// ran at the model's own 512 tokens and the entry's ctx fed only the
// memory estimate.
func TestDemoModelCtxReachesTheWorker(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	resp, err := http.Post(h.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"stories","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":4}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	ws := fdWorkersAll(t, h)
	if len(ws) != 1 {
		t.Fatalf("%d workers, want the one the front door started", len(ws))
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ws[0].PID))
	if err != nil {
		t.Fatal(err)
	}
	if args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"); !slices.Contains(args, "--ctx") ||
		args[slices.Index(args, "--ctx")+1] != "256" {
		t.Fatalf("worker argv %q: want --ctx 256", args)
	}
}
