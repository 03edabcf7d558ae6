package bench

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/process"
)

// Supervisord is a private supervisord instance (its own config, socket,
// logs and pidfile in a temporary directory) running N programs of the
// reference worker in standalone mode (no hive: no callbacks, no
// heartbeats).
type Supervisord struct {
	Dir    string
	PID    int
	Marker string
	Names  []string
	rpc    *rpc

	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	once    sync.Once
	left    int
}

// EnsureSupervisord installs the Debian package supervisor when supervisord
// is not on PATH, and returns its path.
func EnsureSupervisord(log func(string, ...any)) (string, error) {
	if p, err := exec.LookPath("supervisord"); err == nil {
		return p, nil
	}
	log("supervisord missing: apt-get install -y supervisor")
	for _, args := range [][]string{{"update"}, {"install", "-y", "--no-install-recommends", "supervisor"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, tailLines(string(out), 10))
		}
	}
	return exec.LookPath("supervisord")
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// supervisordHeader writes the start of a private supervisord's config:
// its socket sock, its files in dir, the RPC interface, and extra lines
// for the [supervisord] section.
func supervisordHeader(c *strings.Builder, sock, dir, extra string) {
	fmt.Fprintf(c, `[unix_http_server]
file=%[1]s
chmod=0700

[supervisord]
nodaemon=true
logfile=%[2]s/supervisord.log
pidfile=%[2]s/supervisord.pid
childlogdir=%[2]s
%[3]sloglevel=warn

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%[1]s
`, sock, dir, extra)
}

// StartSupervisord writes a config with n programs (every fifth ignoring
// SIGTERM), starts supervisord in the foreground and waits until every
// program is RUNNING. It returns the time from the launch until then.
func StartSupervisord(bin string, bins Bins, n int, stopWait time.Duration) (*Supervisord, time.Duration, error) {
	dir, err := os.MkdirTemp("", "hivebench-supervisord-")
	if err != nil {
		return nil, 0, err
	}
	s := &Supervisord{Dir: dir, Marker: filepath.Base(dir), exited: make(chan struct{})}
	model := filepath.Join(dir, builtinmodel.FileName)
	if err := writeModel(model); err != nil {
		return nil, 0, err
	}
	logs := filepath.Join(dir, "logs")
	if err := mkdir(logs); err != nil {
		return nil, 0, err
	}
	sock := filepath.Join(dir, "supervisor.sock")
	var c strings.Builder
	supervisordHeader(&c, sock, dir, fmt.Sprintf("minfds=%d\nminprocs=200\n", max(1024, 4*n+256)))
	// One group holds every program: supervisord stops groups one after
	// the other (by priority) but the programs of a group together, so
	// this is the configuration that lets it stop N workers in parallel.
	var programs []string
	for i := 0; i < n; i++ {
		programs = append(programs, fmt.Sprintf("w%d", i))
	}
	fmt.Fprintf(&c, "\n[group:workers]\nprograms=%s\n", strings.Join(programs, ","))
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("w%d", i)
		s.Names = append(s.Names, "workers:"+name)
		env := fmt.Sprintf(`HIVEBENCH_MARKER="%s"`, s.Marker)
		if ignoreFifth(i) != nil {
			env += `,LLMW_FAKE_IGNORE_SHUTDOWN="1"`
		}
		fmt.Fprintf(&c, `
[program:%[1]s]
command=%[2]s --test-mode --worker-id %[1]s --model %[3]s --port 0
autostart=true
autorestart=true
startsecs=0
stopwaitsecs=%[4]d
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=%[5]s/%[1]s.log
stdout_logfile_maxbytes=0
environment=%[6]s
`, name, bins.Worker, model, int(stopWait/time.Second), logs, env)
	}
	conf := filepath.Join(dir, "supervisord.conf")
	if err := os.WriteFile(conf, []byte(c.String()), 0o600); err != nil {
		return nil, 0, err
	}
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		return nil, 0, err
	}
	defer out.Close()
	s.cmd = exec.Command(bin, "-c", conf)
	s.cmd.Stdout, s.cmd.Stderr = out, out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t0 := time.Now()
	if err := s.cmd.Start(); err != nil {
		return nil, 0, err
	}
	s.PID = s.cmd.Process.Pid
	go func() {
		s.exitErr = s.cmd.Wait()
		close(s.exited)
	}()
	s.rpc = newRPC(sock)
	deadline := time.Now().Add(10*time.Minute + time.Duration(n)*100*time.Millisecond)
	for {
		running, err := s.countRunning()
		if err == nil && running == n {
			break
		}
		select {
		case <-s.exited:
			s.Close()
			return nil, 0, fmt.Errorf("supervisord exited at start: %v\n%s", s.exitErr, tailLines(readFile(filepath.Join(dir, "supervisord.log"))+readFile(filepath.Join(dir, "stdout.log")), 20))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, 0, fmt.Errorf("supervisord: only %d of %d programs RUNNING (%v)", running, n, err)
		}
	}
	return s, time.Since(t0), nil
}

type procInfo struct {
	Name  string
	PID   int
	State string
}

func toInfo(v any) procInfo {
	m, _ := v.(map[string]any)
	var p procInfo
	p.Name, _ = m["name"].(string)
	p.PID, _ = m["pid"].(int)
	p.State, _ = m["statename"].(string)
	return p
}

func (s *Supervisord) all() ([]procInfo, error) {
	v, err := s.rpc.call(30*time.Second, "supervisor.getAllProcessInfo")
	if err != nil {
		return nil, err
	}
	l, _ := v.([]any)
	out := make([]procInfo, len(l))
	for i, x := range l {
		out[i] = toInfo(x)
	}
	return out, nil
}

func (s *Supervisord) countRunning() (int, error) {
	l, err := s.all()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range l {
		if p.State == "RUNNING" {
			n++
		}
	}
	return n, nil
}

func (s *Supervisord) info(name string) (procInfo, error) {
	v, err := s.rpc.call(5*time.Second, "supervisor.getProcessInfo", name)
	if err != nil {
		return procInfo{}, err
	}
	return toInfo(v), nil
}

// Stop sends SIGTERM to supervisord and waits for its exit; it returns the
// wall time.
func (s *Supervisord) Stop(timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	_ = syscall.Kill(s.PID, syscall.SIGTERM)
	select {
	case <-s.exited:
		return time.Since(t0), nil
	case <-time.After(timeout):
		_ = syscall.Kill(s.PID, syscall.SIGKILL)
		<-s.exited
		return time.Since(t0), fmt.Errorf("supervisord did not exit within %s", timeout)
	}
}

// Close stops supervisord if it runs, kills any of its programs that
// survived (returning how many) and removes the directory. Idempotent.
func (s *Supervisord) Close() int {
	s.once.Do(func() {
		select {
		case <-s.exited:
		default:
			_, _ = s.Stop(60 * time.Second)
		}
		var left []int
		for i := 0; i < 100; i++ {
			if left = process.FindByEnv("HIVEBENCH_MARKER", s.Marker); len(left) == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		s.left = len(left)
		os.RemoveAll(s.Dir)
	})
	return s.left
}

// supervisord runs the comparison for each N.
func (b *Bench) supervisord() error {
	if len(b.o.SupervisordN) == 0 {
		return nil
	}
	bin, err := EnsureSupervisord(b.logf)
	if err != nil {
		return err
	}
	ver, _ := exec.Command(bin, "--version").Output()
	b.R.Notes = append(b.R.Notes, fmt.Sprintf("supervisord %s (Debian package supervisor), own instance and config in a temp dir; "+
		"programs run the same llm-worker-rbee binary standalone (no hive: no callbacks, no heartbeats), "+
		"autorestart=true, startsecs=0, stopwaitsecs=2, stopasgroup/killasgroup=true, all programs in one [group:] (so they are stopped together), a fifth ignoring SIGTERM. "+
		"Its state is read by polling XML-RPC getProcessInfo over its unix socket.", strings.TrimSpace(string(ver))))
	var errs []error
	for _, n := range b.o.SupervisordN {
		if err := b.supervisordOne(bin, n); err != nil {
			errs = append(errs, fmt.Errorf("N=%d: %w", n, err))
			b.R.Notes = append(b.R.Notes, fmt.Sprintf("supervisord with N=%d: %v", n, oneLine(err)))
		}
	}
	return errors.Join(errs...)
}

func (b *Bench) supervisordOne(bin string, n int) error {
	const stopWait = 2 * time.Second
	b.logf("  supervisord N=%d: starting", n)
	s, took, err := StartSupervisord(bin, b.o.Bins, n, stopWait)
	if err != nil {
		return err
	}
	defer s.Close()
	sec := Result{Section: "supervisord", System: "supervisord", N: n}
	sec.Unit = "workers/s"
	b.add(sec, "start throughput (launch → all RUNNING)", []float64{float64(n) / took.Seconds()}, nil,
		fmt.Sprintf("%d programs in %s; RUNNING means started, not ready", n, took.Round(time.Millisecond)))

	time.Sleep(b.o.Settle)
	l, err := s.all()
	if err != nil {
		return err
	}
	var pids []int
	for _, p := range l {
		pids = append(pids, p.PID)
	}
	b.logf("  supervisord N=%d: idle CPU over %s", n, b.o.IdleWindow)
	cpu, _, err := cpuPercent(s.PID, nil, b.o.IdleWindow)
	if err != nil {
		return err
	}
	rss, err := rssBytes(s.PID)
	if err != nil {
		return err
	}
	var wrss []float64
	for _, p := range pids {
		if r, err := rssBytes(p); err == nil {
			wrss = append(wrss, float64(r)/mib)
		}
	}
	sec.Unit = "MiB"
	b.add(sec, "supervisord RSS (VmRSS)", []float64{float64(rss) / mib}, nil, "")
	sec.Unit = "% of one core"
	b.add(sec, "supervisord CPU, idle", []float64{cpu}, nil, fmt.Sprintf("utime+stime over %s", b.o.IdleWindow))
	sec.Unit = "MiB"
	b.add(sec, "reference worker RSS, standalone (per worker)", wrss, nil, "")

	// getProcessInfo round trip: the resolution of the polled figures.
	var rtt []float64
	for i := 0; i < 50; i++ {
		t0 := time.Now()
		if _, err := s.info(s.Names[rand.IntN(n)]); err != nil {
			return err
		}
		rtt = append(rtt, msf(time.Since(t0)))
	}
	sec.Unit = "ms"
	b.add(sec, "XML-RPC getProcessInfo round trip", rtt, nil, "resolution of the polled figures")

	// Crash detection and auto-restart, on well-behaved programs.
	trials := b.o.ScaleCrashTrials
	if n != slices.Max(b.o.SupervisordN) {
		trials = max(trials/4, 1)
	}
	b.logf("  supervisord N=%d: %d crash trials", n, trials)
	var detect, restart []float64
	for k := 0; k < trials; k++ {
		i := rand.IntN(n)
		if ignoreFifth(i) != nil {
			i = (i + 1) % n
		}
		name := s.Names[i]
		p, err := s.info(name)
		if err != nil {
			return err
		}
		if p.State != "RUNNING" || p.PID == 0 {
			k--
			continue
		}
		t0 := time.Now()
		if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
			return err
		}
		seen := false
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			q, err := s.info(name)
			if err != nil {
				return err
			}
			at := time.Since(t0)
			if !seen && (q.State != "RUNNING" || q.PID != p.PID) {
				seen = true
				detect = append(detect, msf(at))
			}
			if q.State == "RUNNING" && q.PID != 0 && q.PID != p.PID {
				restart = append(restart, msf(at))
				break
			}
		}
		if len(restart) != k+1 {
			return fmt.Errorf("%s not RUNNING again within 30s of a SIGKILL", name)
		}
	}
	b.add(sec, "crash detection: SIGKILL → getProcessInfo shows it", detect, nil, "polled back to back")
	b.add(sec, "auto-restart: SIGKILL → RUNNING with a new pid", restart, nil, "polled back to back")

	// stopProcess of programs that ignore SIGTERM.
	var ignoring []string
	for i, name := range s.Names {
		if ignoreFifth(i) != nil && len(ignoring) < 10 {
			ignoring = append(ignoring, name)
		}
	}
	var stops []float64
	var mu sync.Mutex
	rounds := 2
	if b.o.Smoke {
		rounds = 1
	}
	for r := 0; r < rounds && len(ignoring) > 0; r++ {
		var wg sync.WaitGroup
		errs := make([]error, len(ignoring))
		for j, name := range ignoring {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				if _, err := s.rpc.call(stopWait+30*time.Second, "supervisor.stopProcess", name, true); err != nil {
					errs[j] = err
					return
				}
				d := time.Since(t0)
				mu.Lock()
				stops = append(stops, msf(d-stopWait))
				mu.Unlock()
				_, errs[j] = s.rpc.call(30*time.Second, "supervisor.startProcess", name, true)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	b.add(sec, "stop of a SIGTERM-ignoring worker: stopProcess − stopwaitsecs 2s", stops, nil, "stopProcess(wait=true) duration")

	b.logf("  supervisord N=%d: stopping", n)
	stop, stopErr := s.Stop(b.o.SupervisordStopTimeout)
	note := "stopwaitsecs 2"
	if stopErr != nil {
		note += fmt.Sprintf("; did not exit within %s: SIGKILLed", b.o.SupervisordStopTimeout)
	}
	left := s.Close()
	if left > 0 {
		note += fmt.Sprintf("; %d programs left running, killed by the benchmark", left)
	}
	b.add(sec, "time to stop all: SIGTERM → supervisord exit (a fifth ignore SIGTERM)", []float64{msf(stop)}, nil, note)
	return nil
}

// compare fills the side-by-side table and the feature table from the
// results present.
func (b *Bench) compare() {
	r := b.R
	for _, n := range b.o.SupervisordN {
		row := func(name, unit, stat, hiveSec, hiveName string, hiveN int, supName, note string) {
			h, ok1 := r.Find(hiveSec, "rbee-hive", hiveName, hiveN)
			s, ok2 := r.Find("supervisord", "supervisord", supName, n)
			if !ok1 || !ok2 {
				return
			}
			pick := func(x Result) float64 {
				switch stat {
				case "p99":
					return x.P99
				case "max":
					return x.Max
				}
				return x.Median
			}
			c := Comparison{Name: name, N: n, Unit: unit, Stat: stat, Hive: pick(h), Supervisord: pick(s), Note: note}
			if c.Supervisord != 0 {
				c.Ratio = c.Hive / c.Supervisord
			}
			r.Comparisons = append(r.Comparisons, c)
		}
		for _, stat := range []string{"median", "p99"} {
			row("crash detection", "ms", stat, "scale", "crash detection: SIGKILL → failed recorded", n,
				"crash detection: SIGKILL → getProcessInfo shows it", "hive: pushed event; supervisord: polled")
		}
		for _, stat := range []string{"median", "p99"} {
			row("auto-restart: SIGKILL → new process", "ms", stat, "scale", "auto-restart: SIGKILL → new process (loading)", n,
				"auto-restart: SIGKILL → RUNNING with a new pid", "both restart at once")
		}
		for _, stat := range []string{"median", "max"} {
			row("stop of a SIGTERM-ignoring worker, beyond the 2 s timeout", "ms", stat, "supervision",
				"force kill (stop_timeout 2s): stopping → terminated − 2s", 1,
				"stop of a SIGTERM-ignoring worker: stopProcess − stopwaitsecs 2s", "overshoot past the timeout; rbee-hive figure from the force-kill scenario (20 trials, one hive)")
		}
		row("time to stop all (a fifth ignore SIGTERM, timeout 2 s)", "ms", "median", "scale",
			"time to stop all: SIGTERM → hive exit (a fifth ignore SIGTERM)", n,
			"time to stop all: SIGTERM → supervisord exit (a fifth ignore SIGTERM)", "")
		row("supervisor RSS", "MiB", "median", "scale", "hive RSS (VmRSS)", n, "supervisord RSS (VmRSS)", "")
		row("supervisor CPU, idle", "% of one core", "median", "scale", "hive CPU, idle", n, "supervisord CPU, idle",
			"the hive takes a heartbeat from every worker every 10 s (and probes one only when its heartbeats stop vouching for it); supervisord does neither")
		row("worker RSS", "MiB", "median", "scale", "reference worker RSS (per worker)", n,
			"reference worker RSS, standalone (per worker)", "same binary; hive mode also heartbeats")
		row("start N workers", "workers/s", "median", "scale", "spawn throughput (32 concurrent spawns, to idle)", n,
			"start throughput (launch → all RUNNING)", "hive: to ready (idle); supervisord: to started (RUNNING)")
	}
	if len(b.o.SupervisordN) > 0 && b.want("supervisord") {
		r.Features = []Feature{
			{"readiness", "ready callback (rbee) or HTTP probe (generic); loading → idle", "no: RUNNING after startsecs, whether or not it serves"},
			{"load progress and stall timeout", "loading heartbeats with progress; ready_stall_timeout, ready_timeout", "no"},
			{"heartbeats", "stale after heartbeat.timeout → force stop, failed/heartbeat_timeout", "no"},
			{"health probes that act", "every health.interval; failure_threshold → stop, failed/health_check_failed", "no (needs an external checker)"},
			{"idle timeout", "from the end of the last request", "no"},
			{"adoption after a supervisor restart", "re-adopts live workers (PID + start time + boot id), --keep-workers-on-exit", "no: a restarted supervisord starts new copies; the old ones are orphaned"},
			{"cgroup limits", "memory, CPU, pids, nofile per worker (v2, v1 fallback)", "no"},
			{"OOM detection", "failed/oom_killed from the cgroup's OOM counter", "no: reported as a SIGKILL exit"},
			{"whole-tree kill", "process group and cgroup.kill, verified empty", "process group only (stopasgroup/killasgroup)"},
			{"restart back-off", "base_delay × 2ⁿ ± jitter, crash_loop after max_failures in window", "immediate autorestart; back-off only for startup failures (startretries)"},
			{"push events", "GET /v1/events (SSE), per state change with `at`", "event listeners (a separate process fed through stdin)"},
			{"ports", "allocated per worker, checked bindable", "no (fixed in each program's command)"},
		}
	}
}
