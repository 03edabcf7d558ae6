// Package buildbin builds the project's binaries for tests: each package is
// built at most once per test process, into a directory of that process under
// os.TempDir().
package buildbin

import (
	"github.com/rbee/rbee-hive/internal/process"

	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Module is the import path that Build's pkg is relative to.
const Module = "github.com/rbee/rbee-hive"

// DirEnv names a directory of prebuilt binaries: when it is set, Build builds
// nothing and returns <dir>/<last element of pkg>, failing when that file is
// missing. It is for test binaries run where there is no Go toolchain (the
// cgroup v2 virtual machine of scripts/cgroupv2-vm.sh).
const DirEnv = "RBEE_TEST_BIN_DIR"

type result struct {
	once sync.Once
	path string
	err  error
}

var (
	mu      sync.Mutex
	builds  = map[string]*result{}
	cleaned sync.Once
)

// Build runs `go build` for Module/pkg (e.g. "cmd/llm-worker-rbee") once per
// test process and returns the absolute path of the binary. Later calls, from
// any goroutine, wait for that one build and return the same path. A failed
// build fails t (every time it is asked for). Directories left by test
// processes that have since exited are removed on the first call.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	mu.Lock()
	r, ok := builds[pkg]
	if !ok {
		r = &result{}
		builds[pkg] = r
	}
	mu.Unlock()
	r.once.Do(func() { r.path, r.err = build(pkg) })
	if r.err != nil {
		t.Fatalf("buildbin: %v", r.err)
	}
	return r.path
}

func dirPrefix() string { return filepath.Join(os.TempDir(), "rbee-buildbin-") }

func build(pkg string) (string, error) {
	if dir := os.Getenv(DirEnv); dir != "" {
		out := filepath.Join(dir, path.Base(pkg))
		if _, err := os.Stat(out); err != nil {
			return "", fmt.Errorf("%s=%s: prebuilt %s: %w", DirEnv, dir, pkg, err)
		}
		return out, nil
	}
	cleaned.Do(removeStale)
	dir := dirPrefix() + strconv.Itoa(os.Getpid())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, path.Base(pkg))
	cmd := exec.Command(goTool(), "build", "-o", out, Module+"/"+strings.TrimPrefix(pkg, "/"))
	// Started through process.RunCmd so that a test binary running a
	// process.Reaper does not reap the go command under os/exec's feet.
	if b, err := process.RunCmd(cmd); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// goTool finds the go command: on PATH, else beside this toolchain's GOROOT.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// removeStale removes the directories of test processes that no longer run.
func removeStale() {
	dirs, _ := filepath.Glob(dirPrefix() + "*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(d, dirPrefix()))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}
