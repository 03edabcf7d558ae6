package refworker_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The benchmark's ready stamp: "PID NS", NS taken before the accepted ready
// POST, so it is no later than the hive's answer and no earlier than the
// worker's start.
func TestBenchReadyStampWrittenAfterAcceptedCallback(t *testing.T) {
	h := newFakeHive(t)
	stamp := filepath.Join(t.TempDir(), "stamp")
	before := time.Now()
	p := startWorker(t, workerOpts{hiveURL: h.srv.URL, env: []string{"RBEE_BENCH_READY_STAMP=" + stamp}})
	p.waitReady()
	var line string
	eventually(t, 5*time.Second, "stamp written", func() bool {
		b, err := os.ReadFile(stamp)
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
