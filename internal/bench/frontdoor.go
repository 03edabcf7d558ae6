package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/daemonkit"
)

// frontdoor measures the front door (SPEC §10) side by side with requests
// sent straight to the same worker: the added latency of a non-streaming
// request and of each SSE chunk at 1, 10 and 100 concurrent clients; the
// cold-start overhead (request arrival → first byte, minus the worker's own
// launch → ready); 1000 concurrent idle SSE streams held through the hive
// (hive RSS); and a swap (evicting one idle reference worker and cold
// starting another).
// Parts: frontdoor:latency (with the hive's CPU per request), :cold,
// :streams, :swap.
func (b *Bench) frontdoor() error {
	for _, part := range []struct {
		name string
		f    func() error
	}{{"latency", b.fdLatency}, {"cold", b.fdColdStart}, {"streams", b.fdIdleStreams}, {"swap", b.fdSwap}} {
		if !b.wantPart("frontdoor", part.name) {
			continue
		}
		if err := part.f(); err != nil {
			return fmt.Errorf("%s: %w", part.name, err)
		}
	}
	return nil
}

// pprofArgs returns the daemon flag that serves pprof on a free loopback
// port, and its base URL, when the run saves profiles.
func (b *Bench) pprofArgs() ([]string, string, error) {
	if b.o.ProfileDir == "" {
		return nil, "", nil
	}
	port, err := daemonkit.FreeRange(1)
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	return []string{"--pprof", addr}, "http://" + addr + "/debug/pprof/", nil
}

func fdGeneric(bin, name string, env map[string]string) string {
	var e []string
	for k, v := range env {
		e = append(e, fmt.Sprintf("%s: %q", k, v))
	}
	return fmt.Sprintf("  %s:\n    command: [%q, --port, \"{port}\", --model, \"{model}\"]\n    protocol: http\n"+
		"    readiness: {path: /health, status: 200}\n    max_concurrency: 2000\n    env: {%s}\n", name, bin, strings.Join(e, ", "))
}

func fdClient(n int) *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConns: n + 16, MaxIdleConnsPerHost: n + 16, IdleConnTimeout: time.Minute}}
}

// workerURL waits for the model's one worker to be idle and returns its URL.
func fdWorker(h *Hive, model string) (*apiv1.WorkerInfo, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ws, err := h.Client.List(ctx, false)
		cancel()
		if err == nil {
			for _, w := range ws {
				if w.Labels["rbee.model"] == model && w.State == "idle" {
					return w, nil
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, fmt.Errorf("no idle worker of %s within 30s\n%s", model, h.LogTail(20))
}

// fdLatency: per concurrency, the same request count straight to the
// worker and through the hive, interleaved in rounds so that both see the
// same machine load.
func (b *Bench) fdLatency() error {
	args, pprofURL, err := b.pprofArgs()
	if err != nil {
		return err
	}
	h, err := b.startHive(HiveOptions{Settings: "  idle_timeout: 0s\n", Args: args, Extra: "profiles:\n" +
		fdGeneric(b.o.Bins.Generic, "gen", map[string]string{"GENERIC_TOKENS": "1"}) +
		fdGeneric(b.o.Bins.Generic, "stream", map[string]string{"GENERIC_TOKENS": "8", "GENERIC_TOKEN_MS": "2", "GENERIC_CHUNK_TS": "1"}) +
		"models:\n  m: {model_ref: file:stories260K.gguf, profile: gen, min_workers: 1}\n  s: {model_ref: file:stories260K.gguf, profile: stream, min_workers: 1}\n"})
	if err != nil {
		return err
	}
	defer h.Close()
	w, err := fdWorker(h, "m")
	if err != nil {
		return err
	}
	ws, err := fdWorker(h, "s")
	if err != nil {
		return err
	}
	floorURL, stopFloor, err := relayFloor(w.URL)
	if err != nil {
		return err
	}
	defer stopFloor()
	sec := Result{Section: "frontdoor", Unit: "ms"}
	perClient := max(b.o.Trials/2, 5)
	for _, conc := range []int{1, 10, 100} {
		cl := fdClient(conc)
		n := perClient
		if conc == 100 {
			n = max(perClient/5, 3)
		}
		// Many short rounds, alternating, so that both sides see the
		// same (shared, noisy) machine; the same total as before.
		const rounds = 6
		n = max(2*n/rounds, 1)
		var direct, hive, floor, dchunk, hchunk []float64
		for round := 0; round < rounds; round++ {
			lat, err := fdLoad(cl, floorURL, "m", conc, n, false)
			if err != nil {
				return fmt.Errorf("relay floor: %w", err)
			}
			floor = append(floor, lat...)
			for _, straight := range []bool{true, false} {
				via, svia := h.URL, h.URL
				if straight {
					via, svia = w.URL, ws.URL
				}
				lat, err := fdLoad(cl, via, "m", conc, n, false)
				if err != nil {
					return err
				}
				clat, err := fdLoad(cl, svia, "s", conc, max(n/4, 2), true)
				if err != nil {
					return err
				}
				if straight {
					direct, dchunk = append(direct, lat...), append(dchunk, clat...)
				} else {
					hive, hchunk = append(hive, lat...), append(hchunk, clat...)
				}
			}
		}
		cl.CloseIdleConnections()
		sec.N = conc
		var t *Target
		if conc == 10 {
			t = &Target{Stat: "p99", Limit: 1, Text: "added p99 < 1 ms"}
		}
		b.add(sec, "non-streaming request, straight to the worker", direct, nil, "a one-token answer, no generation delay")
		b.add(sec, "non-streaming request, through the front door", hive, nil, "")
		b.addDiff(sec, "non-streaming request: added by the front door", hive, direct, t)
		b.addDiff(sec, "non-streaming request: added by a bare relay (this machine's floor)", floor, direct, nil)
		b.add(sec, "SSE chunk written → read, straight to the worker", dchunk, nil, "8 chunks 2 ms apart; the worker stamps each")
		b.add(sec, "SSE chunk written → read, through the front door", hchunk, nil, "")
		b.addDiff(sec, "SSE chunk: added by the front door", hchunk, dchunk, t)
	}
	return b.cpuPerRequest("frontdoor", "client → hive → worker", h.URL, "m", "frontdoor", []proc{{name: "hive", pid: h.PID, pprof: pprofURL}})
}

// addDiff records a - b as a figure: its median and p99 are the
// differences of the two distributions' medians and p99s.
func (b *Bench) addDiff(base Result, name string, a, c []float64, t *Target) {
	da, dc := Summarize(a), Summarize(c)
	base.Name = name
	base.Note = "difference of the two distributions' statistics"
	base.Trials, base.Median, base.P99, base.Max = da.Trials, da.Median-dc.Median, da.P99-dc.P99, da.Max-dc.Max
	base.Target = t
	switch {
	case t != nil && base.P99 < 0:
		// The straight run's tail was the longer one: the machine's noise
		// outweighs what the front door adds, and there is no verdict.
		base.Note += "; negative: the direct side's tail was longer (machine noise), no verdict"
	case t != nil:
		pass := base.P99 < t.Limit
		base.Pass = &pass
	}
	base.System = "rbee-hive"
	base.Load = loadavg()
	b.R.Results = append(b.R.Results, base)
	b.logf("  %-55s N=%-4d median=%s p99=%s ms", name, base.N, num(base.Median), num(base.P99))
}

// fdLoad runs conc clients each sending n chat requests to base and
// returns the latencies in ms: whole requests, or (stream) each chunk's
// written → read time.
func fdLoad(cl *http.Client, base, model string, conc, n int, stream bool) ([]float64, error) {
	var mu sync.Mutex
	var out []float64
	var firstErr error
	var wg sync.WaitGroup
	body := []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}],"stream":` + strconv.FormatBool(stream) + `}`)
	for c := 0; c < conc; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			for i := 0; i < n; i++ {
				t0 := time.Now()
				resp, err := cl.Post(base+"/v1/chat/completions", "application/json", bytes.NewReader(body))
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				if !stream {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						mu.Lock()
						firstErr = fmt.Errorf("status %d", resp.StatusCode)
						mu.Unlock()
						return
					}
					mine = append(mine, msf(time.Since(t0)))
					continue
				}
				rd := bufio.NewReader(resp.Body)
				for {
					line, err := rd.ReadString('\n')
					if err != nil {
						break
					}
					now := time.Now()
					if i := strings.Index(line, `"ts":`); i >= 0 {
						ns, err := strconv.ParseInt(strings.TrimRight(line[i+5:], "}\n"), 10, 64)
						if err == nil {
							mine = append(mine, msf(now.Sub(time.Unix(0, ns))))
						}
					}
				}
				resp.Body.Close()
			}
			mu.Lock()
			out = append(out, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, firstErr
}

// fdColdStart: each trial stops the model's worker, then times a request
// from its sending to the first byte of the answer, minus the worker's own
// time from launch (the hive's started_at) to ready (the generic worker's
// ready stamp).
func (b *Bench) fdColdStart() error {
	stamp := filepath.Join(os.TempDir(), fmt.Sprintf("hivebench-fd-ready-%d", os.Getpid()))
	defer os.Remove(stamp)
	h, err := b.startHive(HiveOptions{Settings: "  idle_timeout: 0s\n", Extra: "profiles:\n" +
		fdGeneric(b.o.Bins.Generic, "gen", map[string]string{"GENERIC_READY_FILE": stamp}) +
		"models:\n  m: {model_ref: file:stories260K.gguf, profile: gen}\n"})
	if err != nil {
		return err
	}
	defer h.Close()
	cl := fdClient(1)
	defer cl.CloseIdleConnections()
	// 100 trials at the defaults: a p99 of fewer is the slowest trial.
	trials := max(b.o.Trials/2, 3)
	var overhead, total, own, prep, after []float64
	// The hops of one cold start, from the hive's own event stamps (one
	// clock: the same machine): request → spawning (front-door decision and
	// the hive's spawn checks, the log file), spawning → loading (cgroup,
	// fork/exec), ready stamp → idle (readiness detection: the probe
	// schedule, or at once on the worker's output), idle → busy (the idle
	// record written, the event to the front door, dispatch, the worker's
	// busy bracket) and busy → first byte (dial, request, the worker's
	// answer head, the relay).
	var decide, launch, detect, toBusy, toByte []float64
	body := []byte(`{"model":"m","messages":[]}`)
	for i := 0; i < trials; i++ {
		os.Remove(stamp)
		t0 := time.Now()
		resp, err := cl.Post(h.URL+"/v1/chat/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		first := time.Now() // the head is the first byte
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("cold start answered %d\n%s", resp.StatusCode, h.LogTail(20))
		}
		ready, err := readStamp(stamp, 0, 5*time.Second)
		if err != nil {
			return err
		}
		w, err := fdWorker(h, "m")
		if err != nil {
			return err
		}
		launch0 := *w.StartedAt
		var at [4]time.Time
		for k, st := range []string{"spawning", "loading", "idle", "busy"} {
			ev, err := h.Events.WaitFor(w.ID, 5*time.Second, isState(st))
			if err != nil {
				return err
			}
			at[k] = ev.At
		}
		spawning, loading, idle, busy := at[0], at[1], at[2], at[3]
		prep = append(prep, msf(launch0.Sub(t0)))
		after = append(after, msf(first.Sub(idle)))
		own = append(own, msf(ready.Sub(launch0)))
		total = append(total, msf(first.Sub(t0)))
		overhead = append(overhead, msf(first.Sub(t0)-ready.Sub(launch0)))
		decide = append(decide, msf(spawning.Sub(t0)))
		launch = append(launch, msf(loading.Sub(spawning)))
		detect = append(detect, msf(idle.Sub(ready)))
		toBusy = append(toBusy, msf(busy.Sub(idle)))
		toByte = append(toByte, msf(first.Sub(busy)))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = h.Client.Stop(ctx, w.ID)
		cancel()
		if err != nil {
			return err
		}
		if _, err := h.Events.WaitFor(w.ID, 30*time.Second, isState("terminated")); err != nil {
			return err
		}
		h.Events.Forget(w.ID)
	}
	sec := Result{Section: "frontdoor", Unit: "ms"}
	b.add(sec, "cold start: request → first byte (generic worker)", total, nil, "")
	b.add(sec, "cold start: the worker's own launch → ready", own, nil, "hive's started_at → the worker's ready stamp")
	b.add(sec, "cold start overhead: request → first byte − worker's launch → ready", overhead,
		&Target{Stat: "p99", Limit: 10, Text: "p99 < 10 ms"}, "includes the spawn (cgroup, fork/exec) and the readiness probe")
	b.add(sec, "cold start, part 1: request → worker process started", prep, nil, "front door decision + hive spawn path: cgroup, log, fork/exec")
	b.add(sec, "cold start, part 3: worker idle (hive event) → first byte", after, nil, "the front door's own share after readiness")
	b.add(sec, "cold start hop: request → spawning", decide, nil, "front-door decision, the hive's spawn checks (model, estimate, port), log file")
	b.add(sec, "cold start hop: spawning → loading", launch, nil, "cgroup, fork/exec (v1 accounting joins finish in the background)")
	b.add(sec, "cold start hop: worker ready (stamp) → idle", detect, nil, "readiness detection: at once on the worker's output, else the probe schedule (25 ms, then +25 %)")
	b.add(sec, "cold start hop: idle → busy", toBusy, nil, "idle record written (no fsync), event to the front door, dispatch, busy bracket")
	b.add(sec, "cold start hop: busy → first byte", toByte, nil, "dial, request, the worker's answer head, relay")
	return nil
}

// fdIdleStreams holds 1000 SSE streams through the hive, each waiting on a
// gate after its first chunk, and reads the hive's RSS.
func (b *Bench) fdIdleStreams() error {
	n := 1000
	if b.o.Smoke {
		n = 20
	}
	gate := filepath.Join(os.TempDir(), fmt.Sprintf("hivebench-fd-gate-%d", os.Getpid()))
	os.Remove(gate)
	defer os.Remove(gate)
	h, err := b.startHive(HiveOptions{Settings: "  idle_timeout: 0s\n", Extra: "profiles:\n" +
		fdGeneric(b.o.Bins.Generic, "gen", map[string]string{"GENERIC_GATE_FILE": gate}) +
		"models:\n  m: {model_ref: file:stories260K.gguf, profile: gen, min_workers: 1}\nqueue: {max: 4096, timeout: 60s}\n"})
	if err != nil {
		return err
	}
	defer h.Close()
	if _, err := fdWorker(h, "m"); err != nil {
		return err
	}
	before, _ := rssBytes(h.PID)
	cl := fdClient(n)
	defer cl.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan error, n)
	var wg sync.WaitGroup
	body := []byte(`{"model":"m","stream":true,"messages":[]}`)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "POST", h.URL+"/v1/chat/completions", bytes.NewReader(body))
			resp, err := cl.Do(req)
			if err != nil {
				got <- err
				return
			}
			defer resp.Body.Close()
			rd := bufio.NewReader(resp.Body)
			_, err = rd.ReadString('\n')
			got <- err
			_, _ = io.Copy(io.Discard, rd)
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case err := <-got:
			if err != nil {
				return fmt.Errorf("stream %d: %w", i, err)
			}
		case <-time.After(60 * time.Second):
			return fmt.Errorf("only %d of %d streams open after 60s", i, n)
		}
	}
	time.Sleep(time.Second)
	rss, err := rssBytes(h.PID)
	if err != nil {
		return err
	}
	sec := Result{Section: "frontdoor", Unit: "MiB", N: n}
	b.add(sec, "idle SSE streams held through the hive: hive RSS", []float64{float64(rss) / mib},
		&Target{Stat: "median", Limit: 200 * 1e6 / mib, Text: "< 200 MB"}, fmt.Sprintf("%.0f MiB before the streams", float64(before)/mib))
	os.WriteFile(gate, nil, 0o600)
	cancel()
	wg.Wait()
	return nil
}

// fdSwap: two models under a budget for one worker, served by the
// reference worker; each trial asks for the other model, which evicts the
// idle worker and starts a new one.
func (b *Bench) fdSwap() error {
	h, err := b.startHive(HiveOptions{Settings: "  idle_timeout: 0s\n", Extra: "models:\n" +
		"  a: {model_ref: file:stories260K.gguf, memory_bytes: 100}\n  b: {model_ref: file:stories260K.gguf, memory_bytes: 100}\nmemory_budget_bytes: 150\n"})
	if err != nil {
		return err
	}
	defer h.Close()
	cl := fdClient(1)
	defer cl.CloseIdleConnections()
	trials := max(b.o.Trials/10, 3)
	var swap []float64
	status := map[int]int{}
	for i := 0; i <= trials; i++ {
		m := []string{"a", "b"}[i%2]
		t0 := time.Now()
		resp, err := cl.Post(h.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"`+m+`","prompt":"Once"}`))
		if err != nil {
			return err
		}
		first := time.Since(t0)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("swap to %s answered %d\n%s", m, resp.StatusCode, h.LogTail(20))
		}
		status[resp.StatusCode]++
		if i > 0 { // the first is a plain cold start
			swap = append(swap, msf(first))
		}
	}
	sec := Result{Section: "frontdoor", Unit: "ms"}
	b.add(sec, "swap: evict an idle reference worker, cold start another → first byte", swap, nil,
		fmt.Sprintf("answers by status: %v; the real stories260K model", status))
	return nil
}
