package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

func settings(js string) []byte { return []byte(js) }

// childPID reads "fake: child pid N" from the worker's log.
func childPID(t *testing.T, h *hivetest.Hive, id string) int {
	t.Helper()
	re := regexp.MustCompile(`fake: child pid (\d+)`)
	var pid int
	ok := hivetest.Eventually(t, wait, func() bool {
		var b strings.Builder
		h.Client.Logs(context.Background(), id, 200, false, &b)
		if m := re.FindStringSubmatch(b.String()); m != nil {
			pid, _ = strconv.Atoi(m[1])
			return true
		}
		return false
	})
	if !ok {
		t.Fatal("worker did not report its child")
	}
	return pid
}

func TestExternalSIGKILLIsSeenAtOnce(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  restart: {policy: never}\n"})
	waitFor, _ := collectEvents(t, h)
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	sent := time.Now()
	if err := syscall.Kill(r.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev := waitFor(func(ev apiv1.Event) bool { return ev.WorkerID == r.WorkerID && ev.To == "failed" })
	t.Logf("crash detected %s after SIGKILL", ev.At.Sub(sent))
	if ev.Reason != "crashed" || ev.At.Sub(sent) > 500*time.Millisecond {
		t.Fatalf("event %+v after %s", ev, ev.At.Sub(sent))
	}
	info := h.Get(r.WorkerID)
	if info.Exit == nil || info.Exit.Signal != int(syscall.SIGKILL) || info.Exit.Code != nil {
		t.Fatalf("exit facts %+v", info.Exit)
	}
}

func TestUnaskedExitZeroIsFailedExited(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  restart: {policy: on-failure}\n"})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_EXIT_CODE": "0"},
		Settings: settings(`{"start_grace":"0"}`)})
	info := h.WaitState(r.WorkerID, wait, "failed")
	if info.Reason != "exited" || info.Exit == nil || info.Exit.Code == nil || *info.Exit.Code != 0 {
		t.Fatalf("got %s/%s exit %+v", info.State, info.Reason, info.Exit)
	}
	if info.RestartCount != 0 {
		t.Fatal("on-failure restarted a clean exit")
	}
}

func TestNeverReadyWorkerIsStoppedOnStall(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  restart: {policy: never}\n"})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_NEVER_READY": "1"},
		Settings: settings(`{"ready_stall_timeout":"700ms"}`)})
	info := h.WaitState(r.WorkerID, wait, "failed")
	if info.Reason != "ready_timeout" || !strings.Contains(info.Detail, "no loading progress") {
		t.Fatalf("got %s/%s %q", info.State, info.Reason, info.Detail)
	}
	if hivetest.Alive(r.PID) {
		t.Fatal("never-ready worker still alive")
	}
}

func TestSlowButProgressingLoadSurvivesTheStallTimer(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	// The load takes 2.5 s, much longer than the 600 ms stall timeout, but
	// progress keeps moving.
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_LOAD_MS": "2500"},
		Settings: settings(`{"ready_stall_timeout":"600ms"}`)})
	info := h.WaitState(r.WorkerID, wait, "idle", "failed")
	if info.State != "idle" {
		t.Fatalf("progressing load killed: %s/%s %s", info.State, info.Reason, info.Detail)
	}
	if info.ReadyAt.Sub(*info.StartedAt) < 2*time.Second {
		t.Fatalf("load finished too early (%s): the fake did not slow it", info.ReadyAt.Sub(*info.StartedAt))
	}
}

func TestReadyTimeoutHardCap(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  restart: {policy: never}\n"})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_LOAD_MS": "20000"},
		Settings: settings(`{"ready_timeout":"1s"}`)})
	info := h.WaitState(r.WorkerID, wait, "failed")
	if info.Reason != "ready_timeout" || !strings.Contains(info.Detail, "not ready after 1s") {
		t.Fatalf("got %s/%s %q", info.State, info.Reason, info.Detail)
	}
}

func TestStopEscalatesToSIGKILLForWorkerIgnoringSIGTERM(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"},
		Settings: settings(`{"stop_timeout":"500ms"}`)})
	h.WaitState(r.WorkerID, wait, "idle")
	start := time.Now()
	h.Client.Stop(context.Background(), r.WorkerID)
	info := h.WaitState(r.WorkerID, wait, "terminated")
	took := time.Since(start)
	t.Logf("stop of a SIGTERM-ignoring worker took %s (stop_timeout 500ms)", took)
	if info.Reason != "stopped" || info.Exit.Signal != int(syscall.SIGKILL) {
		t.Fatalf("got %s/%s exit %+v", info.State, info.Reason, info.Exit)
	}
	if took < 500*time.Millisecond || took > 2500*time.Millisecond {
		t.Fatalf("stop took %s", took)
	}
	for _, line := range []string{"Shutting down " + r.WorkerID, "Waiting for graceful shutdown (500ms timeout)...",
		"Worker did not respond, force-killing", "Worker terminated"} {
		if !strings.Contains(h.Log(), line) {
			t.Errorf("hive log lacks %q", line)
		}
	}
}

func TestGrandchildHoldingPipesIsKilledOnStop(t *testing.T) {
	for _, mode := range []string{"1", "setsid"} {
		t.Run(mode, func(t *testing.T) {
			h := hivetest.Start(t, hivetest.Options{})
			r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_FORK_CHILD": mode},
				Settings: settings(`{"stop_timeout":"1s"}`)})
			h.WaitState(r.WorkerID, wait, "idle")
			child := childPID(t, h, r.WorkerID)
			if !hivetest.Alive(child) {
				t.Fatal("child not alive")
			}
			h.Client.Stop(context.Background(), r.WorkerID)
			h.WaitState(r.WorkerID, wait, "terminated")
			if hivetest.Alive(child) {
				t.Fatalf("grandchild %d survived the stop", child)
			}
		})
	}
}

func TestHungHealthIsStoppedAndFailed(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  restart: {policy: never}\n"})
	// No heartbeats after ready: fresh healthy heartbeats would stand in
	// for the probes (SPEC §3), and this test is about the probes.
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_HANG_HEALTH": "1", "LLMW_FAKE_NO_HEARTBEAT": "1"},
		Settings: settings(`{"health":{"interval":"200ms","timeout":"100ms","failure_threshold":3},"heartbeat":{"interval":"50ms","timeout":"0s"}}`)})
	h.WaitState(r.WorkerID, wait, "idle")
	info := h.WaitState(r.WorkerID, wait, "failed")
	if info.Reason != "health_check_failed" || info.FailedHealthChecks < 3 {
		t.Fatalf("got %s/%s checks %d", info.State, info.Reason, info.FailedHealthChecks)
	}
	if hivetest.Alive(r.PID) {
		t.Fatal("worker with failed health checks was forgotten, not stopped")
	}
}

func TestStoppedHeartbeatsAreAHeartbeatTimeout(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  restart: {policy: never}\n"})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_NO_HEARTBEAT": "1"},
		Settings: settings(`{"heartbeat":{"interval":"100ms","timeout":"600ms"}}`)})
	h.WaitState(r.WorkerID, wait, "idle")
	info := h.WaitState(r.WorkerID, wait, "failed")
	if info.Reason != "heartbeat_timeout" {
		t.Fatalf("got %s/%s", info.State, info.Reason)
	}
	if hivetest.Alive(r.PID) {
		t.Fatal("worker alive after heartbeat timeout")
	}
}

// inference runs one streamed request to completion.
func inference(t *testing.T, url string, tokens, delayMS int) {
	t.Helper()
	resp, err := http.Post(url+"/v1/inference", "application/json",
		strings.NewReader(fmt.Sprintf(`{"prompt":"hello","max_tokens":%d,"token_delay_ms":%d}`, tokens, delayMS)))
	if err != nil {
		t.Error(err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "[DONE]") {
		t.Errorf("inference: %d %s", resp.StatusCode, b)
	}
}

func TestBusyWorkerIsNotIdledOutAndIdlesOutFromTheEndOfTheRequest(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{Settings: settings(`{"idle_timeout":"1s","heartbeat":{"interval":"200ms","timeout":"5s"}}`)})
	h.WaitState(r.WorkerID, wait, "idle")
	done := make(chan time.Time, 1)
	go func() {
		inference(t, r.URL, 25, 100) // 2.5 s, well past the 1 s idle timeout
		done <- time.Now()
	}()
	h.WaitState(r.WorkerID, wait, "busy")
	end := <-done
	info := h.WaitState(r.WorkerID, wait, "terminated")
	if info.Reason != "idle_timeout" {
		t.Fatalf("got %s/%s", info.State, info.Reason)
	}
	idleFor := info.EndedAt.Sub(end)
	t.Logf("idled out %s after the request ended (idle_timeout 1s)", idleFor)
	if idleFor < 900*time.Millisecond || idleFor > 3*time.Second {
		t.Fatalf("idle timeout measured from the wrong point: %s after the request", idleFor)
	}
}

func TestProbesDoNotCountAsActivity(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{Settings: settings(`{"idle_timeout":"800ms","health":{"interval":"100ms","timeout":"1s","failure_threshold":3}}`)})
	ready := h.WaitState(r.WorkerID, wait, "idle")
	info := h.WaitState(r.WorkerID, wait, "terminated")
	after := info.EndedAt.Sub(*ready.ReadyAt)
	if info.Reason != "idle_timeout" || after > 2*time.Second {
		t.Fatalf("got %s/%s after %s", info.State, info.Reason, after)
	}
}

func TestHiveSIGTERMWithManyWorkersSomeIgnoringSIGTERM(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Ports: 40, Settings: "  stop_timeout: 1s\n"})
	var pids []int
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range 15 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := map[string]string{}
			if i%5 == 0 {
				env["LLMW_FAKE_IGNORE_SHUTDOWN"] = "1"
			}
			r := h.MustSpawn(apiv1.SpawnRequest{Env: env})
			h.WaitState(r.WorkerID, wait, "idle")
			mu.Lock()
			pids = append(pids, r.PID)
			mu.Unlock()
		}()
	}
	wg.Wait()
	start := time.Now()
	if err := h.Stop(30 * time.Second); err != nil {
		t.Fatalf("hive exit: %v", err)
	}
	took := time.Since(start)
	t.Logf("hive shutdown with 15 workers (3 ignoring SIGTERM, stop_timeout 1s): %s", took)
	if took > 4*time.Second {
		t.Fatalf("shutdown took %s", took)
	}
	for _, p := range pids {
		if hivetest.Alive(p) {
			t.Errorf("worker %d survived", p)
		}
	}
	for _, want := range []string{"Shutting down 15 workers...", "15/15 workers stopped", "All workers stopped, exiting"} {
		if !strings.Contains(h.Log(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestShutdownBudgetKillsWhatIsLeft(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Config: "shutdown_timeout: 1s\n", Settings: "  stop_timeout: 30s\n"})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"}})
	h.WaitState(r.WorkerID, wait, "idle")
	start := time.Now()
	if err := h.Stop(20 * time.Second); err != nil {
		t.Fatalf("hive exit: %v", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("budget of 1s not enforced: %s", took)
	}
	if hivetest.Alive(r.PID) {
		t.Fatal("worker survived the shutdown budget")
	}
}

func TestSecondSignalKillsAtOnce(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  stop_timeout: 30s\n"})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"}})
	h.WaitState(r.WorkerID, wait, "idle")
	start := time.Now()
	h.Signal(syscall.SIGTERM)
	hivetest.Eventually(t, wait, func() bool { return strings.Contains(h.Log(), "Shutting down 1 workers") })
	h.Signal(syscall.SIGINT)
	select {
	case <-h.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("second signal did not end the shutdown")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %s", took)
	}
	if err := h.ExitErr(); err != nil {
		t.Fatalf("exit %v", err)
	}
	if hivetest.Alive(r.PID) {
		t.Fatal("worker survived")
	}
}

// Races: whatever wins, the worker ends in one consistent final state and
// its process is gone.
func TestStopRaces(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Ports: 40, Settings: "  restart: {policy: never}\n  stop_timeout: 2s\n"})
	const n = 8
	check := func(t *testing.T, id string, pid int, allowed ...string) {
		info := h.WaitState(id, wait, "terminated", "failed")
		got := string(info.State) + "/" + string(info.Reason)
		ok := false
		for _, a := range allowed {
			ok = ok || got == a
		}
		if !ok {
			t.Errorf("%s ended %s, want one of %v", id, got, allowed)
		}
		if pid > 0 && hivetest.Alive(pid) {
			t.Errorf("%s: process %d alive after %s", id, pid, got)
		}
	}
	t.Run("stop vs ready", func(t *testing.T) {
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := h.MustSpawn(apiv1.SpawnRequest{})
				h.Client.Stop(context.Background(), r.WorkerID)
				check(t, r.WorkerID, r.PID, "terminated/stopped")
			}()
		}
		wg.Wait()
	})
	t.Run("two stops at once", func(t *testing.T) {
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := h.MustSpawn(apiv1.SpawnRequest{})
				h.WaitState(r.WorkerID, wait, "idle")
				var inner sync.WaitGroup
				for range 2 {
					inner.Add(1)
					go func() {
						defer inner.Done()
						if _, err := h.Client.Stop(context.Background(), r.WorkerID); err != nil {
							t.Error(err)
						}
					}()
				}
				inner.Wait()
				check(t, r.WorkerID, r.PID, "terminated/stopped")
			}()
		}
		wg.Wait()
	})
	t.Run("stop vs crash", func(t *testing.T) {
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := h.MustSpawn(apiv1.SpawnRequest{})
				h.WaitState(r.WorkerID, wait, "idle")
				go syscall.Kill(r.PID, syscall.SIGKILL)
				h.Client.Stop(context.Background(), r.WorkerID)
				check(t, r.WorkerID, r.PID, "terminated/stopped", "failed/crashed")
			}()
		}
		wg.Wait()
	})
	t.Run("kill during stop", func(t *testing.T) {
		r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"}})
		h.WaitState(r.WorkerID, wait, "idle")
		h.Client.Stop(context.Background(), r.WorkerID)
		start := time.Now()
		h.Client.Kill(context.Background(), r.WorkerID)
		check(t, r.WorkerID, r.PID, "terminated/stopped")
		if time.Since(start) > 1500*time.Millisecond {
			t.Errorf("kill during a stop did not escalate at once")
		}
	})
}

// Regression: a stop asked while an API restart was stopping the worker was
// swallowed, and the worker started again.
func TestStopDuringRestartEndsTheWorker(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"},
		Settings: settings(`{"stop_timeout":"700ms"}`)})
	h.WaitState(r.WorkerID, wait, "idle")
	if _, err := h.Client.Restart(context.Background(), r.WorkerID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Client.Stop(context.Background(), r.WorkerID); err != nil {
		t.Fatal(err)
	}
	info := h.WaitState(r.WorkerID, wait, "terminated", "idle")
	if info.State != "terminated" || info.Reason != "stopped" || info.RestartCount != 0 {
		t.Fatalf("got %s/%s restarts %d", info.State, info.Reason, info.RestartCount)
	}
}
