package refworker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/refworker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSlowLoadAnswersWhileLoadingAndReportsProgress(t *testing.T) {
	t.Parallel()
	hive := newFakeHive(t)
	model := writeModel(t)
	size := modelTensorBytes(t, model)
	w := startWorker(t, workerOpts{
		hiveURL: hive.srv.URL,
		model:   model,
		env:     []string{"LLMW_FAKE_LOAD_MS=1500"},
	})
	w.waitListening()

	// Bound before loading: /health and /v1/ready answer while loading.
	if code, m := w.getJSON("/health"); code != 200 || m["status"] != "healthy" {
		t.Fatalf("/health = %d %v", code, m)
	}
	_, m := w.getJSON("/v1/ready")
	if m["ready"] != false || m["state"] != "loading" || m["progress_url"] != "/v1/loading/progress" {
		t.Fatalf("/v1/ready while loading = %v", m)
	}
	if st, code := w.errorCode("/v1/inference", `{"prompt":"x","max_tokens":1}`); st != 503 || code != "NOT_READY" {
		t.Fatalf("inference while loading = %d %s", st, code)
	}

	// The progress stream moves, then ends in [DONE].
	resp, err := w.client.Get(w.url("/v1/loading/progress"))
	if err != nil {
		t.Fatal(err)
	}
	events := sseEvents(resp.Body, nil)
	resp.Body.Close()
	if len(events) < 4 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("progress events = %q", events)
	}
	var last int64 = -1
	for _, e := range events[:len(events)-1] {
		var p struct{ Done, Total int64 }
		if err := json.Unmarshal([]byte(e), &p); err != nil {
			t.Fatalf("progress event %q: %v", e, err)
		}
		if p.Total != size || p.Done < last {
			t.Fatalf("progress event %q after done=%d", e, last)
		}
		last = p.Done
	}
	if last != size {
		t.Fatalf("last progress done=%d, want %d", last, size)
	}

	eventually(t, 10*time.Second, "the ready callback", func() bool { return len(hive.readyCalls()) == 1 })
	if _, m := w.getJSON("/v1/ready"); m["ready"] != true || m["state"] != "idle" || m["model_loaded"] != true {
		t.Fatalf("/v1/ready when ready = %v", m)
	}

	// Loading heartbeats: moving progress, ending at the total.
	loading := hive.heartbeatsIn("loading")
	var dones []int64
	for _, b := range loading {
		if b.Progress == nil || b.Progress.Total != size || b.HealthStatus != "healthy" || b.WorkerID != "worker-test-1" {
			t.Fatalf("loading heartbeat %+v", b)
		}
		dones = append(dones, b.Progress.Done)
	}
	if !slices.IsSorted(dones) || len(slices.Compact(slices.Clone(dones))) < 3 || dones[len(dones)-1] != size {
		t.Fatalf("loading heartbeat progress = %v", dones)
	}
	// At most every ~250 ms over a 1.5 s load, plus start and end.
	if len(dones) > 12 {
		t.Fatalf("%d loading heartbeats for a 1.5 s load; want about 8", len(dones))
	}
}

func TestReadyCallbackBodyAndPeriodicHeartbeats(t *testing.T) {
	t.Parallel()
	hive := newFakeHive(t)
	port := reservePort(t)
	w := startWorker(t, workerOpts{
		hiveURL: hive.srv.URL + "/", // a trailing slash is tolerated
		port:    port,
		args:    []string{"--device", "1", "--backend", "cuda"},
		env:     []string{"RBEE_HEARTBEAT_INTERVAL_MS=50", "RBEE_WORKER_SLOTS=3"},
	})
	w.waitReady()
	got := hive.readyCalls()
	want := gotReady{
		WorkerID: "worker-test-1",
		URL:      fmt.Sprintf("http://127.0.0.1:%d", port),
		ModelRef: "file:" + w.cmd.Args[4],
		Backend:  "cuda",
		Device:   1,
	}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("ready calls = %+v, want [%+v]", got, want)
	}
	eventually(t, 5*time.Second, "3 idle heartbeats", func() bool { return len(hive.heartbeatsIn("idle")) >= 3 })
	for _, b := range hive.heartbeatsIn("idle") {
		if *b.SlotsTotal != 3 || *b.SlotsAvailable != 3 || b.HealthStatus != "healthy" || b.Progress != nil {
			t.Fatalf("idle heartbeat %+v", b)
		}
	}
}

func TestReadyCallbackRetriesUntilHiveIsUp(t *testing.T) {
	t.Parallel()
	hiveAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(reservePort(t)))
	w := startWorker(t, workerOpts{hiveURL: "http://" + hiveAddr})
	w.waitListening()
	w.waitLog("ready callback failed, retrying")
	if w.exited() {
		t.Fatal("worker exited while the hive was down")
	}
	hive := newFakeHiveOn(t, hiveAddr)
	eventually(t, 10*time.Second, "the ready callback", func() bool { return len(hive.readyCalls()) == 1 })
	w.waitLog("msg=ready")
}

func TestReadyCallbackRejectedExits1(t *testing.T) {
	t.Parallel()
	hive := newFakeHive(t)
	hive.readyStatus = http.StatusNotFound
	w := startWorker(t, workerOpts{hiveURL: hive.srv.URL})
	if code, _ := w.waitExit(10 * time.Second); code != refworker.ExitFailure {
		t.Fatalf("exit code %d, want 1", code)
	}
	if !strings.Contains(w.stderr(), "HTTP 404") {
		t.Fatalf("stderr does not say why:\n%s", w.stderr())
	}
}

func TestHeartbeatOnBusyIdleChange(t *testing.T) {
	t.Parallel()
	hive := newFakeHive(t)
	w := startWorker(t, workerOpts{
		hiveURL: hive.srv.URL,
		env:     []string{"RBEE_HEARTBEAT_INTERVAL_MS=600000", "RBEE_WORKER_SLOTS=2"},
	})
	w.waitReady()
	eventually(t, 5*time.Second, "the first idle heartbeat", func() bool { return len(hive.heartbeatsIn("idle")) == 1 })

	resp, err := w.post(context.Background(), "/v1/inference", `{"prompt":"p","max_tokens":3,"token_delay_ms":100}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	eventually(t, 5*time.Second, "a busy heartbeat", func() bool { return len(hive.heartbeatsIn("busy")) == 1 })
	if _, m := w.getJSON("/v1/ready"); m["state"] != "busy" {
		t.Fatalf("/v1/ready while serving = %v", m)
	}
	if b := hive.heartbeatsIn("busy")[0]; *b.SlotsTotal != 2 || *b.SlotsAvailable != 1 {
		t.Fatalf("busy heartbeat %+v", b)
	}
	decodeTokens(t, sseEvents(resp.Body, nil))
	eventually(t, 5*time.Second, "the idle heartbeat after the request", func() bool { return len(hive.heartbeatsIn("idle")) == 2 })
	beats := hive.heartbeats()
	if l := beats[len(beats)-1]; l.State != "idle" || *l.SlotsAvailable != 2 {
		t.Fatalf("last heartbeat %+v", l)
	}
}

// Regression: short requests back to back must each report busy then idle;
// coalescing them away would hide activity from the hive's idle timer.
func TestShortRequestsStillReportEachBusyIdleChange(t *testing.T) {
	t.Parallel()
	hive := newFakeHive(t)
	w := startWorker(t, workerOpts{hiveURL: hive.srv.URL, env: []string{"RBEE_HEARTBEAT_INTERVAL_MS=600000"}})
	w.waitReady()
	for range 5 {
		w.infer("quick", 1)
	}
	eventually(t, 5*time.Second, "5 busy heartbeats", func() bool { return len(hive.heartbeatsIn("busy")) == 5 })
	eventually(t, 5*time.Second, "6 idle heartbeats", func() bool { return len(hive.heartbeatsIn("idle")) == 6 })
}

func TestInferenceIsDeterministic(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{})
	w.waitReady()
	a := w.infer("Why is the sky blue?", 12)
	b := w.infer("Why is the sky blue?", 12)
	c := w.infer("Something else", 12)
	if len(a) != 12 || !slices.Equal(a, b) {
		t.Fatalf("same prompt, different tokens:\n%q\n%q", a, b)
	}
	if slices.Equal(a, c) {
		t.Fatalf("different prompts, same tokens: %q", a)
	}
	if want := refworker.Tokens("Why is the sky blue?", 12); !slices.Equal(a, want) {
		t.Fatalf("tokens %q, Tokens says %q", a, want)
	}
	if toks := w.infer("x", 0); len(toks) != 0 {
		t.Fatalf("max_tokens 0 gave %q", toks)
	}
	for _, body := range []string{`{"prompt":`, `{"prompt":1}`, `{"prompt":"x","max_tokens":-1}`, `{"prompt":"x","max_tokens":"3"}`} {
		if st, code := w.errorCode("/v1/inference", body); st != 400 || code != "INVALID_REQUEST" {
			t.Errorf("body %s: %d %s, want 400 INVALID_REQUEST", body, st, code)
		}
	}
}

func TestAllSlotsBusy(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{env: []string{"RBEE_WORKER_SLOTS=1"}})
	w.waitReady()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := w.post(ctx, "/v1/inference", `{"prompt":"slow","max_tokens":100,"token_delay_ms":200}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	if st, code := w.errorCode("/v1/inference", `{"prompt":"x","max_tokens":1}`); st != 503 || code != "ALL_SLOTS_BUSY" {
		t.Fatalf("second request = %d %s, want 503 ALL_SLOTS_BUSY", st, code)
	}
	cancel() // the client goes away: its slot is freed
	eventually(t, 5*time.Second, "the slot to be free", func() bool {
		_, m := w.getJSON("/v1/ready")
		return m["state"] == "idle"
	})
	w.infer("x", 1)
}

func testDrain(t *testing.T, stop func(w *proc)) {
	w := startWorker(t, workerOpts{})
	w.waitReady()
	resp, err := w.post(context.Background(), "/v1/inference", `{"prompt":"drain me","max_tokens":8,"token_delay_ms":60}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make(chan struct{})
	streamDone := make(chan []string)
	go func() {
		var once bool
		streamDone <- sseEvents(resp.Body, func(string) {
			if !once {
				once = true
				close(first)
			}
		})
	}()
	<-first
	stop(w)
	w.waitLog("msg=draining")
	if st, code := w.errorCode("/v1/inference", `{"prompt":"late"}`); st != 503 || code != "DRAINING" {
		t.Fatalf("inference while draining = %d %s, want 503 DRAINING", st, code)
	}
	if _, m := w.getJSON("/v1/ready"); m["ready"] != false || m["state"] != "draining" {
		t.Fatalf("/v1/ready while draining = %v", m)
	}
	if toks := decodeTokens(t, <-streamDone); !slices.Equal(toks, refworker.Tokens("drain me", 8)) {
		t.Fatalf("in-flight request cut short: %q", toks)
	}
	if code, sig := w.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit %d (signal %v), want 0", code, sig)
	}
	if !strings.Contains(w.stderr(), "msg=exiting") {
		t.Fatalf("no exiting line:\n%s", w.stderr())
	}
}

func TestShutdownRequestDrainsThenExits0(t *testing.T) {
	t.Parallel()
	testDrain(t, func(w *proc) {
		resp, err := w.post(context.Background(), "/v1/shutdown", "")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("shutdown = %d, want 202", resp.StatusCode)
		}
	})
}

func TestSIGTERMDrainsThenExits0(t *testing.T) {
	t.Parallel()
	testDrain(t, func(w *proc) { syscall.Kill(w.pid, syscall.SIGTERM) })
}

func TestDrainTimeoutCutsOffAndExits0(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{env: []string{"RBEE_DRAIN_TIMEOUT_MS=200"}})
	w.waitReady()
	resp, err := w.post(context.Background(), "/v1/inference", `{"prompt":"forever","max_tokens":1000,"token_delay_ms":1000}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	syscall.Kill(w.pid, syscall.SIGINT)
	if code, _ := w.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("drain took %v with a 200 ms drain timeout", d)
	}
	w.waitLog("drain timeout")
}

// Regression: a hung /health handler must not hold up the exit.
func TestHangHealth(t *testing.T) {
	t.Parallel()
	t.Run("always", func(t *testing.T) {
		t.Parallel()
		w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_HANG_HEALTH=1"}})
		w.waitReady()
		assertHealthHangs(t, w)
		if _, m := w.getJSON("/v1/ready"); m["ready"] != true {
			t.Fatalf("/v1/ready = %v", m)
		}
		syscall.Kill(w.pid, syscall.SIGTERM)
		if code, _ := w.waitExit(5 * time.Second); code != 0 {
			t.Fatalf("exit %d, want 0", code)
		}
	})
	t.Run("after", func(t *testing.T) {
		t.Parallel()
		w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_HANG_HEALTH_AFTER_MS=1000"}})
		w.waitReady()
		if code, _ := w.getJSON("/health"); code != 200 {
			t.Fatalf("/health right after ready = %d", code)
		}
		eventually(t, 5*time.Second, "/health to hang", func() bool { return healthHangs(w) })
	})
}

func healthHangs(w *proc) bool {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 300 * time.Millisecond}
	resp, err := c.Get(w.url("/health"))
	if err == nil {
		resp.Body.Close()
		return false
	}
	return strings.Contains(err.Error(), "Timeout")
}

func assertHealthHangs(t *testing.T, w *proc) {
	t.Helper()
	if !healthHangs(w) {
		t.Fatal("/health answered")
	}
}

func TestMissingModelExits1(t *testing.T) {
	t.Parallel()
	missing := t.TempDir() + "/no-such-model.gguf"
	w := startWorker(t, workerOpts{model: missing})
	if code, _ := w.waitExit(5 * time.Second); code != refworker.ExitFailure {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(w.stderr(), missing) {
		t.Fatalf("stderr does not name the model:\n%s", w.stderr())
	}
}

// A file that is not a loadable GGUF model exits 1 with a message that names
// the file and says what is wrong (SPEC §5.3).
func TestUnloadableModelExits1(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.gguf")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("rbee model weights "), 1<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.gguf")
	if err := os.WriteFile(truncated, builtinmodel.Bytes()[:600<<10], 0o644); err != nil {
		t.Fatal(err)
	}
	for path, why := range map[string]string{junk: "wrong magic", truncated: "runs past the end", dir: "not a regular file"} {
		w := startWorker(t, workerOpts{model: path})
		if code, _ := w.waitExit(5 * time.Second); code != refworker.ExitFailure {
			t.Fatalf("%s: exit %d, want 1", path, code)
		}
		if e := w.stderr(); !strings.Contains(e, path) || !strings.Contains(e, why) || !strings.Contains(e, "cannot load model") {
			t.Fatalf("stderr does not say %q about %s:\n%s", why, path, e)
		}
	}
}

func TestBindFailureExits2(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w := startWorker(t, workerOpts{port: ln.Addr().(*net.TCPAddr).Port})
	if code, _ := w.waitExit(5 * time.Second); code != refworker.ExitUsage {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(w.stderr(), "cannot listen on") {
		t.Fatalf("stderr:\n%s", w.stderr())
	}
}

func TestFakeExitCode(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_EXIT_CODE=7"}})
	if code, _ := w.waitExit(5 * time.Second); code != 7 {
		t.Fatalf("exit %d, want 7", code)
	}
	if !strings.Contains(w.stderr(), "fake: exiting with code 7") {
		t.Fatalf("stderr:\n%s", w.stderr())
	}
}

func TestFakeCrashAfterRequests(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_CRASH_AFTER_REQUESTS=2"}})
	w.waitReady()
	w.infer("one", 2)
	if w.exited() {
		t.Fatal("exited after one request")
	}
	w.infer("two", 2)
	if code, _ := w.waitExit(5 * time.Second); code != refworker.ExitCrash {
		t.Fatalf("exit %d, want 3", code)
	}
	if !strings.Contains(w.stderr(), "fake: crashing with exit code 3 after 2 completed requests") {
		t.Fatalf("stderr:\n%s", w.stderr())
	}
}

func TestFakeExitAfterMSExitsZeroUnasked(t *testing.T) {
	t.Parallel()
	hive := newFakeHive(t)
	w := startWorker(t, workerOpts{hiveURL: hive.srv.URL, env: []string{"LLMW_FAKE_EXIT_AFTER_MS=100"}})
	if code, _ := w.waitExit(10 * time.Second); code != refworker.ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	if len(hive.readyCalls()) != 1 {
		t.Fatal("exited before the ready callback")
	}
}

func TestFakeCrashAfterMS(t *testing.T) {
	t.Parallel()
	t.Run("exit", func(t *testing.T) {
		t.Parallel()
		hive := newFakeHive(t)
		w := startWorker(t, workerOpts{hiveURL: hive.srv.URL, env: []string{"LLMW_FAKE_CRASH_AFTER_MS=100"}})
		if code, _ := w.waitExit(10 * time.Second); code != refworker.ExitCrash {
			t.Fatalf("exit %d, want 3", code)
		}
		if len(hive.readyCalls()) != 1 {
			t.Fatal("crashed before the ready callback")
		}
	})
	for _, sig := range []syscall.Signal{syscall.SIGABRT, syscall.SIGSEGV, syscall.SIGKILL} {
		name := strings.TrimPrefix(unix.SignalName(sig), "SIG")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_CRASH_AFTER_MS=50", "LLMW_FAKE_CRASH_SIGNAL=" + name}})
			if code, got := w.waitExit(10 * time.Second); code != -1 || got != sig {
				t.Fatalf("exit %d signal %v, want signal %v", code, got, sig)
			}
		})
	}
}

func TestFakeIgnoreShutdown(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_IGNORE_SHUTDOWN=1"}})
	w.waitReady()
	syscall.Kill(-w.pid, syscall.SIGTERM)
	syscall.Kill(-w.pid, syscall.SIGINT)
	resp, err := w.post(context.Background(), "/v1/shutdown", "")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("shutdown = %d, want 202", resp.StatusCode)
	}
	// A negative check needs a window: the worker keeps serving for a while.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if w.exited() {
			t.Fatalf("worker exited:\n%s", w.stderr())
		}
		w.infer("still here", 1)
	}
	syscall.Kill(-w.pid, syscall.SIGKILL)
	if _, sig := w.waitExit(5 * time.Second); sig != syscall.SIGKILL {
		t.Fatalf("signal %v, want SIGKILL", sig)
	}
}

var childRE = regexp.MustCompile(`fake: child pid (\d+)`)

func TestFakeForkChild(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"1", "setsid"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_FORK_CHILD=" + mode}})
			w.waitReady()
			w.waitLog("fake: child pid")
			child, _ := strconv.Atoi(childRE.FindStringSubmatch(w.stdout())[1])
			t.Cleanup(func() { // runs before the worker's cleanup
				syscall.Kill(child, syscall.SIGKILL)
				eventually(t, 10*time.Second, "the child to die", func() bool { return !alive(child) })
			})
			eventually(t, 5*time.Second, "the child to run", func() bool { return alive(child) })
			pgid, err := unix.Getpgid(child)
			if err != nil {
				t.Fatal(err)
			}
			if inGroup := pgid == w.pid; inGroup != (mode == "1") {
				t.Fatalf("mode %s: child pgid %d, worker pid %d", mode, pgid, w.pid)
			}
			if mode == "setsid" {
				if sid, _ := unix.Getsid(child); sid != child {
					t.Fatalf("child sid %d, want %d", sid, child)
				}
			}
			// The worker stops on SIGTERM; the child ignores it and is left behind.
			syscall.Kill(-w.pid, syscall.SIGTERM)
			if mode == "setsid" {
				syscall.Kill(child, syscall.SIGTERM)
			}
			if code, _ := w.waitExit(5 * time.Second); code != 0 {
				t.Fatalf("worker exit %d", code)
			}
			if !alive(child) {
				t.Fatal("child died of SIGTERM")
			}
		})
	}
}

func TestFakeForkMany(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_FORK_MANY=3"}})
	w.waitReady()
	w.waitLog("fake: fork_many started=3 failed=0")
	eventually(t, 5*time.Second, "3 children in the worker's group", func() bool {
		return len(groupMembers(w.pid)) >= 4
	})
	w.infer("still serving", 1)
}

// groupMembers lists the live processes of process group pgid.
func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := unix.Getpgid(pid); err == nil && g == pgid && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

func TestFakeNeverReadySendsNothing(t *testing.T) {
	t.Parallel()
	hive := newFakeHive(t)
	w := startWorker(t, workerOpts{hiveURL: hive.srv.URL, env: []string{"LLMW_FAKE_NEVER_READY=1"}})
	w.waitListening()
	w.waitLog("fake: never ready")
	if _, m := w.getJSON("/v1/ready"); m["ready"] != false || m["state"] != "loading" {
		t.Fatalf("/v1/ready = %v", m)
	}
	if n, b := len(hive.readyCalls()), len(hive.heartbeats()); n != 0 || b != 0 {
		t.Fatalf("hive got %d ready calls and %d heartbeats", n, b)
	}
}

func TestFakeNoHeartbeatAfterReady(t *testing.T) {
	t.Parallel()
	hive := newFakeHive(t)
	w := startWorker(t, workerOpts{hiveURL: hive.srv.URL, env: []string{"LLMW_FAKE_NO_HEARTBEAT=1", "RBEE_HEARTBEAT_INTERVAL_MS=20"}})
	w.waitReady()
	w.infer("x", 1)
	// A negative check needs a window: some 10 intervals.
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(hive.heartbeatsIn("loading")) == 0 {
		t.Fatal("no loading heartbeats")
	}
	if n := len(hive.heartbeats()) - len(hive.heartbeatsIn("loading")); n != 0 {
		t.Fatalf("%d heartbeats after ready", n)
	}
}

func TestFakeReadyDelay(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_READY_DELAY_MS=400"}})
	w.waitListening()
	w.waitLog("model loaded")
	if _, m := w.getJSON("/v1/ready"); m["ready"] != false {
		t.Fatalf("ready during the delay: %v", m)
	}
	w.waitLog("msg=ready")
}

func TestFakeAllocMB(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_ALLOC_MB=40"}})
	w.waitReady()
	if rss := procStatusKB(t, w.pid, "RssAnon"); rss < 40<<10 {
		t.Fatalf("RssAnon %d kB after allocating 40 MiB", rss)
	}
}

func TestFakeBusyLoop(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{env: []string{"LLMW_FAKE_BUSY_LOOP=1"}})
	w.waitReady()
	eventually(t, 10*time.Second, "300 ms of CPU time", func() bool { return cpuTicks(t, w.pid) >= 30 })
}

// cpuTicks is utime+stime of pid in clock ticks (1/100 s).
func cpuTicks(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

func TestIdleWorkerIsSmall(t *testing.T) {
	t.Parallel()
	hive := newFakeHive(t)
	w := startWorker(t, workerOpts{hiveURL: hive.srv.URL, model: writeModel(t), env: []string{"RBEE_HEARTBEAT_INTERVAL_MS=50"}})
	w.waitReady()
	w.infer("warm up", 4)
	eventually(t, 5*time.Second, "a few heartbeats", func() bool { return len(hive.heartbeatsIn("idle")) >= 4 })
	rss, anon := procStatusKB(t, w.pid, "VmRSS"), procStatusKB(t, w.pid, "RssAnon")
	t.Logf("idle worker: VmRSS %d kB, RssAnon %d kB", rss, anon)
	if rss > 20<<10 {
		t.Fatalf("idle worker VmRSS %d kB, want under 20 MiB", rss)
	}
}

func TestMainUsageErrorsExit2(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	base := []string{"--worker-id", "w", "--model", "/m", "--port", "0"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"no flags", nil, nil},
		{"no worker id", []string{"--model", "/m", "--port", "1"}, nil},
		{"no port", []string{"--worker-id", "w", "--model", "/m"}, nil},
		{"bad hive url", append(slices.Clone(base), "--hive-url", "ftp://x"), nil},
		{"bad slots", base, map[string]string{"RBEE_WORKER_SLOTS": "many"}},
		{"bad signal", append(slices.Clone(base), "--test-mode"), map[string]string{"LLMW_FAKE_CRASH_SIGNAL": "HUP"}},
		{"stray arg", append(slices.Clone(base), "extra"), nil},
	} {
		var out, errb bytes.Buffer
		if code := refworker.Main(tc.args, env(tc.env), &out, &errb); code != refworker.ExitUsage {
			t.Errorf("%s: exit %d, want 2; stderr %s", tc.name, code, errb.String())
		}
		if errb.Len() == 0 {
			t.Errorf("%s: nothing on stderr", tc.name)
		}
	}
}

func TestTokensAreTheModelsGreedyOutput(t *testing.T) {
	t.Parallel()
	a := refworker.Tokens("Once upon a time", 48)
	if got := strings.Join(a, ""); got != ", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it," || len(a) != 48 {
		t.Fatalf("Tokens = %d tokens %q", len(a), got)
	}
	if slices.Equal(a, refworker.Tokens("Lily and Ben went to the park", 48)) {
		t.Fatal("different prompts gave the same tokens")
	}
	if !slices.Equal(refworker.Tokens("Once upon a time", 10), a[:10]) {
		t.Fatal("a shorter run is not a prefix")
	}
}

func TestSIGTERMWhileLoadingExits0(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{model: writeModel(t), env: []string{"LLMW_FAKE_LOAD_MS=60000"}})
	w.waitListening()
	w.waitLog("loading model")
	syscall.Kill(w.pid, syscall.SIGTERM)
	if code, _ := w.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

func TestSIGTERMWhileHiveIsDownExits0(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{hiveURL: fmt.Sprintf("http://127.0.0.1:%d", reservePort(t))})
	w.waitListening()
	w.waitLog("ready callback failed, retrying")
	syscall.Kill(w.pid, syscall.SIGTERM)
	if code, _ := w.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}
