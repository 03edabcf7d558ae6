package models

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// MemAvailable returns the kernel's estimate of memory available for new
// work (MemAvailable in /proc/meminfo), in bytes. It reads one small file and
// is safe for concurrent use.
func MemAvailable() (int64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("models: available memory: %w", err)
	}
	n, err := parseMemAvailable(bytes.NewReader(data))
	if err != nil {
		return 0, fmt.Errorf("models: available memory: /proc/meminfo: %w", err)
	}
	return n, nil
}

// parseMemAvailable finds the "MemAvailable: N kB" line.
func parseMemAvailable(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 1 || len(f) > 2 || (len(f) == 2 && f[1] != "kB") {
			return 0, fmt.Errorf("malformed MemAvailable line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > math.MaxInt64/1024 {
			return 0, fmt.Errorf("malformed MemAvailable line %q", sc.Text())
		}
		if len(f) == 1 {
			return kb, nil // no unit: bytes
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no MemAvailable line (kernel older than 3.14?)")
}

// InsufficientMemoryError says the memory preflight failed, with its numbers
// in bytes. It unwraps to ErrInsufficientMemory.
type InsufficientMemoryError struct {
	Need      int64 // estimated need
	Available int64 // memory available now
	Reserve   int64 // memory that must stay free
	// Basis says how Need was found ("estimate from the GGUF file",
	// "memory_bytes"); empty: file size × 1.2.
	Basis string
}

func (e *InsufficientMemoryError) Error() string {
	basis := e.Basis
	if basis == "" {
		basis = "file size × 1.2"
	}
	return fmt.Sprintf("insufficient memory: the model needs about %s (%s), %s is available and %s must stay free",
		mib(e.Need), basis, mib(e.Available), mib(e.Reserve))
}

// Unwrap returns ErrInsufficientMemory.
func (e *InsufficientMemoryError) Unwrap() error { return ErrInsufficientMemory }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// NeedBytes returns the memory a model of modelSize bytes is estimated to
// need: modelSize × 1.2, rounded up, saturating instead of overflowing. A
// negative size counts as 0.
func NeedBytes(modelSize int64) int64 {
	if modelSize <= 0 {
		return 0
	}
	extra := modelSize/5 + min(modelSize%5, 1) // ceil(size / 5)
	if modelSize > math.MaxInt64-extra {
		return math.MaxInt64
	}
	return modelSize + extra
}

// Preflight checks that loading a model of modelSize bytes leaves at least
// reserve bytes of the available memory free. It returns nil when it does, or
// when reserve is negative (the preflight is disabled); otherwise an
// *InsufficientMemoryError. It is pure.
func Preflight(modelSize, available, reserve int64) error {
	return PreflightNeed(NeedBytes(modelSize), available, reserve, "")
}

// PreflightNeed checks that a worker needing need bytes (an estimate found
// as basis says, for the error's message) leaves at least reserve bytes of
// the available memory free; it is Preflight for a need that is not the
// file size × 1.2. It is pure.
func PreflightNeed(need, available, reserve int64, basis string) error {
	if reserve < 0 {
		return nil
	}
	need = max(need, 0)
	// available − need < reserve, without overflow: available < need + reserve.
	if need > math.MaxInt64-reserve || available < need+reserve {
		return &InsufficientMemoryError{Need: need, Available: available, Reserve: reserve, Basis: basis}
	}
	return nil
}

// MemTotal returns MemTotal from /proc/meminfo, in bytes.
func MemTotal() (int64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("models: total memory: %w", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil && kb >= 0 && kb <= math.MaxInt64/1024 {
					return kb * 1024, nil
				}
			}
			break
		}
	}
	return 0, fmt.Errorf("models: total memory: no MemTotal line in /proc/meminfo")
}
