// Package store is the hive's durable registry: one JSON file per worker,
// <state_dir>/workers/<id>.json, holding its record.Record, so that a
// hive that restarts (or was SIGKILLed) can re-adopt or restart every worker
// the previous one had.
//
// Why one file per worker: each write is O(1) in the number of workers (a
// 1000-worker hive does not rewrite a 1000-entry document on every change),
// and each worker's owner goroutine writes its own file without a global
// lock. Why not an embedded database: the data is tiny, writes are rare
// (state changes), and a directory of JSON files can be read and repaired
// with a text editor by an operator.
//
// Atomicity: Put writes a temporary file in the same directory, fsyncs it,
// exchanges it with the target and fsyncs the directory
// (atomicfile.Replace), so after a crash at any instant the file is either
// the old record or the new one, never a mix. The temporary file, holding
// the old record after the exchange, is kept for the worker's next Put
// (no file is created or deleted per change; Load removes kept files, and
// Delete the worker's). A Put with sync=false skips both fsyncs: the
// exchange is still atomic (a crash of the hive leaves the old or the new
// file), only a crash of the whole machine may lose the update — used for
// the steps of a start, on the path of a cold start's first byte (Sync
// makes them durable afterwards).
//
// Privacy: the directory is 0700 and the files 0600 (records carry the
// worker's environment and its token's hash).
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rbee/rbee-hive/internal/atomicfile"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

// ErrInvalidID: a record's worker id cannot name a file (empty, too long, or
// characters outside [A-Za-z0-9_-]).
var ErrInvalidID = errors.New("store: invalid worker id")

var idRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

const (
	suffix     = ".json"
	corruptSfx = ".corrupt-"
)

// Store is the directory of worker records. Its methods are safe for
// concurrent use as long as no two goroutines Put or Delete the same id at
// once (the worker's owner is the only writer of its record; Delete is for
// workers that have ended). The zero value is not usable; use Open.
type Store struct {
	dir string
	log *slog.Logger
	now func() time.Time
}

// Open creates (0700) and returns the store under stateDir/workers. log may
// be nil. It does not read any record (see Load).
func Open(stateDir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(stateDir, "workers")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return &Store{dir: dir, log: log, now: time.Now}, nil
}

// Dir returns the directory holding the records.
func (s *Store) Dir() string { return s.dir }

// Path returns the file of worker id's record.
func (s *Store) Path(id string) string { return filepath.Join(s.dir, id+suffix) }

// Put writes rec atomically as the record of rec.Info.ID (see the package
// doc; sync=false skips the fsyncs). It blocks for the write (and the
// fsyncs): typically well under a millisecond on a local disk.
func (s *Store) Put(rec *record.Record, sync bool) error {
	id := rec.Info.ID
	if !idRe.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("store: put %s: %w", id, err)
	}
	if err := atomicfile.Replace(s.Path(id), b, 0o600, sync); err != nil {
		return fmt.Errorf("store: put %s: %w", id, err)
	}
	return nil
}

// Sync makes worker id's record as it is now durable (fsyncs the file and
// the directory): for a record Put without sync that should reach the disk
// soon, off its writer's path. A missing record is not an error.
func (s *Store) Sync(id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	f, err := os.Open(s.Path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: sync %s: %w", id, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = atomicfile.SyncDir(s.dir)
	}
	if err != nil {
		return fmt.Errorf("store: sync %s: %w", id, err)
	}
	return nil
}

// Prepare makes, ahead of need, the temporary files that the first Puts of
// worker id's record would create (atomicfile.Prepare), so that they
// create none: for the id of a worker about to be spawned. Load drops them
// like any temporary file; Delete removes them.
func (s *Store) Prepare(id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	if err := atomicfile.Prepare(s.Path(id)); err != nil {
		return fmt.Errorf("store: prepare %s: %w", id, err)
	}
	return nil
}

// Delete removes worker id's record. A missing record is not an error.
func (s *Store) Delete(id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	if err := atomicfile.RemoveWithKept(s.Path(id)); err != nil {
		return fmt.Errorf("store: delete %s: %w", id, err)
	}
	return nil
}

// Corrupt describes a record file that could not be read; it was renamed to
// MovedTo (kept for the operator, never deleted).
type Corrupt struct {
	Path    string
	MovedTo string
	Err     error
}

// Load reads every record, sorted by worker id. A file that cannot be read
// or parsed, or whose record names another id than its file, is renamed
// aside to <name>.corrupt-<unix time>, logged at ERROR, and reported in the
// second result; it does not fail the load. Temporary files left by a crash
// in the middle of a Put are removed. Load returns an error only when the
// directory itself cannot be read.
func (s *Store) Load() ([]*record.Record, []Corrupt, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("store: load: %w", err)
	}
	var recs []*record.Record
	var bad []Corrupt
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(s.dir, name)
		switch {
		case atomicfile.IsTemp(name):
			_ = os.Remove(path)
			continue
		case !strings.HasSuffix(name, suffix) || strings.Contains(name, corruptSfx):
			continue
		}
		rec, err := readRecord(path, strings.TrimSuffix(name, suffix))
		if err == nil {
			recs = append(recs, rec)
			continue
		}
		moved := path + corruptSfx + strconv.FormatInt(s.now().Unix(), 10)
		if rerr := os.Rename(path, moved); rerr != nil {
			s.log.Error("State file is corrupt and cannot be moved aside", "file", path, "error", err, "rename_error", rerr)
			moved = ""
		} else {
			s.log.Error("State file is corrupt; moved aside, starting without it", "file", path, "moved_to", moved, "error", err)
		}
		bad = append(bad, Corrupt{Path: path, MovedTo: moved, Err: err})
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Info.ID < recs[j].Info.ID })
	return recs, bad, nil
}

func readRecord(path, id string) (*record.Record, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rec record.Record
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&rec); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse: trailing data after the record")
	}
	if rec.Info.ID != id {
		return nil, fmt.Errorf("record names worker %q, file names %q", rec.Info.ID, id)
	}
	if _, err := state.Parse(string(rec.Info.State)); err != nil {
		return nil, fmt.Errorf("record state: %w", err)
	}
	return &rec, nil
}
