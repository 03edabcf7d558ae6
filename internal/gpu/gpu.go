// Package gpu knows the machine's GPUs (SPEC §11): an inventory behind one
// small interface (Source) with three implementations — NVIDIA through the
// nvidia-smi tool, a JSON file for tests and demos, and none — a Refresher
// that keeps a lock-free snapshot of it fresh, and the per-device VRAM
// accounting that spawn placement and eviction share (account.go).
//
// Why nvidia-smi and not NVML (github.com/NVIDIA/go-nvml): go-nvml needs cgo
// and dlopens libnvidia-ml.so at run time, so the hive could no longer be a
// static CGO_ENABLED=0 binary. nvidia-smi ships with every NVIDIA driver
// (it is NVML's own command-line front end, so the numbers are the same),
// answers both questions the hive asks — the devices, and the memory each
// compute process holds — in a stable, documented CSV format, and costs one
// short fork every few seconds. Where it is absent, `auto` quietly means no
// GPUs.
//
// This package is a leaf: it imports nothing of the hive's.
package gpu

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// GPU is one device as the inventory saw it. Memory is in bytes.
type GPU struct {
	Index       int    `json:"index"`
	UUID        string `json:"uuid"`
	Name        string `json:"name"`
	MemoryTotal int64  `json:"memory_total_bytes"`
	MemoryUsed  int64  `json:"memory_used_bytes"`
	// Utilization is the percentage of time a kernel ran over the last
	// sample period, 0..100; -1 when the driver does not say.
	Utilization int `json:"utilization_percent"`
}

// Free is the device's memory not in use, never negative.
func (g GPU) Free() int64 { return max(0, g.MemoryTotal-g.MemoryUsed) }

// Process is one compute process holding memory on a GPU.
type Process struct {
	PID        int    `json:"pid"`
	UUID       string `json:"gpu_uuid"`
	MemoryUsed int64  `json:"used_memory_bytes"`
}

// Source is an inventory of GPUs. Implementations must be safe for
// concurrent use; List may block (it may run a program) and honours ctx.
type Source interface {
	// List returns the devices, sorted by index, and the compute processes
	// holding memory on them (nil when the source cannot tell).
	List(ctx context.Context) ([]GPU, []Process, error)
	// Name says what the source is, for logs and status ("nvidia-smi",
	// "file:/path", "none").
	Name() string
}

// None is the source of a machine without GPUs.
type None struct{}

// List returns nothing.
func (None) List(context.Context) ([]GPU, []Process, error) { return nil, nil, nil }

// Name returns "none".
func (None) Name() string { return "none" }

// Open returns the source a gpu_inventory setting names:
//   - "none": no GPUs;
//   - "" or "auto": nvidia-smi when it is on PATH, else none (quietly: a
//     machine without an NVIDIA driver simply has no GPUs);
//   - an absolute path: a JSON file (see File).
func Open(spec string) (Source, error) {
	switch spec {
	case "none":
		return None{}, nil
	case "", "auto":
		if s, ok := FindNvidiaSMI(); ok {
			return s, nil
		}
		return None{}, nil
	}
	if len(spec) > 0 && spec[0] == '/' {
		return NewFile(spec), nil
	}
	return nil, fmt.Errorf("gpu_inventory: want auto, none or an absolute path to a JSON file, got %q", spec)
}

// ErrNoSuchDevice: the asked device is not in the inventory.
var ErrNoSuchDevice = errors.New("no such GPU")

// Snapshot is one reading of the inventory. It is immutable once published.
type Snapshot struct {
	GPUs      []GPU
	Processes []Process
	At        time.Time // when it was read
	Err       error     // the last read's error, if any (GPUs are then the previous reading's)
	Source    string
	// Static says the memory figures do not follow what runs on the GPUs
	// (a JSON file describes them as if the hive's workers held nothing):
	// every live worker placed on a device then holds its estimate in the
	// book, not only the workers still loading.
	Static bool
}

// ByIndex returns the device with index i.
func (s *Snapshot) ByIndex(i int) (GPU, bool) {
	if s == nil {
		return GPU{}, false
	}
	for _, g := range s.GPUs {
		if g.Index == i {
			return g, true
		}
	}
	return GPU{}, false
}

// ByUUID returns the device with the given UUID.
func (s *Snapshot) ByUUID(uuid string) (GPU, bool) {
	if s == nil {
		return GPU{}, false
	}
	for _, g := range s.GPUs {
		if g.UUID == uuid {
			return g, true
		}
	}
	return GPU{}, false
}
