package validate

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestWorkerID(t *testing.T) {
	for _, ok := range []string{"worker-0b5e1c1e-6a77-4c53-9a55-3c1b2a3c4d5e", "a", "A_b-9", strings.Repeat("x", MaxIDLen)} {
		if e := WorkerID(ok); e != nil {
			t.Errorf("WorkerID(%q) = %v", ok, e)
		}
	}
	for _, bad := range []string{"", " ", "a b", "../x", "a/b", "a.b", "a\x00", "é", strings.Repeat("x", MaxIDLen+1), "a\n"} {
		e := WorkerID(bad)
		if e == nil || e.Code != "INVALID_WORKER_ID" || e.Message == "" {
			t.Errorf("WorkerID(%q) = %v", bad, e)
		}
	}
}

func TestBackend(t *testing.T) {
	for _, ok := range []string{"cpu", "cuda", "metal", "rocm_6", strings.Repeat("b", MaxBackendLen)} {
		if e := Backend(ok); e != nil {
			t.Errorf("Backend(%q) = %v", ok, e)
		}
	}
	for _, bad := range []string{"", "cu da", "cuda;rm", "$(x)", strings.Repeat("b", MaxBackendLen+1), "cpu\t"} {
		if e := Backend(bad); e == nil || e.Code != "INVALID_BACKEND" {
			t.Errorf("Backend(%q) = %v", bad, e)
		}
	}
}

func TestDevice(t *testing.T) {
	for _, d := range []int{0, 1, MaxDevice} {
		if e := Device(d); e != nil {
			t.Errorf("Device(%d) = %v", d, e)
		}
	}
	for _, d := range []int{-1, MaxDevice + 1, 1 << 40} {
		if e := Device(d); e == nil || e.Code != "INVALID_DEVICE" {
			t.Errorf("Device(%d) = %v", d, e)
		}
	}
}

func TestEnvRules(t *testing.T) {
	many := map[string]string{}
	for i := range MaxEnvEntries + 1 {
		many[fmt.Sprintf("K%d", i)] = "v"
	}
	cases := []struct {
		name  string
		env   map[string]string
		allow []string
		ok    bool
	}{
		{"nil", nil, nil, true},
		{"plain", map[string]string{"HF_HOME": "/x", "_X": "", "LLMW_FAKE_SLOW_LOAD_MS": "10"}, nil, true},
		{"shell metacharacters are just bytes", map[string]string{"A": "$(reboot); `id` | x && y"}, nil, true},
		{"newline in a value is fine", map[string]string{"A": "a\nb"}, nil, true},
		{"lowercase key", map[string]string{"lower": "x"}, nil, false},
		{"key with =", map[string]string{"A=B": "x"}, nil, false},
		{"key starting with a digit", map[string]string{"1A": "x"}, nil, false},
		{"empty key", map[string]string{"": "x"}, nil, false},
		{"key too long", map[string]string{strings.Repeat("K", MaxEnvKeyLen+1): "x"}, nil, false},
		{"NUL in value", map[string]string{"A": "x\x00y"}, nil, false},
		{"invalid UTF-8 value", map[string]string{"A": "\xff\xfe"}, nil, false},
		{"value too long", map[string]string{"A": strings.Repeat("v", MaxEnvValueLen+1)}, nil, false},
		{"too many entries", many, nil, false},
		{"LD_PRELOAD", map[string]string{"LD_PRELOAD": "/tmp/evil.so"}, nil, false},
		{"LD_PRELOAD allowed", map[string]string{"LD_PRELOAD": "/opt/ok.so"}, []string{"LD_PRELOAD"}, true},
		{"LD_ prefix", map[string]string{"LD_BIND_NOW": "1"}, nil, false},
		{"LD_ prefix allowed", map[string]string{"LD_BIND_NOW": "1"}, []string{"LD_BIND_NOW"}, true},
		{"DYLD_ prefix", map[string]string{"DYLD_INSERT_LIBRARIES": "x"}, nil, false},
		{"bash function", map[string]string{"BASH_FUNC_X": "() { :; }"}, nil, false},
		{"PATH", map[string]string{"PATH": "/tmp"}, nil, false},
		{"PYTHONPATH", map[string]string{"PYTHONPATH": "/tmp"}, nil, false},
		{"PYTHONPATH allowed", map[string]string{"PYTHONPATH": "/tmp"}, []string{"PYTHONPATH"}, true},
		{"CUDA injection", map[string]string{"CUDA_INJECTION64_PATH": "/tmp/x.so"}, nil, false},
		{"Vulkan layers", map[string]string{"VK_LAYER_PATH": "/tmp"}, nil, false},
		{"worker token", map[string]string{"RBEE_WORKER_TOKEN": "x"}, nil, false},
		{"worker token even if allowed", map[string]string{"RBEE_WORKER_TOKEN": "x"}, []string{"RBEE_WORKER_TOKEN"}, false},
		{"operator token", map[string]string{"RBEE_API_TOKEN": "x"}, nil, false},
		{"marker", map[string]string{"RBEE_HIVE_MARKER": "x"}, nil, false},
		{"allow of another name does not help", map[string]string{"LD_PRELOAD": "x"}, []string{"LD_AUDIT"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := Env(c.env, c.allow)
			if c.ok && e != nil {
				t.Fatalf("refused: %v", e)
			}
			if !c.ok && (e == nil || e.Code != "INVALID_ENV" || e.Message == "") {
				t.Fatalf("got %v, want INVALID_ENV", e)
			}
		})
	}
}

// Every name on the deny-list is refused and can be allowed; every reserved
// name is refused and cannot be.
func TestEveryDeniedAndReservedNameIsRefused(t *testing.T) {
	for _, k := range DeniedEnv {
		if e := Env(map[string]string{k: "x"}, nil); e == nil {
			t.Errorf("%s accepted", k)
		}
		if e := Env(map[string]string{k: "x"}, []string{k}); e != nil {
			t.Errorf("%s refused although allowed: %v", k, e)
		}
	}
	for _, k := range ReservedEnv {
		if e := Env(map[string]string{k: "x"}, []string{k}); e == nil {
			t.Errorf("reserved %s accepted", k)
		}
	}
}

func TestLabels(t *testing.T) {
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	exact := map[string]string{}
	for i := range MaxLabels {
		exact[fmt.Sprintf("k%d", i)] = strings.Repeat("v", MaxLabelValLen)
	}
	cases := []struct {
		name   string
		labels map[string]string
		ok     bool
	}{
		{"nil", nil, true},
		{"plain", map[string]string{"team": "search", "app.kubernetes.io/name": "x", "empty": ""}, true},
		{"unicode value", map[string]string{"owner": "Zoë 日本"}, true},
		{"at the bounds", exact, true},
		{"too many", many, false},
		{"empty key", map[string]string{"": "x"}, false},
		{"key with space", map[string]string{"bad key": "x"}, false},
		{"key too long", map[string]string{strings.Repeat("k", MaxLabelKeyLen+1): "x"}, false},
		{"value too long", map[string]string{"k": strings.Repeat("v", MaxLabelValLen+1)}, false},
		{"control char", map[string]string{"k": "a\x1b[31mred"}, false},
		{"newline", map[string]string{"k": "a\nb"}, false},
		{"bidi override", map[string]string{"k": "abc\u202edef"}, false},
		{"zero width", map[string]string{"k": "a\u200bb"}, false},
		{"invalid UTF-8", map[string]string{"k": "\xff"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := Labels(c.labels)
			if c.ok && e != nil {
				t.Fatalf("refused: %v", e)
			}
			if !c.ok && (e == nil || e.Code != "INVALID_LABELS") {
				t.Fatalf("got %v, want INVALID_LABELS", e)
			}
		})
	}
}

// Messages echo at most a clipped, quoted piece of the input.
func TestMessagesDoNotEchoRawInput(t *testing.T) {
	long := strings.Repeat("x", 10000) + "\x1b"
	for _, e := range []*Error{
		Env(map[string]string{long: "v"}, nil),
		Labels(map[string]string{long: "v"}),
	} {
		if e == nil || len(e.Message) > 300 || strings.ContainsRune(e.Message, 0x1b) {
			t.Errorf("message %q", e)
		}
	}
}

// FuzzEnvAndLabels checks the validators against their contract on
// arbitrary keys and values: no panic, and what they accept obeys the rules.
func FuzzEnvAndLabels(f *testing.F) {
	f.Add("HF_HOME", "/models", "team", "a")
	f.Add("LD_PRELOAD", "/tmp/x.so", "bad key", "x")
	f.Add("RBEE_WORKER_TOKEN", "t", "k", "\u202e")
	f.Add("A", "x\x00y", "k", "\x1b[0m")
	f.Fuzz(func(t *testing.T, ek, ev, lk, lv string) {
		if e := Env(map[string]string{ek: ev}, nil); e == nil {
			if !envKeyRe.MatchString(ek) || len(ek) > MaxEnvKeyLen || strings.ContainsRune(ev, 0) ||
				!utf8.ValidString(ev) || Denied(ek) || Reserved(ek) || len(ev) > MaxEnvValueLen {
				t.Fatalf("env %q=%q accepted", ek, ev)
			}
		} else if e.Code != "INVALID_ENV" {
			t.Fatalf("code %s", e.Code)
		}
		if e := Labels(map[string]string{lk: lv}); e == nil {
			if !labelRe.MatchString(lk) || len(lk) > MaxLabelKeyLen || len(lv) > MaxLabelValLen ||
				!utf8.ValidString(lv) || strings.IndexFunc(lv, unprintable) >= 0 {
				t.Fatalf("label %q=%q accepted", lk, lv)
			}
		} else if e.Code != "INVALID_LABELS" {
			t.Fatalf("code %s", e.Code)
		}
		if e := WorkerID(ek); e == nil && !idRe.MatchString(ek) {
			t.Fatalf("id %q accepted", ek)
		}
	})
}
