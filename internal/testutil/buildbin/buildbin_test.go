package buildbin

import (
	"os"
	"strings"
	"sync"
	"testing"
)

func TestBuildOncePerProcess(t *testing.T) {
	var wg sync.WaitGroup
	paths := make([]string, 4)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i] = Build(t, "cmd/llm-worker-rbee")
		}()
	}
	wg.Wait()
	for _, p := range paths[1:] {
		if p != paths[0] {
			t.Fatalf("paths differ: %q vs %q", p, paths[0])
		}
	}
	fi, err := os.Stat(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&0o111 == 0 {
		t.Fatalf("%s is not executable", paths[0])
	}
}

// With RBEE_TEST_BIN_DIR set (the cgroup v2 VM, which has no Go toolchain),
// nothing is built: the binary is taken from that directory, and a missing
// one is an error naming the variable.
func TestPrebuiltDirIsUsedInsteadOfBuilding(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/prebuilt-tool", []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(DirEnv, dir)
	p, err := build("cmd/prebuilt-tool")
	if err != nil || p != dir+"/prebuilt-tool" {
		t.Fatalf("build = %q, %v; want %s/prebuilt-tool", p, err, dir)
	}
	if _, err := build("cmd/absent-tool"); err == nil || !strings.Contains(err.Error(), DirEnv) {
		t.Fatalf("missing prebuilt binary: err = %v", err)
	}
}
