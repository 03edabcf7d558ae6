package bench

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options choose what a run measures and how long it takes. The zero value
// is not useful; start from Full or Smoke.
type Options struct {
	Bins Bins
	// Smoke marks a run with tiny N and few trials (the report says so).
	Smoke bool
	// Trials is the number of latency trials per supervision figure.
	Trials int
	// ShutdownN are the worker counts of the hive-shutdown scenario, each
	// run ShutdownTrials times.
	ShutdownN      []int
	ShutdownTrials int
	// ScaleN are the worker counts of the scale scenario (one hive each).
	ScaleN []int
	// ScaleCrashTrials is the crash-detection trials at the largest N (a
	// quarter of it at the others).
	ScaleCrashTrials int
	// ListCalls is the number of GET /v1/workers/list (and /{id}) calls;
	// ListGap the pause between paced calls.
	ListCalls int
	ListGap   time.Duration
	// Settle is the wait after the last worker is ready before the idle
	// measurements start; IdleWindow the window of the CPU measurement.
	Settle, IdleWindow time.Duration
	// SupervisordN are the program counts of the supervisord comparison;
	// empty skips it.
	SupervisordN []int
	// SupervisordStopTimeout bounds the wait for supervisord to exit after
	// SIGTERM; then it is SIGKILLed (and the figure says so).
	SupervisordStopTimeout time.Duration
	// PyTrials is the number of trials of each figure of the silent
	// Python worker scenario ("python"); PyLongTrials those of its 30 s
	// load (all at once). PyIdleN workers idle for PyIdleWindows
	// consecutive windows of PyIdleWindow (one figure per window).
	PyTrials, PyLongTrials, PyIdleN, PyIdleWindows int
	PyIdleWindow                                   time.Duration
	// Only, when not empty, runs only the named scenarios (crash, probe,
	// forcekill, shutdown, scale, supervisord, model, frontdoor, python, queen).
	Only []string
	// Keep leaves each hive's temporary directory (with its log).
	Keep bool
	// TmpDir is where the hives' state directories go; "" means
	// os.TempDir(). A tmpfs here takes the disk's fsync out of the figures.
	TmpDir string
	// ProfileDir, when set, runs the scale hives with --pprof and saves a
	// CPU profile of each idle window and a heap profile after it there.
	ProfileDir string
	// Log receives progress lines; nil means os.Stderr.
	Log io.Writer
}

// Full is the documented full run.
func Full(bins Bins) Options {
	return Options{
		Bins: bins, Trials: 200, ShutdownN: []int{10, 50, 200}, ShutdownTrials: 3,
		ScaleN: []int{100, 500, 1000}, ScaleCrashTrials: 200, ListCalls: 200, ListGap: 50 * time.Millisecond,
		Settle: 10 * time.Second, IdleWindow: 60 * time.Second, SupervisordN: []int{100, 1000},
		SupervisordStopTimeout: 3 * time.Minute,
		PyTrials:               100, PyLongTrials: 10, PyIdleN: 20, PyIdleWindows: 4, PyIdleWindow: 30 * time.Second,
	}
}

// Smoke is a run small enough for CI (well under a minute): it keeps every
// code path working and asserts nothing about time.
func Smoke(bins Bins) Options {
	return Options{
		Bins: bins, Smoke: true, Trials: 5, ShutdownN: []int{5}, ShutdownTrials: 1,
		ScaleN: []int{5, 10}, ScaleCrashTrials: 3, ListCalls: 10, ListGap: 10 * time.Millisecond,
		Settle: 200 * time.Millisecond, IdleWindow: time.Second, SupervisordN: []int{5},
		SupervisordStopTimeout: time.Minute,
		PyTrials:               3, PyLongTrials: 2, PyIdleN: 3, PyIdleWindows: 1, PyIdleWindow: time.Second,
	}
}

// ParseInts parses "100,500,1000".
func ParseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// Bench is one run. Not safe for concurrent use.
type Bench struct {
	o Options
	R *Report
}

// New returns a run with an empty report for machine m.
func New(o Options, m Machine, command string) *Bench {
	if o.Log == nil {
		o.Log = os.Stderr
	}
	return &Bench{o: o, R: &Report{Machine: m, Command: command, Smoke: o.Smoke}}
}

func (b *Bench) logf(format string, a ...any) {
	fmt.Fprintf(b.o.Log, "%s hivebench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func (b *Bench) want(name string) bool {
	if len(b.o.Only) == 0 {
		return true
	}
	for _, n := range b.o.Only {
		// "python:launch" selects one part of a scenario, and so the
		// scenario.
		if n == name || strings.HasPrefix(n, name+":") {
			return true
		}
	}
	return false
}

// wantPart reports whether part of scenario was asked for: the whole
// scenario, or "scenario:part".
func (b *Bench) wantPart(scenario, part string) bool {
	if len(b.o.Only) == 0 {
		return true
	}
	for _, n := range b.o.Only {
		if n == scenario || n == scenario+":"+part {
			return true
		}
	}
	return false
}

// Run runs every scenario in order. A scenario that fails is reported (in
// the notes and the returned error) and the run goes on with the next.
func (b *Bench) Run() error {
	start := time.Now()
	tmp := b.o.TmpDir
	if tmp == "" {
		tmp = os.TempDir()
	}
	b.R.Notes = append(b.R.Notes, fmt.Sprintf("Hive state directories (with the durable registry the hive fsyncs on every state change but the steps of a start) "+
		"were in %s (%s). The machine is shared: the `load` column is the 1-minute load average when each figure was taken.", tmp, fsType(tmp)))
	var errs []string
	steps := []struct {
		name string
		f    func() error
	}{
		{"crash", b.crashAndReady},
		{"probe", b.probeReady},
		{"forcekill", b.forceKill},
		{"shutdown", b.shutdown},
		{"scale", b.scale},
		{"supervisord", b.supervisord},
		{"model", b.model},
		{"frontdoor", b.frontdoor},
		{"python", b.python},
		{"queen", b.queenBench},
	}
	for _, s := range steps {
		if !b.want(s.name) {
			continue
		}
		b.logf("scenario %s", s.name)
		t0 := time.Now()
		if err := s.f(); err != nil {
			b.logf("scenario %s FAILED: %v", s.name, err)
			errs = append(errs, fmt.Sprintf("%s: %v", s.name, err))
			b.R.Notes = append(b.R.Notes, fmt.Sprintf("Scenario %s did not complete: %v", s.name, oneLine(err)))
		}
		b.logf("scenario %s done in %s", s.name, time.Since(t0).Round(time.Millisecond))
	}
	b.compare()
	b.R.Duration = time.Since(start).Round(time.Second).String()
	if len(errs) > 0 {
		return fmt.Errorf("%d scenarios failed:\n%s", len(errs), strings.Join(errs, "\n"))
	}
	return nil
}

func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	return s
}

// startHive starts a daemon with the run's binaries and Keep.
func (b *Bench) startHive(o HiveOptions) (*Hive, error) {
	o.Keep, o.TmpDir = b.o.Keep, b.o.TmpDir
	h, err := StartHive(b.o.Bins, o)
	if err == nil && b.o.Keep {
		b.logf("  hive dir %s", h.Dir)
	}
	return h, err
}

// fsType names the filesystem that holds dir.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "unknown filesystem"
	}
	switch uint32(st.Type) {
	case 0x01021994:
		return "tmpfs"
	case 0xEF53:
		return "ext4 (or ext2/3)"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem magic %#x", uint32(st.Type))
}
