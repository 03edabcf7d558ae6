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
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/supervisor"
)

func rec(id string, st state.State) *supervisor.Record {
	now := time.Now().UTC().Round(time.Microsecond)
	return &supervisor.Record{
		Info:      apiv1.WorkerInfo{ID: id, State: st, PID: 1234, Port: 8081, StartedAt: &now, Labels: map[string]string{"a": "b"}},
		StartTime: 99, BootID: "boot", PGID: 1234, Cgroup: true, TokenHash: "abc", LogPath: "/x/" + id + ".log",
		History: policy.History{Restarts: 2, Failures: []policy.Failure{{At: now, Reason: state.Crashed}}},
		Spec: supervisor.Spec{ID: id, Settings: config.Default().Defaults, Profile: config.Profile{
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
