package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// jsonSettings turns a Go value into the JSON `settings` of a spawn request.
func jsonSettings(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jobj is shorthand for nested settings objects.
type jobj = map[string]any

// workerEvents returns the events of worker id, in order.
func workerEvents(all func() []apiv1.Event, id string) []apiv1.Event {
	var out []apiv1.Event
	for _, ev := range all() {
		if ev.WorkerID == id {
			out = append(out, ev)
		}
	}
	return out
}

// eventPath renders events as "from→to/reason" words.
func eventPath(evs []apiv1.Event) string {
	var ws []string
	for _, ev := range evs {
		w := string(ev.From) + "→" + string(ev.To)
		if ev.Reason != "" {
			w += "/" + string(ev.Reason)
		}
		ws = append(ws, w)
	}
	return strings.Join(ws, " ")
}

// countEntering counts the events of id that enter state to from state from ("" for
// any).
func countEntering(evs []apiv1.Event, from, to string) int {
	n := 0
	for _, ev := range evs {
		if string(ev.To) == to && (from == "" || string(ev.From) == from) {
			n++
		}
	}
	return n
}

// assertNoEventFor asserts that, for d, worker id gets no event entering one of
// states. It is the bounded check that something does NOT happen.
func assertNoEventFor(t *testing.T, all func() []apiv1.Event, id string, d time.Duration, states ...string) {
	t.Helper()
	before := len(workerEvents(all, id))
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		evs := workerEvents(all, id)
		for _, ev := range evs[before:] {
			for _, s := range states {
				if string(ev.To) == s {
					t.Fatalf("unexpected event %s→%s/%s; events: %s", ev.From, ev.To, ev.Reason, eventPath(evs))
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventSlack is how much later than the process's end the failed event
// may be stamped: the back-off counts from the end, the event is stamped
// once the end is handled — microseconds apart here, but 13.5 ms in the
// cgroup v2 VM (emulated, no KVM) of one CI run, which failed the restart
// test by that much.
const eventSlack = 25 * time.Millisecond

// restartLogs returns the hive's "Restarting worker" log lines of worker id.
func restartLogs(h *hivetest.Hive, id string) []string {
	var out []string
	for _, l := range strings.Split(h.Log(), "\n") {
		if strings.Contains(l, "Restarting worker") && strings.Contains(l, id) {
			out = append(out, l)
		}
	}
	return out
}

// restartDelayAfter returns the time from the n-th (1-based) failed event of
// evs to the spawning event that follows it.
func restartDelayAfter(t *testing.T, evs []apiv1.Event, n int) time.Duration {
	t.Helper()
	seen := 0
	var failedAt time.Time
	for _, ev := range evs {
		switch {
		case ev.To == "failed":
			seen++
			if seen == n {
				failedAt = ev.At
			}
		case ev.To == "spawning" && ev.From == "backoff" && seen == n && !failedAt.IsZero():
			return ev.At.Sub(failedAt)
		}
	}
	t.Fatalf("no restart after failure %d; events: %s", n, eventPath(evs))
	return 0
}

func TestSIGKILLRestartsSameIDNewPIDAfterBaseDelay(t *testing.T) {
	const base = 300 * time.Millisecond
	h := hivetest.Start(t, hivetest.Options{})
	waitFor, all := collectEvents(t, h)
	r := h.MustSpawn(apiv1.SpawnRequest{Settings: jsonSettings(t, jobj{
		"restart": jobj{"policy": "on-failure", "base_delay": base.String(), "jitter": 0},
		"limits":  jobj{"nofile": 256},
	})})
	first := h.WaitState(r.WorkerID, wait, "idle")
	if first.RestartCount != 0 || first.LastRestart != nil {
		t.Fatalf("fresh worker: restart_count %d last_restart %v", first.RestartCount, first.LastRestart)
	}
	if err := syscall.Kill(r.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	failed := waitFor(func(ev apiv1.Event) bool { return ev.WorkerID == r.WorkerID && ev.To == "failed" })
	if failed.Reason != "crashed" || failed.PID != r.PID {
		t.Fatalf("failed event %+v", failed)
	}
	waitFor(func(ev apiv1.Event) bool {
		return ev.WorkerID == r.WorkerID && ev.From == "failed" && ev.To == "backoff"
	})
	spawning := waitFor(func(ev apiv1.Event) bool {
		return ev.WorkerID == r.WorkerID && ev.From == "backoff" && ev.To == "spawning"
	})
	delay := spawning.At.Sub(failed.At)
	t.Logf("restart delay (failed event → spawning event): %s, base_delay %s", delay, base)
	if delay < base-eventSlack || delay >= base+time.Second {
		t.Fatalf("restart after %s, want ≈ %s", delay, base)
	}

	var info *apiv1.WorkerInfo
	if !hivetest.Eventually(t, wait, func() bool {
		info = h.Get(r.WorkerID)
		return info.State == "idle" && info.PID != r.PID
	}) {
		t.Fatalf("not idle again with a new pid: %+v", info)
	}
	if info.ID != r.WorkerID || info.PID == r.PID || info.RestartCount != 1 || info.LastRestart == nil {
		t.Fatalf("after restart: id %s pid %d (was %d) restart_count %d last_restart %v",
			info.ID, info.PID, r.PID, info.RestartCount, info.LastRestart)
	}
	if info.LastRestart.Before(failed.At) {
		t.Fatalf("last_restart %s before the failure %s", info.LastRestart, failed.At)
	}
	if !hivetest.Alive(info.PID) || hivetest.Alive(r.PID) {
		t.Fatalf("new pid alive %v, old pid alive %v", hivetest.Alive(info.PID), hivetest.Alive(r.PID))
	}
	evs := workerEvents(all, r.WorkerID)
	want := "idle→failed/crashed failed→backoff/crashed backoff→spawning"
	if !strings.Contains(eventPath(evs), want) {
		t.Fatalf("events %q lack %q", eventPath(evs), want)
	}

	// The CLI shows the restart and the limits.
	out, err := runCLI(t, h, "worker", "list")
	if err != nil {
		t.Fatalf("worker list: %v %s", err, cliStderr(err))
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "RESTARTS") {
		t.Fatalf("worker list:\n%s", out)
	}
	col := strings.Index(lines[0], "RESTARTS")
	if f := strings.Fields(lines[1][col:]); len(f) == 0 || f[0] != "1" {
		t.Fatalf("worker list RESTARTS column is not 1:\n%s", out)
	}
	out, err = runCLI(t, h, "worker", "get", r.WorkerID)
	if err != nil {
		t.Fatalf("worker get: %v %s", err, cliStderr(err))
	}
	last := info.LastRestart.Format(time.RFC3339Nano)
	for _, want := range []string{"restarts", "1 (last " + last + ")", "limits", "nofile 256"} {
		if !strings.Contains(out, want) {
			t.Fatalf("worker get lacks %q:\n%s", want, out)
		}
	}
	// JSON output carries the fields by their API names.
	out, err = runCLI(t, h, "worker", "get", r.WorkerID, "--output", "json")
	if err != nil {
		t.Fatalf("worker get --output json: %v %s", err, cliStderr(err))
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if got["restart_count"] != float64(1) || got["last_restart"] == nil || got["limits"] == nil {
		t.Fatalf("json get: restart_count %v last_restart %v limits %v", got["restart_count"], got["last_restart"], got["limits"])
	}
}

func cliStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// A worker that crashes right after every ready is restarted max_failures−1
// times with doubling delays, then ends failed/crash_loop and stays ended.
func TestCrashLoopEndsAtMaxFailures(t *testing.T) {
	const base = 100 * time.Millisecond
	h := hivetest.Start(t, hivetest.Options{})
	waitFor, all := collectEvents(t, h)
	r := h.MustSpawn(apiv1.SpawnRequest{
		Env: map[string]string{"LLMW_FAKE_CRASH_AFTER_MS": "50"},
		Settings: jsonSettings(t, jobj{
			// The crash comes after ready, but ready can come within the
			// default 100ms start grace; keep the grace shorter.
			"start_grace": "5ms",
			"restart":     jobj{"base_delay": base.String(), "jitter": 0, "max_failures": 3, "window": "5m", "max_delay": "10s"},
		}),
	})
	end := waitFor(func(ev apiv1.Event) bool {
		return ev.WorkerID == r.WorkerID && ev.To == "failed" && ev.Reason == "crash_loop"
	})
	_ = end
	info := h.Get(r.WorkerID)
	if info.State != "failed" || info.Reason != "crash_loop" || info.RestartCount != 2 {
		t.Fatalf("end: %s/%s restart_count %d (%s)", info.State, info.Reason, info.RestartCount, info.Detail)
	}
	if !strings.Contains(info.Detail, "3 failures") {
		t.Fatalf("detail %q does not say why", info.Detail)
	}
	evs := workerEvents(all, r.WorkerID)
	if n := countEntering(evs, "", "failed"); n != 3 {
		t.Fatalf("%d failures, want 3: %s", n, eventPath(evs))
	}
	if n := countEntering(evs, "backoff", "spawning"); n != 2 {
		t.Fatalf("%d restarts, want 2: %s", n, eventPath(evs))
	}
	// The n-th restart waits base × 2ⁿ.
	d1, d2 := restartDelayAfter(t, evs, 1), restartDelayAfter(t, evs, 2)
	t.Logf("crash loop restart delays: %s, %s (base %s)", d1, d2, base)
	if d1 < base-eventSlack || d1 >= base+time.Second || d2 < 2*base-eventSlack || d2 >= 2*base+time.Second {
		t.Fatalf("restart delays %s, %s; want ≈ %s, %s", d1, d2, base, 2*base)
	}
	logs := restartLogs(h, r.WorkerID)
	if len(logs) != 2 || !strings.Contains(logs[0], "restart 1 after crashed: waiting 100ms (base 100ms × 2^0)") ||
		!strings.Contains(logs[1], "restart 2 after crashed: waiting 200ms (base 100ms × 2^1 = 200ms)") {
		t.Fatalf("restart decisions in the hive log:\n%s", strings.Join(logs, "\n"))
	}
	// No more tries.
	assertNoEventFor(t, all, r.WorkerID, time.Second, "backoff", "spawning")
	if info := h.Get(r.WorkerID); info.State != "failed" || info.RestartCount != 2 {
		t.Fatalf("after the crash loop: %s restart_count %d", info.State, info.RestartCount)
	}
}

// After reset_after of healthy running the failure count starts over: the
// next delay is base again and max_failures 2 does not trip.
func TestFailureCountResetsAfterStableRunning(t *testing.T) {
	const base = 300 * time.Millisecond
	const resetAfter = time.Second
	h := hivetest.Start(t, hivetest.Options{})
	waitFor, all := collectEvents(t, h)
	r := h.MustSpawn(apiv1.SpawnRequest{Settings: jsonSettings(t, jobj{
		"restart": jobj{"base_delay": base.String(), "jitter": 0, "max_failures": 2, "window": "5m",
			"reset_after": resetAfter.String()},
	})})
	h.WaitState(r.WorkerID, wait, "idle")
	syscall.Kill(r.PID, syscall.SIGKILL)
	var info *apiv1.WorkerInfo
	if !hivetest.Eventually(t, wait, func() bool {
		info = h.Get(r.WorkerID)
		return info.State == "idle" && info.PID != r.PID
	}) {
		t.Fatalf("not restarted: %+v", info)
	}
	// Healthy running for longer than reset_after.
	if !hivetest.Eventually(t, wait, func() bool { return time.Since(*info.ReadyAt) > resetAfter+200*time.Millisecond }) {
		t.Fatal("clock")
	}
	if cur := h.Get(r.WorkerID); cur.State != "idle" || cur.PID != info.PID {
		t.Fatalf("worker did not run stably: %+v", cur)
	}
	syscall.Kill(info.PID, syscall.SIGKILL)
	waitFor(func(ev apiv1.Event) bool {
		return ev.WorkerID == r.WorkerID && ev.From == "backoff" && ev.To == "spawning" && ev.At.After(*info.ReadyAt)
	})
	evs := workerEvents(all, r.WorkerID)
	if strings.Contains(eventPath(evs), "crash_loop") {
		t.Fatalf("crash loop despite the reset: %s", eventPath(evs))
	}
	d := restartDelayAfter(t, evs, 2)
	t.Logf("second restart after stable running waited %s (base %s; without the reset it would be %s)", d, base, 2*base)
	if d < base-eventSlack {
		t.Fatalf("second restart waited %s, want base %s", d, base)
	}
	// The decision itself (timing alone cannot tell 300ms from 600ms on a
	// loaded machine): n is 0 again.
	logs := restartLogs(h, r.WorkerID)
	if len(logs) != 2 || !strings.Contains(logs[1], "restart 2 after crashed: waiting 300ms (base 300ms × 2^0)") {
		t.Fatalf("restart decisions in the hive log:\n%s", strings.Join(logs, "\n"))
	}
	var end *apiv1.WorkerInfo
	if !hivetest.Eventually(t, wait, func() bool {
		end = h.Get(r.WorkerID)
		return end.State == "idle" && end.RestartCount == 2
	}) {
		t.Fatalf("after the second restart: %+v", end)
	}
}

// A clean exit (code 0) nobody asked for is restarted by `always` and left
// ended by `on-failure`.
func TestAlwaysRestartsCleanExitOnFailureDoesNot(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	waitFor, all := collectEvents(t, h)
	spawn := func(policy string) *apiv1.SpawnResponse {
		return h.MustSpawn(apiv1.SpawnRequest{
			Env: map[string]string{"LLMW_FAKE_EXIT_AFTER_MS": "300"},
			Settings: jsonSettings(t, jobj{"start_grace": "5ms",
				"restart": jobj{"policy": policy, "base_delay": "100ms", "jitter": 0, "max_failures": 100}}),
		})
	}
	always := spawn("always")
	onFailure := spawn("on-failure")

	waitFor(func(ev apiv1.Event) bool {
		return ev.WorkerID == always.WorkerID && ev.From == "backoff" && ev.To == "spawning"
	})
	evs := workerEvents(all, always.WorkerID)
	if !strings.Contains(eventPath(evs), "idle→failed/exited failed→backoff/exited backoff→spawning") {
		t.Fatalf("always: %s", eventPath(evs))
	}
	var info *apiv1.WorkerInfo
	if !hivetest.Eventually(t, wait, func() bool {
		info = h.Get(always.WorkerID)
		return info.RestartCount >= 1 && info.PID != always.PID && info.State.Ready()
	}) {
		t.Fatalf("always: not running again: %+v", info)
	}

	end := h.WaitState(onFailure.WorkerID, wait, "failed")
	if end.Reason != "exited" || end.Exit == nil || end.Exit.Code == nil || *end.Exit.Code != 0 || end.RestartCount != 0 {
		t.Fatalf("on-failure: %s/%s exit %+v restart_count %d", end.State, end.Reason, end.Exit, end.RestartCount)
	}
	assertNoEventFor(t, all, onFailure.WorkerID, 500*time.Millisecond, "backoff", "spawning")
	if evs := workerEvents(all, onFailure.WorkerID); countEntering(evs, "", "backoff") != 0 {
		t.Fatalf("on-failure went to backoff: %s", eventPath(evs))
	}

	// Stop the restarting one wherever it is in its cycle; it ends at once
	// or after its current incarnation, and never comes back.
	h.Client.Stop(context.Background(), always.WorkerID)
	fin := h.WaitState(always.WorkerID, wait, "terminated")
	if fin.Reason != "stopped" {
		t.Fatalf("always after stop: %s/%s", fin.State, fin.Reason)
	}
	assertNoEventFor(t, all, always.WorkerID, 500*time.Millisecond, "spawning")
}

// Endings asked for by a person (stop, kill) or by the idle timeout never
// restart, even under `always`.
func TestAskedEndingsNeverRestart(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	_, all := collectEvents(t, h)
	restart := jobj{"policy": "always", "base_delay": "50ms", "jitter": 0}
	cases := []struct {
		name, reason string
		settings     jobj
		end          func(id string)
	}{
		{"stop", "stopped", jobj{"restart": restart}, func(id string) { h.Client.Stop(context.Background(), id) }},
		{"kill", "killed", jobj{"restart": restart}, func(id string) { h.Client.Kill(context.Background(), id) }},
		{"idle timeout", "idle_timeout", jobj{"restart": restart, "idle_timeout": "300ms"}, func(string) {}},
	}
	ids := map[string]string{}
	for _, c := range cases {
		r := h.MustSpawn(apiv1.SpawnRequest{Settings: jsonSettings(t, c.settings)})
		ids[c.name] = r.WorkerID
		h.WaitState(r.WorkerID, wait, "idle")
		c.end(r.WorkerID)
		end := h.WaitState(r.WorkerID, wait, "terminated", "failed")
		if end.State != "terminated" || string(end.Reason) != c.reason || end.RestartCount != 0 {
			t.Fatalf("%s: %s/%s restart_count %d", c.name, end.State, end.Reason, end.RestartCount)
		}
		if hivetest.Alive(r.PID) {
			t.Fatalf("%s: pid %d survived", c.name, r.PID)
		}
	}
	// Well past base_delay: nothing came back.
	for _, c := range cases {
		assertNoEventFor(t, all, ids[c.name], 200*time.Millisecond, "backoff", "spawning")
		if evs := workerEvents(all, ids[c.name]); countEntering(evs, "", "backoff") != 0 || countEntering(evs, "", "spawning") != 1 {
			t.Fatalf("%s: %s", c.name, eventPath(evs))
		}
	}
}

// A stop (or kill) during backoff cancels the pending restart at once.
func TestStopDuringBackoffCancelsRestart(t *testing.T) {
	const base = time.Second
	h := hivetest.Start(t, hivetest.Options{})
	waitFor, all := collectEvents(t, h)
	for _, how := range []string{"stop", "kill"} {
		r := h.MustSpawn(apiv1.SpawnRequest{Settings: jsonSettings(t, jobj{
			"restart": jobj{"base_delay": base.String(), "jitter": 0},
		})})
		h.WaitState(r.WorkerID, wait, "idle")
		syscall.Kill(r.PID, syscall.SIGKILL)
		waitFor(func(ev apiv1.Event) bool { return ev.WorkerID == r.WorkerID && ev.To == "backoff" })
		asked := time.Now()
		var err error
		if how == "stop" {
			_, err = h.Client.Stop(context.Background(), r.WorkerID)
		} else {
			_, err = h.Client.Kill(context.Background(), r.WorkerID)
		}
		if err != nil {
			t.Fatalf("%s during backoff: %v", how, err)
		}
		end := h.WaitState(r.WorkerID, wait, "terminated", "failed")
		took := time.Since(asked)
		want := map[string]string{"stop": "stopped", "kill": "killed"}[how]
		if end.State != "terminated" || string(end.Reason) != want || took > base/2 {
			t.Fatalf("%s during backoff: %s/%s after %s", how, end.State, end.Reason, took)
		}
		t.Logf("%s during backoff ended the worker in %s", how, took)
		// Past the restart delay: no new incarnation.
		assertNoEventFor(t, all, r.WorkerID, base+300*time.Millisecond, "spawning")
		if got := h.Get(r.WorkerID); got.PID != r.PID || got.RestartCount != 0 || got.State != "terminated" {
			t.Fatalf("%s during backoff: later %s pid %d restart_count %d", how, got.State, got.PID, got.RestartCount)
		}
		evs := workerEvents(all, r.WorkerID)
		if !strings.HasSuffix(eventPath(evs), "failed→backoff/crashed backoff→terminated/"+want) {
			t.Fatalf("%s during backoff: events %s", how, eventPath(evs))
		}
	}
}
