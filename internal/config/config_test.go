package config

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestEmptyFileIsTheDefaults(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.Addr != "127.0.0.1:9200" || c.Ports != d.Ports || c.Defaults.StopTimeout.D() != 10*time.Second ||
		c.Defaults.Health.FailureThreshold != 3 || c.Defaults.Restart.Policy != RestartOnFailure ||
		c.ShutdownTimeout.D() != 30*time.Second || c.Retention.MaxEntries != 1000 || c.MemoryReserveBytes != 2<<30 {
		t.Fatalf("defaults differ from SPEC §9: %+v", c)
	}
	p := c.Profiles["rbee"]
	if p.Protocol != ProtocolRbee || p.Command[0] != "llm-worker-rbee" || p.StopSig().String() != "terminated" {
		t.Fatalf("built-in rbee profile: %+v", p)
	}
}

func TestUnknownKeyNamesKeyAndLine(t *testing.T) {
	_, err := Parse([]byte("addr: 127.0.0.1:1\ndefaults:\n  idle_timeout: 1m\n  health:\n    intervall: 5s\n"))
	if err == nil || !strings.Contains(err.Error(), "line 5") || !strings.Contains(err.Error(), "intervall") {
		t.Fatalf("got %v", err)
	}
}

func TestDurationsAreStrings(t *testing.T) {
	c, err := Parse([]byte("shutdown_timeout: 250ms\ndefaults:\n  idle_timeout: 0\n  stop_timeout: \"2s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ShutdownTimeout.D() != 250*time.Millisecond || c.Defaults.IdleTimeout != 0 || c.Defaults.StopTimeout.D() != 2*time.Second {
		t.Fatalf("got %+v", c)
	}
	for _, bad := range []string{"shutdown_timeout: soon\n", "shutdown_timeout: 30\n", "shutdown_timeout: [1]\n"} {
		if _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: got %v", bad, err)
		}
	}
}

func TestGenericProfileGetsProbeDefaults(t *testing.T) {
	c, err := Parse([]byte("profiles:\n  llama:\n    command: [llama-server, --port, \"{port}\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Profiles["llama"]
	if p.Protocol != ProtocolHTTP || p.Readiness.Path != "/health" || p.Readiness.Status != 200 || p.StopSignal != "SIGTERM" {
		t.Fatalf("got %+v", p)
	}
	if _, ok := c.Profiles["rbee"]; !ok {
		t.Fatal("the built-in rbee profile was lost when another was configured")
	}
}

func TestValidateRejectsNonsense(t *testing.T) {
	for _, bad := range []string{
		"ports: {min: 9000, max: 8000}\n",
		"defaults:\n  stop_timeout: -1s\n",
		"defaults:\n  restart: {policy: sometimes}\n",
		"defaults:\n  restart: {jitter: 2}\n",
		"defaults:\n  health: {failure_threshold: 0}\n",
		"defaults:\n  limits: {cpu_max: -1}\n",
		"defaults:\n  profile: nope\n",
		"profiles:\n  x: {command: []}\n",
		"profiles:\n  x: {command: [a], stop_signal: SIGFOO}\n",
		"model_roots: [relative/dir]\n",
		"log_format: xml\n",
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestOverrideChangesOnlyGivenKeys(t *testing.T) {
	base := DefaultSettings()
	s, err := Override(base, json.RawMessage(`{"idle_timeout":"1s","health":{"interval":"2s"},"limits":{"cpu_max":0.5}}`))
	if err != nil {
		t.Fatal(err)
	}
	if s.IdleTimeout.D() != time.Second || s.Health.Interval.D() != 2*time.Second || s.Limits.CPUMax != 0.5 {
		t.Fatalf("override not applied: %+v", s)
	}
	if s.Health.Timeout != base.Health.Timeout || s.StopTimeout != base.StopTimeout {
		t.Fatal("override changed keys it did not name")
	}
	for _, bad := range []string{`{"nope":1}`, `{"idle_timeout":5}`, `{"stop_timeout":"-1s"}`, `{"health":{"interval":"x"}}`, `{} {}`} {
		if _, err := Override(base, json.RawMessage(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if s, err := Override(base, nil); err != nil || s != base {
		t.Fatalf("empty override: %v", err)
	}
}

func TestModelsEntries(t *testing.T) {
	cfg, err := Parse([]byte(`
profiles:
  llama: {command: [llama-server, --port, "{port}", -c, "{ctx}"], max_concurrency: 4}
models:
  tiny:
    model_ref: file:stories260K.gguf
    profile: llama
    ctx: 512
    aliases: [t]
    idle_timeout: 10s
    memory_bytes: 1000
    restart: {policy: never}
queue: {max: 5, timeout: 2s}
memory_budget_bytes: 4096
inference_tokens: [abc]
`))
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Models["tiny"]
	if m.MaxWorkers != 1 || m.Ctx != 512 || m.Profile != "llama" || len(m.Aliases) != 1 {
		t.Fatalf("model %+v", m)
	}
	if _, ok := cfg.Models["stories"]; ok {
		t.Fatal("a config's models: did not replace the embedded demo model")
	}
	raw, err := m.SettingsJSON()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Override(cfg.Defaults, raw)
	if err != nil {
		t.Fatal(err)
	}
	if s.IdleTimeout.D() != 10*time.Second || s.MemoryBytes != 1000 || s.Ctx != 512 || s.Restart.Policy != RestartNever {
		t.Fatalf("settings %+v", s)
	}
	if cfg.Queue.Max != 5 || cfg.MemoryBudgetBytes != 4096 || cfg.Profiles["llama"].MaxConcurrency != 4 {
		t.Fatalf("config %+v", cfg)
	}
	if d := Default(); d.Models["stories"].ModelRef != "file:stories260K.gguf" || d.Queue.Max != 128 {
		t.Fatalf("defaults %+v", d.Models)
	}
	for _, bad := range []string{
		"models:\n  a: {profile: rbee}\n",                                                 // no model_ref
		"models:\n  a: {model_ref: 'file:x', bogus_key: 1}\n",                             // unknown setting
		"models:\n  a: {model_ref: 'file:x', aliases: [b]}\n  b: {model_ref: 'file:y'}\n", // name clash
		"models:\n  a: {model_ref: 'file:x', min_workers: 2, max_workers: 1}\n",           // min > max
		"models:\n  a: {model_ref: 'file:x', profile: nope}\n",                            // unknown profile
		"models:\n  'a b': {model_ref: 'file:x'}\n",                                       // bad name
		"queue: {max: 0}\n",                 // bad queue
		"inference_tokens: ['has space']\n", // bad token
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
