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
)

// stat is the part of /proc/PID/stat this package uses.
type stat struct {
	state     byte   // field 3: R, S, D, Z, X, …
	ppid      int    // field 4
	pgrp      int    // field 5
	startTime uint64 // field 22, clock ticks since boot
}

// dead reports whether the process has exited (zombie or dead).
func (s stat) dead() bool { return s.state == 'Z' || s.state == 'X' || s.state == 'x' }

// readStat reads and parses /proc/pid/stat. A missing process yields an
// error wrapping ErrGone.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return stat{}, fmt.Errorf("process %d: %w", pid, ErrGone)
	}
	if err != nil {
		return stat{}, err
	}
	return parseStat(pid, b)
}

// parseStat parses the text of /proc/pid/stat. The command name (field 2)
// is in parentheses and may itself contain spaces and parentheses, so the
// fields are counted from the last ')'.
func parseStat(pid int, b []byte) (stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("process %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3; field n is f[n-3].
	if len(f) < 22-3+1 || len(f[0]) != 1 {
		return stat{}, fmt.Errorf("process %d: malformed stat (%d fields)", pid, len(f)+2)
	}
	var s stat
	var err1, err2, err3 error
	s.state = f[0][0]
	s.ppid, err1 = strconv.Atoi(f[4-3])
	s.pgrp, err2 = strconv.Atoi(f[5-3])
	s.startTime, err3 = strconv.ParseUint(f[22-3], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return stat{}, fmt.Errorf("process %d: malformed stat: %w", pid, err)
	}
	return s, nil
}

// ReadStartTime returns the start time of process pid in clock ticks since
// boot (/proc/PID/stat field 22). It returns an error wrapping ErrGone when
// there is no such process. A zombie still has its start time.
func ReadStartTime(pid int) (uint64, error) {
	s, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return s.startTime, nil
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
	return err == nil && s.startTime == startTime && !s.dead()
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
