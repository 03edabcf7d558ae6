package gpu

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The two queries, in NVIDIA's documented CSV format (nvidia-smi
// --help-query-gpu, --help-query-compute-apps). With nounits, memory is in
// MiB and utilisation in percent.
var (
	queryGPUArgs  = []string{"--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu", "--format=csv,noheader,nounits"}
	queryAppsArgs = []string{"--query-compute-apps=pid,used_memory,gpu_uuid", "--format=csv,noheader,nounits"}
)

// NvidiaSMI reads the inventory by running nvidia-smi.
type NvidiaSMI struct {
	// Path is the nvidia-smi program.
	Path string
	// Timeout bounds each run; 0 means 10 s (a wedged driver can make
	// nvidia-smi hang).
	Timeout time.Duration
}

// FindNvidiaSMI looks nvidia-smi up on PATH.
func FindNvidiaSMI() (*NvidiaSMI, bool) {
	p, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil, false
	}
	return &NvidiaSMI{Path: p}, true
}

// Name returns "nvidia-smi".
func (s *NvidiaSMI) Name() string { return "nvidia-smi" }

// List runs both queries. A failing compute-apps query (some drivers and
// vGPUs do not support it) leaves the processes nil, not an error.
func (s *NvidiaSMI) List(ctx context.Context) ([]GPU, []Process, error) {
	out, err := s.run(ctx, queryGPUArgs)
	if err != nil {
		return nil, nil, err
	}
	gpus, err := ParseGPUs(out)
	if err != nil {
		return nil, nil, fmt.Errorf("nvidia-smi: %w", err)
	}
	var procs []Process
	if out, err := s.run(ctx, queryAppsArgs); err == nil {
		procs, _ = ParseProcesses(out)
	}
	return gpus, procs, nil
}

func (s *NvidiaSMI) run(ctx context.Context, args []string) ([]byte, error) {
	to := s.Timeout
	if to <= 0 {
		to = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Path, args...)
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(string(out)) // nvidia-smi prints its failures on stdout
		}
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		return nil, fmt.Errorf("nvidia-smi %s: %w: %s", args[0], err, msg)
	}
	return out, nil
}

const mib = 1 << 20

// ParseGPUs parses the output of nvidia-smi
// --query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu
// --format=csv,noheader,nounits: one line per device, memory in MiB. A value
// the driver does not report ("[N/A]", "[Not Supported]") reads as 0 for
// memory and -1 for utilisation. The result is sorted by index.
func ParseGPUs(out []byte) ([]GPU, error) {
	var gpus []GPU
	for n, line := range lines(out) {
		f := splitCSV(line)
		if len(f) < 6 {
			return nil, fmt.Errorf("line %d: want 6 fields (index, uuid, name, memory.total, memory.used, utilization.gpu), got %q", n+1, line)
		}
		// A name with a comma in it spreads over several fields: the
		// three numbers are always the last three.
		if len(f) > 6 {
			f = append(append(f[:2:2], strings.Join(f[2:len(f)-3], ", ")), f[len(f)-3:]...)
		}
		idx, err := strconv.Atoi(f[0])
		if err != nil || idx < 0 {
			return nil, fmt.Errorf("line %d: bad index %q", n+1, f[0])
		}
		if f[1] == "" {
			return nil, fmt.Errorf("line %d: empty uuid", n+1)
		}
		g := GPU{Index: idx, UUID: f[1], Name: f[2], MemoryTotal: mibField(f[3]), MemoryUsed: mibField(f[4]), Utilization: -1}
		if u, err := strconv.Atoi(f[5]); err == nil && u >= 0 && u <= 100 {
			g.Utilization = u
		}
		gpus = append(gpus, g)
	}
	sort.Slice(gpus, func(i, j int) bool { return gpus[i].Index < gpus[j].Index })
	return gpus, nil
}

// ParseProcesses parses the output of nvidia-smi
// --query-compute-apps=pid,used_memory,gpu_uuid --format=csv,noheader,nounits
// (memory in MiB). Lines it cannot read ("No running processes found" on
// some versions) are skipped.
func ParseProcesses(out []byte) ([]Process, error) {
	var ps []Process
	for _, line := range lines(out) {
		f := splitCSV(line)
		if len(f) != 3 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil || pid <= 0 {
			continue
		}
		ps = append(ps, Process{PID: pid, MemoryUsed: mibField(f[1]), UUID: f[2]})
	}
	return ps, nil
}

func lines(out []byte) []string {
	var ls []string
	for l := range strings.SplitSeq(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

func splitCSV(line string) []string {
	f := strings.Split(line, ",")
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	return f
}

// mibField reads a MiB count; what is not a number ("[N/A]", "NaN") or
// does not fit in an int64 of bytes is 0: a float too large for int64
// converts to a negative number, which the fuzzer found.
func mibField(s string) int64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v >= 0) || v*mib >= math.MaxInt64 {
		return 0
	}
	return int64(v * mib)
}
