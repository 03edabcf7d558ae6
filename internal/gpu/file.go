package gpu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"
)

// FileInventory is the JSON document a File source reads (SPEC §11):
//
//	{"gpus":[{"index":0,"uuid":"GPU-…","name":"…","memory_total_bytes":N,
//	          "memory_used_bytes":N,"utilization_percent":N}],
//	 "processes":[{"pid":N,"gpu_uuid":"GPU-…","used_memory_bytes":N}]}
//
// "processes" is optional: the compute processes holding GPU memory, as
// nvidia-smi --query-compute-apps reports them (tests use it to give a
// worker some GPU memory).
type FileInventory struct {
	GPUs      []GPU     `json:"gpus"`
	Processes []Process `json:"processes,omitempty"`
}

// File reads the inventory from a JSON file, again whenever the file
// changes (its size, modification time or inode), so a test or demo can
// edit it while the hive runs. Safe for concurrent use.
type File struct {
	path string

	mu    sync.Mutex
	key   fileKey
	gpus  []GPU
	procs []Process
}

type fileKey struct {
	ino, size int64
	mtime     time.Time
}

// NewFile returns a source reading path. The file need not exist yet.
func NewFile(path string) *File { return &File{path: path} }

// Static returns true: the file does not change as workers load.
func (f *File) Static() bool { return true }

// Name returns "file:" and the path.
func (f *File) Name() string { return "file:" + f.path }

// List returns the file's devices, re-reading it if it changed.
func (f *File) List(context.Context) ([]GPU, []Process, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return nil, nil, fmt.Errorf("gpu inventory: %w", err)
	}
	k := fileKey{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.ino = int64(st.Ino)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if k == f.key && f.key != (fileKey{}) {
		return f.gpus, f.procs, nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, nil, fmt.Errorf("gpu inventory: %w", err)
	}
	inv, err := ParseFile(data)
	if err != nil {
		return nil, nil, fmt.Errorf("gpu inventory %s: %w", f.path, err)
	}
	f.key, f.gpus, f.procs = k, inv.GPUs, inv.Processes
	return f.gpus, f.procs, nil
}

// ParseFile parses and checks a JSON inventory: unknown keys are errors,
// indexes and uuids are unique, memory is not negative, used is at most
// total. Devices are returned sorted by index.
func ParseFile(data []byte) (FileInventory, error) {
	var inv FileInventory
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&inv); err != nil {
		return FileInventory{}, err
	}
	idx, ids := map[int]bool{}, map[string]bool{}
	for i, g := range inv.GPUs {
		switch {
		case g.Index < 0 || idx[g.Index]:
			return FileInventory{}, fmt.Errorf("gpus[%d]: index %d is negative or repeated", i, g.Index)
		case g.UUID == "" || ids[g.UUID]:
			return FileInventory{}, fmt.Errorf("gpus[%d]: uuid %q is empty or repeated", i, g.UUID)
		case g.MemoryTotal < 0 || g.MemoryUsed < 0 || g.MemoryUsed > g.MemoryTotal:
			return FileInventory{}, fmt.Errorf("gpus[%d]: want 0 <= memory_used_bytes <= memory_total_bytes", i)
		case g.Utilization < -1 || g.Utilization > 100:
			return FileInventory{}, fmt.Errorf("gpus[%d]: utilization_percent must be 0..100", i)
		}
		idx[g.Index], ids[g.UUID] = true, true
	}
	sort.Slice(inv.GPUs, func(i, j int) bool { return inv.GPUs[i].Index < inv.GPUs[j].Index })
	return inv, nil
}
