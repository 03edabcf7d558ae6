package models

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// notDir is the error of a path whose prefix is a file (/models/x.gguf/y).
var notDir error = syscall.ENOTDIR

// Resolver maps model references to model files that lie inside the allowed
// model roots. Build it with NewResolver. The zero value has no roots and no
// catalog: every file is refused and every catalog reference is unknown.
// A Resolver is immutable and safe for concurrent use; Resolve does a few
// filesystem calls and does not otherwise block.
type Resolver struct {
	roots   []root
	catalog *Catalog
}

type root struct {
	given string // as configured, cleaned
	real  string // symlinks resolved
}

// NewResolver returns a Resolver for roots and catalog. Each root must be an
// absolute path to an existing directory; its own symlinks are resolved here,
// once (so a root that is itself a symlink works). A missing root is an error
// wrapping fs.ErrNotExist: create it first. catalog may be nil, in which case
// only file: references and model paths resolve.
func NewResolver(roots []string, catalog *Catalog) (*Resolver, error) {
	r := &Resolver{catalog: catalog}
	for _, p := range roots {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("models: model root %q is not an absolute path", p)
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, fmt.Errorf("models: model root: %w", err)
		}
		fi, err := os.Stat(real)
		if err != nil {
			return nil, fmt.Errorf("models: model root: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("models: model root %s is not a directory", p)
		}
		r.roots = append(r.roots, root{given: filepath.Clean(p), real: real})
	}
	return r, nil
}

// Roots returns the model roots with their symlinks resolved.
func (r *Resolver) Roots() []string {
	out := make([]string, len(r.roots))
	for i, rt := range r.roots {
		out[i] = rt.real
	}
	return out
}

// Catalog returns the catalog the resolver looks references up in (nil if
// none).
func (r *Resolver) Catalog() *Catalog { return r.catalog }

// Resolve returns the model file for a spawn request: the path with every
// symlink resolved, and its size in bytes.
//
//  1. ref is validated with ParseRef (ErrInvalidRef).
//  2. If modelPath is not empty it names the file, whatever ref says (ref
//     is then only a label and need not be in the catalog); it is checked
//     like a file: reference, with errors naming model_path.
//  3. A file: reference names the file directly; it must be absolute
//     (ErrInvalidRef otherwise).
//  4. Any other provider is looked up in the catalog (ErrNotFound if
//     unknown), and the stored path is checked again, since the roots or
//     the file may have changed since it was added.
//
// The check (see CheckPath): the file must exist (ErrNotFound), lie inside a
// model root after resolving symlinks (ErrNotAllowed) and be a regular file
// (ErrNotFound). Errors are *Error values.
func (r *Resolver) Resolve(ref, modelPath string) (path string, size int64, err error) {
	provider, rest, err := ParseRef(ref)
	if err != nil {
		return "", 0, err
	}
	switch {
	case modelPath != "":
		return r.check(modelPath, "model_path", "model_path:")
	case provider == ProviderFile:
		if !filepath.IsAbs(rest) {
			return "", 0, newError(ErrInvalidRef, "model_ref", "model_ref: %q must name an absolute path (file:/path/to/model)", ref)
		}
		return r.check(rest, "model_ref", "model_ref:")
	}
	if r.catalog == nil {
		return "", 0, newError(ErrNotFound, "model_ref", "model %s is not in the model catalog", ref)
	}
	e, ok := r.catalog.Get(ref)
	if !ok {
		return "", 0, newError(ErrNotFound, "model_ref", "model %s is not in the model catalog (add it with `rbee-hive model add`)", ref)
	}
	return r.check(e.Path, "model_ref", fmt.Sprintf("model %s: catalog path", ref))
}

// CheckPath checks that p is an absolute path to an existing regular file
// inside a model root, symlinks resolved, and returns the resolved path and
// the file's size. Use it before Catalog.Add to refuse a path that Resolve
// would refuse later. Errors are *Error values (Field "model_path").
func (r *Resolver) CheckPath(p string) (string, int64, error) {
	return r.check(p, "model_path", "model_path:")
}

// check is CheckPath with errors naming field and starting with prefix.
func (r *Resolver) check(p, field, prefix string) (string, int64, error) {
	fail := func(sentinel error, format string, a ...any) (string, int64, error) {
		return "", 0, newError(sentinel, field, "%s %s", prefix, fmt.Sprintf(format, a...))
	}
	if !filepath.IsAbs(p) {
		return fail(ErrNotAllowed, "%q is not an absolute path", p)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return fail(ErrNotAllowed, "%q contains a NUL byte", p)
	}
	clean := filepath.Clean(p)
	real, err := filepath.EvalSymlinks(clean)
	if err != nil {
		// Say "not found" only for paths that name a place under a root,
		// so the API is no oracle for which files exist elsewhere.
		// Nor through a symlink under a root that leads out of it: the
		// part that exists is resolved, and must lie inside a root too.
		if !r.lexicallyInside(clean) || !r.inside(resolveExisting(clean)) {
			return fail(ErrNotAllowed, "%s is %s", p, r.notInside())
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, notDir) {
			return fail(ErrNotFound, "%s does not exist", p)
		}
		return fail(ErrNotFound, "%s cannot be resolved: %v", p, unwrapPath(err))
	}
	if !r.inside(real) {
		if r.isRoot(real) {
			return fail(ErrNotAllowed, "%s is a directory (a model root itself), not a model file inside it", p)
		}
		return fail(ErrNotAllowed, "%s is %s", p, r.notInside())
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fail(ErrNotFound, "%s: %v", p, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		if fi.IsDir() {
			return fail(ErrNotFound, "%s is a directory, not a model file", p)
		}
		return fail(ErrNotFound, "%s is not a regular file", p)
	}
	return real, fi.Size(), nil
}

func (r *Resolver) notInside() string {
	if len(r.roots) == 0 {
		return "not inside a model root (no model roots are configured)"
	}
	return "not inside a model root (" + strings.Join(r.Roots(), ", ") + ")"
}

// isRoot reports whether the resolved path p is one of the roots itself.
func (r *Resolver) isRoot(p string) bool {
	for _, rt := range r.roots {
		if rt.real == p {
			return true
		}
	}
	return false
}

// inside reports whether the resolved path p lies strictly inside one of the
// resolved roots.
func (r *Resolver) inside(p string) bool {
	for _, rt := range r.roots {
		if within(rt.real, p) {
			return true
		}
	}
	return false
}

// lexicallyInside reports whether the cleaned path p lies inside a root as
// configured or as resolved, without touching the filesystem.
func (r *Resolver) lexicallyInside(p string) bool {
	for _, rt := range r.roots {
		if within(rt.given, p) || within(rt.real, p) {
			return true
		}
	}
	return false
}

// within reports whether path lies strictly below dir. Both must be absolute
// and clean. It compares path components (filepath.Rel), so /models2/x is not
// within /models.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	if err != nil || rel == "." || filepath.IsAbs(rel) {
		return false
	}
	return rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// unwrapPath drops the *fs.PathError wrapper, whose path the message already
// names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// resolveExisting resolves the symlinks of the part of the absolute, clean
// path p that exists and appends the rest as written: where p leads when
// EvalSymlinks fails (a missing file, a dangling link, a loop: past 255
// links, the link where that happened).
func resolveExisting(p string) string {
	done := "/"
	rest := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		if c == "" || c == "." {
			continue
		}
		next := filepath.Join(done, c) // done has no symlinks: ".." is lexical
		fi, err := os.Lstat(next)
		if err != nil {
			return filepath.Join(append([]string{next}, rest...)...)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		target, err := os.Readlink(next)
		if hops++; hops > 255 || err != nil {
			// A loop: where it was met.
			return filepath.Join(append([]string{next}, rest...)...)
		}
		if filepath.IsAbs(target) {
			done = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return done
}
