package models

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func cleanAbs(p string) string { return filepath.Clean(p) }

// tree builds, under a fresh temp dir:
//
//	models/a.gguf (5 bytes)
//	models/sub/b.gguf
//	models/dir/          (a directory)
//	models/escape -> ../outside/secret.gguf
//	models/inlink -> sub/b.gguf
//	models/dangling -> nowhere.gguf
//	models/loop -> loop
//	models2/c.gguf       (the prefix-bug neighbour)
//	outside/secret.gguf
//	link-root -> models
func tree(t *testing.T) string {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mk := func(p, content string) {
		p = filepath.Join(base, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ln := func(target, p string) {
		if err := os.Symlink(target, filepath.Join(base, p)); err != nil {
			t.Fatal(err)
		}
	}
	mk("models/a.gguf", "hello")
	mk("models/sub/b.gguf", "bb")
	mk("models/dir/x", "")
	mk("models2/c.gguf", "ccc")
	mk("outside/secret.gguf", "secret")
	ln("../outside/secret.gguf", "models/escape")
	ln("sub/b.gguf", "models/inlink")
	ln("nowhere.gguf", "models/dangling")
	ln("loop", "models/loop")
	ln("models", "link-root")
	return base
}

func TestResolveFileRefs(t *testing.T) {
	base := tree(t)
	models := filepath.Join(base, "models")
	r, err := NewResolver([]string{models}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, ref, modelPath string
		want                 error
		path                 string
		size                 int64
	}{
		{"file in root", "file:" + models + "/a.gguf", "", nil, models + "/a.gguf", 5},
		{"file in subdir", "file:" + models + "/sub/b.gguf", "", nil, models + "/sub/b.gguf", 2},
		{"dot segment cleaned", "file:" + models + "/./a.gguf", "", nil, models + "/a.gguf", 5},
		{"symlink inside root", "file:" + models + "/inlink", "", nil, models + "/sub/b.gguf", 2},
		{"symlink escaping root", "file:" + models + "/escape", "", ErrNotAllowed, "", 0},
		{"outside file", "file:" + base + "/outside/secret.gguf", "", ErrNotAllowed, "", 0},
		{"prefix neighbour", "file:" + base + "/models2/c.gguf", "", ErrNotAllowed, "", 0},
		{"prefix neighbour missing", "file:" + base + "/models2/none.gguf", "", ErrNotAllowed, "", 0},
		{"missing outside is not an oracle", "file:/etc/none-such-file", "", ErrNotAllowed, "", 0},
		{"existing outside", "file:/etc/passwd", "", ErrNotAllowed, "", 0},
		{"root itself", "file:" + models, "", ErrNotAllowed, "", 0},
		{"directory", "file:" + models + "/dir", "", ErrNotFound, "", 0},
		{"missing", "file:" + models + "/none.gguf", "", ErrNotFound, "", 0},
		{"missing dir", "file:" + models + "/no/such.gguf", "", ErrNotFound, "", 0},
		{"below a file", "file:" + models + "/a.gguf/x", "", ErrNotFound, "", 0},
		{"dangling symlink", "file:" + models + "/dangling", "", ErrNotFound, "", 0},
		{"symlink loop", "file:" + models + "/loop", "", ErrNotFound, "", 0},
		{"relative file ref", "file:models/a.gguf", "", ErrInvalidRef, "", 0},
		{"dotdot ref", "file:" + models + "/../outside/secret.gguf", "", ErrInvalidRef, "", 0},
		{"bad ref with model path", "bad ref", models + "/a.gguf", ErrInvalidRef, "", 0},
		{"model_path overrides", "hf:org/unknown", models + "/sub/b.gguf", nil, models + "/sub/b.gguf", 2},
		{"model_path overrides file ref", "file:" + models + "/a.gguf", models + "/sub/b.gguf", nil, models + "/sub/b.gguf", 2},
		{"model_path missing", "hf:x", models + "/none.gguf", ErrNotFound, "", 0},
		{"model_path outside", "hf:x", base + "/outside/secret.gguf", ErrNotAllowed, "", 0},
		{"model_path escaping symlink", "hf:x", models + "/escape", ErrNotAllowed, "", 0},
		{"model_path with dotdot", "hf:x", models + "/../outside/secret.gguf", ErrNotAllowed, "", 0},
		{"model_path dotdot back inside", "hf:x", models + "/sub/../a.gguf", nil, models + "/a.gguf", 5},
		{"model_path relative", "hf:x", "models/a.gguf", ErrNotAllowed, "", 0},
		{"model_path directory", "hf:x", models + "/dir", ErrNotFound, "", 0},
		{"model_path NUL", "hf:x", models + "/a.gguf\x00", ErrNotAllowed, "", 0},
		{"catalog ref without catalog", "hf:org/repo", "", ErrNotFound, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, size, err := r.Resolve(c.ref, c.modelPath)
			if c.want == nil {
				if err != nil || path != c.path || size != c.size {
					t.Fatalf("Resolve = %q, %d, %v; want %q, %d", path, size, err, c.path, c.size)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Resolve = %q, %d, %v; want %v", path, size, err, c.want)
			}
			var me *Error
			if !errors.As(err, &me) || me.Message == "" {
				t.Fatalf("error %#v is not an *Error with a message", err)
			}
			wantField := "model_ref"
			if c.modelPath != "" && c.want != ErrInvalidRef {
				wantField = "model_path"
			}
			if me.Field != wantField {
				t.Errorf("Field = %q, want %q", me.Field, wantField)
			}
			if path != "" || size != 0 {
				t.Errorf("error with a result: %q, %d", path, size)
			}
		})
	}
}

func TestResolveSymlinkedRoot(t *testing.T) {
	base := tree(t)
	link := filepath.Join(base, "link-root")
	real := filepath.Join(base, "models")
	r, err := NewResolver([]string{link}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Roots(); len(got) != 1 || got[0] != real {
		t.Errorf("Roots() = %v, want [%s]", got, real)
	}
	for _, ref := range []string{"file:" + link + "/a.gguf", "file:" + real + "/a.gguf"} {
		path, size, err := r.Resolve(ref, "")
		if err != nil || path != real+"/a.gguf" || size != 5 {
			t.Errorf("Resolve(%s) = %q, %d, %v", ref, path, size, err)
		}
	}
	// Through the link too, a missing file is not found (not "not allowed").
	if _, _, err := r.Resolve("file:"+link+"/none.gguf", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing file under linked root: %v", err)
	}
	if _, _, err := r.Resolve("file:"+link+"/escape", ""); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("escaping symlink under linked root: %v", err)
	}
}

// Regression: a string-prefix comparison would let /x/models2 pass as
// inside /x/models.
func TestResolvePrefixSiblingIsNotInsideRoot(t *testing.T) {
	base := tree(t)
	r, err := NewResolver([]string{filepath.Join(base, "models")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = r.Resolve("file:"+base+"/models2/c.gguf", "")
	if !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("got %v, want ErrNotAllowed", err)
	}
	// A symlink inside the root pointing at the sibling is refused too.
	if err := os.Symlink("../models2/c.gguf", filepath.Join(base, "models", "sib")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Resolve("file:"+base+"/models/sib", ""); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("symlink to sibling: got %v, want ErrNotAllowed", err)
	}
	// With both roots configured both resolve.
	r2, err := NewResolver([]string{filepath.Join(base, "models"), filepath.Join(base, "models2")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r2.Resolve("file:"+base+"/models/sib", ""); err != nil {
		t.Fatalf("two roots: %v", err)
	}
}

func TestWithin(t *testing.T) {
	cases := []struct {
		dir, path string
		want      bool
	}{
		{"/models", "/models/a", true},
		{"/models", "/models/a/b", true},
		{"/models", "/models", false},
		{"/models", "/models2", false},
		{"/models", "/models2/a", false},
		{"/models", "/model", false},
		{"/models", "/", false},
		{"/models", "/other/models/a", false},
		{"/models", "/models/..a", true}, // a file named "..a"
		{"/", "/a", true},
		{"/", "/", false},
	}
	for _, c := range cases {
		if got := within(c.dir, c.path); got != c.want {
			t.Errorf("within(%q, %q) = %v", c.dir, c.path, got)
		}
	}
}

func TestNewResolverRefusesBadRoots(t *testing.T) {
	base := tree(t)
	for _, root := range []string{"models", base + "/none", base + "/models/a.gguf"} {
		if _, err := NewResolver([]string{root}, nil); err == nil {
			t.Errorf("NewResolver(%q) succeeded", root)
		}
	}
	if _, err := NewResolver([]string{base + "/none"}, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing root: %v does not wrap fs.ErrNotExist", err)
	}
	var zero Resolver
	if _, _, err := zero.Resolve("file:"+base+"/models/a.gguf", ""); !errors.Is(err, ErrNotAllowed) ||
		!strings.Contains(err.Error(), "no model roots") {
		t.Errorf("zero Resolver: %v", err)
	}
}

func TestResolveCatalogRefs(t *testing.T) {
	base := tree(t)
	models := filepath.Join(base, "models")
	cat, err := OpenCatalog(filepath.Join(base, "state", CatalogFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver([]string{models}, cat)
	if err != nil {
		t.Fatal(err)
	}
	mustAdd := func(ref, path string) {
		t.Helper()
		if _, err := cat.Add(ref, path); err != nil {
			t.Fatal(err)
		}
	}
	mustAdd("hf:org/good", models+"/a.gguf")
	mustAdd("hf:org/linked", models+"/inlink")
	mustAdd("hf:org/outside", base+"/outside/secret.gguf") // Add does not check roots
	mustAdd("hf:org/gone", models+"/sub/b.gguf")
	if err := os.Remove(models + "/sub/b.gguf"); err != nil {
		t.Fatal(err)
	}

	if p, n, err := r.Resolve("hf:org/good", ""); err != nil || p != models+"/a.gguf" || n != 5 {
		t.Errorf("good: %q %d %v", p, n, err)
	}
	if _, _, err := r.Resolve("hf:org/linked", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("linked to a removed file: %v", err)
	}
	if _, _, err := r.Resolve("hf:org/outside", ""); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("outside: %v", err)
	}
	_, _, err = r.Resolve("hf:org/gone", "")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "hf:org/gone") {
		t.Errorf("gone: %v", err)
	}
	if _, _, err := r.Resolve("hf:org/unknown", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown: %v", err)
	}
	if _, _, err := r.CheckPath(base + "/outside/secret.gguf"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("CheckPath outside: %v", err)
	}
	if p, n, err := r.CheckPath(models + "/a.gguf"); err != nil || p != models+"/a.gguf" || n != 5 {
		t.Errorf("CheckPath: %q %d %v", p, n, err)
	}
}
