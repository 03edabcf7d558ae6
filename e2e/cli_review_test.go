package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// startCLI starts the CLI against h in the background; the caller waits
// for it (stopCLI kills it if the test fails first).
func startCLI(t *testing.T, h *hivetest.Hive, args ...string) (*exec.Cmd, *hivetest.SyncBuffer, *hivetest.SyncBuffer, *bgCLI) {
	t.Helper()
	cmd := exec.Command(h.Bin, args...)
	cmd.Env = append(os.Environ(), "RBEE_HIVE_URL="+h.URL)
	var out, errb hivetest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := process.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	b := &bgCLI{done: make(chan struct{})}
	go func() { b.err = process.WaitCmd(cmd); close(b.done) }()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			_ = cmd.Process.Kill()
			<-b.done
		}
	})
	return cmd, &out, &errb, b
}

// bgCLI is a CLI run in the background: done closes when it has exited,
// with err its exit.
type bgCLI struct {
	done chan struct{}
	err  error
}

// wait waits up to d for the run to end; false if it did not.
func (b *bgCLI) wait(d time.Duration) bool {
	select {
	case <-b.done:
		return true
	case <-time.After(d):
		return false
	}
}

func spawnJSON(t *testing.T, h *hivetest.Hive, args ...string) *apiv1.WorkerInfo {
	t.Helper()
	r := cli(t, h, append([]string{"worker", "spawn", h.Ref, "-o", "json"}, args...)...)
	var w apiv1.WorkerInfo
	if r.code != 0 || json.Unmarshal([]byte(r.out), &w) != nil || w.ID == "" {
		t.Fatalf("spawn: %s", r)
	}
	return &w
}

// Regression: `worker logs ID -f --tail 0` printed the worker's whole
// history (the hive read tail=0 as "every line in the ring" when
// following), where --tail 0 without -f prints none.
func TestLogsFollowTailZeroPrintedTheWholeHistory(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Config: `profiles:
  chatty:
    command: [/bin/sh, -c, "echo old-line-1; echo old-line-2; exec sleep 100", "{port}"]
`})
	w := spawnJSON(t, h, "--profile", "chatty")
	if !hivetest.Eventually(t, wait, func() bool {
		return strings.Contains(cli(t, h, "worker", "logs", w.ID).out, "old-line-2")
	}) {
		t.Fatal("no output from the worker")
	}
	_, out, errb, done := startCLI(t, h, "worker", "logs", w.ID, "-f", "--tail", "0")
	// Give the follower time to print a history it should not print, then
	// end the worker: the follow must end with it.
	time.Sleep(300 * time.Millisecond)
	if r := cli(t, h, "worker", "kill", w.ID, "--wait"); r.code != 0 {
		t.Fatalf("kill: %s", r)
	}
	if !done.wait(wait) {
		t.Fatal("logs -f did not end with the worker")
	}
	if done.err != nil {
		t.Fatalf("logs -f: %v %q", done.err, errb.String())
	}
	if strings.Contains(out.String(), "old-line") {
		t.Fatalf("--tail 0 -f printed history: %q", out.String())
	}
}

// Regression: `worker logs ID -f` could lose the last lines of a worker
// that printed a burst and exited: the hive stopped the follow as soon as
// the worker had ended, before every line already read had been sent.
func TestLogsFollowLostTheLastLinesOfAnEndingWorker(t *testing.T) {
	dir := t.TempDir()
	go1 := filepath.Join(dir, "go")
	h := hivetest.Start(t, hivetest.Options{Config: `profiles:
  burst:
    command: [/bin/sh, -c, "echo waiting; while [ ! -e ` + go1 + ` ]; do sleep 0.01; done; seq 1 3000; exit 0", "{port}"]
`})
	for round := 0; round < 3; round++ {
		os.Remove(go1)
		w := spawnJSON(t, h, "--profile", "burst", "--set", "restart.policy=never")
		_, out, errb, done := startCLI(t, h, "worker", "logs", w.ID, "-f")
		if !hivetest.Eventually(t, wait, func() bool { return strings.Contains(out.String(), "waiting") }) {
			t.Fatalf("no first line: %q %q", out.String(), errb.String())
		}
		if err := os.WriteFile(go1, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if !done.wait(wait) {
			t.Fatal("logs -f did not end with the worker")
		}
		if done.err != nil {
			t.Fatalf("logs -f: %v %q", done.err, errb.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if last := lines[len(lines)-1]; last != "3000" {
			t.Fatalf("round %d: logs -f ended at %q after %d lines, want the last line 3000", round, last, len(lines))
		}
	}
}
