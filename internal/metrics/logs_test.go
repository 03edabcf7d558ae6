package metrics_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

var workerIDRe = regexp.MustCompile(`worker-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// TestJSONLogLinesCarryWorkerFields runs the daemon with --log-format json
// through a spawn, a graceful stop, a forced stop, an API kill and the
// hive's shutdown, and checks every stderr line: it is one JSON object with
// time, level and msg; a line about a worker carries worker_id; the
// lifecycle lines carry pid, and reason and signal where they apply.
func TestJSONLogLinesCarryWorkerFields(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Config: fakeEnv, Args: []string{"--log-format", "json"}})
	a := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(a.WorkerID, wait, "idle")
	stop(t, h, a.WorkerID)
	h.WaitState(a.WorkerID, wait, "terminated")
	b := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"},
		Settings: settings(t, map[string]any{"stop_timeout": "100ms"})})
	h.WaitState(b.WorkerID, wait, "idle")
	stop(t, h, b.WorkerID)
	h.WaitState(b.WorkerID, wait, "terminated")
	c := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(c.WorkerID, wait, "idle")
	if _, err := h.Client.Kill(context.Background(), c.WorkerID); err != nil {
		t.Fatal(err)
	}
	h.WaitState(c.WorkerID, wait, "terminated")
	d := h.MustSpawn(apiv1.SpawnRequest{}) // left for the hive's shutdown
	h.WaitState(d.WorkerID, wait, "idle")
	if err := h.Stop(wait); err != nil {
		t.Fatal(err)
	}

	// Lifecycle lines and the fields each must carry.
	needs := map[string][]string{
		"Worker started":                        {"pid"},
		"Worker ready":                          {"pid"},
		"Worker process exited":                 {"pid", "exit"},
		"Worker terminated":                     {"pid", "reason"},
		"Worker ended":                          {"pid", "reason", "state"},
		"Force-killing worker":                  {"pid", "reason", "signal"},
		"Worker did not respond, force-killing": {"pid", "reason", "signal"},
		"Graceful shutdown requested":           {"pid"},
	}
	seen := map[string]int{}
	lines := strings.Split(strings.TrimSpace(h.Log()), "\n")
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("line %d is not JSON: %v\n%s", i+1, err, line)
			continue
		}
		msg, _ := rec["msg"].(string)
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("line %d has no %s: %s", i+1, k, line)
			}
		}
		// A line that names a worker anywhere must say which in worker_id.
		if ids := workerIDRe.FindAllString(line, -1); len(ids) > 0 {
			wid, _ := rec["worker_id"].(string)
			if wid == "" {
				t.Errorf("line %d is about %s but has no worker_id: %s", i+1, ids[0], line)
			}
		}
		name := msg
		if strings.HasPrefix(msg, "Shutting down worker-") {
			name = "Shutting down <id>"
			for _, k := range []string{"pid", "reason"} {
				if _, ok := rec[k]; !ok {
					t.Errorf("line %d (%q) has no %s: %s", i+1, msg, k, line)
				}
			}
		}
		seen[name]++
		for _, k := range needs[msg] {
			if _, ok := rec[k]; !ok {
				t.Errorf("line %d (%q) has no %s: %s", i+1, msg, k, line)
			}
		}
		if pid, ok := rec["pid"]; ok {
			if n, isNum := pid.(float64); !isNum || n <= 0 {
				t.Errorf("line %d: pid %v is not a positive number", i+1, pid)
			}
		}
	}
	// The lines of SPEC §3 are there, by their exact text.
	for _, want := range []string{"Worker started", "Worker ready", "Worker terminated", "Worker ended",
		"Shutting down <id>", "Shutting down 1 workers...", "1/1 workers stopped", "All workers stopped, exiting"} {
		if seen[want] == 0 {
			t.Errorf("no %q line", want)
		}
	}
	if seen["Worker did not respond, force-killing"]+seen["Force-killing worker"] < 2 {
		t.Errorf("force-kill lines: %d, want one for the forced stop and one for the kill",
			seen["Worker did not respond, force-killing"]+seen["Force-killing worker"])
	}
	t.Logf("%d JSON lines checked", len(lines))
}
