package config

import (
	"math"
	"testing"
)

// FuzzApplyCeilings checks SPEC §14's ceilings on arbitrary limits: what a
// request gets is never above limits_max (where set), never above the
// configured default where no max is set, and never 0 (off) where the
// config sets a limit.
func FuzzApplyCeilings(f *testing.F) {
	f.Add(int64(512<<20), int64(0), int64(1<<30), 1.0, 0.0, 2.0, int64(64), int64(0), int64(0), uint64(256), uint64(4096), uint64(1024))
	f.Add(int64(0), int64(0), int64(0), 0.0, 0.0, 0.0, int64(0), int64(0), int64(0), uint64(0), uint64(0), uint64(0))
	f.Add(int64(0), int64(8<<30), int64(1<<30), 0.0, 3.5, 2.0, int64(0), int64(100), int64(50), uint64(0), uint64(16), uint64(0))
	f.Fuzz(func(t *testing.T, dm, rm, mm int64, dc, rc, mc float64, dp, rp, mp int64, dn, rn, mn uint64) {
		if math.IsNaN(dc) || math.IsNaN(rc) || math.IsNaN(mc) || math.IsInf(dc, 0) || math.IsInf(rc, 0) || math.IsInf(mc, 0) {
			return // Validate refuses these before ceilings apply
		}
		def := Limits{MemoryMaxBytes: dm, CPUMax: dc, PidsMax: dp, Nofile: dn}
		req := Limits{MemoryMaxBytes: rm, CPUMax: rc, PidsMax: rp, Nofile: rn}
		max := Limits{MemoryMaxBytes: mm, CPUMax: mc, PidsMax: mp, Nofile: mn}
		got, err := ApplyCeilings(def, req, max)
		if err != nil {
			if _, ok := err.(*CeilingError); !ok {
				t.Fatalf("error type %T", err)
			}
			return
		}
		check := func(name string, d, r, m, g float64) {
			ceiling := m
			if ceiling <= 0 {
				ceiling = d
			}
			if ceiling > 0 && (g <= 0 || g > ceiling) {
				t.Fatalf("%s: default %v request %v max %v → %v", name, d, r, m, g)
			}
			if r > 0 && g != r {
				t.Fatalf("%s: a request's own value %v became %v", name, r, g)
			}
		}
		check("memory", float64(dm), float64(rm), float64(mm), float64(got.MemoryMaxBytes))
		check("cpu", dc, rc, mc, got.CPUMax)
		check("pids", float64(dp), float64(rp), float64(mp), float64(got.PidsMax))
		check("nofile", float64(dn), float64(rn), float64(mn), float64(got.Nofile))
	})
}
