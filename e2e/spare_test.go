package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// spareCgroups returns the directories under the hive's cgroup2 scope (or
// its memory one, without cgroup2) that no worker the hive lists is named
// after: its spare.
func spareCgroups(t *testing.T, h *hivetest.Hive) []string {
	t.Helper()
	ws, err := h.Client.List(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, w := range ws {
		known[w.ID] = true
	}
	ents, _ := os.ReadDir(filepath.Dir(hivetest.WorkerCgroup(h.Marker, "x", "")))
	var out []string
	for _, e := range ents {
		if e.IsDir() && !known[e.Name()] {
			out = append(out, e.Name())
		}
	}
	return out
}

// waitSpare waits for the hive's one spare cgroup other than not and
// returns its name.
func waitSpare(t *testing.T, h *hivetest.Hive, not string) string {
	t.Helper()
	var got []string
	if !hivetest.Eventually(t, 5*time.Second, func() bool {
		got = spareCgroups(t, h)
		return len(got) == 1 && got[0] != not
	}) {
		t.Fatalf("spare cgroups %v, want one (other than %q)", got, not)
	}
	return got[0]
}

// The hive makes the next worker's cgroup ahead of need (its spare): the
// next spawn gets that id, its process runs in every hierarchy's
// directory of it under the limits it asked for, and a new spare follows.
// A SIGKILLed hive's spare is removed by the next hive's orphan cleanup,
// and a clean exit removes the spare (Close checks that no cgroup
// directory is left).
func TestSpareCgroupIsTheNextWorkersWithItsLimitsAndGoesAtExit(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	spare := waitSpare(t, h, "")

	r := h.MustSpawn(apiv1.SpawnRequest{Settings: jsonSettings(t, jobj{
		"limits": jobj{"memory_max_bytes": 256 << 20, "pids_max": 64},
	})})
	if r.WorkerID != spare {
		t.Fatalf("spawned %s, want the spare's id %s", r.WorkerID, spare)
	}
	info := h.WaitState(r.WorkerID, wait, "idle")
	cg, err := os.ReadFile("/proc/" + strconv.Itoa(info.PID) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"", "memory", "pids"} {
		dir := hivetest.WorkerCgroup(h.Marker, r.WorkerID, c)
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("worker cgroup %s: %v", dir, err)
		}
		rel := "/rbee-hive/" + h.Marker + "/" + r.WorkerID
		if !strings.Contains(string(cg), rel+"\n") {
			t.Fatalf("worker %d not in its cgroup %s:\n%s", info.PID, rel, cg)
		}
	}
	memFile, pidsFile := "memory.limit_in_bytes", "pids.max"
	if hivetest.CgroupV2() {
		memFile = "memory.max"
	}
	for file, want := range map[string]string{
		filepath.Join(hivetest.WorkerCgroup(h.Marker, r.WorkerID, "memory"), memFile): strconv.Itoa(256 << 20),
		filepath.Join(hivetest.WorkerCgroup(h.Marker, r.WorkerID, "pids"), pidsFile):  "64",
	} {
		if b, err := os.ReadFile(file); err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q, %v, want %s", file, b, err, want)
		}
	}
	next := waitSpare(t, h, spare)

	// A SIGKILLed hive leaves its spare; the next one removes it.
	h.Kill9()
	h.Restart(hivetest.Options{})
	h.WaitState(r.WorkerID, wait, "idle")
	if !hivetest.Eventually(t, 5*time.Second, func() bool {
		_, err := os.Stat(hivetest.WorkerCgroup(h.Marker, next, ""))
		return os.IsNotExist(err)
	}) {
		t.Fatalf("the dead hive's spare %s is still there", next)
	}
	waitSpare(t, h, next)
	h.Close()
}
