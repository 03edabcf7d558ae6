package hive

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/gpu"
	"github.com/rbee/rbee-hive/internal/models"
	"github.com/rbee/rbee-hive/internal/ports"
	"github.com/rbee/rbee-hive/internal/supervisor"
	"github.com/rbee/rbee-hive/internal/validate"
)

// wrapErr gives each lower package's error its kind, keeps its text and
// keeps it reachable; every kind but Internal is reached.
func TestWrapErrGivesEachLowerErrorItsKind(t *testing.T) {
	root := t.TempDir()
	res, err := models.NewResolver([]string{root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, notFound := res.CheckPath(filepath.Join(root, "absent.gguf"))
	_, _, notAllowed := res.CheckPath("/etc/passwd")
	_, _, badRef := models.ParseRef("no-provider")
	cases := []struct {
		name string
		err  error
		kind Kind
		code string
	}{
		{"validate", validate.Backend("bad backend!"), InvalidInput, "INVALID_BACKEND"},
		{"model ref", badRef, InvalidInput, "INVALID_MODEL_REF"},
		{"model path not allowed", notAllowed, InvalidInput, "MODEL_PATH_NOT_ALLOWED"},
		{"model not found", notFound, ModelNotFound, ""},
		{"memory", models.PreflightNeed(2<<30, 1<<30, 0, ""), InsufficientMemory, ""},
		{"vram", &gpu.InsufficientVRAMError{Need: 8 << 30, Free: 1 << 30}, InsufficientVRAM, ""},
		{"cgroup", &cgroup.UnsupportedError{Problems: []string{"no cgroups"}}, LimitsUnsupported, ""},
		{"ports", fmt.Errorf("acquire: %w", ports.ErrExhausted), NoPorts, ""},
		{"worker", fmt.Errorf("%w: w1", ErrWorkerNotFound), WorkerNotFound, ""},
		{"state", fmt.Errorf("%w: worker is stopping", supervisor.ErrInvalidState), InvalidState, ""},
		{"spawn", &supervisor.SpawnError{Err: errors.New("exec: no such file")}, SpawnFailed, ""},
		{"shutdown", ErrShuttingDown, ShuttingDown, ""},
		{"max_workers", fmt.Errorf("%w: 3 live workers", ErrTooManyWorkers), TooManyWorkers, ""},
		{"other", errors.New("disk on fire"), Internal, ""},
	}
	seen := map[Kind]bool{}
	for _, c := range cases {
		if c.err == nil {
			t.Fatalf("%s: the lower package returned no error", c.name)
		}
		got := wrapErr(c.err)
		var he *Error
		if !errors.As(got, &he) || he.Kind != c.kind || he.Code != c.code {
			t.Errorf("%s: wrapErr(%v) = %#v, want kind %v code %q", c.name, c.err, got, c.kind, c.code)
			continue
		}
		if got.Error() != c.err.Error() || !errors.Is(got, c.err) || KindOf(got) != c.kind {
			t.Errorf("%s: text %q (want %q), or the cause is lost", c.name, got, c.err)
		}
		if again := wrapErr(got); again != got {
			t.Errorf("%s: wrapping an *Error again made %#v", c.name, again)
		}
		seen[c.kind] = true
	}
	for _, k := range Kinds() {
		if !seen[k] {
			t.Errorf("no lower error reaches kind %v", k)
		}
	}
	if wrapErr(nil) != nil {
		t.Error("wrapErr(nil) is not nil")
	}
}
