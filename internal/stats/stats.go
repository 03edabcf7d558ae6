// Package stats measures a worker's resource use — resident memory, CPU
// time, threads and open file descriptors summed over every process of the
// worker — from /proc and, where the worker has one, its cgroup. A Sampler
// caches each worker's numbers for a short time so that listing a thousand
// workers, or scraping metrics, stays cheap; nothing here runs in a worker's
// owner goroutine.
//
// Sources, and why:
//   - the worker's processes: the members of its cgroup where it has one,
//     else the members of its process group (the worker is a group leader,
//     so the group id is its PID);
//   - resident memory: the sum of each process's resident set
//     (/proc/PID/statm field 2, the same sum the kernel reports as VmRSS in
//     /proc/PID/status; /proc/PID/stat field 24 is not used: on recent
//     kernels it can leave out the anonymous pages).
//     A cgroup's memory usage is not used: on cgroup v1 it includes page
//     cache, and a worker that has just read a multi-GiB model file would
//     look as big as the file;
//   - CPU: the cgroup's CPU counter (cpuacct.usage on v1, cpu.stat
//     usage_usec on v2, which also counts processes that have exited) where
//     there is one, else the sum over live processes of utime+stime plus
//     cutime+cstime (children already reaped);
//   - threads: /proc/PID/stat field 20; open fds: entries of /proc/PID/fd.
package stats

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/state"

	"github.com/rbee/rbee-hive/internal/procstat"
)

// DefaultMaxAge is how long a worker's numbers are reused when Options.MaxAge
// is zero.
const DefaultMaxAge = 2 * time.Second

// userHZ is the unit of the times in /proc/PID/stat. It is 100 on every
// Linux architecture Go supports (USER_HZ is part of the kernel ABI), so it
// is not read through sysconf (which would need cgo).
const userHZ = 100

var pageSize = int64(os.Getpagesize())

// ErrGone: the process does not exist (any more).
var ErrGone = errors.New("process gone")

// Proc is one process's resource use.
type Proc struct {
	PID      int
	PGID     int
	RSS      int64         // bytes, as VmRSS
	CPU      time.Duration // utime+stime
	ChildCPU time.Duration // cutime+cstime: children already reaped
	Threads  int
}

// ReadProc reads /proc/PID/stat and /proc/PID/statm under procRoot (""
// means /proc). A process that does not exist (or is a zombie) gives an
// error wrapping ErrGone.
func ReadProc(procRoot string, pid int) (Proc, error) {
	p, err := readStat(procRoot, pid)
	if err != nil {
		return p, err
	}
	b, err := readFile(procRoot, pid, "statm")
	if err != nil {
		return Proc{}, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return Proc{}, fmt.Errorf("process %d: malformed statm", pid)
	}
	res, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return Proc{}, fmt.Errorf("process %d: malformed statm: %w", pid, err)
	}
	p.RSS = res * pageSize
	return p, nil
}

func readFile(procRoot string, pid int, name string) ([]byte, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/" + name)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return nil, fmt.Errorf("process %d: %w", pid, ErrGone)
	}
	return b, err
}

// readStat reads /proc/PID/stat (everything but RSS).
func readStat(procRoot string, pid int) (Proc, error) {
	st, err := procstat.Read(procRoot, pid)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return Proc{}, fmt.Errorf("process %d: %w", pid, ErrGone)
	}
	if err != nil {
		return Proc{}, fmt.Errorf("process %d: %w", pid, err)
	}
	if st.Dead() {
		return Proc{}, fmt.Errorf("process %d is a zombie: %w", pid, ErrGone)
	}
	return Proc{PID: pid, PGID: st.PGRP, Threads: st.Threads,
		CPU: ticks(st.UTime + st.STime), ChildCPU: ticks(st.CUTime + st.CSTime)}, nil
}

func ticks(n uint64) time.Duration { return time.Duration(n) * (time.Second / userHZ) }

// CountFDs returns the number of open file descriptors of pid.
func CountFDs(procRoot string, pid int) (int, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	d, err := os.Open(procRoot + "/" + strconv.Itoa(pid) + "/fd")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return 0, fmt.Errorf("process %d: %w", pid, ErrGone)
	}
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(256)
		n += len(names)
		if err != nil {
			break
		}
	}
	return n, nil
}

// Sum adds up the use of pids: the processes that have gone meanwhile are
// skipped. It returns ErrGone when none of them exists.
func Sum(procRoot string, pids []int) (apiv1.Stats, error) {
	var s apiv1.Stats
	var cpu time.Duration
	found := 0
	for _, pid := range pids {
		p, err := ReadProc(procRoot, pid)
		if err != nil {
			continue
		}
		found++
		s.RSSBytes += p.RSS
		s.Threads += p.Threads
		cpu += p.CPU + p.ChildCPU
		if n, err := CountFDs(procRoot, pid); err == nil {
			s.OpenFDs += n
		}
	}
	if found == 0 {
		return s, ErrGone
	}
	s.CPUSeconds = cpu.Seconds()
	return s, nil
}

// ProcessGroups scans procRoot ("" means /proc) once and returns the PIDs
// of every process, by process group id.
func ProcessGroups(procRoot string) (map[int][]int, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	d, err := os.Open(procRoot)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := map[int][]int{}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		p, err := readStat(procRoot, pid)
		if err != nil {
			continue
		}
		out[p.PGID] = append(out[p.PGID], pid)
	}
	return out, nil
}

// Options configure a Sampler. The zero value samples /proc only, keeps
// numbers for DefaultMaxAge, and uses the real clock.
type Options struct {
	// Cgroups finds workers' cgroups (Manager.Open); nil or mode none: the
	// process group is used.
	Cgroups *cgroup.Manager
	// MaxAge is how long a worker's numbers are reused; 0 means
	// DefaultMaxAge, negative means never reuse.
	MaxAge time.Duration
	// ProcRoot is where procfs is mounted; "" means /proc.
	ProcRoot string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Sampler measures workers and caches the results per worker id. It is safe
// for concurrent use; concurrent calls are serialised, so two listings that
// arrive together measure once.
type Sampler struct {
	o  Options
	mu sync.Mutex
	c  map[string]entry
}

type entry struct {
	pid int
	at  time.Time
	s   apiv1.Stats
	ok  bool // s is valid (the worker had at least one process)
}

// New returns a Sampler.
func New(o Options) *Sampler {
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Sampler{o: o, c: map[string]entry{}}
}

// HasProcess reports whether a worker in state st has a process worth
// measuring: loading, idle, busy or stopping.
func HasProcess(st state.State) bool {
	switch st {
	case state.Loading, state.Idle, state.Busy, state.Stopping:
		return true
	}
	return false
}

// Fill returns infos with Stats set on each worker that has a process (see
// HasProcess): the entries it changes are shallow copies (the snapshots
// passed in are never modified), the others are passed through. Numbers
// younger than MaxAge are reused; the rest are measured now, with at most
// one scan of /proc for all the workers without a cgroup. It blocks for the
// measuring (tens of microseconds per process).
func (s *Sampler) Fill(infos []*apiv1.WorkerInfo) []*apiv1.WorkerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.o.Now()
	out := make([]*apiv1.WorkerInfo, len(infos))
	var stale []int
	for i, info := range infos {
		out[i] = info
		if info == nil || info.PID <= 0 || !HasProcess(info.State) {
			continue
		}
		if e, ok := s.c[info.ID]; ok && e.pid == info.PID && s.o.MaxAge > 0 && now.Sub(e.at) < s.o.MaxAge {
			out[i] = with(info, e)
			continue
		}
		stale = append(stale, i)
	}
	var groups map[int][]int
	scanned := false
	for _, i := range stale {
		info := infos[i]
		e := entry{pid: info.PID, at: now}
		pids, cpu, haveCPU := s.cgroupPids(info.ID)
		if pids == nil {
			if !scanned {
				groups, _ = ProcessGroups(s.o.ProcRoot)
				scanned = true
			}
			pids = groups[info.PID]
			if len(pids) == 0 {
				pids = []int{info.PID}
			}
		}
		if st, err := Sum(s.o.ProcRoot, pids); err == nil {
			if haveCPU {
				st.CPUSeconds = cpu.Seconds()
			}
			e.s, e.ok = st, true
		}
		s.c[info.ID] = e
		out[i] = with(info, e)
	}
	s.prune(now)
	return out
}

// Get is Fill for one worker.
func (s *Sampler) Get(info *apiv1.WorkerInfo) *apiv1.WorkerInfo {
	return s.Fill([]*apiv1.WorkerInfo{info})[0]
}

// cgroupPids returns the processes of worker id's cgroup and its CPU
// counter; nil pids when it has no cgroup (or it cannot be read).
func (s *Sampler) cgroupPids(id string) ([]int, time.Duration, bool) {
	m := s.o.Cgroups
	if m == nil || m.Mode() == cgroup.ModeNone {
		return nil, 0, false
	}
	g, err := m.Open(id)
	if err != nil {
		return nil, 0, false
	}
	st, err := g.Stats()
	if err != nil {
		return nil, 0, false
	}
	pids, err := g.Pids()
	if err != nil || len(pids) == 0 {
		return nil, 0, false
	}
	return pids, st.CPU, st.CPU > 0
}

// prune forgets workers not measured for a while (ended or gone), so the
// cache is bounded by the live workers.
func (s *Sampler) prune(now time.Time) {
	keep := 10 * max(s.o.MaxAge, DefaultMaxAge)
	for id, e := range s.c {
		if now.Sub(e.at) > keep {
			delete(s.c, id)
		}
	}
}

func with(info *apiv1.WorkerInfo, e entry) *apiv1.WorkerInfo {
	if !e.ok {
		return info
	}
	cp := *info
	st := e.s
	cp.Stats = &st
	return &cp
}
