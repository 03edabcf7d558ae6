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

// DeniedEnv are variables that change how a process (or a library it
// loads: the dynamic loader, interpreters, CUDA, ROCm, Vulkan, OpenCL,
// OpenMP, NCCL, OpenSSL) loads code. A spawn request may not set them unless
// the config's allow_env names them. Names with a prefix in DeniedEnvPrefixes
// are denied likewise. The list is best effort: it closes the well-known
// doors, it cannot close every one (SECURITY.md).
var DeniedEnv = []string{
	// dynamic loader and libc
	"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "LD_DEBUG_OUTPUT", "LD_PROFILE", "LD_ORIGIN_PATH",
	"GCONV_PATH", "GLIBC_TUNABLES", "MALLOC_TRACE", "LOCPATH", "NLSPATH", "HOSTALIASES",
	// interpreters and runtimes
	"NODE_OPTIONS", "NODE_PATH", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE",
	"PYTHONPLATLIBDIR", "PYTHONBREAKPOINT", "PYTHONINSPECT", "PERL5LIB", "PERLLIB", "PERL5OPT", "PERL5DB",
	"RUBYLIB", "RUBYOPT", "LUA_INIT", "LUA_PATH", "LUA_CPATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS",
	"JDK_JAVA_OPTIONS",
	// shells
	"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PATH", "IFS",
	// GPU and compute stacks that load plug-in libraries named by env
	"CUDA_INJECTION64_PATH", "CUDA_INJECTION32_PATH", "HSA_TOOLS_LIB", "OMP_TOOL_LIBRARIES",
	"VK_LAYER_PATH", "VK_ADD_LAYER_PATH", "VK_INSTANCE_LAYERS", "VK_ICD_FILENAMES", "VK_DRIVER_FILES",
	"VK_ADD_DRIVER_FILES", "OCL_ICD_VENDORS", "OPENCL_VENDOR_PATH", "NCCL_NET_PLUGIN", "NCCL_TUNER_PLUGIN",
	"OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
}

// DeniedEnvPrefixes deny every variable starting with them (the loader's
// LD_ and DYLD_ families, bash's exported functions), unless allow_env
// names the variable.
var DeniedEnvPrefixes = []string{"LD_", "DYLD_", "BASH_FUNC_"}

// ReservedEnv are set by the hive for each worker (or are the hive's own
// secrets) and cannot be set by a request, whatever allow_env says.
var ReservedEnv = []string{"RBEE_WORKER_TOKEN", "RBEE_WORKER_ID", "RBEE_HEARTBEAT_INTERVAL_MS",
	"RBEE_HIVE_MARKER", "RBEE_API_TOKEN", "RBEE_HIVE_URL"}

// Denied reports whether a request may not set env variable k unless
// allow_env names it.
func Denied(k string) bool {
	for _, d := range DeniedEnv {
		if k == d {
			return true
		}
	}
	for _, p := range DeniedEnvPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// Reserved reports whether env variable k is the hive's own.
func Reserved(k string) bool {
	for _, r := range ReservedEnv {
		if k == r {
			return true
		}
	}
	return false
}

// Env checks a request's env: at most MaxEnvEntries entries, key syntax
// [A-Z_][A-Z0-9_]*, values valid UTF-8 without NUL and at most
// MaxEnvValueLen bytes, the hive's reserved variables refused always, the
// deny-list refused unless allow names the key.
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
		if Reserved(k) {
			return bad("INVALID_ENV", "env %s is refused: the hive sets it (reserved: %s)", k, strings.Join(ReservedEnv, ", "))
		}
		if Denied(k) && !allowed[k] {
			return bad("INVALID_ENV", "env %s is refused: it changes how the worker loads code (allow it with allow_env in the config)", k)
		}
	}
	return nil
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
			return bad("INVALID_LABELS", "label key %q must be 1-%d characters of [A-Za-z0-9_./-]", clip(k), MaxLabelKeyLen)
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

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
