package bench

// The side-by-side scenario (issue 19): the hive and supervisord driving the
// same generic worker written in Python's standard library, which — unlike
// the hive's own test workers — prints nothing when it becomes ready, answers
// /health 503 while it loads, and closes every connection after answering.

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rbee/rbee-hive/internal/testutil/daemonkit"
)

//go:embed pyworker/worker.py
var pyWorkerScript []byte

// PyWorkerScript returns the source of the Python worker
// (internal/bench/pyworker/worker.py; its header documents it).
func PyWorkerScript() []byte { return pyWorkerScript }

// Python returns the python3 to run the worker with: /usr/bin/python3 when
// it exists (a pyenv shim on PATH is a shell script that adds tens of
// milliseconds to every start), else python3 on PATH.
func Python() (string, error) {
	if fi, err := os.Stat("/usr/bin/python3"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/bin/python3", nil
	}
	p, err := exec.LookPath("python3")
	if err != nil {
		return "", fmt.Errorf("python3 not found (install the Debian package python3): %w", err)
	}
	return p, nil
}

// WritePyWorker writes the worker script into dir and returns its path.
func WritePyWorker(dir string) (string, error) {
	p := filepath.Join(dir, "pyworker.py")
	return p, os.WriteFile(p, pyWorkerScript, 0o644)
}

// PyProfile is the config of a generic profile "py" running the Python
// worker.
func PyProfile(python, script string) string {
	return fmt.Sprintf("profiles:\n  py:\n    command: [%q, %q, --port, \"{port}\"]\n"+
		"    protocol: http\n    readiness: {path: /health, status: 200}\n    liveness: {path: /health, status: 200}\n    allow_env: [\"PYW_*\"]\n", python, script)
}

// pyEnv is the environment of a directly exec'd worker: what the hive gives
// its workers, roughly (no inherited PYTHON* variables).
func pyEnv(extra ...string) []string {
	return append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}, extra...)
}

// python runs the side-by-side figures 1–4 of issue 19 on the Python
// worker, with supervisord beside the hive where it has the feature.
func (b *Bench) python() error {
	py, err := Python()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(b.o.TmpDir, "hivebench-py-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	script, err := WritePyWorker(dir)
	if err != nil {
		return err
	}
	var sv *Supervisord
	if len(b.o.SupervisordN) > 0 {
		bin, err := EnsureSupervisord(b.logf)
		if err != nil {
			return err
		}
		if sv, err = startPySupervisord(bin, py, script, b.o.PyIdleN, b.pyStopWait()); err != nil {
			return err
		}
		defer sv.Close()
	}
	b.R.Notes = append(b.R.Notes, fmt.Sprintf("Section \"silent Python worker\": every figure uses internal/bench/pyworker/worker.py "+
		"(Python's standard library, run by %s): it prints nothing, answers /health 503 while it loads and 200 once ready, "+
		"and closes the connection after every answer (HTTP/1.0). Each figure names the system that produced it: "+
		"`direct` is the benchmark exec'ing the script itself.", py))
	var errs []error
	for _, step := range []struct {
		name string
		f    func() error
	}{
		{"idle", func() error { return b.pyIdle(py, script, sv) }},
		{"launch", func() error { return b.pyLaunch(py, script, sv) }},
		{"ready", func() error { return b.pyReady(py, script) }},
		{"restart", func() error { return b.pyRestart(py, script) }},
		{"stop", func() error { return b.pyStop(py, script, sv) }},
	} {
		if !b.wantPart("python", step.name) {
			continue
		}
		b.logf("  python: %s", step.name)
		if err := step.f(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", step.name, err))
		}
	}
	return errors.Join(errs...)
}

func (b *Bench) addPy(system, name, unit string, samples []float64, t *Target, note string) {
	b.add(Result{Section: "python", System: system, N: 1, Unit: unit}, system+": "+name, samples, t, note)
}

// startPyHive starts a hive with the py profile and the given defaults.
func (b *Bench) startPyHive(py, script, settings string, ports int, args ...string) (*Hive, error) {
	return b.startHive(HiveOptions{Settings: settings, Extra: PyProfile(py, script), Ports: ports, Args: args})
}

// pyLaunch: spawn request → the worker's first instruction, interleaving
// direct exec, the hive and supervisord trial by trial so that the load of
// the shared machine hits all three alike.
func (b *Bench) pyLaunch(py, script string, sv *Supervisord) error {
	h, err := b.startPyHive(py, script, "  idle_timeout: 0s\n", 16)
	if err != nil {
		return err
	}
	defer h.Close()
	var direct, hive, super []float64
	for i := range b.o.PyTrials {
		file := filepath.Join(h.Dir, "start-"+strconv.Itoa(i))
		// direct exec
		cmd := exec.Command(py, script, "--port", "0")
		cmd.Env = pyEnv("PYW_START_FILE=" + file + "-d")
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return err
		}
		st, err := readStamp(file+"-d", 0, 10*time.Second)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err != nil {
			return err
		}
		direct = append(direct, msf(st.Sub(t0)))

		// the hive
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t0 = time.Now()
		resp, err := h.Spawn(ctx, "py", map[string]string{"PYW_START_FILE": file + "-h"}, "")
		if err != nil {
			cancel()
			return err
		}
		st, err = readStamp(file+"-h", 0, 10*time.Second)
		if err != nil {
			cancel()
			return err
		}
		hive = append(hive, msf(st.Sub(t0)))
		_, err = h.Client.Stop(ctx, resp.WorkerID)
		if err == nil {
			_, err = h.Events.WaitFor(resp.WorkerID, 20*time.Second, isState("terminated"))
		}
		h.Events.Forget(resp.WorkerID)
		cancel()
		if err != nil {
			return err
		}

		// supervisord
		if sv != nil {
			sf := filepath.Join(sv.Dir, "launch-start")
			os.Remove(sf)
			t0 = time.Now()
			if _, err := sv.rpc.call(30*time.Second, "supervisor.startProcess", "launch", false); err != nil {
				return err
			}
			st, err := readStamp(sf, 0, 10*time.Second)
			if err != nil {
				return err
			}
			super = append(super, msf(st.Sub(t0)))
			if _, err := sv.rpc.call(30*time.Second, "supervisor.stopProcess", "launch", true); err != nil {
				return err
			}
		}
	}
	const name = "launch: start asked → the worker's first instruction"
	b.addPy("direct", name, "ms", direct, nil, "exec.Command + Start from the benchmark; Python's own start-up is most of it")
	b.addPy("rbee-hive", name, "ms", hive, nil, "POST /v1/workers/spawn → the script's first line (its clock)")
	if sv != nil {
		b.addPy("supervisord", name, "ms", super, nil, "XML-RPC startProcess(wait=false) → the script's first line")
	}
	// Each trial's difference to the direct exec just before it: the
	// machine's load moves both alike.
	paired := func(xs []float64) []float64 {
		d := make([]float64, len(xs))
		for i := range xs {
			d[i] = xs[i] - direct[i]
		}
		return d
	}
	b.addPy("rbee-hive", "launch cost over direct exec (per trial)", "ms", paired(hive),
		target("median", 5, "median ≤ direct + 5 ms"), "rbee-hive trial − the direct trial just before it")
	if sv != nil {
		b.addPy("supervisord", "launch cost over direct exec (per trial)", "ms", paired(super), nil,
			"supervisord trial − the direct trial just before it")
	}
	return nil
}

// pyReady: the server turned ready (its clock, right after /health turned
// 200) → `idle` (the hive's event), for loads of 2 s, 2–3 s and 30 s.
func (b *Bench) pyReady(py, script string) error {
	h, err := b.startPyHive(py, script, "  idle_timeout: 0s\n", 64)
	if err != nil {
		return err
	}
	defer h.Close()
	loads := []struct {
		name   string
		ms     func() int
		trials int
		conc   int
	}{
		{"load 2 s", func() int { return 2000 }, b.o.PyTrials, 4},
		{"load 2–3 s uniform", func() int { return 2000 + rand.IntN(1001) }, b.o.PyTrials, 4},
		{"load 30 s", func() int { return 30000 }, b.o.PyLongTrials, b.o.PyLongTrials},
	}
	if b.o.Smoke {
		loads[0].ms = func() int { return 200 }
		loads[1].ms = func() int { return 200 + rand.IntN(101) }
		loads[2].ms, loads[2].name = func() int { return 1000 }, "load 1 s (smoke)"
	}
	for _, l := range loads {
		samples, err := trials(l.trials, l.conc, func(i int) (float64, error) {
			file := filepath.Join(h.Dir, fmt.Sprintf("ready-%d", rand.Int64()))
			return readyToIdle(h, "py", map[string]string{"PYW_READY_FILE": file, "PYW_LOAD_MS": strconv.Itoa(l.ms())}, file, 60*time.Second)
		})
		if err != nil {
			return err
		}
		b.addPy("rbee-hive", "server ready (silent) → idle, "+l.name, "ms", samples, target("p99", 60, "p99 ≤ 60 ms"),
			fmt.Sprintf("%d at a time; readiness probed every 25 ms backing off to 50 ms", l.conc))
	}
	return nil
}

// trials runs n trials of f, conc at a time.
func trials(n, conc int, f func(i int) (float64, error)) ([]float64, error) {
	out := make([]float64, n)
	errs := make([]error, n)
	sem := make(chan struct{}, max(conc, 1))
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = f(i)
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// pyRestart: SIGKILL → a new process (loading) and → ready again (idle),
// restart.base_delay 0.
func (b *Bench) pyRestart(py, script string) error {
	h, err := b.startPyHive(py, script, "  idle_timeout: 0s\n"+restartAlways, 16)
	if err != nil {
		return err
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := h.Spawn(ctx, "py", nil, "")
	if err != nil {
		return err
	}
	id := resp.WorkerID
	idle, err := h.Events.WaitFor(id, 30*time.Second, isState("idle"))
	if err != nil {
		return err
	}
	var respawn, ready []float64
	for range b.o.PyTrials {
		t0 := time.Now()
		if err := syscall.Kill(idle.PID, syscall.SIGKILL); err != nil {
			return err
		}
		loading, err := h.Events.WaitFor(id, 10*time.Second, isState("loading"))
		if err != nil {
			return err
		}
		if idle, err = h.Events.WaitFor(id, 30*time.Second, isState("idle")); err != nil {
			return err
		}
		respawn = append(respawn, msf(loading.At.Sub(t0)))
		ready = append(ready, msf(idle.At.Sub(t0)))
	}
	b.addPy("rbee-hive", "restart: SIGKILL → new process (loading)", "ms", respawn, nil, "restart.base_delay 0")
	b.addPy("rbee-hive", "restart: SIGKILL → running and ready again (idle)", "ms", ready, nil,
		"includes Python's start-up and the first successful probe; supervisord has no readiness")
	return nil
}

// gone returns a channel that receives when pid has exited (its pidfd
// turned readable), as seen by this process.
func gone(pid int) (<-chan time.Time, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	ch := make(chan time.Time, 1)
	go func() {
		defer unix.Close(fd)
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(pfd, -1); err != nil && errors.Is(err, unix.EINTR) {
				continue
			}
			ch <- time.Now()
			return
		}
	}()
	return ch, nil
}

// pyStopWait is the grace of the stop figure (stop_timeout, stopwaitsecs):
// 2 s as in issue 19, 1 s in a smoke run.
func (b *Bench) pyStopWait() time.Duration {
	if b.o.Smoke {
		return time.Second
	}
	return 2 * time.Second
}

// pyStop: stop of a worker that ignores SIGTERM, grace 2 s: the process
// gone (the benchmark's pidfd) and the manager reporting it ended, each
// minus the 2 s.
func (b *Bench) pyStop(py, script string, sv *Supervisord) error {
	pyStopWait := b.pyStopWait()
	h, err := b.startPyHive(py, script, fmt.Sprintf("  idle_timeout: 0s\n  stop_timeout: %s\n", pyStopWait), 32)
	if err != nil {
		return err
	}
	defer h.Close()
	n := min(b.o.PyTrials, 10)
	var mu sync.Mutex
	var hGone, hEnd, sGone, sEnd []float64
	// The hive: n workers, stops staggered by 50 ms.
	ids, _, err := h.SpawnMany(n, n, "py", func(int) map[string]string { return map[string]string{"PYW_IGNORE_TERM": "1"} })
	if err != nil {
		return err
	}
	pids, err := h.Pids()
	if err != nil {
		return err
	}
	_, err = trials(n, n, func(i int) (float64, error) {
		time.Sleep(time.Duration(i) * 50 * time.Millisecond)
		id := ids[i]
		defer h.Events.Forget(id)
		g, err := gone(pids[id])
		if err != nil {
			return 0, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		t0 := time.Now()
		if _, err := h.Client.Stop(ctx, id); err != nil {
			return 0, err
		}
		term, err := h.Events.WaitFor(id, pyStopWait+10*time.Second, isState("terminated"))
		if err != nil {
			return 0, err
		}
		at := <-g
		mu.Lock()
		hGone = append(hGone, msf(at.Sub(t0)-pyStopWait))
		hEnd = append(hEnd, msf(term.At.Sub(t0)-pyStopWait))
		mu.Unlock()
		return 0, nil
	})
	if err != nil {
		return err
	}
	if sv != nil {
		_, err = trials(n, n, func(i int) (float64, error) {
			name := fmt.Sprintf("stop:stop%d", i)
			ready := filepath.Join(sv.Dir, fmt.Sprintf("ready-stop%d", i))
			os.Remove(ready)
			if _, err := sv.rpc.call(30*time.Second, "supervisor.startProcess", name, true); err != nil {
				return 0, err
			}
			p, err := sv.info(name)
			if err != nil {
				return 0, err
			}
			// Ready means SIGTERM is ignored already (as the hive's
			// workers are when they are idle).
			if _, err := readStamp(ready, 0, 30*time.Second); err != nil {
				return 0, err
			}
			time.Sleep(time.Duration(i) * 50 * time.Millisecond)
			g, err := gone(p.PID)
			if err != nil {
				return 0, err
			}
			t0 := time.Now()
			if _, err := sv.rpc.call(pyStopWait+30*time.Second, "supervisor.stopProcess", name, true); err != nil {
				return 0, err
			}
			end := time.Now()
			at := <-g
			mu.Lock()
			sGone = append(sGone, msf(at.Sub(t0)-pyStopWait))
			sEnd = append(sEnd, msf(end.Sub(t0)-pyStopWait))
			mu.Unlock()
			return 0, nil
		})
		if err != nil {
			return err
		}
	}
	gname := fmt.Sprintf("stop past the grace (%s, SIGTERM ignored): process gone − grace", pyStopWait)
	ename := fmt.Sprintf("stop past the grace (%s, SIGTERM ignored): ended reported − grace", pyStopWait)
	b.addPy("rbee-hive", gname, "ms", hGone, nil, "stop request → the worker's pidfd readable in the benchmark")
	b.addPy("rbee-hive", ename, "ms", hEnd, nil, "stop request → `terminated` event `at`")
	if sv != nil {
		b.addPy("supervisord", gname, "ms", sGone, nil, "stopProcess → the worker's pidfd readable")
		b.addPy("supervisord", ename, "ms", sEnd, nil, "stopProcess(wait=true) returned")
	}
	return nil
}

// pyIdle: hive (and supervisord) CPU with PyIdleN idle workers at the
// default settings, in ms of CPU per 30 s.
func (b *Bench) pyIdle(py, script string, sv *Supervisord) error {
	n := b.o.PyIdleN
	var args []string
	var pprofURL string
	if b.o.ProfileDir != "" {
		port, err := daemonkit.FreeRange(1)
		if err != nil {
			return err
		}
		args = []string{"--pprof", "127.0.0.1:" + strconv.Itoa(port)}
		pprofURL = "http://" + args[1] + "/debug/pprof/"
	}
	h, err := b.startPyHive(py, script, "", n+16, args...)
	if err != nil {
		return err
	}
	defer h.Close()
	if _, _, err := h.SpawnMany(n, 8, "py", nil); err != nil {
		return err
	}
	time.Sleep(b.o.Settle)
	per30 := func(cpu time.Duration, window time.Duration) float64 {
		return msf(cpu) * float64(30*time.Second) / float64(window)
	}
	// Several windows one after the other, one figure each: a window holds
	// only three probe rounds, and one round's cost varies with how the
	// workers' answers interleave on the machine's cores.
	var hs, ss []float64
	for range max(b.o.PyIdleWindows, 1) {
		hc, sc, err := cpuNsBoth(h.PID, svPID(sv), b.o.PyIdleWindow)
		if err != nil {
			return err
		}
		hs, ss = append(hs, per30(hc, b.o.PyIdleWindow)), append(ss, per30(sc, b.o.PyIdleWindow))
	}
	note := fmt.Sprintf("%d idle workers, default settings (health.interval 10s), %d consecutive windows of %s, each scaled to 30 s; /proc/PID/task/*/schedstat",
		n, len(hs), b.o.PyIdleWindow)
	b.addPy("rbee-hive", "hive CPU per 30 s, idle workers", "ms", hs, target("median", 10, "≤ 10 ms"), note)
	if sv != nil {
		b.addPy("supervisord", "supervisord CPU per 30 s, idle workers", "ms", ss, nil, note)
	}
	if rss, err := rssBytes(h.PID); err == nil {
		b.addPy("rbee-hive", "hive RSS, idle workers", "MiB", []float64{float64(rss) / mib}, nil, fmt.Sprintf("%d workers", n))
	}
	if sv != nil {
		if rss, err := rssBytes(sv.PID); err == nil {
			b.addPy("supervisord", "supervisord RSS, idle workers", "MiB", []float64{float64(rss) / mib}, nil, fmt.Sprintf("%d workers", n))
		}
	}
	if pprofURL != "" {
		// After the measurement: the profiler's own ticks would count.
		file := filepath.Join(b.o.ProfileDir, fmt.Sprintf("hive-py-idle-N%d.cpu.pprof", n))
		secs := max(1, int(b.o.PyIdleWindow.Seconds()))
		if err := fetch(fmt.Sprintf("%sprofile?seconds=%d", pprofURL, secs), file); err != nil {
			b.logf("  cpu profile: %v", err)
		} else {
			b.logf("  cpu profile of the idle hive: %s", file)
		}
	}
	return nil
}

func svPID(sv *Supervisord) int {
	if sv == nil {
		return 0
	}
	return sv.PID
}

// cpuNs returns the CPU time pid's threads have run, in nanoseconds (the
// scheduler's own accounting, /proc/PID/task/*/schedstat: finer than the
// 10 ms ticks of /proc/PID/stat; a thread that exits meanwhile is lost,
// and Go's threads do not exit).
func cpuNs(pid int) (time.Duration, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum, nil
}

// cpuNsBoth measures the CPU of a and (when not 0) b over the same window.
func cpuNsBoth(a, b int, window time.Duration) (ca, cb time.Duration, err error) {
	a0, err := cpuNs(a)
	if err != nil {
		return 0, 0, err
	}
	var b0 time.Duration
	if b != 0 {
		if b0, err = cpuNs(b); err != nil {
			return 0, 0, err
		}
	}
	time.Sleep(window)
	a1, err := cpuNs(a)
	if err != nil {
		return 0, 0, err
	}
	if b != 0 {
		b1, err := cpuNs(b)
		if err != nil {
			return 0, 0, err
		}
		cb = b1 - b0
	}
	return a1 - a0, cb, nil
}

// startPySupervisord starts a private supervisord with the Python worker
// as programs: "launch" (not started), group "stop" of ten that ignore
// SIGTERM (not started; stopwaitsecs 2, stop and kill as a group) and
// group "idle" of idle (started, and running once this returns); stopWait
// is stopwaitsecs.
func startPySupervisord(bin, py, script string, idle int, stopWait time.Duration) (*Supervisord, error) {
	dir, err := os.MkdirTemp("", "hivebench-pysupervisord-")
	if err != nil {
		return nil, err
	}
	s := &Supervisord{Dir: dir, Marker: filepath.Base(dir), exited: make(chan struct{})}
	sock := filepath.Join(dir, "supervisor.sock")
	var c strings.Builder
	supervisordHeader(&c, sock, dir, "")
	prog := func(name, env string, autostart bool) {
		fmt.Fprintf(&c, `
[program:%[1]s]
command=%[2]s %[3]s --port 0
autostart=%[4]t
autorestart=true
startsecs=0
stopwaitsecs=%[5]d
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=%[6]s/%[1]s.log
stdout_logfile_maxbytes=0
environment=HIVEBENCH_MARKER="%[7]s"%[8]s
`, name, py, script, autostart, int(stopWait/time.Second), dir, s.Marker, env)
	}
	prog("launch", fmt.Sprintf(`,PYW_START_FILE="%s/launch-start"`, dir), false)
	var stops, idles []string
	for i := range 10 {
		stops = append(stops, fmt.Sprintf("stop%d", i))
	}
	for i := range idle {
		idles = append(idles, fmt.Sprintf("idle%d", i))
	}
	fmt.Fprintf(&c, "\n[group:stop]\nprograms=%s\n", strings.Join(stops, ","))
	fmt.Fprintf(&c, "\n[group:idle]\nprograms=%s\n", strings.Join(idles, ","))
	for _, n := range stops {
		prog(n, fmt.Sprintf(`,PYW_IGNORE_TERM="1",PYW_READY_FILE="%s/ready-%s"`, dir, n), false)
	}
	for _, n := range idles {
		prog(n, "", true)
	}
	conf := filepath.Join(dir, "supervisord.conf")
	if err := os.WriteFile(conf, []byte(c.String()), 0o600); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	s.cmd = exec.Command(bin, "-c", conf)
	s.cmd.Stdout, s.cmd.Stderr = out, out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.PID = s.cmd.Process.Pid
	go func() {
		s.exitErr = s.cmd.Wait()
		close(s.exited)
	}()
	s.rpc = newRPC(sock)
	deadline := time.Now().Add(60 * time.Second)
	for {
		running, err := s.countRunning()
		if err == nil && running == idle {
			return s, nil
		}
		select {
		case <-s.exited:
			s.Close()
			return nil, fmt.Errorf("supervisord exited at start: %v\n%s", s.exitErr, tailLines(readFile(filepath.Join(dir, "supervisord.log"))+readFile(filepath.Join(dir, "stdout.log")), 20))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("supervisord: only %d of %d programs RUNNING (%v)", running, idle, err)
		}
	}
}
