package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/refworker"
)

// restartAlways restarts a killed worker at once, forever, so one worker
// can be killed again and again (window 1ms: no failure is remembered).
const restartAlways = "  restart: {policy: always, base_delay: 0s, max_delay: 1s, jitter: 0, max_failures: 1000, window: 1ms, reset_after: 300s}\n"

// readStamp waits (bounded) until file holds "PID NS" for pid and returns NS
// as a time. The reference worker writes it after the hive accepted its
// ready callback; the generic worker writes a bare "NS" (pid 0 accepts it).
func readStamp(file string, pid int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		path := file
		if pid != 0 {
			path = refworker.StampPath(file, pid)
		}
		b, err := os.ReadFile(path)
		if err == nil {
			f := strings.Fields(string(b))
			switch {
			case pid == 0 && len(f) == 1:
				ns, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return time.Unix(0, ns), nil
				}
			case len(f) == 2 && f[0] == strconv.Itoa(pid):
				ns, err := strconv.ParseInt(f[1], 10, 64)
				if err == nil {
					return time.Unix(0, ns), nil
				}
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("stamp %s for pid %d not written within %s", file, pid, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// crashAndReady kills one worker again and again (restart policy always):
// SIGKILL → failed recorded (crash detection), → new process (loading),
// → idle; and ready-callback latency from each incarnation's stamp.
func (b *Bench) crashAndReady() error {
	h, err := b.startHive(HiveOptions{Settings: "  idle_timeout: 0s\n" + restartAlways})
	if err != nil {
		return err
	}
	defer h.Close()
	stamp := filepath.Join(h.Dir, "ready-stamp")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := h.Spawn(ctx, "", map[string]string{"LLMW_FAKE_READY_STAMP": stamp}, "")
	if err != nil {
		return err
	}
	id := resp.WorkerID
	idle, err := h.Events.WaitFor(id, 30*time.Second, isState("idle"))
	if err != nil {
		return err
	}
	var crash, respawn, ready, callback []float64
	addCallback := func(ev Event) error {
		sent, err := readStamp(stamp, ev.PID, 5*time.Second)
		if err != nil {
			return err
		}
		callback = append(callback, msf(ev.At.Sub(sent)))
		return nil
	}
	if err := addCallback(idle); err != nil {
		return err
	}
	for i := 0; i < b.o.Trials; i++ {
		pid := idle.PID
		t0 := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %d: %w", pid, err)
		}
		failed, err := h.Events.WaitFor(id, 10*time.Second, isState("failed"))
		if err != nil {
			return err
		}
		if failed.Reason != "crashed" {
			return fmt.Errorf("trial %d: failed with reason %q, want crashed", i, failed.Reason)
		}
		crash = append(crash, msf(failed.At.Sub(t0)))
		loading, err := h.Events.WaitFor(id, 10*time.Second, isState("loading"))
		if err != nil {
			return err
		}
		respawn = append(respawn, msf(loading.At.Sub(t0)))
		if idle, err = h.Events.WaitFor(id, 30*time.Second, isState("idle")); err != nil {
			return err
		}
		ready = append(ready, msf(idle.At.Sub(t0)))
		if err := addCallback(idle); err != nil {
			return err
		}
	}
	sec := Result{Section: "supervision", N: 1, Unit: "ms"}
	b.add(sec, "crash detection: SIGKILL → failed recorded", crash, target("p99", 5, "p99 < 5 ms"), "event `at` − time of kill(2)")
	b.add(sec, "ready callback: callback sent → idle", callback, target("p99", 5, "p99 < 5 ms"), "event `at` − worker's clock before the POST")
	b.add(sec, "auto-restart: SIGKILL → new process (loading)", respawn, nil, "restart.base_delay 0")
	b.add(sec, "auto-restart: SIGKILL → ready again (idle)", ready, nil, "includes the worker's own start and model load")
	return nil
}

// readyToIdle spawns a worker of profile with env, waits for it to be idle,
// reads the ready stamp it wrote to file, stops it and waits for its end. It
// returns the milliseconds from the worker's ready stamp to the hive's idle
// event.
func readyToIdle(h *Hive, profile string, env map[string]string, file string, timeout time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := h.Spawn(ctx, profile, env, "")
	if err != nil {
		return 0, err
	}
	id := resp.WorkerID
	defer h.Events.Forget(id)
	idle, err := h.Events.WaitFor(id, timeout, isState("idle"))
	if err != nil {
		return 0, err
	}
	ready, err := readStamp(file, 0, 5*time.Second)
	if err != nil {
		return 0, err
	}
	if _, err := h.Client.Stop(ctx, id); err != nil {
		return 0, err
	}
	if _, err := h.Events.WaitFor(id, 30*time.Second, isState("terminated")); err != nil {
		return 0, err
	}
	return msf(idle.At.Sub(ready)), nil
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func target(stat string, limit float64, text string) *Target {
	return &Target{Stat: stat, Limit: limit, Text: text}
}

func (b *Bench) add(base Result, name string, samples []float64, t *Target, note string) {
	base.Name, base.Note = name, note
	b.R.Add(base, samples, t)
	d := Summarize(samples)
	b.logf("  %-55s N=%-4d trials=%-4d median=%s p99=%s max=%s %s", name, base.N, d.Trials, num(d.Median), num(d.P99), num(d.Max), base.Unit)
}

// genericProfile is the config of a generic (http protocol) profile running
// the generic test worker.
func genericProfile(bin string) string {
	return fmt.Sprintf("profiles:\n  generic:\n    command: [%q, --port, \"{port}\", --model, \"{model}\"]\n"+
		"    protocol: http\n    readiness: {path: /health, status: 200}\n    liveness: {path: /health, status: 200}\n"+
		"    allow_env: [\"GENERIC_*\"]\n", bin)
}

// probeReady measures server ready (/health turned 200, stamped by the
// generic worker) → idle, for servers that are ready at once and for
// servers that load for a random 0–2 s.
func (b *Bench) probeReady() error {
	h, err := b.startHive(HiveOptions{
		Settings: "  idle_timeout: 0s\n  stop_timeout: 2s\n", Extra: genericProfile(b.o.Bins.Generic), Ports: 64,
	})
	if err != nil {
		return err
	}
	defer h.Close()
	runs := []struct {
		name   string
		loadMS func() int
		t      *Target
		note   string
	}{
		{"probe readiness: /health 200 → idle (ready at start)", func() int { return 0 }, target("p99", 50, "p99 < 50 ms"),
			"first probe 25 ms after start"},
		{"probe readiness: /health 200 → idle (load 0–2 s)", func() int { return rand.IntN(2000) }, target("p99", 50, "p99 < 50 ms"),
			"probe on new output, else every 25 ms backing off to 50 ms (SPEC §6)"},
	}
	for _, run := range runs {
		samples, err := b.parallelTrials(8, func(i int) (float64, error) {
			file := filepath.Join(h.Dir, fmt.Sprintf("generic-ready-%d", rand.Int64()))
			defer os.Remove(file)
			return readyToIdle(h, "generic", map[string]string{
				"GENERIC_READY_FILE": file, "GENERIC_LOAD_MS": strconv.Itoa(run.loadMS()),
			}, file, 30*time.Second)
		})
		if err != nil {
			return err
		}
		b.add(Result{Section: "supervision", N: 1, Unit: "ms"}, run.name, samples, run.t, run.note)
	}
	return nil
}

// parallelTrials runs b.o.Trials trials of f with conc at a time and
// returns their samples and every trial's error.
func (b *Bench) parallelTrials(conc int, f func(i int) (float64, error)) ([]float64, error) {
	return trials(b.o.Trials, conc, f)
}

// forceKillRun stops workers that ignore the shutdown request and SIGTERM,
// in batches, and returns for each: stopping → terminated minus the stop
// timeout (from the hive's events), and the stop request → terminated minus
// the stop timeout (from the benchmark's clock).
func (b *Bench) forceKillRun(stopTimeout time.Duration, trials int) (overshoot, fromRequest []float64, err error) {
	h, err := b.startHive(HiveOptions{
		Settings: fmt.Sprintf("  idle_timeout: 0s\n  stop_timeout: %s\n", stopTimeout), Ports: 32,
	})
	if err != nil {
		return nil, nil, err
	}
	defer h.Close()
	const batch = 10
	var mu sync.Mutex
	for done := 0; done < trials; {
		n := min(batch, trials-done)
		ids, _, err := h.SpawnMany(n, n, "", func(int) map[string]string {
			return map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"}
		})
		if err != nil {
			return nil, nil, err
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, id := range ids {
			// Stagger the stops so that the kills measure the hive's timer
			// and kill path, not ten workers dying in the same millisecond.
			if i > 0 {
				time.Sleep(50 * time.Millisecond)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer h.Events.Forget(id)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				t0 := time.Now()
				if _, err := h.Client.Stop(ctx, id); err != nil {
					errs[i] = err
					return
				}
				stopping, err := h.Events.WaitFor(id, 10*time.Second, isState("stopping"))
				if err != nil {
					errs[i] = err
					return
				}
				term, err := h.Events.WaitFor(id, stopTimeout+10*time.Second, isState("terminated"))
				if err != nil {
					errs[i] = err
					return
				}
				mu.Lock()
				overshoot = append(overshoot, msf(term.At.Sub(stopping.At)-stopTimeout))
				fromRequest = append(fromRequest, msf(term.At.Sub(t0)-stopTimeout))
				mu.Unlock()
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, nil, err
		}
		done += n
	}
	if !strings.Contains(readFile(h.LogPath), "Worker did not respond, force-killing") {
		return nil, nil, errors.New("the hive never logged a force kill: the workers did not ignore the stop")
	}
	return overshoot, fromRequest, nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// forceKill measures force-kill accuracy with stop_timeout 500ms (the
// target) and 2s (side by side with supervisord's stopwaitsecs=2).
func (b *Bench) forceKill() error {
	over, req, err := b.forceKillRun(500*time.Millisecond, b.o.Trials)
	if err != nil {
		return err
	}
	sec := Result{Section: "supervision", N: 1, Unit: "ms"}
	b.add(sec, "force kill (stop_timeout 500ms): stopping → terminated − 500ms", over, target("max", 50, "max < 50 ms"),
		"worker ignores SIGTERM and /v1/shutdown; includes SIGKILL, reap, tree check")
	b.add(sec, "force kill (stop_timeout 500ms): stop request → terminated − 500ms", req, target("max", 50, "max < 50 ms"),
		"from the API call, benchmark clock")
	over2, _, err := b.forceKillRun(2*time.Second, max(b.o.Trials/10, 2))
	if err != nil {
		return err
	}
	b.add(sec, "force kill (stop_timeout 2s): stopping → terminated − 2s", over2, target("max", 50, "max < 50 ms"),
		"for the supervisord comparison")
	return nil
}

// shutdown measures SIGTERM → exit of a hive with N workers, a fifth of
// which ignore SIGTERM and the shutdown request (stop_timeout 2s).
func (b *Bench) shutdown() error {
	const stopTimeout = 2 * time.Second
	for _, n := range b.o.ShutdownN {
		var took []float64
		for t := 0; t < b.o.ShutdownTrials; t++ {
			d, err := b.hiveShutdownOnce(n, stopTimeout)
			if err != nil {
				return err
			}
			took = append(took, msf(d))
		}
		b.add(Result{Section: "supervision", N: n, Unit: "ms"}, "hive shutdown: SIGTERM → exit (a fifth ignore SIGTERM)", took,
			target("max", msf(stopTimeout+time.Second), "max < stop_timeout 2s + 1 s"), "stop_timeout 2s")
	}
	return nil
}

func ignoreFifth(i int) map[string]string {
	if i%5 == 4 {
		return map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"}
	}
	return nil
}

func (b *Bench) hiveShutdownOnce(n int, stopTimeout time.Duration) (time.Duration, error) {
	h, err := b.startHive(HiveOptions{
		Settings: fmt.Sprintf("  idle_timeout: 0s\n  stop_timeout: %s\n", stopTimeout), Ports: n + 16,
	})
	if err != nil {
		return 0, err
	}
	defer h.Close()
	if _, _, err := h.SpawnMany(n, 32, "", ignoreFifth); err != nil {
		return 0, err
	}
	took, err := h.Stop(60 * time.Second)
	if err != nil {
		return took, err
	}
	if left := h.Close(); left > 0 {
		return took, fmt.Errorf("%d worker processes survived the hive's shutdown", left)
	}
	return took, nil
}
