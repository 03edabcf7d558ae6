// Package validate checks what API callers send (SPEC §4 "Validation"): ids,
// backends, env, labels. Every rejection is an *Error whose Code names the
// field, for a 400 response.
package validate

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rbee/rbee-hive/internal/clip"
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
	envKeyRe = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)
	labelRe  = regexp.MustCompile(`^[A-Za-z0-9_./-]+$`)
)

// isID reports whether s is made only of [A-Za-z0-9_-] (checked on every
// heartbeat, so without a regexp).
func isID(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

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
	if id == "" || len(id) > MaxIDLen || !isID(id) {
		return bad("INVALID_WORKER_ID", "worker id must be 1-%d characters of [A-Za-z0-9_-]", MaxIDLen)
	}
	return nil
}

// Backend checks a backend name.
func Backend(b string) *Error {
	if b == "" || len(b) > MaxBackendLen || !isID(b) {
		return bad("INVALID_BACKEND", "backend must be 1-%d characters of [A-Za-z0-9_-]", MaxBackendLen)
	}
	// A template may put {backend} as an argument of its own: a leading
	// "-" would make it an option.
	if strings.HasPrefix(b, "-") {
		return bad("INVALID_BACKEND", "backend must not start with \"-\" (it would be read as an option)")
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

// Env checks a request's env against its profile's allow_env (SPEC §14):
// at most MaxEnvEntries entries, key syntax [A-Z_][A-Z0-9_]*, values valid
// UTF-8 without NUL and at most MaxEnvValueLen bytes; every RBEE_ name is
// refused (the hive's own), and so is every name allow_env does not list
// (a name, or a prefix written PREFIX_*). The error is ENV_NOT_ALLOWED
// naming the variable, or INVALID_ENV for a malformed entry.
func Env(env map[string]string, allow []string) *Error {
	if len(env) > MaxEnvEntries {
		return bad("INVALID_ENV", "env has %d entries; at most %d", len(env), MaxEnvEntries)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the same request names the same variable each time
	for _, k := range keys {
		v := env[k]
		if len(k) > MaxEnvKeyLen || !envKeyRe.MatchString(k) {
			return bad("INVALID_ENV", "env key %q must match [A-Z_][A-Z0-9_]* (at most %d characters)", clip.String(k, 40), MaxEnvKeyLen)
		}
		if len(v) > MaxEnvValueLen || strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
			return bad("INVALID_ENV", "env %s: value must be valid UTF-8 without NUL, at most %d bytes", k, MaxEnvValueLen)
		}
		if strings.HasPrefix(k, "RBEE_") {
			return bad("ENV_NOT_ALLOWED", "env %s is not allowed: every RBEE_ name is reserved for the hive", k)
		}
		if !EnvAllowed(allow, k) {
			return bad("ENV_NOT_ALLOWED", "env %s is not allowed: the profile's allow_env does not list it", k)
		}
	}
	return nil
}

// EnvAllowed reports whether allow (allow_env entries: names, or prefixes
// written PREFIX_*) lets a request set the variable k. RBEE_ names never.
func EnvAllowed(allow []string, k string) bool {
	if strings.HasPrefix(k, "RBEE_") {
		return false
	}
	for _, a := range allow {
		if p, ok := strings.CutSuffix(a, "*"); ok {
			if strings.HasPrefix(k, p) {
				return true
			}
		} else if a == k {
			return true
		}
	}
	return false
}

// Labels checks labels: at most MaxLabels, keys 1-MaxLabelKeyLen characters
// of [A-Za-z0-9_./-], values at most MaxLabelValLen bytes of printable UTF-8
// (no control or format characters).
func Labels(labels map[string]string) *Error {
	if len(labels) > MaxLabels {
		return bad("INVALID_LABELS", "%d labels; at most %d", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if k == "" || len(k) > MaxLabelKeyLen || !labelRe.MatchString(k) {
			return bad("INVALID_LABELS", "label key %q must be 1-%d characters of [A-Za-z0-9_./-]", clip.String(k, 40), MaxLabelKeyLen)
		}
		if len(v) > MaxLabelValLen || !utf8.ValidString(v) || strings.IndexFunc(v, unprintable) >= 0 {
			return bad("INVALID_LABELS", "label %s: value must be printable UTF-8, at most %d bytes", k, MaxLabelValLen)
		}
	}
	return nil
}

// unprintable: control characters and invisible format characters (bidi
// overrides, zero-width spaces) that would let a label lie in a terminal.
func unprintable(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }
