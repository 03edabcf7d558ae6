package store

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/policy"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

func rec(id string, st state.State) *record.Record {
	now := time.Now().UTC().Round(time.Microsecond)
	return &record.Record{
		Info:      apiv1.WorkerInfo{ID: id, State: st, PID: 1234, Port: 8081, StartedAt: &now, Labels: map[string]string{"a": "b"}},
		StartTime: 99, BootID: "boot", PGID: 1234, Cgroup: true, TokenHash: "abc", LogPath: "/x/" + id + ".log",
		History: policy.History{Restarts: 2, Failures: []policy.Failure{{At: now, Reason: state.Crashed}}},
		Spec: record.Spec{ID: id, Settings: config.Default().Defaults, Profile: config.Profile{
			Command: []string{"/bin/w"}, StopTimeout: config.Duration(3 * time.Second)}},
	}
}

func TestPutLoadRoundTripAndModes(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(s.Dir()); fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %o", fi.Mode().Perm())
	}
	a, b := rec("worker-a", state.Idle), rec("worker-b", state.Backoff)
	if err := s.Put(a, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(b, false); err != nil {
		t.Fatal(err)
	}
	a.Info.State = state.Busy
	if err := s.Put(a, true); err != nil { // overwrite
		t.Fatal(err)
	}
	if fi, _ := os.Stat(s.Path("worker-a")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %o", fi.Mode().Perm())
	}
	got, bad, err := s.Load()
	if err != nil || len(bad) != 0 || len(got) != 2 {
		t.Fatalf("load %v %v %v", got, bad, err)
	}
	if got[0].Info.ID != "worker-a" || got[0].Info.State != state.Busy || got[0].History.Restarts != 2 ||
		got[0].Spec.Profile.StopTimeout.D() != 3*time.Second || !got[0].Info.StartedAt.Equal(*a.Info.StartedAt) ||
		got[0].Spec.Settings.IdleTimeout != a.Spec.Settings.IdleTimeout || got[1].Info.State != state.Backoff {
		t.Fatalf("round trip: %+v", got[0])
	}
	if err := s.Delete("worker-a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("worker-a"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	got, _, _ = s.Load()
	if len(got) != 1 {
		t.Fatalf("after delete: %d records", len(got))
	}
	ents, _ := os.ReadDir(s.Dir())
	if len(ents) != 1 {
		t.Fatalf("stray files: %v", ents)
	}
}

func TestInvalidIDIsRefused(t *testing.T) {
	s, _ := Open(t.TempDir(), nil)
	for _, id := range []string{"", "../x", "a/b", strings.Repeat("a", 300)} {
		if err := s.Put(rec(id, state.Idle), false); err == nil {
			t.Fatalf("put %q accepted", id)
		}
	}
}

// A corrupt file is moved aside (kept), the others still load, and a
// leftover temp file of a crashed Put is removed.
func TestCorruptFileMovedAsideNotDeleted(t *testing.T) {
	s, _ := Open(t.TempDir(), nil)
	if err := s.Put(rec("worker-good", state.Idle), true); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"worker-trunc.json":  `{"info":{"id":"worker-trunc","sta`,
		"worker-other.json":  `{"info":{"id":"worker-else","state":"idle"}}`,
		"worker-state.json":  `{"info":{"id":"worker-state","state":"dancing"}}`,
		"worker-binary.json": "\x00\x01\x02",
	}
	for name, body := range cases {
		os.WriteFile(filepath.Join(s.Dir(), name), []byte(body), 0o600)
	}
	tmp := filepath.Join(s.Dir(), ".worker-good.json.tmp-abc")
	os.WriteFile(tmp, []byte("{"), 0o600)
	got, bad, err := s.Load()
	if err != nil || len(got) != 1 || got[0].Info.ID != "worker-good" || len(bad) != len(cases) {
		t.Fatalf("load: %v %v %v", got, bad, err)
	}
	for _, c := range bad {
		if !strings.Contains(c.MovedTo, ".corrupt-") {
			t.Fatalf("not moved: %+v", c)
		}
		if _, err := os.Stat(c.MovedTo); err != nil {
			t.Fatalf("moved file gone: %v", err)
		}
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Fatal("temp file not removed")
	}
	// A second load finds only the good one and leaves the corrupt files.
	got, bad, _ = s.Load()
	if len(got) != 1 || len(bad) != 0 {
		t.Fatalf("second load: %v %v", got, bad)
	}
}

func TestConcurrentPutsOfDifferentWorkers(t *testing.T) {
	s, _ := Open(t.TempDir(), nil)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rec("worker-"+string(rune('a'+i%26))+string(rune('a'+i/26)), state.Idle)
			for range 10 {
				if err := s.Put(r, i%2 == 0); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got, bad, err := s.Load()
	if err != nil || len(bad) != 0 || len(got) != 50 {
		t.Fatalf("load %d %v %v", len(got), bad, err)
	}
}

// Sync makes a record written without fsync durable later: it succeeds on a
// record (and leaves it as it was), is no error for a record that is gone
// (the worker was pruned meanwhile), and refuses an id that names no file.
func TestSyncOfRecordPutWithoutSync(t *testing.T) {
	s, _ := Open(t.TempDir(), nil)
	a := rec("worker-a", state.Idle)
	if err := s.Put(a, false); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(s.Path("worker-a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync("worker-a"); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(s.Path("worker-a"))
	if string(after) != string(before) {
		t.Fatalf("Sync changed the record:\n%s\n%s", before, after)
	}
	if err := s.Sync("worker-gone"); err != nil {
		t.Fatalf("Sync of a missing record: %v", err)
	}
	if err := s.Sync("../x"); err == nil {
		t.Fatal("Sync accepted an invalid id")
	}
}

// goldenRecord is a record with every field set, at fixed times.
func goldenRecord() *record.Record {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	code := 3
	return &record.Record{
		Info: apiv1.WorkerInfo{ID: "worker-golden", State: state.Stopping, Reason: state.Crashed, PID: 4321, Port: 8090,
			StartedAt: &at, EndedAt: &at, Labels: map[string]string{"team": "x"}, Exit: &apiv1.Exit{Code: &code}},
		StartTime: 77, BootID: "boot-id", PGID: 4321, Cgroup: true, TokenHash: "hash", LogPath: "/logs/worker-golden.log",
		History: policy.History{Restarts: 1, Failures: []policy.Failure{{At: at, Reason: state.Crashed}}},
		Spec: record.Spec{ID: "worker-golden", ModelRef: "m", ModelPath: "/models/m.gguf", ModelSize: 1 << 20,
			Backend: "cpu", Device: 1, ProfileName: "generic", Settings: config.Default().Defaults,
			Profile: config.Profile{Command: []string{"/bin/w", "{port}"}, StopTimeout: config.Duration(3 * time.Second)},
			Argv:    []string{"/bin/w", "{port}"}, Env: []string{"A=1"}, Labels: map[string]string{"team": "x"},
			HiveURL: "http://127.0.0.1:7777", Marker: "marker", GPUUUID: "GPU-1",
			Estimate: &apiv1.Estimate{RAMBytes: 10, VRAMBytes: 20, Ctx: 512, Source: "gguf"}},
		StopAsked: at, Forced: true, BackoffUntil: at,
	}
}

// The state files' format is pinned byte for byte: a record written today is
// the file testdata/record.golden.json, written by the hive before Record
// moved out of the supervisor (state files of a running hive must stay
// readable by the next one), and that file loads back to the same record.
func TestRecordFileFormatIsUnchanged(t *testing.T) {
	s, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(goldenRecord(), false); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(s.Path("worker-golden"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("testdata", "record.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != strings.TrimSuffix(string(want), "\n") {
		t.Fatalf("record file changed:\n got %s\nwant %s", got, want)
	}
	recs, bad, err := s.Load()
	if err != nil || len(bad) != 0 || len(recs) != 1 || recs[0].Spec.GPUUUID != "GPU-1" || !recs[0].Forced ||
		recs[0].Spec.Estimate == nil || recs[0].Spec.Estimate.VRAMBytes != 20 {
		t.Fatalf("load: %+v %v %v", recs, bad, err)
	}
}

// A record Put again keeps its old version in a temporary file for the
// next Put (atomicfile.Replace): Load neither reads nor keeps it, and
// Delete removes it with the record.
func TestKeptTemporaryIsNotARecordAndGoesWithDelete(t *testing.T) {
	s, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := rec("worker-a", state.Spawning)
	for _, st := range []state.State{state.Spawning, state.Loading, state.Idle} {
		a.Info.State = st
		if err := s.Put(a, false); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(s.Dir()); len(ents) != 2 {
		t.Fatalf("after three Puts: %v, want the record and its kept temporary", ents)
	}
	if err := s.Delete("worker-a"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(s.Dir()); len(ents) != 0 {
		t.Fatalf("after Delete: %v", ents)
	}
	b := rec("worker-b", state.Loading)
	for range 2 {
		if err := s.Put(b, false); err != nil {
			t.Fatal(err)
		}
	}
	got, bad, err := s.Load()
	if err != nil || len(bad) != 0 || len(got) != 1 || got[0].Info.ID != "worker-b" {
		t.Fatalf("Load = %v, %v, %v", got, bad, err)
	}
	if ents, _ := os.ReadDir(s.Dir()); len(ents) != 1 {
		t.Fatalf("after Load: %v, want the record only", ents)
	}
}
