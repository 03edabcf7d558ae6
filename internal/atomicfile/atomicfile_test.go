package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteReplacesWithModeAndLeavesNoTemp(t *testing.T) {
	for _, sync := range []bool{true, false} {
		dir := t.TempDir()
		path := filepath.Join(dir, "f.json")
		if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := Write(path, []byte("new"), 0o640, sync); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != "new" {
			t.Fatalf("sync=%v: content %q, %v", sync, b, err)
		}
		fi, _ := os.Stat(path)
		if fi.Mode().Perm() != 0o640 {
			t.Fatalf("sync=%v: mode %v, want 0640", sync, fi.Mode().Perm())
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 {
			t.Fatalf("sync=%v: directory holds %v, want only f.json", sync, ents)
		}
	}
}

// A failed write leaves the old file and no temporary file.
func TestWriteFailureKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The target is a non-empty directory now: the rename fails.
	target := filepath.Join(dir, "d")
	if err := os.MkdirAll(filepath.Join(target, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(target, []byte("new"), 0o600, true); err == nil {
		t.Fatal("Write over a non-empty directory succeeded")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if IsTemp(e.Name()) {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
	if !IsTemp(".f.json"+TempMarker+"123") || IsTemp("f.json") {
		t.Fatal("IsTemp")
	}
}

// Replace leaves the new content at the path and the old one in the kept
// temporary file, creates no file after the first replacement (the path
// and the kept file swap their two inodes), and RemoveWithKept removes
// both.
func TestReplaceKeepsTheOldFileForTheNextReplacement(t *testing.T) {
	for _, sync := range []bool{false, true} {
		dir := t.TempDir()
		path := filepath.Join(dir, "w.json")
		if err := Replace(path, []byte("one"), 0o600, sync); err != nil { // no target yet: a rename
			t.Fatal(err)
		}
		inodes := map[uint64]bool{}
		for i, content := range []string{"two", "three", "four"} {
			if err := Replace(path, []byte(content), 0o640, sync); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil || string(b) != content {
				t.Fatalf("sync=%v: content %q, %v, want %q", sync, b, err, content)
			}
			old, err := os.ReadFile(Kept(path))
			want := []string{"one", "two", "three"}[i]
			if err != nil || string(old) != want {
				t.Fatalf("sync=%v: kept %q, %v, want the old content %q", sync, old, err, want)
			}
			fi, _ := os.Stat(path)
			if fi.Mode().Perm() != 0o640 {
				t.Fatalf("sync=%v: mode %v, want 0640", sync, fi.Mode().Perm())
			}
			for _, p := range []string{path, Kept(path)} {
				fi, _ := os.Stat(p)
				inodes[fi.Sys().(*syscall.Stat_t).Ino] = true
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 2 || !IsTemp(filepath.Base(Kept(path))) {
				t.Fatalf("sync=%v: directory holds %v, want the file and its kept temporary", sync, ents)
			}
		}
		if len(inodes) != 2 {
			t.Fatalf("sync=%v: %d inodes over three replacements, want the same 2", sync, len(inodes))
		}
		if err := RemoveWithKept(path); err != nil {
			t.Fatal(err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("sync=%v: left after RemoveWithKept: %v", sync, ents)
		}
		if err := RemoveWithKept(path); err != nil {
			t.Fatalf("RemoveWithKept of nothing: %v", err)
		}
	}
}

// Prepare makes the two files the first Replaces of a new path would
// create: those Replaces then create none (the path and the kept file are
// the prepared inodes).
func TestPreparedPathIsReplacedWithoutCreatingFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.json")
	if err := Prepare(path); err != nil {
		t.Fatal(err)
	}
	prepared := map[uint64]bool{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !IsTemp(e.Name()) {
			t.Fatalf("Prepare made %s, not a temporary file", e.Name())
		}
		fi, _ := e.Info()
		prepared[fi.Sys().(*syscall.Stat_t).Ino] = true
	}
	if len(prepared) != 2 {
		t.Fatalf("Prepare made %v, want two files", ents)
	}
	for _, content := range []string{"spawning", "loading", "idle"} {
		if err := Replace(path, []byte(content), 0o600, false); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Fatalf("content %q, want %q", b, content)
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			fi, _ := e.Info()
			if !prepared[fi.Sys().(*syscall.Stat_t).Ino] {
				t.Fatalf("after Replace(%q): %s is a new file", content, e.Name())
			}
		}
	}
	if err := RemoveWithKept(path); err != nil {
		t.Fatal(err)
	}
	if err := Prepare(path); err != nil {
		t.Fatal(err)
	}
	if err := RemoveWithKept(path); err != nil { // never used
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left after RemoveWithKept: %v", ents)
	}
}
