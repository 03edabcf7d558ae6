package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/client"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

const wait = 20 * time.Second

func apiErr(t *testing.T, err error) *client.APIError {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want an API error, got %v", err)
	}
	return ae
}

// collectEvents subscribes to /v1/events and returns a function that waits
// for an event matching pred.
func collectEvents(t *testing.T, h *hivetest.Hive) (waitFor func(pred func(apiv1.Event) bool) apiv1.Event, all func() []apiv1.Event) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var evs []apiv1.Event
	got := make(chan struct{}, 1)
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/v1/events", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			close(ready)
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		first := true
		for sc.Scan() {
			if first {
				close(ready)
				first = false
			}
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev apiv1.Event
			if json.Unmarshal([]byte(data), &ev) == nil && ev.WorkerID != "" {
				mu.Lock()
				evs = append(evs, ev)
				mu.Unlock()
				select {
				case got <- struct{}{}:
				default:
				}
			}
		}
	}()
	<-ready
	t.Cleanup(func() { cancel(); <-done })
	all = func() []apiv1.Event {
		mu.Lock()
		defer mu.Unlock()
		return append([]apiv1.Event(nil), evs...)
	}
	waitFor = func(pred func(apiv1.Event) bool) apiv1.Event {
		t.Helper()
		deadline := time.After(wait)
		for {
			for _, ev := range all() {
				if pred(ev) {
					return ev
				}
			}
			select {
			case <-got:
			case <-deadline:
				t.Fatalf("event not seen; events: %+v", all())
			}
		}
	}
	return waitFor, all
}

func TestSpawnReadyStopLifecycle(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	waitFor, all := collectEvents(t, h)
	r := h.MustSpawn(apiv1.SpawnRequest{Labels: map[string]string{"team": "a"}})
	if r.State != "loading" && r.State != "idle" {
		t.Fatalf("spawn state %s", r.State)
	}
	if r.PID <= 0 || r.Port < h.PortMin || r.Port > h.PortMax || !strings.HasPrefix(r.WorkerID, "worker-") {
		t.Fatalf("bad spawn response %+v", r)
	}
	info := h.WaitState(r.WorkerID, wait, "idle")
	if info.ReadyAt == nil || info.StartedAt == nil || info.PID != r.PID || info.Labels["team"] != "a" {
		t.Fatalf("bad info %+v", info)
	}
	if !hivetest.Alive(r.PID) {
		t.Fatal("worker process not alive")
	}
	// The worker really serves.
	resp, err := http.Get(r.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("worker health: %v", err)
	}
	resp.Body.Close()

	list, err := h.Client.List(context.Background(), false)
	if err != nil || len(list) != 1 || list[0].ID != r.WorkerID {
		t.Fatalf("list = %v, %v", list, err)
	}
	var logs strings.Builder
	if err := h.Client.Logs(context.Background(), r.WorkerID, 50, false, &logs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "listening on") {
		t.Fatalf("logs lack the worker's output: %q", logs.String())
	}

	st, err := h.Client.Stop(context.Background(), r.WorkerID)
	if err != nil || st.State != "stopping" && st.State != "terminated" {
		t.Fatalf("stop = %+v, %v", st, err)
	}
	// Stop is idempotent.
	st2, err := h.Client.Stop(context.Background(), r.WorkerID)
	if err != nil {
		t.Fatalf("second stop: %v", err)
	}
	_ = st2
	end := h.WaitState(r.WorkerID, wait, "terminated")
	if end.Reason != "stopped" || end.Exit == nil || end.Exit.Code == nil || *end.Exit.Code != 0 {
		t.Fatalf("end = %+v exit %+v", end, end.Exit)
	}
	if hivetest.Alive(r.PID) {
		t.Fatal("worker process survived its stop")
	}
	// Ended workers are hidden from the default list, shown with all=true.
	list, _ = h.Client.List(context.Background(), false)
	if len(list) != 0 {
		t.Fatalf("ended worker in default list: %v", list)
	}
	list, _ = h.Client.List(context.Background(), true)
	if len(list) != 1 || list[0].State != "terminated" {
		t.Fatalf("all=true list: %v", list)
	}
	waitFor(func(ev apiv1.Event) bool { return ev.To == "terminated" && ev.WorkerID == r.WorkerID })
	var path []string
	for _, ev := range all() {
		if ev.WorkerID == r.WorkerID {
			path = append(path, string(ev.From)+"→"+string(ev.To))
		}
	}
	want := "→spawning spawning→loading loading→idle idle→stopping stopping→terminated"
	if got := strings.Join(path, " "); !strings.HasSuffix(got, strings.TrimPrefix(want, "→spawning ")) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestStartGraceFailureFailsTheSpawnCall(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	// A grace long enough for a loaded machine to start the worker and see
	// it exit: the spawn call returns at the exit, not at the grace's end.
	_, err := h.Spawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_EXIT_CODE": "3"},
		Settings: settings(`{"start_grace":"10s"}`)})
	ae := apiErr(t, err)
	if ae.Status != 500 || ae.Code != "SPAWN_FAILED" || !strings.Contains(ae.Message, "code 3") ||
		!strings.Contains(ae.Message, "exiting with code 3") {
		t.Fatalf("got %+v", ae)
	}
	list, _ := h.Client.List(context.Background(), true)
	if len(list) != 1 || list[0].State != "failed" || list[0].Reason != "spawn_failed" || list[0].RestartCount != 0 {
		t.Fatalf("failed spawn not retained as failed/spawn_failed: %+v", list)
	}
}

func TestPortInUseIsSkippedAndLogged(t *testing.T) {
	base := hivetest.FreeRange(t, 4)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+1))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h := hivetest.Start(t, hivetest.Options{PortMin: base, Ports: 3})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	if r.Port != base+2 {
		t.Fatalf("port %d, want %d", r.Port, base+2)
	}
	want := fmt.Sprintf("Port %d in use, trying %d", base+1, base+2)
	if !strings.Contains(h.Log(), want) {
		t.Fatalf("log lacks %q", want)
	}
	h.WaitState(r.WorkerID, wait, "idle")
}

func TestNoAvailablePorts(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Ports: 1})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	_, err := h.Spawn(apiv1.SpawnRequest{})
	if ae := apiErr(t, err); ae.Status != 503 || ae.Code != "NO_AVAILABLE_PORTS" {
		t.Fatalf("got %+v", ae)
	}
	// The port is held until the worker is gone, then free again.
	h.WaitState(r.WorkerID, wait, "idle")
	if _, err := h.Client.Kill(context.Background(), r.WorkerID); err != nil {
		t.Fatal(err)
	}
	end := h.WaitState(r.WorkerID, wait, "terminated")
	if end.Reason != "killed" {
		t.Fatalf("kill ended %s", end.Reason)
	}
	r2 := h.MustSpawn(apiv1.SpawnRequest{})
	if r2.Port != r.Port {
		t.Fatalf("port not reused after the worker ended: %d vs %d", r2.Port, r.Port)
	}
}

func TestTwentyConcurrentSpawnsGetDistinctPortsAndAllBecomeIdle(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Ports: 40})
	const n = 20
	var wg sync.WaitGroup
	resps := make([]*apiv1.SpawnResponse, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i], errs[i] = h.Spawn(apiv1.SpawnRequest{})
		}()
	}
	wg.Wait()
	ports := map[int]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("spawn %d: %v", i, errs[i])
		}
		if ports[resps[i].Port] {
			t.Fatalf("port %d handed out twice", resps[i].Port)
		}
		ports[resps[i].Port] = true
	}
	for _, r := range resps {
		h.WaitState(r.WorkerID, 60*time.Second, "idle")
	}
}

func TestValidationErrorsNameTheField(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	outside := filepath.Join(t.TempDir(), "outside.gguf")
	os.WriteFile(outside, []byte("x"), 0o600)
	link := filepath.Join(h.Models, "escape.gguf")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"malformed json", `{"model_ref":`, 400, "INVALID_REQUEST"},
		{"unknown field", `{"model_ref":"file:` + h.Model + `","bogus":1}`, 400, "INVALID_REQUEST"},
		{"wrong type", `{"model_ref":42}`, 400, "INVALID_REQUEST"},
		{"missing model_ref", `{}`, 400, "INVALID_MODEL_REF"},
		{"model_ref no provider", `{"model_ref":"justaname"}`, 400, "INVALID_MODEL_REF"},
		{"model_ref dotdot", `{"model_ref":"hf:org/../etc"}`, 400, "INVALID_MODEL_REF"},
		{"model_ref bad chars", `{"model_ref":"hf:org/re po"}`, 400, "INVALID_MODEL_REF"},
		{"model_ref too long", `{"model_ref":"hf:` + strings.Repeat("a", 600) + `"}`, 400, "INVALID_MODEL_REF"},
		{"backend", `{"model_ref":"file:` + h.Model + `","backend":"cu da"}`, 400, "INVALID_BACKEND"},
		{"backend too long", `{"model_ref":"file:` + h.Model + `","backend":"` + strings.Repeat("b", 65) + `"}`, 400, "INVALID_BACKEND"},
		{"device", `{"model_ref":"file:` + h.Model + `","device":-1}`, 400, "INVALID_DEVICE"},
		{"env key", `{"model_ref":"file:` + h.Model + `","env":{"lower":"x"}}`, 400, "INVALID_ENV"},
		{"env LD_PRELOAD", `{"model_ref":"file:` + h.Model + `","env":{"LD_PRELOAD":"/tmp/x.so"}}`, 400, "ENV_NOT_ALLOWED"},
		{"env RBEE_ name", `{"model_ref":"file:` + h.Model + `","env":{"RBEE_BENCH_READY_STAMP":"/x"}}`, 400, "ENV_NOT_ALLOWED"},
		{"backend option", `{"model_ref":"file:` + h.Model + `","backend":"--evil-flag"}`, 400, "INVALID_BACKEND"},
		{"env NUL", `{"model_ref":"file:` + h.Model + `","env":{"A":"x\u0000y"}}`, 400, "INVALID_ENV"},
		{"labels", `{"model_ref":"file:` + h.Model + `","labels":{"bad key":"x"}}`, 400, "INVALID_LABELS"},
		{"settings unknown", `{"model_ref":"file:` + h.Model + `","settings":{"nope":1}}`, 400, "INVALID_SETTINGS"},
		{"settings negative", `{"model_ref":"file:` + h.Model + `","settings":{"stop_timeout":"-1s"}}`, 400, "INVALID_SETTINGS"},
		{"settings bad duration", `{"model_ref":"file:` + h.Model + `","settings":{"idle_timeout":"soon"}}`, 400, "INVALID_SETTINGS"},
		{"profile", `{"model_ref":"file:` + h.Model + `","profile":"nope"}`, 400, "INVALID_PROFILE"},
		{"file outside roots", `{"model_ref":"file:` + outside + `"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"symlink escape", `{"model_ref":"file:` + link + `"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"model_path outside", `{"model_ref":"file:` + h.Model + `","model_path":"` + outside + `"}`, 400, "MODEL_PATH_NOT_ALLOWED"},
		{"missing file", `{"model_ref":"file:` + h.Models + `/nope.gguf"}`, 404, "MODEL_NOT_FOUND"},
		{"unknown catalog ref", `{"model_ref":"hf:org/unknown"}`, 404, "MODEL_NOT_FOUND"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.Post(h.URL+"/v1/workers/spawn", "application/json", strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var eb apiv1.ErrorBody
			if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
				t.Fatalf("error body: %v", err)
			}
			if resp.StatusCode != c.status || eb.Error.Code != c.code || eb.Error.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, eb.Error, c.status, c.code)
			}
		})
	}
	// The profile's allow_env (LLMW_FAKE_* in the test profile) lets a
	// listed variable through.
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_LOAD_MS": "1"}})
	h.WaitState(r.WorkerID, wait, "idle")
	// Oversized bodies are 413.
	big := `{"model_ref":"file:` + h.Model + `","labels":{"a":"` + strings.Repeat("x", 2<<20) + `"}}`
	resp, err := http.Post(h.URL+"/v1/workers/spawn", "application/json", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("big body: %d", resp.StatusCode)
	}
	if l, _ := h.Client.List(context.Background(), true); len(l) != 1 {
		t.Fatalf("rejected spawns left workers: %d", len(l))
	}
}

func TestWorkerRoutesAnswerNotFoundAndConflict(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	ctx := context.Background()
	for _, f := range []func() error{
		func() error { _, err := h.Client.Get(ctx, "worker-nope"); return err },
		func() error { _, err := h.Client.Stop(ctx, "worker-nope"); return err },
		func() error { _, err := h.Client.Kill(ctx, "worker-nope"); return err },
		func() error { _, err := h.Client.Restart(ctx, "worker-nope"); return err },
		func() error { return h.Client.Logs(ctx, "worker-nope", 1, false, io.Discard) },
	} {
		if ae := apiErr(t, f()); ae.Status != 404 || ae.Code != "WORKER_NOT_FOUND" {
			t.Fatalf("got %+v", ae)
		}
	}
	if ae := apiErr(t, func() error { _, err := h.Client.Get(ctx, "bad id!"); return err }()); ae.Status != 400 {
		t.Fatalf("bad id: %+v", ae)
	}
	// A ready callback for an unknown worker is 404.
	resp, _ := http.Post(h.URL+"/v1/workers/ready", "application/json",
		strings.NewReader(`{"worker_id":"worker-nope","url":"http://x","model_ref":"a:b","backend":"cpu","device":0}`))
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("ready unknown: %d", resp.StatusCode)
	}
	// Restarting an ended worker is refused.
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	h.Client.Kill(ctx, r.WorkerID)
	h.WaitState(r.WorkerID, wait, "terminated")
	if ae := apiErr(t, func() error { _, err := h.Client.Restart(ctx, r.WorkerID); return err }()); ae.Status != 409 || ae.Code != "INVALID_STATE" {
		t.Fatalf("restart ended: %+v", ae)
	}
	// Stop and kill of an ended worker are idempotent: 202 with its state.
	if st, err := h.Client.Stop(ctx, r.WorkerID); err != nil || st.State != "terminated" {
		t.Fatalf("stop ended: %+v %v", st, err)
	}
	req, _ := http.NewRequest(http.MethodPut, h.URL+"/v1/workers/spawn", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || !strings.Contains(resp.Header.Get("Allow"), "POST") {
		t.Fatalf("wrong method: %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	resp, err = http.Get(h.URL + "/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown route: %d", resp.StatusCode)
	}
}

func TestRestartKeepsIDWithNewPID(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	if _, err := h.Client.Restart(context.Background(), r.WorkerID); err != nil {
		t.Fatal(err)
	}
	var info *apiv1.WorkerInfo
	hivetest.Eventually(t, wait, func() bool {
		info = h.Get(r.WorkerID)
		return info.State == "idle" && info.PID != r.PID
	})
	if info.PID == r.PID || info.RestartCount != 1 || info.LastRestart == nil {
		t.Fatalf("after restart: %+v", info)
	}
	if hivetest.Alive(r.PID) {
		t.Fatal("old process survived the restart")
	}
}

func TestModelCatalogAndHFRefSpawn(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	ctx := context.Background()
	if _, err := h.Client.AddModel(ctx, "hf:org/tiny", h.Model); err != nil {
		t.Fatal(err)
	}
	ms, err := h.Client.Models(ctx)
	if err != nil || len(ms) != 1 || ms[0].Ref != "hf:org/tiny" {
		t.Fatalf("models %v %v", ms, err)
	}
	r := h.MustSpawn(apiv1.SpawnRequest{ModelRef: "hf:org/tiny"})
	info := h.WaitState(r.WorkerID, wait, "idle")
	if info.ModelPath != h.Model {
		t.Fatalf("model path %s", info.ModelPath)
	}
	if err := h.Client.RemoveModel(ctx, "hf:org/tiny"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Spawn(apiv1.SpawnRequest{ModelRef: "hf:org/tiny"}); apiErr(t, err).Code != "MODEL_NOT_FOUND" {
		t.Fatal("removed ref still spawns")
	}
	if _, err := h.Client.AddModel(ctx, "hf:org/evil", "/etc/passwd"); apiErr(t, err).Code != "MODEL_PATH_NOT_ALLOWED" {
		t.Fatal("catalog accepted a path outside the model roots")
	}
}

func TestLogsFollowStreamsUntilWorkerEnds(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- h.Client.Logs(context.Background(), r.WorkerID, 5, true, pw)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	seen := make(chan string, 100)
	go func() {
		for sc.Scan() {
			seen <- sc.Text()
		}
		close(seen)
	}()
	// The tail arrives first.
	select {
	case <-seen:
	case <-time.After(wait):
		t.Fatal("no tail line")
	}
	h.Client.Stop(context.Background(), r.WorkerID)
	// The worker's shutdown lines stream in and the stream ends with it.
	var sawExit bool
	timeout := time.After(wait)
	for {
		select {
		case l, ok := <-seen:
			if !ok {
				if !sawExit {
					t.Fatal("stream ended without the worker's exit lines")
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				return
			}
			if strings.Contains(l, "drain") || strings.Contains(l, "exit") {
				sawExit = true
			}
		case <-timeout:
			t.Fatal("follow did not end when the worker ended")
		}
	}
}

// A generic HTTP server (no rbee protocol) is judged ready by probes.
func TestGenericProfileReadyByProbe(t *testing.T) {
	gw := hivetest.GenericWorker(t)
	h := hivetest.Start(t, hivetest.Options{Config: fmt.Sprintf(`profiles:
  generic:
    command: [%s, --port, "{port}", --model, "{model}"]
    protocol: http
    readiness: {path: /health, status: 200}
    liveness: {path: /health, status: 200}
    stop_signal: SIGTERM
    env: {GENERIC_LOAD_MS: "300"}
`, gw)})
	r := h.MustSpawn(apiv1.SpawnRequest{Profile: "generic"})
	info := h.Get(r.WorkerID)
	if info.State != "loading" {
		t.Fatalf("generic worker %s before its load time", info.State)
	}
	info = h.WaitState(r.WorkerID, wait, "idle")
	if info.Profile != "generic" {
		t.Fatalf("profile %s", info.Profile)
	}
	h.Client.Stop(context.Background(), r.WorkerID)
	end := h.WaitState(r.WorkerID, wait, "terminated")
	if end.Exit == nil || end.Exit.Code == nil || *end.Exit.Code != 0 {
		t.Fatalf("generic stop exit %+v", end.Exit)
	}
}

// The argv template never goes through a shell: a model path with spaces
// and ";" reaches the worker as one argument.
func TestModelPathWithSpacesIsOneArgument(t *testing.T) {
	gw := hivetest.GenericWorker(t)
	h := hivetest.Start(t, hivetest.Options{Config: fmt.Sprintf(`profiles:
  generic:
    command: [%s, --port, "{port}", --model, "{model}"]
`, gw)})
	odd := filepath.Join(h.Models, "my model; touch pwned.gguf")
	if err := os.WriteFile(odd, []byte("w"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.MustSpawn(apiv1.SpawnRequest{Profile: "generic", ModelPath: odd})
	h.WaitState(r.WorkerID, wait, "idle")
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(r.PID) + "/cmdline")
	args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	if args[len(args)-1] != odd {
		t.Fatalf("argv %q", args)
	}
}

func TestConfigFileErrorsNameKeyAndLine(t *testing.T) {
	bin := hivetest.Binaries(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hive.yaml")
	os.WriteFile(cfg, []byte("addr: 127.0.0.1:0\ndefaults:\n  idle_timout: 5m\n"), 0o600)
	out, err := process.RunCmd(exec.Command(bin, "daemon", "--config", cfg, "--state-dir", dir))
	if err == nil {
		t.Fatal("daemon accepted an unknown key")
	}
	if !strings.Contains(string(out), "line 3") || !strings.Contains(string(out), "idle_timout") {
		t.Fatalf("error does not name key and line: %s", out)
	}
	os.WriteFile(cfg, []byte("shutdown_timeout: forever\n"), 0o600)
	out, err = process.RunCmd(exec.Command(bin, "daemon", "--config", cfg, "--state-dir", dir))
	if err == nil || !strings.Contains(string(out), "line 1") {
		t.Fatalf("bad duration: %v %s", err, out)
	}
}

// runCLI runs the rbee-hive CLI against h; a failure's stderr is in the
// returned *exec.ExitError's Stderr.
func runCLI(t *testing.T, h *hivetest.Hive, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(h.Bin, args...)
	cmd.Env = append(os.Environ(), "RBEE_HIVE_URL="+h.URL)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := process.StartCmd(cmd); err != nil {
		return "", err
	}
	err := process.WaitCmd(cmd)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ee.Stderr = []byte(stderr.String())
	}
	return stdout.String(), err
}

func TestCLIJSONOutput(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	out, err := runCLI(t, h, "worker", "spawn", h.Ref, "--wait", "--output", "json", "--set", "idle_timeout=0", "--label", "k=v")
	if err != nil {
		t.Fatalf("spawn --wait: %v %s", err, out)
	}
	var w apiv1.WorkerInfo
	if err := json.Unmarshal([]byte(out), &w); err != nil || w.State != "idle" || w.Labels["k"] != "v" {
		t.Fatalf("spawn --wait json: %v %s", err, out)
	}
	out, err = runCLI(t, h, "worker", "list", "--output", "json")
	var l apiv1.WorkerList
	if err != nil || json.Unmarshal([]byte(out), &l) != nil || len(l.Workers) != 1 {
		t.Fatalf("list json: %v %s", err, out)
	}
	out, err = runCLI(t, h, "worker", "get", w.ID, "--output", "json")
	if err != nil || !strings.Contains(out, w.ID) {
		t.Fatalf("get: %v %s", err, out)
	}
	out, err = runCLI(t, h, "status", "--output", "json")
	var st apiv1.Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Workers["idle"] != 1 {
		t.Fatalf("status: %v %s", err, out)
	}
	out, err = runCLI(t, h, "worker", "stop", w.ID, "--output", "json")
	var sr apiv1.WorkerInfo // one JSON shape per worker, whatever the command
	if err != nil || json.Unmarshal([]byte(out), &sr) != nil || sr.ID != w.ID {
		t.Fatalf("stop: %v %s", err, out)
	}
	h.WaitState(w.ID, wait, "terminated")
	// --wait exits non-zero with the reason when the worker fails.
	out, err = runCLI(t, h, "worker", "spawn", h.Ref, "--wait", "--env", "LLMW_FAKE_NEVER_READY=1",
		"--set", "ready_stall_timeout=300ms", "--set", "restart.policy=never")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("--wait on a failing worker: %v %s", err, out)
	}
	if !strings.Contains(string(ee.Stderr), "ready_timeout") {
		t.Fatalf("--wait failure lacks the reason: %s", ee.Stderr)
	}
	out, err = runCLI(t, h, "version")
	if err != nil || !strings.Contains(out, "rbee-hive") {
		t.Fatalf("version: %v %s", err, out)
	}
	// An unreachable hive gets a helpful message.
	b, err := process.RunCmd(exec.Command(h.Bin, "worker", "list", "--hive", "http://127.0.0.1:1"))
	if err == nil || !strings.Contains(string(b), "is it running? start it with 'rbee-hive daemon'") {
		t.Fatalf("unreachable: %v %s", err, b)
	}
}

func TestHiveSIGTERMStopsWorkersAndExitsZero(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	var pids []int
	for range 3 {
		r := h.MustSpawn(apiv1.SpawnRequest{})
		pids = append(pids, r.PID)
		h.WaitState(r.WorkerID, wait, "idle")
	}
	if err := h.Stop(30 * time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, h.Log())
	}
	for _, p := range pids {
		if hivetest.Alive(p) {
			t.Errorf("worker %d survived the hive", p)
		}
	}
	for _, want := range []string{"Shutting down 3 workers...", "3/3 workers stopped", "All workers stopped, exiting"} {
		if !strings.Contains(h.Log(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	_ = syscall.SIGTERM
}

// A generic server that becomes ready between two back-off probes is
// noticed when it prints its ready line, not up to a second later.
// Regression: with the back-off alone (25 ms doubling to 1 s) a server
// ready at 1.6 s waited until the probe at 2.575 s.
func TestGenericReadinessIsProbedOnOutput(t *testing.T) {
	gw := hivetest.GenericWorker(t)
	stamp := filepath.Join(t.TempDir(), "ready")
	h := hivetest.Start(t, hivetest.Options{Config: fmt.Sprintf(`profiles:
  generic:
    command: [%s, --port, "{port}", --model, "{model}"]
    env: {GENERIC_LOAD_MS: "1600", GENERIC_READY_FILE: %q}
`, gw, stamp)})
	r := h.MustSpawn(apiv1.SpawnRequest{Profile: "generic"})
	info := h.WaitState(r.WorkerID, wait, "idle")
	b, err := os.ReadFile(stamp)
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	late := info.ReadyAt.Sub(time.Unix(0, ns))
	t.Logf("ready noticed %s after the server was ready", late)
	if late > 400*time.Millisecond {
		t.Fatalf("ready noticed %s after the server was ready", late)
	}
}
