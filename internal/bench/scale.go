package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/testutil/daemonkit"
)

// scale runs, for each N, one hive with N idle reference workers at the
// default probe and heartbeat intervals and measures its cost.
func (b *Bench) scale() error {
	largest := slices.Max(b.o.ScaleN)
	for _, n := range b.o.ScaleN {
		trials := b.o.ScaleCrashTrials
		if n != largest {
			trials = max(trials/4, 1)
		}
		if err := b.scaleOne(n, trials); err != nil {
			return fmt.Errorf("N=%d: %w", n, err)
		}
	}
	return nil
}

// scaleSettings: default health and heartbeat intervals; no idle timeout
// (the workers must stay); restart at once (crash trials); stop_timeout 2s
// (a fifth of the workers ignore the stop).
const scaleSettings = "  idle_timeout: 0s\n  stop_timeout: 2s\n" + restartAlways

func (b *Bench) scaleOne(n, crashTrials int) error {
	ho := HiveOptions{Settings: scaleSettings, Ports: n + 64}
	var pprofURL string
	if b.o.ProfileDir != "" {
		port, err := daemonkit.FreeRange(1)
		if err != nil {
			return err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		ho.Args = []string{"--pprof", addr}
		pprofURL = "http://" + addr + "/debug/pprof/"
	}
	h, err := b.startHive(ho)
	if err != nil {
		return err
	}
	defer h.Close()
	sec := Result{Section: "scale", N: n}
	stamps := filepath.Join(h.Dir, "stamps")
	if err := mkdir(stamps); err != nil {
		return err
	}
	stampOf := func(i int) string { return filepath.Join(stamps, strconv.Itoa(i)) }
	b.logf("  N=%d: spawning", n)
	ids, took, err := h.SpawnMany(n, 32, "", func(i int) map[string]string {
		env := map[string]string{"LLMW_FAKE_READY_STAMP": stampOf(i)}
		for k, v := range ignoreFifth(i) {
			env[k] = v
		}
		return env
	})
	if err != nil {
		return err
	}
	sec.Unit = "workers/s"
	b.add(sec, "spawn throughput (32 concurrent spawns, to idle)", []float64{float64(n) / took.Seconds()}, nil,
		fmt.Sprintf("%d workers in %s", n, took.Round(time.Millisecond)))

	time.Sleep(b.o.Settle)
	pidOf, err := h.Pids()
	if err != nil {
		return err
	}
	var pids []int
	for _, p := range pidOf {
		pids = append(pids, p)
	}
	b.logf("  N=%d: idle CPU over %s", n, b.o.IdleWindow)
	profDone := make(chan error, 1)
	if pprofURL != "" {
		go func() {
			profDone <- fetch(fmt.Sprintf("%sprofile?seconds=%d", pprofURL, int(b.o.IdleWindow.Seconds())),
				filepath.Join(b.o.ProfileDir, fmt.Sprintf("hive-idle-N%d.cpu.pprof", n)))
		}()
	}
	hiveCPU, workersCPU, err := cpuPercent(h.PID, pids, b.o.IdleWindow)
	if err != nil {
		return err
	}
	if pprofURL != "" {
		if err := <-profDone; err != nil {
			b.logf("  cpu profile: %v", err)
		}
		if err := fetch(pprofURL+"heap", filepath.Join(b.o.ProfileDir, fmt.Sprintf("hive-N%d.heap.pprof", n))); err != nil {
			b.logf("  heap profile: %v", err)
		}
	}
	rss, err := rssBytes(h.PID)
	if err != nil {
		return err
	}
	// Idle workers must stay up: any restart or end while nothing happened
	// is a supervision failure (heartbeat or health verdicts under load).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	all, err := h.Client.List(ctx, true)
	cancel()
	if err != nil {
		return err
	}
	restarted, reasons := 0, map[string]int{}
	for _, w := range all {
		if w.RestartCount > 0 || w.State != "idle" {
			restarted++
			reasons[fmt.Sprintf("%s/%s", w.State, w.Reason)]++
		}
	}
	sec.Unit = "workers"
	b.add(sec, "workers not idle or restarted after the idle window", []float64{float64(restarted)},
		target("max", 0.5, "0"), reasonText(reasons))
	var wrss, threads []float64
	for _, p := range pids {
		if r, err := rssBytes(p); err == nil {
			wrss = append(wrss, float64(r)/mib)
		}
		if _, th, err := cpuTime(p); err == nil {
			threads = append(threads, float64(th))
		}
	}
	big := n == 1000
	sec.Unit = "MiB"
	var t *Target
	if big {
		t = target("median", 150, "< 150 MB at 1000")
	}
	b.add(sec, "hive RSS (VmRSS)", []float64{float64(rss) / mib}, t, "")
	sec.Unit = "% of one core"
	t = nil
	if big {
		t = target("median", 3, "< 3 % at 1000")
	}
	b.add(sec, "hive CPU, idle", []float64{hiveCPU}, t, fmt.Sprintf("utime+stime over %s; the default intervals (health 10s, heartbeat 10s; a probe is skipped while heartbeats are fresh)", b.o.IdleWindow))
	b.add(sec, "all workers' CPU together, idle", []float64{workersCPU}, nil, "heartbeats and probes, worker side")
	if n == slices.Max(b.o.ScaleN) {
		// The floor under the hive's figure, measured while the hive and
		// its workers still run (the same machine load).
		iv := config.DefaultSettings().Heartbeat.Interval.D()
		b.logf("  N=%d: the heartbeat floor over %s", n, b.o.IdleWindow)
		floor, err := b.heartbeatFloor(n, iv, b.o.IdleWindow)
		if err != nil {
			return err
		}
		b.add(sec, "floor: a bare net/http server answering the same heartbeats", []float64{floor}, nil,
			fmt.Sprintf("its own process, %d kept-alive clients, one POST /v1/heartbeat each every %s; what any HTTP heartbeat costs here before the hive does anything with it", n, iv))
	}
	sec.Unit = "MiB"
	b.add(sec, "reference worker RSS (per worker)", wrss, nil, "VmRSS of each worker")
	sec.Unit = "threads"
	b.add(sec, "reference worker threads (per worker)", threads, nil, "")

	sec.Unit = "ms"
	// Back to back, the per-worker resource stats (cached 2 s) are mostly
	// reused; paced (one call every 50 ms) also pays their refresh now and then, as
	// a dashboard polling the hive would.
	list, size, err := timeGets(h.URL+"/v1/workers/list", b.o.ListCalls, 0, nil)
	if err != nil {
		return err
	}
	b.add(sec, "GET /v1/workers/list, back to back", list, nil, fmt.Sprintf("%d KiB body, read in full", size>>10))
	if pprofURL != "" {
		secs := max(1, int((time.Duration(b.o.ListCalls) * b.o.ListGap).Seconds()))
		go func() {
			profDone <- fetch(fmt.Sprintf("%sprofile?seconds=%d", pprofURL, secs),
				filepath.Join(b.o.ProfileDir, fmt.Sprintf("hive-list-N%d.cpu.pprof", n)))
		}()
	}
	list, _, err = timeGets(h.URL+"/v1/workers/list", b.o.ListCalls, b.o.ListGap, nil)
	if err != nil {
		return err
	}
	if pprofURL != "" {
		if err := <-profDone; err != nil {
			b.logf("  cpu profile: %v", err)
		}
	}
	t = nil
	if big {
		t = target("p99", 20, "p99 < 20 ms at 1000")
	}
	b.add(sec, "GET /v1/workers/list, paced (one call every 50 ms)", list, t, "includes the stats refreshes")
	get, _, err := timeGets("", b.o.ListCalls, b.o.ListGap, func() string { return h.URL + "/v1/workers/" + ids[rand.IntN(len(ids))] })
	if err != nil {
		return err
	}
	b.add(sec, "GET /v1/workers/{id}, paced (one call every 50 ms)", get, nil, "random workers")

	// Crash detection with N workers, on random workers.
	b.logf("  N=%d: %d crash trials", n, crashTrials)
	var crash, respawn, callback []float64
	index := map[string]int{}
	for i, id := range ids {
		index[id] = i
	}
	for k := 0; k < crashTrials; k++ {
		id := ids[rand.IntN(len(ids))]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		info, err := h.Client.Get(ctx, id)
		cancel()
		if err != nil {
			return err
		}
		if info.State != "idle" {
			k--
			continue
		}
		pid := info.PID
		t0 := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %d: %w", pid, err)
		}
		failed, err := h.Events.WaitFor(id, 10*time.Second, isState("failed"))
		if err != nil {
			return err
		}
		crash = append(crash, msf(failed.At.Sub(t0)))
		loading, err := h.Events.WaitFor(id, 10*time.Second, isState("loading"))
		if err != nil {
			return err
		}
		respawn = append(respawn, msf(loading.At.Sub(t0)))
		idle, err := h.Events.WaitFor(id, 30*time.Second, isState("idle"))
		if err != nil {
			return err
		}
		sent, err := readStamp(stampOf(index[id]), idle.PID, 5*time.Second)
		if err != nil {
			return err
		}
		callback = append(callback, msf(idle.At.Sub(sent)))
	}
	t = nil
	if big {
		t = target("p99", 5, "p99 < 5 ms")
	}
	b.add(sec, "crash detection: SIGKILL → failed recorded", crash, t, "random workers")
	b.add(sec, "auto-restart: SIGKILL → new process (loading)", respawn, nil, "")
	t = nil
	if big {
		t = target("p99", 5, "p99 < 5 ms")
	}
	b.add(sec, "ready callback: callback sent → idle", callback, t, "after each crash restart")

	b.logf("  N=%d: stopping the hive", n)
	stop, err := h.Stop(120 * time.Second)
	if err != nil {
		return err
	}
	if left := h.Close(); left > 0 {
		return fmt.Errorf("%d worker processes survived the hive's shutdown", left)
	}
	t = nil
	if big {
		t = target("median", 5000, "< stop_timeout 2s + 3 s")
	}
	b.add(sec, "time to stop all: SIGTERM → hive exit (a fifth ignore SIGTERM)", []float64{msf(stop)}, t, "stop_timeout 2s")
	return nil
}

// timeGets times calls GETs (url, or next() each time) on one keep-alive
// connection, gap apart, reading each body in full. It returns the latencies in ms and
// the size of the last body.
func timeGets(url string, calls int, gap time.Duration, next func() string) ([]float64, int, error) {
	c := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	var out []float64
	size := 0
	for i := 0; i < calls+1; i++ { // the first call opens the connection and is not counted
		u := url
		if next != nil {
			u = next()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			cancel()
			return nil, 0, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		cancel()
		if err != nil {
			return nil, 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, 0, fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
		}
		if i > 0 {
			out = append(out, msf(d))
		}
		size = int(n)
		time.Sleep(gap)
	}
	return out, size, nil
}

// fetch GETs url into file.
func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	if err := mkdir(filepath.Dir(file)); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func reasonText(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%d %s", v, k))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
