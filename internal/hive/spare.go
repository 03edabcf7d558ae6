package hive

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/rbee/rbee-hive/internal/cgroup"
)

// The spare: the id of the next worker, with what its start would create
// made ahead of need, so that a spawn — a front-door cold start above all
// — does not wait for it: its cgroup (cgroup.Manager.Reserve: the mkdirs
// cost a few hundred microseconds, milliseconds in the tail), its log file
// and the files of its record (store.Prepare: creating a file costs 0.3–1
// ms on this journal-less ext4, which scans past every inode deleted in
// the last minutes). The spawn that takes the spare's id writes the limits
// into those cgroup directories before its process starts, as into new
// ones. A new spare is made in the background after Recover, once a spawn
// has its worker (or gave up), and when a worker has served a request
// (busy → idle) and there is none: after a cold start's first answer
// rather than on the way to the next one's. Shutdown and Detach remove
// it. (Made as soon as the taking worker's process had started, while it
// loads, it slowed that worker's start and the detection of its readiness
// in the cold-start benchmark: ready → idle p99 2.2 → 7.2 ms.) A hive
// that dies with one leaves its cgroup to the next hive's orphan cleanup,
// its record files to the store's Load and its log file to New.
type spare struct {
	mu      sync.Mutex
	id      string // made, not yet taken; "" none
	filling bool   // one is being made
	closed  bool   // shutting down: no more spares
	off     bool   // Reserve failed (no cgroup access): not tried again
	wg      sync.WaitGroup
}

// spareLogSuffix ends the name of a spare's log file, "."+id+spareLogSuffix
// in the log directory, renamed to <id>.log when the spare is taken.
const spareLogSuffix = ".log.spare"

func newWorkerID() string { return "worker-" + uuid.NewString() }

func (h *Hive) spareLog(id string) string { return filepath.Join(h.logDir, "."+id+spareLogSuffix) }

// workerID returns the id for a new worker: the spare's, whose cgroup and
// files exist already, when there is one (spared), else a new one.
func (h *Hive) workerID() (id string, spared bool) {
	s := &h.spare
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id == "" {
		return newWorkerID(), false
	}
	id, s.id = s.id, ""
	s.wg.Add(1) // closeSpare waits for spawned
	return id, true
}

// useSpareLog makes the spare's log file the worker's, right before its
// start opens it; failing that, the start creates it.
func (h *Hive) useSpareLog(id string) {
	_ = os.Rename(h.spareLog(id), filepath.Join(h.logDir, id+".log"))
}

// spawned ends a spawn that took the spare's id: what the spawn did not
// use (it gave up before its worker created it) goes. Then a new spare is
// made.
func (h *Hive) spawned(id string, spared bool) {
	if spared {
		h.dropSpare(id)
		h.spare.wg.Done()
	}
	h.refillSpare()
}

// refillSpare makes a new spare in the background when there is none.
func (h *Hive) refillSpare() {
	s := &h.spare
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id != "" || s.filling || s.closed {
		return
	}
	cg := h.cgroups != nil && h.cgroups.Mode() != cgroup.ModeNone && !s.off
	s.filling = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		id := newWorkerID()
		if cg {
			if err := h.cgroups.Reserve(id); err != nil {
				s.mu.Lock()
				s.off = true
				s.mu.Unlock()
				h.log.Info("No spare cgroup: each worker's cgroup is made when it spawns", "error", err)
			}
		}
		if f, err := os.OpenFile(h.spareLog(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
			f.Close()
		}
		if h.store != nil {
			_ = h.store.Prepare(id) // failing that, the first Puts create the files
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.filling = false
		if s.closed {
			h.dropSpare(id)
			return
		}
		s.id = id
	}()
}

// dropSpare removes what was made for spare id and is not used: its
// cgroup unless its worker created it, its log file unless it became the
// worker's, its record files unless a record was written.
func (h *Hive) dropSpare(id string) {
	if h.cgroups != nil {
		if err := h.cgroups.Unreserve(id); err != nil {
			h.log.Warn("Removing an unused spare cgroup failed", "cgroup", id, "error", err)
		}
	}
	_ = os.Remove(h.spareLog(id))
	if h.store != nil {
		if _, err := os.Lstat(h.store.Path(id)); errors.Is(err, fs.ErrNotExist) {
			_ = h.store.Delete(id)
		}
	}
}

// closeSpare removes the spare, and makes no more (Shutdown, Detach).
func (h *Hive) closeSpare() {
	s := &h.spare
	s.mu.Lock()
	s.closed = true
	id := s.id
	s.id = ""
	s.mu.Unlock()
	// A spare being made removes itself; a spawn that took the spare
	// removes what it did not use.
	s.wg.Wait()
	if id != "" {
		h.dropSpare(id)
	}
}

// removeSpareLogs removes the log files of the spares of an earlier hive
// that died with one (New).
func removeSpareLogs(logDir string) {
	ents, _ := os.ReadDir(logDir)
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, ".") && strings.HasSuffix(n, spareLogSuffix) {
			_ = os.Remove(filepath.Join(logDir, n))
		}
	}
}
