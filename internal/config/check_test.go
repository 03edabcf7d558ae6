package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Regression: config and settings errors leaked Go internals ("json: cannot
// unmarshal string into Go struct field Restart.restart.max_failures of
// type int", "of type config.Health").
func TestErrorsNameKeyGivenAndWanted(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"defaults:\n  idle_timout: 5m\n", `line 2: unknown key "idle_timout" in defaults (did you mean "idle_timeout"?)`},
		{"idle_timeout: 5m\n", `line 1: unknown key "idle_timeout" (did you mean "defaults.idle_timeout"?)`},
		{"defaults:\n  restart:\n    max_failures: abc\n", `line 3: defaults.restart.max_failures: got "abc", want a whole number such as 5`},
		{"defaults:\n  health: 5s\n", `line 2: defaults.health: got "5s", want a mapping of keys (interval, timeout, failure_threshold)`},
		{"defaults:\n  idle_timeout: 30\n", `line 2: defaults.idle_timeout: got 30, want a duration with a unit`},
		{"ports: {min: \"5\"}\n", `line 1: ports.min: got the string "5", want a whole number`},
		{"memory_reserve_bytes: lots\n", `line 1: memory_reserve_bytes: got "lots", want a size in bytes`},
		{"profiles:\n  x:\n    command: [/bin/true, \"{prot}\"]\n", `line 3: profiles.x.command: unknown placeholder {prot} (did you mean {port}?)`},
	} {
		_, err := Parse([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "Go struct") {
			t.Errorf("%q: want %q, got %v", c.yaml, c.want, err)
		}
	}
	for _, c := range []struct{ json, want string }{
		{`{"restart":{"max_failures":"abc"}}`, `settings: restart.max_failures: got the string "abc", want a whole number`},
		{`{"health":"5s"}`, `settings: health: got "5s", want a mapping of keys`},
		{`{"idle_timeout":30}`, `settings: idle_timeout: got 30, want a duration with a unit`},
		{`{"idle_timout":"1s"}`, `settings: unknown key "idle_timout" (did you mean "idle_timeout"?)`},
	} {
		_, err := Override(DefaultSettings(), json.RawMessage(c.json))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "Go struct") {
			t.Errorf("%s: want %q, got %v", c.json, c.want, err)
		}
	}
}

func TestSizesAccepted(t *testing.T) {
	c, err := Parse([]byte("memory_reserve_bytes: 8GiB\ndefaults:\n  limits: {memory_max_bytes: 512MiB}\n"))
	if err != nil || c.MemoryReserveBytes != 8<<30 || c.Defaults.Limits.MemoryMaxBytes != 512<<20 {
		t.Fatalf("%v %+v", err, c)
	}
	s, err := Override(DefaultSettings(), json.RawMessage(`{"limits":{"memory_max_bytes":"1.5GiB"}}`))
	if err != nil || s.Limits.MemoryMaxBytes != 3<<29 {
		t.Fatalf("%v %d", err, s.Limits.MemoryMaxBytes)
	}
	for in, want := range map[string]int64{"4096": 4096, "8GiB": 8 << 30, "512 MiB": 512 << 20, "1GB": 1e9, "2k": 2048} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "GiB", "-1GiB", "8 parsecs", "1e400GiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestSettingValue(t *testing.T) {
	for _, c := range []struct {
		k, v string
		want any
	}{{"idle_timeout", "30s", "30s"}, {"restart.max_failures", "3", int64(3)}, {"limits.memory_max_bytes", "8GiB", int64(8 << 30)},
		{"restart.jitter", "0.5", 0.5}, {"restart.policy", "never", "never"}} {
		if got, err := SettingValue(c.k, c.v); err != nil || got != c.want {
			t.Errorf("%s=%s: %v %v", c.k, c.v, got, err)
		}
	}
	for _, c := range []struct{ k, v, want string }{
		{"restart.max_failures", "abc", `restart.max_failures: got "abc", want a whole number`},
		{"health", "5s", "health is a group of settings; set one of them: health.failure_threshold, health.interval, health.timeout"},
		{"idle_timout", "1s", `(did you mean "idle_timeout"?)`},
		{"idle_timeout", "30", `idle_timeout: got "30", want a duration with a unit`},
	} {
		if _, err := SettingValue(c.k, c.v); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%s: want %q, got %v", c.k, c.v, c.want, err)
		}
	}
}

// Regression: the README's llama-server profile failed only at the first
// spawn ("not found beside rbee-hive or on PATH").
func TestLoadChecksProfileCommands(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "hive.yaml")
	write := func(s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("profiles:\n  llama-server:\n    command: [llama-server-none-such, --port, \"{port}\"]\n")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), `line 3: profiles.llama-server.command: "llama-server-none-such" not found beside`) {
		t.Fatalf("missing command: %v", err)
	}
	write("profiles:\n  x:\n    command: [" + dir + "/nope]\n")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing absolute command: %v", err)
	}
	write("profiles:\n  sh:\n    command: [sh, -c, \"exec sleep 1\", \"{port}\", \"{model}\", \"{gpu_uuid}\", \"{ctx}\"]\n")
	if _, err := Load(p); err != nil {
		t.Fatalf("sh on PATH with known placeholders: %v", err)
	}
}

func TestWarnsWhenCPUMaxExceedsCores(t *testing.T) {
	c := Default()
	c.Profiles = map[string]Profile{"rbee": {Command: []string{"sh"}}}
	if w := c.Warnings(); len(w) != 0 {
		t.Fatalf("defaults warn: %v", w)
	}
	c.Defaults.Limits.CPUMax = float64(runtime.NumCPU() + 1)
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "cpu_max") {
		t.Fatalf("got %v", w)
	}
}

// Keys a ",inline" map takes (free-form per-entry settings) are left to the
// owner's Validate; inline structs' keys are the parent's.
func TestCheckerInline(t *testing.T) {
	type inner struct {
		B int `yaml:"b"`
	}
	type withMap struct {
		A    int            `yaml:"a"`
		Rest map[string]any `yaml:",inline"`
	}
	type withStruct struct {
		A     int `yaml:"a"`
		inner `yaml:",inline"`
	}
	parse := func(s string, root any) error {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(s), &n); err != nil {
			t.Fatal(err)
		}
		return checkNode(&n, root, true, nil)
	}
	if err := parse("a: 1\nanything: [x]\n", withMap{}); err != nil {
		t.Errorf("inline map: %v", err)
	}
	if err := parse("a: 1\nb: 2\n", withStruct{}); err != nil {
		t.Errorf("inline struct: %v", err)
	}
	if err := parse("a: 1\nb: x\n", withStruct{}); err == nil || !strings.Contains(err.Error(), `b: got "x"`) {
		t.Errorf("inline struct value: %v", err)
	}
	if err := parse("a: 1\nc: 2\n", withStruct{}); err == nil || !strings.Contains(err.Error(), `unknown key "c"`) {
		t.Errorf("inline struct unknown: %v", err)
	}
}

// The built-in rbee profile is not in the file, so Load does not check it;
// the daemon warns at start when its worker binary is missing.
func TestWarnsWhenTheBuiltinWorkerIsMissing(t *testing.T) {
	c := Default()
	c.Profiles["rbee"] = Profile{Command: []string{"llm-worker-rbee-none-such"}}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], `profile rbee: command "llm-worker-rbee-none-such" not found beside`) {
		t.Fatalf("got %v", w)
	}
}
