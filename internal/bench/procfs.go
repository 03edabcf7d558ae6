package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rbee/rbee-hive/internal/procstat"
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
	st, err := procstat.Read("", pid)
	if err != nil {
		return 0, 0, err
	}
	return time.Duration(st.UTime+st.STime) * (time.Second / 100), st.Threads, nil
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
