package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// tableRows parses a tabwriter table into header → value maps.
func tableRows(t *testing.T, out string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 1 {
		t.Fatalf("no table: %q", out)
	}
	head := strings.Fields(lines[0])
	var rows []map[string]string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < len(head) {
			t.Fatalf("row %q has %d fields, header %d", l, len(f), len(head))
		}
		row := map[string]string{}
		for i, h := range head {
			row[h] = f[i]
		}
		// MEMORY is "12.3 MiB": two fields at the end.
		if len(f) > len(head) {
			row[head[len(head)-1]] = strings.Join(f[len(head)-1:], " ")
		}
		rows = append(rows, row)
	}
	return rows
}

func TestCLITables(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")

	out, err := runCLI(t, h, "worker", "list")
	if err != nil {
		t.Fatal(err)
	}
	rows := tableRows(t, out)
	if len(rows) != 1 {
		t.Fatalf("list table: %q", out)
	}
	row := rows[0]
	if row["ID"] != r.WorkerID || row["STATE"] != "idle" || row["PID"] == "" || row["RESTARTS"] != "0" ||
		!strings.HasSuffix(row["MEMORY"], "MiB") || row["MODEL"] != h.Ref {
		t.Fatalf("list row %v", row)
	}

	out, err = runCLI(t, h, "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"version", "uptime", "cgroups", "hybrid", "workers", "idle 1", "memory", "MiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	out, err = runCLI(t, h, "worker", "get", r.WorkerID)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"id", r.WorkerID, "state", "idle", "pid", "restarts", "limits"} {
		if !strings.Contains(out, want) {
			t.Errorf("get lacks %q:\n%s", want, out)
		}
	}

	// events pretty-prints state changes as they happen.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.Bin, "events", "--hive", h.URL)
	cmd.Env = os.Environ()
	var buf, errBuf hivetest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &buf, &errBuf
	if err := process.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	if !hivetest.Eventually(t, wait, func() bool { return strings.Contains(errBuf.String(), "Watching events at") }) {
		t.Fatalf("events did not connect: %q", errBuf.String())
	}
	h.Client.Stop(context.Background(), r.WorkerID)
	r2 := h.MustSpawn(apiv1.SpawnRequest{})
	ok := hivetest.Eventually(t, wait, func() bool {
		return strings.Contains(buf.String(), r.WorkerID+"  stopping → terminated (stopped)") &&
			strings.Contains(buf.String(), r2.WorkerID+"  spawning\n") && strings.Contains(buf.String(), r2.WorkerID+"  spawning → loading  pid ")
	})
	cmd.Process.Signal(os.Interrupt)
	process.WaitCmd(cmd)
	if !ok {
		t.Fatalf("events output: %q", buf.String())
	}
	// Regression: the first event of a worker read "→ spawning  pid 0".
	if !strings.Contains(buf.String(), "idle → stopping (stopped)") || strings.Contains(buf.String(), "pid 0") ||
		strings.Contains(buf.String(), "  → ") {
		t.Fatalf("events output: %q", buf.String())
	}
}
