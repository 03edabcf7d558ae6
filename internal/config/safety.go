package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// MinInterval is the floor of health.interval (when not 0) and
// heartbeat.interval (SPEC §14): a probe or heartbeat more often than this
// costs the hive CPU for no gain.
const MinInterval = Duration(100 * time.Millisecond)

var allowEnvRe = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*(\*)?$`)

// CheckAllowEnv checks one allow_env entry: a name, or a prefix written
// PREFIX_* (the prefix must end in "_" so "LLMW_FAKE_*" cannot also allow
// LLMW_FAKEX). RBEE_ names are the hive's and cannot be allowed.
func CheckAllowEnv(a string) error {
	if !allowEnvRe.MatchString(a) || len(a) > 128 {
		return fmt.Errorf("%q is not a variable name or PREFIX_* (want [A-Z_][A-Z0-9_]*, optionally ending in _*)", a)
	}
	if p, ok := strings.CutSuffix(a, "*"); ok && !strings.HasSuffix(p, "_") {
		return fmt.Errorf("%q: a prefix must end in _ (write %s_*)", a, p)
	}
	if strings.HasPrefix(a, "RBEE_") || a == "RBEE_*" || strings.HasPrefix("RBEE_", strings.TrimSuffix(a, "*")) {
		return fmt.Errorf("%q would allow RBEE_ names, which are reserved", a)
	}
	return nil
}

// CeilingError says which limit a spawn asked for beyond what the config
// allows.
type CeilingError struct {
	Field   string // e.g. "limits.memory_max_bytes"
	Message string
}

func (e *CeilingError) Error() string { return e.Field + ": " + e.Message }

// ApplyCeilings returns the limits a worker gets when the config's defaults
// are def, the request (defaults overridden by its settings) asks for req,
// and the config's limits_max is max (SPEC §14). For each limit the ceiling
// is max's value, else def's: a request may ask for anything up to it, but
// not more, and not 0 (no limit) where a ceiling exists. A request that
// leaves a limit at 0 when only max sets it gets the max. It is pure.
func ApplyCeilings(def, req, max Limits) (Limits, error) {
	out := req
	type field struct {
		name      string
		d, r, m   float64
		set       func(float64)
		unitFloat bool
	}
	fs := []field{
		{"limits.memory_max_bytes", float64(def.MemoryMaxBytes), float64(req.MemoryMaxBytes), float64(max.MemoryMaxBytes),
			func(v float64) { out.MemoryMaxBytes = int64(v) }, false},
		{"limits.cpu_max", def.CPUMax, req.CPUMax, max.CPUMax, func(v float64) { out.CPUMax = v }, true},
		{"limits.pids_max", float64(def.PidsMax), float64(req.PidsMax), float64(max.PidsMax),
			func(v float64) { out.PidsMax = int64(v) }, false},
		{"limits.nofile", float64(def.Nofile), float64(req.Nofile), float64(max.Nofile),
			func(v float64) { out.Nofile = uint64(v) }, false},
	}
	for _, f := range fs {
		ceiling := f.m
		if ceiling <= 0 {
			ceiling = f.d
		}
		if ceiling <= 0 || !(ceiling == ceiling) { // no ceiling (or NaN, refused by Validate)
			continue
		}
		show := func(v float64) string {
			if f.unitFloat {
				return fmt.Sprint(v)
			}
			return fmt.Sprintf("%.0f", v)
		}
		switch {
		case f.r <= 0 && f.d > 0:
			return def, &CeilingError{f.name, fmt.Sprintf("0 (no limit) is not allowed: the config sets %s", show(f.d))}
		case f.r <= 0:
			// Only limits_max sets this limit: it applies.
			f.set(f.m)
		case f.r > ceiling:
			which := "limits_max"
			if f.m <= 0 {
				which = "the configured default"
			}
			return def, &CeilingError{f.name, fmt.Sprintf("%s is above %s (%s)", show(f.r), which, show(ceiling))}
		}
	}
	return out, nil
}
