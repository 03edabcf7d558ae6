package cgroup

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// cgroupFS is the seam between this package and the cgroup file system: the
// three operations whose behaviour differs between a real cgroupfs and a
// plain directory tree. On cgroupfs, mkdir populates the interface files and
// rmdir removes a directory that still holds them; writes never create files.
// Reads go straight to os.ReadFile, which works on both.
type cgroupFS interface {
	// Mkdir creates one cgroup directory; an existing one is an error
	// matching fs.ErrExist.
	Mkdir(dir string) error
	// Rmdir removes one cgroup directory.
	Rmdir(dir string) error
	// WriteFile writes data to an existing interface file in one write.
	WriteFile(file, data string) error
}

// osFS is the real cgroup file system.
type osFS struct{}

func (osFS) Mkdir(dir string) error { return os.Mkdir(dir, 0o755) }

func (osFS) Rmdir(dir string) error {
	if err := unix.Rmdir(dir); err != nil {
		return &os.PathError{Op: "rmdir", Path: dir, Err: err}
	}
	return nil
}

func (osFS) WriteFile(file, data string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte(data))
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("write %q to %s: %w", data, file, werr)
	}
	return cerr
}
