package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rbee/rbee-hive/internal/config"
)

// Group is one worker's cgroup: a directory in each hierarchy in use. Its
// methods are safe for concurrent use; it holds no open files. The zero value
// is not usable; get one from Manager.Create or Manager.Open.
type Group struct {
	id      string
	unified string            // cgroup2 directory, "" if none
	v2      bool              // unified carries the controllers (pure v2)
	v1      map[string]string // v1 controller → directory
	fs      cgroupFS
	log     *slog.Logger

	// killed is set by Kill on a group without cgroup.kill, so WaitEmpty's
	// polling also kills processes that were forked while Kill ran.
	killed atomic.Bool
}

// Stats is a snapshot of a worker cgroup's usage.
type Stats struct {
	// MemoryBytes is memory.current (v2) or memory.usage_in_bytes (v1); 0
	// when there is no memory controller.
	MemoryBytes uint64
	// CPU is the CPU time used by every process that ever ran in the group:
	// cpu.stat usage_usec (cgroup2, also on hybrid) or cpuacct.usage (v1).
	CPU time.Duration
	// Pids is the number of processes in the group now.
	Pids int
}

// ID returns the worker id the group was made for.
func (g *Group) ID() string { return g.id }

// Paths returns the group's directories, sorted, without duplicates (a
// co-mounted cpu,cpuacct hierarchy appears once).
func (g *Group) Paths() []string {
	var ps []string
	if g.unified != "" {
		ps = append(ps, g.unified)
	}
	for _, d := range g.v1 {
		if !slices.Contains(ps, d) {
			ps = append(ps, d)
		}
	}
	slices.Sort(ps)
	return ps
}

func (g *Group) v1Dirs() []string {
	var ds []string
	for _, d := range g.v1 {
		if !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
	}
	slices.Sort(ds)
	return ds
}

// FD opens the cgroup2 directory O_RDONLY|O_DIRECTORY|O_CLOEXEC for
// clone3's CLONE_INTO_CGROUP (syscall.SysProcAttr.UseCgroupFD/CgroupFD). It
// returns -1 and no error when the group has no cgroup2 directory (v1). The
// caller closes the fd.
func (g *Group) FD() (int, error) {
	if g.unified == "" {
		return -1, nil
	}
	fd, err := unix.Open(g.unified, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: g.unified, Err: err}
	}
	return fd, nil
}

// JoinProcs returns the v1 cgroup.procs files a new process must write its
// PID into before it runs user code (hybrid and v1). It is nil on pure v2,
// where CLONE_INTO_CGROUP places the process.
func (g *Group) JoinProcs() []string {
	var fs []string
	for _, d := range g.v1Dirs() {
		fs = append(fs, filepath.Join(d, "cgroup.procs"))
	}
	return fs
}

// Join moves process pid into every directory of the group (cgroup2 and
// v1). It is for callers that cannot use CLONE_INTO_CGROUP.
func (g *Group) Join(pid int) error {
	for _, d := range g.Paths() {
		if err := g.fs.WriteFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("cgroup join %s: %w", g.id, err)
		}
	}
	return nil
}

func (g *Group) writeLimits(l config.Limits) error {
	type kv struct{ file, val string }
	var must, optional []kv
	quota := int64(math.Round(l.CPUMax * cpuPeriodUsec))
	if l.CPUMax > 0 && quota < 1000 {
		quota = 1000 // the kernel's minimum quota is 1 ms
	}
	if g.v2 {
		d := g.unified
		if l.MemoryMaxBytes > 0 {
			must = append(must, kv{filepath.Join(d, "memory.max"), strconv.FormatInt(l.MemoryMaxBytes, 10)})
			// No swapping instead of an OOM kill.
			optional = append(optional, kv{filepath.Join(d, "memory.swap.max"), "0"})
		}
		if l.CPUMax > 0 {
			must = append(must, kv{filepath.Join(d, "cpu.max"), fmt.Sprintf("%d %d", quota, cpuPeriodUsec)})
		}
		if l.PidsMax > 0 {
			must = append(must, kv{filepath.Join(d, "pids.max"), strconv.FormatInt(l.PidsMax, 10)})
		}
	} else {
		if d, ok := g.v1[ctrlMemory]; ok && l.MemoryMaxBytes > 0 {
			v := strconv.FormatInt(l.MemoryMaxBytes, 10)
			must = append(must, kv{filepath.Join(d, "memory.limit_in_bytes"), v})
			optional = append(optional, kv{filepath.Join(d, "memory.memsw.limit_in_bytes"), v})
		}
		if d, ok := g.v1[ctrlCPU]; ok && l.CPUMax > 0 {
			must = append(must,
				kv{filepath.Join(d, "cpu.cfs_period_us"), strconv.Itoa(cpuPeriodUsec)},
				kv{filepath.Join(d, "cpu.cfs_quota_us"), strconv.FormatInt(quota, 10)})
		}
		if d, ok := g.v1[ctrlPids]; ok && l.PidsMax > 0 {
			must = append(must, kv{filepath.Join(d, "pids.max"), strconv.FormatInt(l.PidsMax, 10)})
		}
	}
	for _, w := range must {
		if err := g.fs.WriteFile(w.file, w.val); err != nil {
			return fmt.Errorf("set limit: %w", err)
		}
	}
	for _, w := range optional {
		if exists(w.file) {
			if err := g.fs.WriteFile(w.file, w.val); err != nil {
				g.log.Debug("optional cgroup limit not set", "file", w.file, "err", err)
			}
		}
	}
	return nil
}

// readProcs returns the PIDs listed in dir/cgroup.procs; a missing directory
// gives none.
func readProcs(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s/cgroup.procs: %w", dir, err)
		}
		pids = append(pids, p)
	}
	return pids, nil
}

// Pids returns every process in the group (the union over its directories),
// sorted.
func (g *Group) Pids() ([]int, error) {
	set := map[int]bool{}
	for _, d := range g.Paths() {
		ps, err := readProcs(d)
		if err != nil {
			return nil, fmt.Errorf("cgroup pids %s: %w", g.id, err)
		}
		for _, p := range ps {
			set[p] = true
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}

// Kill sends SIGKILL to every process in the group and returns without
// waiting for them to die (use WaitEmpty). Where the cgroup2 directory has
// cgroup.kill, the kernel kills the whole group at once, forks in flight
// included. Otherwise (and for the v1 directories, to be thorough) Kill
// reads cgroup.procs and signals each process through a pidfd, verifying the
// PID is still in the group after opening the pidfd so that a recycled PID
// is never signalled; it repeats until a pass finds no process it has not
// signalled, and marks the group so that WaitEmpty keeps killing stragglers.
func (g *Group) Kill() error {
	if g.unified != "" {
		kf := filepath.Join(g.unified, "cgroup.kill")
		if exists(kf) {
			if err := g.fs.WriteFile(kf, "1"); err != nil {
				return fmt.Errorf("cgroup kill %s: %w", g.id, err)
			}
			if len(g.v1) == 0 {
				return nil
			}
		} else {
			g.killed.Store(true)
		}
	} else {
		g.killed.Store(true)
	}
	signalled := map[int]bool{}
	for range 100 {
		n, err := g.killPass(signalled)
		if err != nil {
			return fmt.Errorf("cgroup kill %s: %w", g.id, err)
		}
		if n == 0 {
			return nil
		}
	}
	return nil
}

// killPass SIGKILLs every listed process not yet in signalled and returns how
// many it signalled.
func (g *Group) killPass(signalled map[int]bool) (int, error) {
	n := 0
	for _, d := range g.Paths() {
		pids, err := readProcs(d)
		if err != nil {
			return n, err
		}
		var fds []int
		var fdPids []int
		for _, p := range pids {
			if signalled[p] {
				continue
			}
			fd, err := unix.PidfdOpen(p, 0)
			if err != nil {
				continue // gone already
			}
			fds = append(fds, fd)
			fdPids = append(fdPids, p)
		}
		if len(fds) == 0 {
			continue
		}
		// The pidfds pin the processes; a PID still listed now is the
		// process its pidfd refers to, or that process has died.
		now, err := readProcs(d)
		for i, fd := range fds {
			if err == nil && slices.Contains(now, fdPids[i]) {
				if unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil {
					n++
				}
				signalled[fdPids[i]] = true
			}
			unix.Close(fd)
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// WaitEmpty blocks until no process is left in the group, or ctx is done
// (then it returns ctx's error). With a cgroup2 directory it watches
// cgroup.events for "populated 0" with inotify; without one it polls
// cgroup.procs every 10 ms. The v1 directories are checked too.
func (g *Group) WaitEmpty(ctx context.Context) error {
	// Fast path: cgroup.procs lists no live process (exited ones are not
	// listed). The kernel's "populated 0" notice can lag by milliseconds, or
	// much more under load, until the last zombie is reaped.
	if pids, err := g.Pids(); err == nil && len(pids) == 0 {
		return nil
	}
	if g.unified != "" && exists(filepath.Join(g.unified, "cgroup.events")) {
		if err := g.waitPopulated0(ctx); err != nil {
			return err
		}
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		pids, err := g.Pids()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if g.killed.Load() {
			if _, err := g.killPass(map[int]bool{}); err != nil {
				return fmt.Errorf("cgroup kill %s: %w", g.id, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroup wait empty %s: %d processes left: %w", g.id, len(pids), ctx.Err())
		case <-t.C:
		}
	}
}

// waitPopulated0 waits for "populated 0" in the cgroup2 cgroup.events,
// woken by inotify IN_MODIFY (the kernel notifies on every change).
func (g *Group) waitPopulated0(ctx context.Context) error {
	file := filepath.Join(g.unified, "cgroup.events")
	ifd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("cgroup wait empty %s: inotify: %w", g.id, err)
	}
	f := os.NewFile(uintptr(ifd), "inotify")
	defer f.Close()
	if _, err := unix.InotifyAddWatch(ifd, file, unix.IN_MODIFY); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // the group is gone, so it is empty
		}
		return fmt.Errorf("cgroup wait empty %s: watch %s: %w", g.id, file, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 4096)
	for {
		// Read after arming the watch so no change is missed.
		populated, err := readKeyed(file, "populated")
		if errors.Is(err, fs.ErrNotExist) {
			return nil // the group is gone, so it is empty
		}
		// A missing key (a fake tree caught mid-write) is "not yet".
		if err == nil && populated == 0 {
			return nil
		}
		if _, err := f.Read(buf); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("cgroup wait empty %s: %w", g.id, ctx.Err())
			}
			return fmt.Errorf("cgroup wait empty %s: inotify read: %w", g.id, err)
		}
	}
}

var errNoKey = errors.New("key not found")

// readKeyed returns the value of key in a flat-keyed file ("key value" per
// line, as cgroup.events, memory.events, cpu.stat, memory.oom_control).
func readKeyed(file, key string) (uint64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s %s: %w", file, key, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: no %q key: %w", file, key, errNoKey)
}

func readUint(file string) (uint64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", file, err)
	}
	return n, nil
}

// OOMKilled reports whether the kernel's OOM killer has killed a process in
// the group: oom_kill > 0 in memory.events.local (or memory.events) on v2,
// in memory.oom_control on v1 (kernel ≥ 4.13). Both count global OOM kills
// of the group's processes as well as kills at the group's own limit. It
// returns false and no error when the group has no memory controller. Call
// it before Remove.
func (g *Group) OOMKilled() (bool, error) {
	var file string
	switch {
	case g.v2:
		file = filepath.Join(g.unified, "memory.events.local")
		if !exists(file) {
			file = filepath.Join(g.unified, "memory.events")
		}
	case g.v1[ctrlMemory] != "":
		file = filepath.Join(g.v1[ctrlMemory], "memory.oom_control")
	default:
		return false, nil
	}
	if !exists(file) {
		return false, nil
	}
	n, err := readKeyed(file, "oom_kill")
	if err != nil {
		return false, fmt.Errorf("cgroup oom %s: %w", g.id, err)
	}
	return n > 0, nil
}

// Stats returns the group's current usage. Counters the host does not offer
// are left zero.
func (g *Group) Stats() (Stats, error) {
	var s Stats
	pids, err := g.Pids()
	if err != nil {
		return s, err
	}
	s.Pids = len(pids)
	memFile := ""
	switch {
	case g.v2:
		memFile = filepath.Join(g.unified, "memory.current")
	case g.v1[ctrlMemory] != "":
		memFile = filepath.Join(g.v1[ctrlMemory], "memory.usage_in_bytes")
	}
	if memFile != "" && exists(memFile) {
		if s.MemoryBytes, err = readUint(memFile); err != nil {
			return s, fmt.Errorf("cgroup stats %s: %w", g.id, err)
		}
	}
	cpuStat := filepath.Join(g.unified, "cpu.stat")
	switch {
	case g.unified != "" && exists(cpuStat):
		us, err := readKeyed(cpuStat, "usage_usec")
		if err != nil {
			return s, fmt.Errorf("cgroup stats %s: %w", g.id, err)
		}
		s.CPU = time.Duration(us) * time.Microsecond
	case g.v1[ctrlCPUAcct] != "":
		ns, err := readUint(filepath.Join(g.v1[ctrlCPUAcct], "cpuacct.usage"))
		if err != nil {
			return s, fmt.Errorf("cgroup stats %s: %w", g.id, err)
		}
		s.CPU = time.Duration(ns)
	}
	return s, nil
}

// Remove deletes the group's directories. A directory whose cgroup.procs
// is already empty but that the kernel still reports busy (processes that
// have only just exited) is retried for up to a second; one that still lists
// processes fails at once with an error matching unix.EBUSY. Missing
// directories are fine, so Remove is idempotent.
func (g *Group) Remove() error { return g.removeUntil(time.Now().Add(time.Second)) }

// RemoveNow is Remove without the retries: one rmdir per hierarchy. An
// error that wraps EBUSY means a directory may still go on a retry (the
// kernel had not yet let go of the last exited process): call Remove then,
// off any path that must not wait.
func (g *Group) RemoveNow() error { return g.removeUntil(time.Time{}) }

func (g *Group) removeUntil(deadline time.Time) error {
	var errs []error
	for _, d := range g.Paths() {
		for {
			err := g.fs.Rmdir(d)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				break
			}
			if errors.Is(err, unix.EBUSY) && time.Now().Before(deadline) {
				if pids, _ := readProcs(d); len(pids) == 0 {
					time.Sleep(10 * time.Millisecond)
					continue
				}
			}
			errs = append(errs, fmt.Errorf("cgroup remove %s: %w", g.id, err))
			break
		}
	}
	return errors.Join(errs...)
}
