package refworker_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/refworker"
)

// The benchmark's ready stamp: "PID NS", NS taken before the accepted ready
// POST, so it is no later than the hive's answer and no earlier than the
// worker's start.
func TestBenchReadyStampWrittenAfterAcceptedCallback(t *testing.T) {
	h := newFakeHive(t)
	stamp := filepath.Join(t.TempDir(), "stamp")
	before := time.Now()
	p := startWorker(t, workerOpts{hiveURL: h.srv.URL, env: []string{"LLMW_FAKE_READY_STAMP=" + stamp}})
	p.waitReady()
	var line string
	eventually(t, 5*time.Second, "stamp written", func() bool {
		b, err := os.ReadFile(refworker.StampPath(stamp, p.pid))
		line = strings.TrimSpace(string(b))
		return err == nil && line != ""
	})
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != strconv.Itoa(p.pid) {
		t.Fatalf("stamp %q, want \"%d NS\"", line, p.pid)
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if at := time.Unix(0, ns); at.Before(before) || at.After(time.Now()) {
		t.Fatalf("stamp %s outside [%s, now]", at, before)
	}
	if n := len(h.readyCalls()); n != 1 {
		t.Fatalf("%d ready calls, want 1", n)
	}
}

// Regression (issue 11, item 3): a spawn request's env could name
// LLMW_FAKE_READY_STAMP (then RBEE_BENCH_READY_STAMP) and have the worker,
// running as root, overwrite any file. The knobs act only with --test-mode,
// and the stamp is a new file that never follows a symlink.
func TestReadyStampOnlyInTestModeAndNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Without --test-mode the knobs are ignored: the worker behaves normally.
	h := newFakeHive(t)
	stamp := filepath.Join(dir, "stamp")
	p := startWorker(t, workerOpts{hiveURL: h.srv.URL, noTestMode: true,
		env: []string{"LLMW_FAKE_READY_STAMP=" + stamp, "LLMW_FAKE_EXIT_CODE=7"}})
	p.waitReady()
	if _, err := os.Stat(refworker.StampPath(stamp, p.pid)); !os.IsNotExist(err) {
		t.Fatalf("stamp written without --test-mode: %v", err)
	}
	// In test mode, a planted symlink at the stamp's path is not followed.
	h2 := newFakeHive(t)
	stamp2 := filepath.Join(dir, "stamp2")
	p2 := startWorker(t, workerOpts{hiveURL: h2.srv.URL, env: []string{"LLMW_FAKE_READY_STAMP=" + stamp2, "LLMW_FAKE_READY_DELAY_MS=300"}})
	if err := os.Symlink(victim, refworker.StampPath(stamp2, p2.pid)); err != nil {
		t.Fatal(err)
	}
	p2.waitReady()
	eventually(t, 5*time.Second, "ready callback", func() bool { return len(h2.readyCalls()) == 1 })
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Fatalf("victim overwritten through a planted symlink: %q", b)
	}
}
