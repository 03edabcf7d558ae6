package gpu

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/rbee/rbee-hive/internal/procstat"
)

// ErrInsufficientVRAM: no device can hold what a worker needs (API: 507
// INSUFFICIENT_VRAM).
var ErrInsufficientVRAM = errors.New("insufficient VRAM")

// Reservation is VRAM a worker on a device may still take: a worker that is
// loading holds its estimate minus what it is already seen to use (that part
// is in the device's used memory already). Spawns between their preflight
// and their worker's first listing hold their whole estimate.
type Reservation struct {
	WorkerID string
	UUID     string
	Bytes    int64
}

// DeviceAccount is one device's VRAM book: what the driver reports, what
// must stay free, what loading workers have reserved, and what is left for
// a new worker. Bytes throughout.
type DeviceAccount struct {
	GPU
	Reserve  int64 // vram_reserve_bytes
	Reserved int64 // sum of the reservations on this device
	// Available is Free − Reserve − Reserved; it may be negative.
	Available int64
	// Workers are the ids of the workers holding a reservation here.
	Workers []string
}

// Account books the reservations against the snapshot's devices. It is
// pure. Reservations on devices not in the snapshot are ignored.
func Account(s *Snapshot, reserve int64, res []Reservation) []DeviceAccount {
	if s == nil {
		return nil
	}
	out := make([]DeviceAccount, len(s.GPUs))
	for i, g := range s.GPUs {
		a := DeviceAccount{GPU: g, Reserve: max(0, reserve)}
		for _, r := range res {
			if r.UUID == g.UUID && r.Bytes > 0 {
				a.Reserved += r.Bytes
				a.Workers = append(a.Workers, r.WorkerID)
			}
		}
		a.Available = g.Free() - a.Reserve - a.Reserved
		out[i] = a
	}
	return out
}

// InvalidDeviceError: the asked device index is not in the inventory (API:
// 400 INVALID_DEVICE). It unwraps to ErrNoSuchDevice.
type InvalidDeviceError struct {
	Asked  int   // the asked index; -1 for auto
	Have   []int // the indexes there are
	Source string
}

func (e *InvalidDeviceError) Error() string {
	if len(e.Have) == 0 {
		return fmt.Sprintf("this hive has no GPUs (inventory: %s), so a GPU worker cannot be placed", e.Source)
	}
	return fmt.Sprintf("there is no GPU %d (this hive has %s)", e.Asked, joinInts(e.Have))
}

// Unwrap returns ErrNoSuchDevice.
func (e *InvalidDeviceError) Unwrap() error { return ErrNoSuchDevice }

// InsufficientVRAMError says a worker fits on no device, with the numbers
// of the device that came closest (the asked one, or for auto the one with
// the most available memory). Bytes throughout. It unwraps to
// ErrInsufficientVRAM.
type InsufficientVRAMError struct {
	Device   int
	UUID     string
	Free     int64 // the device's free memory as the driver reports it
	Reserve  int64 // vram_reserve_bytes
	Reserved int64 // reserved for workers that do not hold their estimate yet
	Need     int64 // the worker's estimate
	Auto     bool  // the device was picked by auto (no device fits)
}

func (e *InsufficientVRAMError) Error() string {
	where := fmt.Sprintf("GPU %d (%s)", e.Device, e.UUID)
	if e.Auto {
		where = "any GPU; the one with the most room is " + where
	}
	return fmt.Sprintf("insufficient VRAM: the worker needs %s but %s has %s free, of which %s must stay free (vram_reserve_bytes) and %s is reserved for workers that are loading",
		MiB(e.Need), where, MiB(e.Free), MiB(e.Reserve), MiB(e.Reserved))
}

// Unwrap returns ErrInsufficientVRAM.
func (e *InsufficientVRAMError) Unwrap() error { return ErrInsufficientVRAM }

// Deficit is how much more the device would need to have free: what
// evicting workers on it must give back.
func (e *InsufficientVRAMError) Deficit() int64 { return e.Need - (e.Free - e.Reserve - e.Reserved) }

// Pick chooses a device for a worker that needs need bytes: the device with
// index asked, or for asked < 0 (auto) the one with the most available
// memory that holds need. It returns an *InvalidDeviceError for an index
// that is not there (or no devices at all) and an *InsufficientVRAMError
// when the device (auto: every device) cannot hold need. It is pure.
func Pick(accts []DeviceAccount, asked int, need int64, source string) (DeviceAccount, error) {
	if asked >= 0 {
		for _, a := range accts {
			if a.Index == asked {
				if a.Available < need {
					return a, insufficient(a, need, false)
				}
				return a, nil
			}
		}
		return DeviceAccount{}, &InvalidDeviceError{Asked: asked, Have: indexes(accts), Source: source}
	}
	if len(accts) == 0 {
		return DeviceAccount{}, &InvalidDeviceError{Asked: asked, Source: source}
	}
	best := accts[0]
	for _, a := range accts[1:] {
		if a.Available > best.Available {
			best = a
		}
	}
	if best.Available < need {
		return best, insufficient(best, need, true)
	}
	return best, nil
}

func insufficient(a DeviceAccount, need int64, auto bool) error {
	return &InsufficientVRAMError{Device: a.Index, UUID: a.UUID, Free: a.Free(), Reserve: a.Reserve,
		Reserved: a.Reserved, Need: need, Auto: auto}
}

func indexes(accts []DeviceAccount) []int {
	out := make([]int, len(accts))
	for i, a := range accts {
		out[i] = a.Index
	}
	return out
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	if len(s) == 1 {
		return "only GPU " + s[0]
	}
	return "GPUs " + strings.Join(s, ", ")
}

// MiB formats a byte count in MiB.
func MiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// Attribute sums the processes' GPU memory by worker: owner maps a PID to
// the worker whose process tree it belongs to. Processes of no worker are
// left out.
func Attribute(procs []Process, owner func(pid int) (string, bool)) map[string]int64 {
	out := map[string]int64{}
	for _, p := range procs {
		if id, ok := owner(p.PID); ok {
			out[id] += p.MemoryUsed
		}
	}
	return out
}

// TreeOwner returns an owner function for Attribute: a PID belongs to the
// worker whose PID is the process itself, its process group, or one of its
// ancestors (read from procRoot/PID/stat; "" means /proc). roots maps the
// workers' PIDs (each a process group leader) to their ids.
func TreeOwner(procRoot string, roots map[int]string) func(pid int) (string, bool) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	return func(pid int) (string, bool) {
		for range 64 { // a bounded walk up the tree
			if id, ok := roots[pid]; ok {
				return id, true
			}
			ppid, pgid, ok := parents(procRoot, pid)
			if !ok {
				return "", false
			}
			if id, ok := roots[pgid]; ok {
				return id, true
			}
			if ppid <= 1 {
				return "", false
			}
			pid = ppid
		}
		return "", false
	}
}

// parents reads fields 4 (ppid) and 5 (pgrp) of /proc/PID/stat.
func parents(procRoot string, pid int) (ppid, pgid int, ok bool) {
	st, err := procstat.Read(procRoot, pid)
	return st.PPID, st.PGRP, err == nil
}
