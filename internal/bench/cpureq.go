package bench

import (
	"fmt"
	"path/filepath"
	"time"
)

// proc is a process whose CPU per proxied request is measured; pprof, when
// set, is the base URL of its net/http/pprof (…/debug/pprof/).
type proc struct {
	name  string
	pid   int
	pprof string
}

// cpuPerRequest measures what each of procs spends per request while 10
// clients send non-streaming requests for model to base, back to back: its
// CPU (the scheduler's own accounting, /proc/PID/task/*/schedstat) over the
// run divided by the requests, in µs, one value per run. The figure does
// not depend on how many other processes share the cores, as latencies do.
// With a profile directory, a CPU profile of each process that serves
// pprof is then taken over 5 s of the same load (after the measurement:
// the profiler's own ticks would count), saved as <prefix>-<name>.cpu.pprof.
func (b *Bench) cpuPerRequest(section, path, base, model, prefix string, procs []proc) error {
	const conc = 10
	runs, n := 3, 150
	if b.o.Smoke {
		runs, n = 2, 5
	}
	cl := fdClient(conc)
	defer cl.CloseIdleConnections()
	if _, err := fdLoad(cl, base, model, conc, 5, false); err != nil { // connections open, caches warm
		return err
	}
	per := make([][]float64, len(procs))
	for r := 0; r < runs; r++ {
		before := make([]time.Duration, len(procs))
		for i, p := range procs {
			c, err := cpuNs(p.pid)
			if err != nil {
				return err
			}
			before[i] = c
		}
		lat, err := fdLoad(cl, base, model, conc, n, false)
		if err != nil {
			return err
		}
		for i, p := range procs {
			c, err := cpuNs(p.pid)
			if err != nil {
				return err
			}
			per[i] = append(per[i], float64(c-before[i])/1e3/float64(len(lat)))
		}
	}
	for i, p := range procs {
		b.add(Result{Section: section, Unit: "µs", N: conc}, fmt.Sprintf("%s CPU per request, %s", p.name, path), per[i], nil,
			fmt.Sprintf("/proc/PID/task/*/schedstat over %d non-streaming requests from 10 clients back to back; one value per run", conc*n))
	}
	if b.o.ProfileDir == "" {
		return nil
	}
	for _, p := range procs {
		if p.pprof == "" {
			continue
		}
		file := filepath.Join(b.o.ProfileDir, fmt.Sprintf("%s-%s.cpu.pprof", prefix, p.name))
		done := make(chan error, 1)
		go func() { done <- fetch(p.pprof+"profile?seconds=5", file) }()
		var err error
	load:
		for {
			select {
			case err = <-done:
				break load
			default:
			}
			if _, lerr := fdLoad(cl, base, model, conc, 20, false); lerr != nil {
				err = <-done
				if err == nil {
					err = lerr
				}
				break
			}
		}
		if err != nil {
			b.logf("  cpu profile of %s: %v", p.name, err)
		} else {
			b.logf("  cpu profile of %s under 10 clients: %s", p.name, file)
		}
	}
	return nil
}
