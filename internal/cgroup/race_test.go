package cgroup

import (
	"os"
	"path/filepath"
	"testing"
)

// scopeStealingFS is fakeFS that, on the first Mkdir of a worker directory,
// first removes the (then empty) shared parents, as another hive's
// RemoveScope at its shutdown does.
type scopeStealingFS struct {
	fakeFS
	worker string
	stolen bool
}

func (f *scopeStealingFS) Mkdir(dir string) error {
	if !f.stolen && filepath.Base(dir) == f.worker {
		f.stolen = true
		scope := filepath.Dir(dir)
		_ = os.RemoveAll(scope)
		_ = os.RemoveAll(filepath.Dir(scope))
	}
	return f.fakeFS.Mkdir(dir)
}

// Regression: a hive's RemoveScope at shutdown removes the shared
// "rbee-hive" parent when it is empty; another hive creating its first
// worker cgroup at that moment got ENOENT and failed the spawn.
func TestCreateSurvivesSharedParentRemovedUnderIt(t *testing.T) {
	opts := fakeHybrid(t)
	opts.fs = &scopeStealingFS{fakeFS: fakeFS{root: opts.Root}, worker: "w1"}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Create("w1", allLimits)
	if err != nil {
		t.Fatalf("Create after the scope was removed under it: %v", err)
	}
	if !opts.fs.(*scopeStealingFS).stolen {
		t.Fatal("the test did not remove the scope")
	}
	for _, d := range g.Paths() {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
}

// RemoveScope stops quietly at a shared parent it may not remove (an
// unprivileged hive on a host where root made /sys/fs/cgroup/*/rbee-hive),
// after removing its own scope.
func TestRemoveScopeLeavesUnremovableSharedParentQuietly(t *testing.T) {
	opts := fakeHybrid(t)
	opts.fs = permFS{fakeFS: fakeFS{root: opts.Root}, deny: "rbee-hive"}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Create("w1", allLimits)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveScope(); err != nil {
		t.Fatalf("RemoveScope: %v", err)
	}
	for _, d := range m.scopeDirs() {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("scope %s left: %v", d, err)
		}
		if _, err := os.Stat(filepath.Dir(d)); err != nil {
			t.Errorf("shared parent %s: %v", filepath.Dir(d), err)
		}
	}
}

// permFS refuses to remove directories named deny, as the kernel does for
// a directory whose parent the process may not write.
type permFS struct {
	fakeFS
	deny string
}

func (f permFS) Rmdir(dir string) error {
	if filepath.Base(dir) == f.deny {
		return &os.PathError{Op: "rmdir", Path: dir, Err: os.ErrPermission}
	}
	return f.fakeFS.Rmdir(dir)
}
