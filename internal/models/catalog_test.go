package models

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestCatalogRoundTripAcrossReopen(t *testing.T) {
	base := tree(t)
	models := filepath.Join(base, "models")
	path := filepath.Join(base, "state", "sub", CatalogFile) // parent dirs missing
	c, err := OpenCatalog(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.List(); len(got) != 0 {
		t.Fatalf("new catalog lists %v", got)
	}
	before := time.Now().UTC()
	eb, err := c.Add("hf:org/b", models+"/sub/b.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Add("hf:org/a", models+"/a.gguf"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Add("ollama:zz", models+"/./a.gguf"); err != nil {
		t.Fatal(err)
	}
	if eb.Ref != "hf:org/b" || eb.Path != models+"/sub/b.gguf" || eb.SizeBytes != 2 ||
		eb.AddedAt.Before(before.Add(-time.Second)) || eb.AddedAt.Location() != time.UTC {
		t.Errorf("entry %+v", eb)
	}
	if err := c.Remove("ollama:zz"); err != nil {
		t.Fatal(err)
	}
	// Re-adding replaces.
	if _, err := c.Add("hf:org/a", models+"/inlink"); err != nil {
		t.Fatal(err)
	}

	c2, err := OpenCatalog(path)
	if err != nil {
		t.Fatal(err)
	}
	got, want := c2.List(), c.List()
	if len(got) != 2 || got[0].Ref != "hf:org/a" || got[1].Ref != "hf:org/b" {
		t.Fatalf("reopened List() = %+v", got)
	}
	for i := range got {
		if got[i].Ref != want[i].Ref || got[i].Path != want[i].Path || got[i].SizeBytes != want[i].SizeBytes ||
			!got[i].AddedAt.Equal(want[i].AddedAt) {
			t.Errorf("entry %d: reopened %+v, was %+v", i, got[i], want[i])
		}
	}
	if e, ok := c2.Get("hf:org/a"); !ok || e.Path != models+"/inlink" || e.SizeBytes != 2 {
		t.Errorf("Get(hf:org/a) = %+v, %v", e, ok)
	}
	if _, ok := c2.Get("ollama:zz"); ok {
		t.Error("removed entry came back")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"ref"`, `"path"`, `"size_bytes"`, `"added_at"`, `"version": 1`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("file lacks %s:\n%s", key, data)
		}
	}
}

func TestCatalogFileModeAndNoTempFilesLeft(t *testing.T) {
	base := tree(t)
	dir := filepath.Join(base, "state")
	path := filepath.Join(dir, CatalogFile)
	c, err := OpenCatalog(path)
	if err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0) // a permissive umask must not widen the mode
	t.Cleanup(func() { syscall.Umask(old) })
	for i := range 20 {
		if _, err := c.Add(fmt.Sprintf("hf:m%d", i), base+"/models/a.gguf"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Remove("hf:m3"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != CatalogFile {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("state dir holds %v, want only %s", names, CatalogFile)
	}
}

// A failed write leaves neither a temp file nor a changed catalog.
func TestCatalogWriteFailureRollsBack(t *testing.T) {
	base := tree(t)
	dir := filepath.Join(base, "state")
	path := filepath.Join(dir, CatalogFile)
	c, err := OpenCatalog(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Add("hf:keep", base+"/models/a.gguf"); err != nil {
		t.Fatal(err)
	}
	// Replace the catalog file with a non-empty directory: rename over it fails.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Add("hf:new", base+"/models/a.gguf"); err == nil {
		t.Fatal("Add succeeded with the catalog path a directory")
	}
	if err := c.Remove("hf:keep"); err == nil {
		t.Fatal("Remove succeeded with the catalog path a directory")
	}
	if _, ok := c.Get("hf:new"); ok {
		t.Error("failed Add left its entry")
	}
	if _, ok := c.Get("hf:keep"); !ok {
		t.Error("failed Remove dropped the entry")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temp files left: %v", ents)
	}
}

func TestCatalogAddRefuses(t *testing.T) {
	base := tree(t)
	c, err := OpenCatalog(filepath.Join(base, "state", CatalogFile))
	if err != nil {
		t.Fatal(err)
	}
	a := base + "/models/a.gguf"
	cases := []struct {
		ref, path string
		want      error
	}{
		{"file:" + a, a, ErrInvalidRef},
		{"hf:..", a, ErrInvalidRef},
		{"no-provider", a, ErrInvalidRef},
		{"hf:x", "models/a.gguf", ErrNotAllowed},
		{"hf:x", base + "/models/none.gguf", ErrNotFound},
		{"hf:x", base + "/models/dir", ErrNotFound},
		{"hf:x", base + "/models/dangling", ErrNotFound},
	}
	for _, tc := range cases {
		if _, err := c.Add(tc.ref, tc.path); !errors.Is(err, tc.want) {
			t.Errorf("Add(%q, %q) = %v, want %v", tc.ref, tc.path, err, tc.want)
		}
	}
	if n := len(c.List()); n != 0 {
		t.Errorf("refused adds left %d entries", n)
	}
	if _, err := os.Stat(filepath.Join(base, "state", CatalogFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused adds wrote the file: %v", err)
	}
	err = c.Remove("hf:absent")
	var me *Error
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &me) || me.Field != "model_ref" {
		t.Errorf("Remove(absent) = %v", err)
	}
}

func TestOpenCatalogCorruptNamesFile(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"garbage":     "{not json",
		"empty":       "",
		"whitespace":  " \n",
		"array":       `[{"ref":"hf:a","path":"/a","size_bytes":1}]`,
		"trailing":    `{"version":1,"models":[]} {}`,
		"version":     `{"version":2,"models":[]}`,
		"bad ref":     `{"version":1,"models":[{"ref":"hf:..","path":"/a","size_bytes":1}]}`,
		"file ref":    `{"version":1,"models":[{"ref":"file:/a","path":"/a","size_bytes":1}]}`,
		"relative":    `{"version":1,"models":[{"ref":"hf:a","path":"a","size_bytes":1}]}`,
		"duplicate":   `{"version":1,"models":[{"ref":"hf:a","path":"/a"},{"ref":"hf:a","path":"/b"}]}`,
		"negative":    `{"version":1,"models":[{"ref":"hf:a","path":"/a","size_bytes":-1}]}`,
		"wrong types": `{"version":1,"models":[{"ref":1}]}`,
	}
	for name, content := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := OpenCatalog(path)
		if err == nil {
			t.Errorf("%s: opened: %+v", name, c.List())
			continue
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name %s", name, err, path)
		}
		if data, _ := os.ReadFile(path); string(data) != content {
			t.Errorf("%s: corrupt file was changed", name)
		}
	}
	// An unreadable path (a directory) is an error too.
	if _, err := OpenCatalog(dir); err == nil {
		t.Error("OpenCatalog(directory) succeeded")
	}
}

func TestCatalogConcurrentUse(t *testing.T) {
	base := tree(t)
	path := filepath.Join(base, "state", CatalogFile)
	c, err := OpenCatalog(path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 10 {
				ref := fmt.Sprintf("hf:g%d/m%d", g, i)
				if _, err := c.Add(ref, base+"/models/a.gguf"); err != nil {
					t.Error(err)
					return
				}
				c.List()
				if _, ok := c.Get(ref); !ok {
					t.Errorf("Get(%s) after Add", ref)
				}
				if i%2 == 0 {
					if err := c.Remove(ref); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	c2, err := OpenCatalog(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c2.List()); n != 20 {
		t.Errorf("reopened catalog has %d entries, want 20", n)
	}
}
