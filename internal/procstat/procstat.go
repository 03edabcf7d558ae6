// Package procstat reads /proc/PID/stat: the one parser of it for the
// supervisor's process handles, the stats sampler, recovery, GPU accounting
// and the benchmarks.
//
// Why not github.com/prometheus/procfs (already in the module graph): its
// Proc(pid).Stat() took about twice as long per read here (one more
// syscall, fmt-based parsing: 36 allocations against 9; see
// BenchmarkRead), and the stats sampler reads this file for every worker,
// which an idle hive of 1000 workers pays for in idle CPU.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// Stat is the part of /proc/PID/stat the hive uses. Times are in clock
// ticks (USER_HZ, 100 on Linux).
type Stat struct {
	State     byte   // field 3: R, S, D, Z, X, …
	PPID      int    // field 4
	PGRP      int    // field 5
	UTime     uint64 // field 14
	STime     uint64 // field 15
	CUTime    uint64 // field 16 (waited-for children)
	CSTime    uint64 // field 17
	Threads   int    // field 20
	StartTime uint64 // field 22, since boot
}

// Dead reports whether the process has exited (a zombie, or dead).
func (s Stat) Dead() bool { return s.State == 'Z' || s.State == 'X' || s.State == 'x' }

// Read reads and parses <procRoot>/<pid>/stat ("" is /proc). A process that
// is gone yields the read's error (fs.ErrNotExist or ESRCH), unwrapped.
func Read(procRoot string, pid int) (Stat, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return Parse(b)
}

// Parse parses the text of /proc/PID/stat. The command name (field 2) is
// in parentheses and may itself contain spaces and parentheses, so fields
// are counted from the last ')'. It does not allocate but for errors.
func Parse(b []byte) (Stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("malformed /proc stat: no ')'")
	}
	var s Stat
	rest := b[i+1:]
	n := 2 // the field just read
	for n < 22 {
		var f []byte
		f, rest = nextField(rest)
		if f == nil {
			return Stat{}, fmt.Errorf("malformed /proc stat: %d fields", n)
		}
		n++
		if n == 3 {
			if len(f) != 1 {
				return Stat{}, fmt.Errorf("malformed /proc stat: state %q", f)
			}
			s.State = f[0]
			continue
		}
		var dst *uint64
		var v uint64
		switch n {
		case 4, 5, 20:
			dst = &v
		case 14:
			dst = &s.UTime
		case 15:
			dst = &s.STime
		case 16:
			dst = &s.CUTime
		case 17:
			dst = &s.CSTime
		case 22:
			dst = &s.StartTime
		default:
			continue
		}
		x, ok := parseUint(f)
		if !ok {
			return Stat{}, fmt.Errorf("malformed /proc stat: field %d %q", n, f)
		}
		*dst = x
		switch n {
		case 4:
			s.PPID = int(v)
		case 5:
			s.PGRP = int(v)
		case 20:
			s.Threads = int(v)
		}
	}
	return s, nil
}

// nextField returns the next space-separated field of b and what follows
// it; nil when there is none.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\n') {
		i++
	}
	j := i
	for j < len(b) && b[j] != ' ' && b[j] != '\n' {
		j++
	}
	if i == j {
		return nil, nil
	}
	return b[i:j], b[j:]
}

func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}
