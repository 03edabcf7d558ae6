package hive

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrStateDirLocked: another live hive holds the state directory's lock.
var ErrStateDirLocked = errors.New("state dir is in use by another rbee-hive")

// StateLock is the exclusive lock on <state>/hive.lock a daemon holds for
// its whole life (SPEC §3): a second daemon on the same state dir must
// never adopt or stop the first one's workers.
type StateLock struct{ f *os.File }

// LockStateDir takes the lock without waiting. When another process holds
// it, the error wraps ErrStateDirLocked and names the holder's PID (which
// the holder wrote into the file). The lock is released by Close or when
// the process ends, however it ends.
func LockStateDir(dir string) (*StateLock, error) {
	path := filepath.Join(dir, "hive.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			b, _ := io.ReadAll(io.LimitReader(f, 32))
			holder := strings.TrimSpace(string(b))
			if _, perr := strconv.Atoi(holder); perr != nil || holder == "" {
				holder = "unknown"
			}
			return nil, fmt.Errorf("%w (%s is held by PID %s); refusing to start", ErrStateDirLocked, path, holder)
		}
		return nil, fmt.Errorf("state dir lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &StateLock{f: f}, nil
}

// Close releases the lock.
func (l *StateLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	return l.f.Close()
}
