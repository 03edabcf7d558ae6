package e2e

// Issue 19: the hive on a worker that does not help it — a Python server
// that prints nothing when ready and closes every connection.

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/bench"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// pyWorker writes the benchmark's silent Python worker and returns the
// config of a profile "py" that runs it.
func pyWorker(t *testing.T) string {
	t.Helper()
	py, err := bench.Python()
	if err != nil {
		t.Fatal(err) // .ci/run installs python3
	}
	script, err := bench.WritePyWorker(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bench.PyProfile(py, script)
}

// A silent server that loaded for seconds was noticed up to a second late:
// the readiness back-off doubled to 1 s (by 1.8 s of loading the probes
// were 800 ms apart). SPEC §6: probes every 25 ms backing off to 50 ms.
func TestSilentServerIsNoticedReadyWithinMaxInterval(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Config: pyWorker(t)})
	stamp := filepath.Join(t.TempDir(), "ready")
	r := h.MustSpawn(apiv1.SpawnRequest{Profile: "py", Env: map[string]string{"PYW_LOAD_MS": "1800", "PYW_READY_FILE": stamp}})
	info := h.WaitState(r.WorkerID, wait, "idle")
	b, err := os.ReadFile(stamp)
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	late := info.ReadyAt.Sub(time.Unix(0, ns))
	t.Logf("silent server noticed ready %s after it was (readiness.max_interval 50ms)", late)
	if late > 300*time.Millisecond {
		t.Fatalf("silent server noticed ready %s after it was", late)
	}
}

// SPEC §3: a liveness probe is skipped while the worker's heartbeats are
// fresh and healthy. A worker whose /health hangs but whose heartbeats say
// healthy stays up.
func TestLivenessProbeSkippedWhileHeartbeatsAreFreshAndHealthy(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  restart: {policy: never}\n"})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_HANG_HEALTH": "1"},
		Settings: settings(`{"health":{"interval":"100ms","timeout":"50ms","failure_threshold":2},"heartbeat":{"interval":"100ms","timeout":"5s"}}`)})
	h.WaitState(r.WorkerID, wait, "idle")
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		info := h.Get(r.WorkerID)
		if info.State != "idle" || info.FailedHealthChecks != 0 {
			t.Fatalf("worker with fresh healthy heartbeats was probed: %s/%s, %d failed checks", info.State, info.Reason, info.FailedHealthChecks)
		}
	}
}
