// Package cluster is SPEC §12: a hive registers itself and its workers in
// etcd under one lease (Registrar), and a queen keeps an in-memory view of
// every hive from one watch on the prefix (View). The keys:
//
//	<prefix>hives/<node>               HiveRecord
//	<prefix>workers/<node>/<worker_id> WorkerRecord
//
// Both live under the hive's lease: a hive that dies or is cut off vanishes
// when the lease expires.
package cluster

import (
	"strings"
	"time"
)

// HiveRecord is the value of <prefix>hives/<node>.
type HiveRecord struct {
	Node      string    `json:"node"`
	URL       string    `json:"url"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	Capacity  Capacity  `json:"capacity"`
	Models    []string  `json:"models"`
	// GPUModels are the models (of Models) whose profile runs GPU workers
	// (gpu: true): a queen ranks hives for them by VRAM first.
	GPUModels []string `json:"gpu_models,omitempty"`
	// Aliases maps each alias in Models to the model it names: a worker's
	// record names the model, a request may name an alias.
	Aliases   map[string]string `json:"aliases,omitempty"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// Capacity is what a hive has room for.
type Capacity struct {
	CPUs        int   `json:"cpus"`
	MemoryTotal int64 `json:"memory_total"`
	MemoryFree  int64 `json:"memory_free"`
	GPUs        []GPU `json:"gpus"`
}

// GPU is one device of a hive.
type GPU struct {
	Index       int    `json:"index"`
	UUID        string `json:"uuid,omitempty"`
	Name        string `json:"name,omitempty"`
	MemoryTotal int64  `json:"memory_total"`
	// MemoryFree is what a new worker may take on the device (free less
	// the hive's VRAM reserve and reservations), rounded down to 64 MiB.
	MemoryFree int64 `json:"memory_free"`
}

// WorkerRecord is the value of <prefix>workers/<node>/<worker_id>.
type WorkerRecord struct {
	ID             string `json:"id"`
	Model          string `json:"model"`
	State          string `json:"state"`
	InFlight       int    `json:"in_flight"`
	MaxConcurrency int    `json:"max_concurrency"`
}

// Ready reports whether the worker takes requests (idle or busy).
func (w WorkerRecord) Ready() bool { return w.State == "idle" || w.State == "busy" }

// Free reports whether the worker is ready with a free slot.
func (w WorkerRecord) Free() bool {
	c := w.MaxConcurrency
	if c <= 0 {
		c = 1
	}
	return w.Ready() && w.InFlight < c
}

// HiveKey is the key of node's hive record.
func HiveKey(prefix, node string) string { return prefix + "hives/" + node }

// WorkersPrefix is the prefix of node's worker keys.
func WorkersPrefix(prefix, node string) string { return prefix + "workers/" + node + "/" }

// WorkerKey is the key of one worker's record.
func WorkerKey(prefix, node, id string) string { return WorkersPrefix(prefix, node) + id }

// parseKey splits a key under prefix into its kind ("hives" or "workers"),
// node and worker id.
func parseKey(prefix, key string) (kind, node, id string, ok bool) {
	rest, found := strings.CutPrefix(key, prefix)
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 2 && parts[0] == "hives" && parts[1] != "":
		return "hives", parts[1], "", true
	case len(parts) == 3 && parts[0] == "workers" && parts[1] != "" && parts[2] != "":
		return "workers", parts[1], parts[2], true
	}
	return "", "", "", false
}
