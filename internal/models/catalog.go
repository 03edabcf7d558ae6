package models

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/atomicfile"
)

// CatalogFile is the catalog's file name inside the state directory.
const CatalogFile = "models.json"

// Entry is one catalog entry: a reference and the file it names.
type Entry struct {
	Ref       string    `json:"ref"`        // provider:reference, never file:
	Path      string    `json:"path"`       // absolute path as added (Resolve re-checks it)
	SizeBytes int64     `json:"size_bytes"` // file size when added
	AddedAt   time.Time `json:"added_at"`   // when added (UTC)
}

// catalogDoc is the file format.
type catalogDoc struct {
	Version int     `json:"version"` // 1
	Models  []Entry `json:"models"`  // sorted by ref
}

const catalogVersion = 1

// Catalog is the hive's model catalog: a map from non-file references
// (hf:org/repo, …) to model files, persisted as JSON in one file (mode 0600),
// rewritten atomically on every change. Build it with OpenCatalog; the zero
// value is not usable. A Catalog is safe for concurrent use; Add and Remove
// block on a write and fsync of the file. Only one Catalog (one process)
// should own a file at a time.
type Catalog struct {
	path string

	mu      sync.Mutex
	entries map[string]Entry
	now     func() time.Time
}

// OpenCatalog reads the catalog at path. A missing file is an empty catalog
// (the file is created on the first Add). A file that cannot be parsed, or
// holds an invalid entry, is an error naming the file; it is left untouched.
func OpenCatalog(path string) (*Catalog, error) {
	c := &Catalog{path: path, entries: map[string]Entry{}, now: time.Now}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("models: read catalog: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("models: catalog %s is empty (expected a JSON object; move it away to start afresh)", path)
	}
	var doc catalogDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("models: catalog %s is corrupt: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("models: catalog %s is corrupt: trailing data after the JSON object", path)
	}
	if doc.Version != catalogVersion {
		return nil, fmt.Errorf("models: catalog %s has version %d, this hive reads version %d", path, doc.Version, catalogVersion)
	}
	for i, e := range doc.Models {
		if err := validEntry(e); err != nil {
			return nil, fmt.Errorf("models: catalog %s is corrupt: entry %d: %w", path, i, err)
		}
		if _, dup := c.entries[e.Ref]; dup {
			return nil, fmt.Errorf("models: catalog %s is corrupt: entry %d: duplicate ref %s", path, i, e.Ref)
		}
		c.entries[e.Ref] = e
	}
	return c, nil
}

func validEntry(e Entry) error {
	provider, _, err := ParseRef(e.Ref)
	if err != nil {
		return err
	}
	if provider == ProviderFile {
		return fmt.Errorf("ref %s: file: references are not catalogued", e.Ref)
	}
	if !filepath.IsAbs(e.Path) {
		return fmt.Errorf("ref %s: path %q is not absolute", e.Ref, e.Path)
	}
	if e.SizeBytes < 0 {
		return fmt.Errorf("ref %s: negative size", e.Ref)
	}
	return nil
}

// Path returns the catalog's file path.
func (c *Catalog) Path() string { return c.path }

// Add records that ref names the file at path and saves the catalog. ref must
// pass ParseRef and not use the file: provider (ErrInvalidRef); path must be
// absolute and name an existing regular file, symlinks followed (ErrNotFound
// otherwise; a relative path is ErrNotAllowed). Adding a ref again replaces
// its entry. Add does not check the model roots: use Resolver.CheckPath
// first to refuse files outside them early (Resolve checks again anyway).
// On a write error the catalog is unchanged.
func (c *Catalog) Add(ref, path string) (Entry, error) {
	provider, _, err := ParseRef(ref)
	if err != nil {
		return Entry{}, err
	}
	if provider == ProviderFile {
		return Entry{}, newError(ErrInvalidRef, "model_ref", "model_ref: %s names a file directly; file: references need no catalog entry", ref)
	}
	if !filepath.IsAbs(path) {
		return Entry{}, newError(ErrNotAllowed, "model_path", "model_path: %q is not an absolute path", path)
	}
	path = filepath.Clean(path)
	fi, err := os.Stat(path)
	if err != nil {
		return Entry{}, newError(ErrNotFound, "model_path", "model_path: model file %s: %v", path, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return Entry{}, newError(ErrNotFound, "model_path", "model_path: %s is not a regular file", path)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	e := Entry{Ref: ref, Path: path, SizeBytes: fi.Size(), AddedAt: c.now().UTC()}
	old, had := c.entries[ref]
	c.entries[ref] = e
	if err := c.saveLocked(); err != nil {
		if had {
			c.entries[ref] = old
		} else {
			delete(c.entries, ref)
		}
		return Entry{}, err
	}
	return e, nil
}

// Remove deletes ref from the catalog and saves it. An absent ref is an
// *Error wrapping ErrNotFound. On a write error the catalog is unchanged.
func (c *Catalog) Remove(ref string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.entries[ref]
	if !ok {
		return newError(ErrNotFound, "model_ref", "model %s is not in the model catalog", ref)
	}
	delete(c.entries, ref)
	if err := c.saveLocked(); err != nil {
		c.entries[ref] = old
		return err
	}
	return nil
}

// List returns every entry, sorted by ref. The slice is the caller's.
func (c *Catalog) List() []Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.listLocked()
}

func (c *Catalog) listLocked() []Entry {
	out := make([]Entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Ref, b.Ref) })
	return out
}

// Get returns the entry for ref.
func (c *Catalog) Get(ref string) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[ref]
	return e, ok
}

// saveLocked writes the catalog atomically:
//
//  1. create a temporary file (mode 0600) in the catalog's directory;
//  2. write the JSON and fsync it;
//  3. rename it over the catalog;
//  4. fsync the directory so the rename survives a crash.
//
// The temporary file is removed on any failure before the rename.
func (c *Catalog) saveLocked() error {
	data, err := json.MarshalIndent(catalogDoc{Version: catalogVersion, Models: c.listLocked()}, "", "  ")
	if err != nil {
		return fmt.Errorf("models: save catalog: %w", err)
	}
	data = append(data, '\n')
	if err := writeFileAtomic(c.path, data); err != nil {
		return fmt.Errorf("models: save catalog: %w", err)
	}
	return nil
}

// writeFileAtomic replaces the file at path with data, mode 0600, so that a
// reader (or a crash) sees either the old content or the new, never a mix.
// The directory is created (mode 0700) if missing. It blocks on fsync.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600, true)
}
