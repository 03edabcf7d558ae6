// Package atomicfile replaces files so that a reader, or a crash at any
// instant, sees either the old content or the new, never a mix.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
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

// keptSuffix ends the name of the temporary file Replace keeps beside its
// target (".<name>" + TempMarker + "keep"); IsTemp recognises it.
const keptSuffix = TempMarker + "keep"

// Kept returns the temporary file Replace keeps for path.
func Kept(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+keptSuffix)
}

// next is the second temporary file Prepare makes for path: it becomes
// the kept one once the first Replace has renamed that into place.
func next(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+TempMarker+"next")
}

// Prepare makes, ahead of need, the two (empty) temporary files that the
// first Replaces of a path that does not exist yet would create, so that
// they create no file: the first renames one into place, the second
// exchanges with it the other. Remove what a path never used with
// RemoveWithKept.
func Prepare(path string) error {
	for _, p := range []string{Kept(path), next(path)} {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Replace is Write for a file that is replaced again and again (the hive's
// worker records): the same guarantees (a reader, or a crash at any
// instant, sees the old content or the new; with sync, both the file and
// the directory are fsynced), but no file is created or deleted after the
// first replacement. The new content goes into the kept temporary file
// (Kept), which is then exchanged with the target (renameat2
// RENAME_EXCHANGE, atomic): the old content is left in the temporary
// file, whose inode the next Replace writes again.
//
// Why: a rename over a file made ext4 start writing the new file at once
// (auto_da_alloc) and wait, when that file was in turn replaced, for that
// write to finish — 0.5–2 ms per replacement on a virtual disk — and a
// file system without a journal scans past the inodes deleted in the last
// minutes on every create. An exchange does neither. Without sync, the
// new content reaches the disk with the kernel's writeback (or the
// caller's later fsync, as store.Sync), as for Write without sync a crash
// of the whole machine may lose the update.
//
// Where renameat2 cannot exchange (the target does not exist yet, or the
// file system does not support it) the temporary file is renamed over the
// target, as Write does. Callers must not Replace the same path
// concurrently. Remove with RemoveWithKept.
func Replace(path string, data []byte, perm fs.FileMode, sync bool) (err error) {
	tmp := Kept(path)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil { // a kept file has its target's old mode
		return err
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
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_EXCHANGE)
	switch {
	case err == nil:
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.EOPNOTSUPP):
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		_ = os.Rename(next(path), tmp) // a prepared second file, if any, is the next kept one
	default:
		return &os.LinkError{Op: "renameat2", Old: tmp, New: path, Err: err}
	}
	if !sync {
		return nil
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("replaced, but %w", err)
	}
	return nil
}

// RemoveWithKept removes path and the temporary files Replace keeps (and
// Prepare makes) for it. Missing files are fine.
func RemoveWithKept(path string) error {
	var err error
	for _, p := range []string{path, Kept(path), next(path)} {
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	return err
}
