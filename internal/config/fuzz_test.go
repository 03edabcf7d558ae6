package config

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the config loader. Invariant: no
// panic; a config that loads is valid, has the built-in rbee profile and a
// default profile that exists.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"addr: 127.0.0.1:9200\nports: {min: 8081, max: 9000}\nshutdown_timeout: 30s\n",
		"defaults:\n  idle_timeout: 0\n  restart: {policy: always, jitter: 0.5}\n  limits: {memory_max_bytes: 4194304, cpu_max: 1.5}\n",
		"profiles:\n  llama:\n    command: [llama-server, -m, \"{model}\", --port, \"{port}\"]\n    readiness: {path: /health, status: 200}\n    stop_signal: SIGINT\n",
		"api_token_file: /etc/rbee/token\nmetrics_public: true\nmodel_roots: [/models]\n",
		"defaults:\n  idle_timout: 5m\n",
		"shutdown_timeout: forever\n",
		"a: &a [*a, *a]\n",
		"defaults: {heartbeat: {interval: 0}}\n",
		"ports: {min: 9000, max: 1}\n",
		"retention: {max_age: -1s}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
		if _, ok := cfg.Profiles["rbee"]; !ok {
			t.Fatal("the rbee profile is missing")
		}
		if _, ok := cfg.Profiles[cfg.Defaults.Profile]; !ok {
			t.Fatalf("default profile %q does not exist", cfg.Defaults.Profile)
		}
		for name, p := range cfg.Profiles {
			if len(p.Command) == 0 || p.Command[0] == "" || p.Readiness.Path == "" || p.Liveness.Path == "" {
				t.Fatalf("profile %s incomplete: %+v", name, p)
			}
		}
	})
}

// FuzzOverride feeds arbitrary JSON to the per-spawn settings override (a
// spawn request's "settings"). Invariant: no panic; an accepted override is
// valid; a refused one leaves the base as it was.
func FuzzOverride(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, ``, `{"idle_timeout":"1s"}`, `{"stop_timeout":"-1s"}`, `{"ready_timeout":"25h"}`,
		`{"health":{"interval":"1s","timeout":"0"}}`, `{"restart":{"policy":"always","jitter":1,"max_failures":1000}}`,
		`{"limits":{"memory_max_bytes":4194304,"cpu_max":0.01,"pids_max":4194304,"nofile":1048576}}`,
		`{"limits":{"nofile":-1}}`, `{"profile":"x"}`, `{"nope":1}`, `{} {}`, `{"idle_timeout":0}`, `[1]`,
	} {
		f.Add([]byte(s))
	}
	base := DefaultSettings()
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := Override(base, json.RawMessage(raw))
		if err != nil {
			if !reflect.DeepEqual(s, base) {
				t.Fatalf("a refused override changed the settings: %+v", s)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted invalid settings %q: %v", raw, err)
		}
	})
}
