// Package atomicfile replaces files so that a reader, or a crash at any
// instant, sees either the old content or the new, never a mix.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TempMarker is part of the name of every temporary file Write makes
// (".<name>.tmp-<random>", in the target's directory), so a directory's
// owner can recognise and remove ones a crash left behind.
const TempMarker = ".tmp-"

// Write replaces the file at path with data, mode perm: a temporary file in
// the same directory (created exclusively), written, fsynced, renamed over
// path, and the directory fsynced. With sync false both fsyncs are skipped:
// the rename is still atomic (a crash of the program leaves the old or the
// new file), only a crash of the whole machine may lose the update. The
// directory must exist. On error the temporary file is removed.
func Write(path string, data []byte, perm fs.FileMode, sync bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+TempMarker+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if perm != 0o600 { // CreateTemp's mode
		if err := f.Chmod(perm); err != nil {
			return err
		}
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if !sync {
		return nil
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("renamed, but %w", err)
	}
	return nil
}

// SyncDir fsyncs the directory dir (making a rename or removal in it
// durable).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// IsTemp reports whether name (a base name) is one of Write's temporary
// files.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, TempMarker)
}
