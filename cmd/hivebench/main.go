// Command hivebench is rbee-hive's benchmark: it starts real daemons
// (bin/rbee-hive) with real reference workers (bin/llm-worker-rbee) and, side
// by side, a private supervisord running the same worker binary, and writes
// the figures (medians, p99, trials, targets) to bench/results.md and
// bench/results.json. Run it with `make bench` (full, several minutes) or
// `make bench-smoke` (tiny N, a few trials; numbers not meaningful).
//
//	hivebench [--bin DIR] [--out DIR] [--smoke] [--trials N] [--scale 100,500,1000]
//	          [--idle 60s] [--settle 10s] [--shutdown 10,50,200] [--supervisord 100,1000]
//	          [--py-trials N] [--py-idle 30s] [--py-idle-n 20]
//	          [--only crash,probe,forcekill,shutdown,scale,supervisord,model,frontdoor,python,queen]
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rbee/rbee-hive/internal/bench"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == bench.FloorServerArg {
		if err := bench.FloorServer(); err != nil {
			fmt.Fprintln(os.Stderr, "hivebench floor server:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 3 && os.Args[1] == bench.RelayFloorArg {
		if err := bench.RelayFloor(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "hivebench relay floor:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hivebench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("hivebench", flag.ContinueOnError)
	binDir := fs.String("bin", "bin", "directory with rbee-hive, llm-worker-rbee and genericworker")
	outDir := fs.String("out", "bench", "where results.md and results.json are written")
	smoke := fs.Bool("smoke", false, "tiny N and few trials, for CI (no meaningful numbers)")
	trials := fs.Int("trials", 0, "latency trials per figure (default 200; smoke 5)")
	scale := fs.String("scale", "", "worker counts of the scale scenario (default 100,500,1000; smoke 5,10)")
	idle := fs.Duration("idle", 0, "idle CPU measurement window (default 60s; smoke 1s)")
	settle := fs.Duration("settle", 0, "wait after the last worker is ready before measuring idle costs (default 10s)")
	shutdown := fs.String("shutdown", "", "worker counts of the hive-shutdown scenario (default 10,50,200)")
	sup := fs.String("supervisord", "", `program counts of the supervisord comparison (default 100,1000; "none" skips it)`)
	profile := fs.String("profile", "", "save CPU and heap profiles of the scale hives, and CPU profiles of the hive and rbee-queen under 10 clients (frontdoor, queen; all run with --pprof), in this directory")
	tmp := fs.String("tmp", "", "directory for the hives' state dirs (default $TMPDIR or /tmp; e.g. /dev/shm to leave the disk out)")
	keep := fs.Bool("keep", false, "keep each hive's temporary directory (config, state, hive.log)")
	only := fs.String("only", "", "comma-separated scenarios to run: crash,probe,forcekill,shutdown,scale,supervisord,model,frontdoor,python,queen; python:PART runs one part of python (idle, launch, ready, restart, stop), frontdoor:PART of frontdoor (latency, cold, streams, swap), queen:PART of queen (ready, overhead, writes, scale)")
	pyTrials := fs.Int("py-trials", 0, "trials per figure of the silent Python worker scenario (default 100: a p99 of fewer is about the slowest trial; smoke 3)")
	pyLong := fs.Int("py-long-trials", 0, "trials of its 30 s load, all at once (default 10; smoke 2)")
	pyIdle := fs.Duration("py-idle", 0, "its idle CPU window (default 30s; smoke 1s)")
	pyIdleWindows := fs.Int("py-idle-windows", 0, "its idle CPU windows, one after the other (default 4; smoke 1)")
	pyIdleN := fs.Int("py-idle-n", 0, "its idle workers (default 20; smoke 3)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	bins, err := bench.FindBins(*binDir)
	if err != nil {
		return err
	}
	o := bench.Full(bins)
	if *smoke {
		o = bench.Smoke(bins)
	}
	if *trials > 0 {
		o.Trials = *trials
		o.ScaleCrashTrials = *trials
	}
	if *idle > 0 {
		o.IdleWindow = *idle
	}
	if *settle > 0 {
		o.Settle = *settle
	}
	for _, f := range []struct {
		s   string
		dst *[]int
	}{{*scale, &o.ScaleN}, {*shutdown, &o.ShutdownN}, {*sup, &o.SupervisordN}} {
		switch f.s {
		case "":
		case "none":
			*f.dst = nil
		default:
			v, err := bench.ParseInts(f.s)
			if err != nil {
				return err
			}
			*f.dst = v
		}
	}
	if *pyTrials > 0 {
		o.PyTrials = *pyTrials
	}
	if *pyLong > 0 {
		o.PyLongTrials = *pyLong
	}
	if *pyIdle > 0 {
		o.PyIdleWindow = *pyIdle
	}
	if *pyIdleWindows > 0 {
		o.PyIdleWindows = *pyIdleWindows
	}
	if *pyIdleN > 0 {
		o.PyIdleN = *pyIdleN
	}
	o.Keep = *keep
	o.TmpDir = *tmp
	o.ProfileDir = *profile
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	cmdline := "hivebench " + strings.Join(args, " ")
	b := bench.New(o, bench.CurrentMachine(time.Now()), strings.TrimSpace(cmdline))
	runErr := b.Run()
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	js, err := b.R.JSON()
	if err != nil {
		return err
	}
	md := b.R.Markdown()
	for name, data := range map[string][]byte{"results.json": js, "results.md": md} {
		if err := os.WriteFile(filepath.Join(*outDir, name), data, 0o644); err != nil {
			return err
		}
	}
	os.Stdout.Write(md)
	return runErr
}
