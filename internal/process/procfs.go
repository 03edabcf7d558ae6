package process

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/rbee/rbee-hive/internal/procstat"
)

// readStat reads and parses /proc/pid/stat. A missing process yields an
// error wrapping ErrGone.
func readStat(pid int) (procstat.Stat, error) {
	st, err := procstat.Read("", pid)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return st, fmt.Errorf("process %d: %w", pid, ErrGone)
	}
	if err != nil {
		return st, fmt.Errorf("process %d: %w", pid, err)
	}
	return st, nil
}

// ReadStartTime returns the start time of process pid in clock ticks since
// boot (/proc/PID/stat field 22). It returns an error wrapping ErrGone when
// there is no such process. A zombie still has its start time.
func ReadStartTime(pid int) (uint64, error) {
	s, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return s.StartTime, nil
}

// BootID returns this boot's id (/proc/sys/kernel/random/boot_id, trimmed).
// A PID and start time recorded under another boot id name nothing.
func BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("process: boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", errors.New("process: boot id: empty")
	}
	return id, nil
}

// ProcessAlive reports whether process pid exists, has the given start time
// and has not exited (a zombie is not alive). It is a snapshot: use a Proc
// to act on the answer safely.
func ProcessAlive(pid int, startTime uint64) bool {
	if pid <= 0 {
		return false
	}
	s, err := readStat(pid)
	return err == nil && s.StartTime == startTime && !s.Dead()
}

// FindByEnv returns, in ascending order, the PIDs of the processes whose
// environment (as exec'd: /proc/PID/environ) contains the exact entry
// key=value. Processes whose environment cannot be read (exited, kernel
// threads, zombies, no permission) are skipped. The caller's own process is
// included when it matches. It reads all of /proc and may take a few
// milliseconds on a busy machine; the answer is a snapshot (verify start
// times before acting on a PID).
func FindByEnv(key, value string) []int {
	want := []byte(key + "=" + value)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || len(b) == 0 {
			continue
		}
		for entry := range bytes.SplitSeq(b, []byte{0}) {
			if bytes.Equal(entry, want) {
				pids = append(pids, pid)
				break
			}
		}
	}
	slices.Sort(pids)
	return pids
}

// HasEnv reports whether the environment pid was exec'd with
// (/proc/PID/environ) holds the exact entry key=value. An unreadable
// environment (gone, no permission) counts as not holding it.
func HasEnv(pid int, key, value string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	want := []byte(key + "=" + value)
	for entry := range bytes.SplitSeq(b, []byte{0}) {
		if bytes.Equal(entry, want) {
			return true
		}
	}
	return false
}
