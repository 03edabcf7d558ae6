package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// rssBytes reads VmRSS of pid from /proc/PID/status.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}

// cpuTime reads utime+stime of pid (all its threads) from /proc/PID/stat,
// and its thread count.
func cpuTime(pid int) (time.Duration, int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("pid %d: bad stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15, threads 20.
	if len(f) < 18 {
		return 0, 0, fmt.Errorf("pid %d: short stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	th, _ := strconv.Atoi(f[17])
	return time.Duration(ut+st) * (time.Second / 100), th, nil
}

const mib = 1 << 20

// cpuPercent measures the CPU pid uses over window, in percent of one core.
// extra, when not nil, is also measured over the same window (the sum of
// their CPU, in percent of one core; processes that vanish count as 0).
func cpuPercent(pid int, extra []int, window time.Duration) (self, others float64, err error) {
	sum := func(pids []int) time.Duration {
		var t time.Duration
		for _, p := range pids {
			if c, _, err := cpuTime(p); err == nil {
				t += c
			}
		}
		return t
	}
	a, _, err := cpuTime(pid)
	if err != nil {
		return 0, 0, err
	}
	ea := sum(extra)
	t0 := time.Now()
	time.Sleep(window)
	b, _, err := cpuTime(pid)
	if err != nil {
		return 0, 0, err
	}
	eb := sum(extra)
	el := time.Since(t0)
	return 100 * float64(b-a) / float64(el), 100 * float64(eb-ea) / float64(el), nil
}

func mkdir(p string) error { return os.MkdirAll(p, 0o700) }
