// Package validate checks what API callers send (SPEC §4 "Validation"): ids,
// backends, env, labels. Every rejection is an *Error whose Code names the
// field, for a 400 response.
package validate

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Error is a rejected field.
type Error struct {
	Code    string // e.g. INVALID_BACKEND
	Message string
}

func (e *Error) Error() string { return e.Message }

func bad(code, format string, a ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

var (
	idRe     = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	envKeyRe = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)
	labelRe  = regexp.MustCompile(`^[A-Za-z0-9_./-]+$`)
)

// Limits on request contents.
const (
	MaxIDLen       = 256
	MaxBackendLen  = 64
	MaxEnvEntries  = 64
	MaxEnvKeyLen   = 128
	MaxEnvValueLen = 32 << 10
	MaxLabels      = 32
	MaxLabelKeyLen = 63
	MaxLabelValLen = 256
	MaxDevice      = 1023
)

// WorkerID checks a worker id from a path or a body.
func WorkerID(id string) *Error {
	if id == "" || len(id) > MaxIDLen || !idRe.MatchString(id) {
		return bad("INVALID_WORKER_ID", "worker id must be 1-%d characters of [A-Za-z0-9_-]", MaxIDLen)
	}
	return nil
}

// Backend checks a backend name.
func Backend(b string) *Error {
	if b == "" || len(b) > MaxBackendLen || !idRe.MatchString(b) {
		return bad("INVALID_BACKEND", "backend must be 1-%d characters of [A-Za-z0-9_-]", MaxBackendLen)
	}
	return nil
}

// Device checks a device index.
func Device(d int) *Error {
	if d < 0 || d > MaxDevice {
		return bad("INVALID_DEVICE", "device must be 0..%d", MaxDevice)
	}
	return nil
}

// DeniedEnv are variables that change how a process loads code; a spawn
// request may not set them unless the config's allow_env names them.
var DeniedEnv = []string{
	"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "LD_DEBUG_OUTPUT", "LD_PROFILE", "LD_ORIGIN_PATH",
	"GCONV_PATH", "GLIBC_TUNABLES", "MALLOC_TRACE", "NODE_OPTIONS", "PYTHONPATH", "PYTHONSTARTUP",
	"PYTHONHOME", "PERL5LIB", "PERL5OPT", "RUBYLIB", "RUBYOPT", "BASH_ENV", "ENV", "PATH", "IFS",
}

// ReservedEnv are set by the hive for each worker (or are the hive's own
// secrets) and cannot be set by a request.
var ReservedEnv = []string{"RBEE_WORKER_TOKEN", "RBEE_WORKER_ID", "RBEE_HEARTBEAT_INTERVAL_MS",
	"RBEE_HIVE_MARKER", "RBEE_API_TOKEN", "RBEE_HIVE_URL"}

func reservedEnv(k string) bool {
	for _, r := range ReservedEnv {
		if k == r {
			return true
		}
	}
	return strings.HasPrefix(k, "LD_") || strings.HasPrefix(k, "DYLD_")
}

// Env checks a request's env: key syntax, no NUL or over-long values, the
// deny-list (minus allow), and the hive's own RBEE_ variables.
func Env(env map[string]string, allow []string) *Error {
	if len(env) > MaxEnvEntries {
		return bad("INVALID_ENV", "env has %d entries; at most %d", len(env), MaxEnvEntries)
	}
	allowed := map[string]bool{}
	for _, a := range allow {
		allowed[a] = true
	}
	for k, v := range env {
		if len(k) > MaxEnvKeyLen || !envKeyRe.MatchString(k) {
			return bad("INVALID_ENV", "env key %q must match [A-Z_][A-Z0-9_]* (at most %d characters)", clip(k), MaxEnvKeyLen)
		}
		if len(v) > MaxEnvValueLen || strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
			return bad("INVALID_ENV", "env %s: value must be valid UTF-8 without NUL, at most %d bytes", k, MaxEnvValueLen)
		}
		if allowed[k] {
			continue
		}
		for _, d := range DeniedEnv {
			if k == d {
				return bad("INVALID_ENV", "env %s is refused: it changes how the worker loads code (allow it with allow_env in the config)", k)
			}
		}
		if reservedEnv(k) {
			return bad("INVALID_ENV", "env %s is refused: the hive sets it (reserved: %s, LD_*, DYLD_*)", k, strings.Join(ReservedEnv, ", "))
		}
	}
	return nil
}

// Labels checks labels: bounded count and sizes, printable values.
func Labels(labels map[string]string) *Error {
	if len(labels) > MaxLabels {
		return bad("INVALID_LABELS", "%d labels; at most %d", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if k == "" || len(k) > MaxLabelKeyLen || !labelRe.MatchString(k) {
			return bad("INVALID_LABELS", "label key %q must be 1-%d characters of [A-Za-z0-9_./-]", clip(k), MaxLabelKeyLen)
		}
		if len(v) > MaxLabelValLen || !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0 {
			return bad("INVALID_LABELS", "label %s: value must be printable UTF-8, at most %d bytes", k, MaxLabelValLen)
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
