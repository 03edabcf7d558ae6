package validate

import (
	"fmt"
	"regexp"
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
	for _, bad := range []string{"", "cu da", "cuda;rm", "$(x)", strings.Repeat("b", MaxBackendLen+1), "cpu\t", "--evil-flag", "-x"} {
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
		code  string // "" means accepted
	}{
		{"nil", nil, nil, ""},
		{"listed names", map[string]string{"HF_HOME": "/x", "_X": ""}, []string{"HF_HOME", "_X"}, ""},
		{"prefix", map[string]string{"LLMW_FAKE_SLOW_LOAD_MS": "10"}, []string{"LLMW_FAKE_*"}, ""},
		{"prefix does not match a longer stem", map[string]string{"LLMW_FAKEX": "1"}, []string{"LLMW_FAKE_*"}, "ENV_NOT_ALLOWED"},
		{"unlisted name", map[string]string{"HF_HOME": "/x"}, nil, "ENV_NOT_ALLOWED"},
		{"shell metacharacters are just bytes", map[string]string{"A": "$(reboot); `id` | x && y"}, []string{"A"}, ""},
		{"newline in a value is fine", map[string]string{"A": "a\nb"}, []string{"A"}, ""},
		{"lowercase key", map[string]string{"lower": "x"}, nil, "INVALID_ENV"},
		{"key with =", map[string]string{"A=B": "x"}, nil, "INVALID_ENV"},
		{"key starting with a digit", map[string]string{"1A": "x"}, nil, "INVALID_ENV"},
		{"empty key", map[string]string{"": "x"}, nil, "INVALID_ENV"},
		{"key too long", map[string]string{strings.Repeat("K", MaxEnvKeyLen+1): "x"}, nil, "INVALID_ENV"},
		{"NUL in value", map[string]string{"A": "x\x00y"}, []string{"A"}, "INVALID_ENV"},
		{"invalid UTF-8 value", map[string]string{"A": "\xff\xfe"}, []string{"A"}, "INVALID_ENV"},
		{"value too long", map[string]string{"A": strings.Repeat("v", MaxEnvValueLen+1)}, []string{"A"}, "INVALID_ENV"},
		{"too many entries", many, nil, "INVALID_ENV"},
		{"LD_PRELOAD", map[string]string{"LD_PRELOAD": "/tmp/evil.so"}, nil, "ENV_NOT_ALLOWED"},
		{"HOME", map[string]string{"HOME": "/tmp/planted"}, nil, "ENV_NOT_ALLOWED"},
		{"PYTHONWARNINGS", map[string]string{"PYTHONWARNINGS": "x"}, nil, "ENV_NOT_ALLOWED"},
		{"LLAMA_ARG_HOST", map[string]string{"LLAMA_ARG_HOST": "0.0.0.0"}, []string{"LLAMA_ARG_CTX_SIZE"}, "ENV_NOT_ALLOWED"},
		{"worker token", map[string]string{"RBEE_WORKER_TOKEN": "x"}, nil, "ENV_NOT_ALLOWED"},
		{"worker token even if listed", map[string]string{"RBEE_WORKER_TOKEN": "x"}, []string{"RBEE_WORKER_TOKEN"}, "ENV_NOT_ALLOWED"},
		{"any RBEE_ name, even under a listed prefix", map[string]string{"RBEE_BENCH_READY_STAMP": "/etc/x"}, []string{"RBEE_*"}, "ENV_NOT_ALLOWED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := Env(c.env, c.allow)
			if c.code == "" && e != nil {
				t.Fatalf("refused: %v", e)
			}
			if c.code != "" && (e == nil || e.Code != c.code || e.Message == "") {
				t.Fatalf("got %v, want %s", e, c.code)
			}
			if c.code == "ENV_NOT_ALLOWED" {
				for k := range c.env {
					if !strings.Contains(e.Message, k) {
						t.Fatalf("message %q does not name %s", e.Message, k)
					}
				}
			}
		})
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
	f.Add("LLMW_FAKE_LOAD_MS", "5", "k", "v")
	f.Add("LD_PRELOAD", "/tmp/x.so", "bad key", "x")
	f.Add("RBEE_WORKER_TOKEN", "t", "k", "\u202e")
	f.Add("A", "x\x00y", "k", "\x1b[0m")
	f.Fuzz(func(t *testing.T, ek, ev, lk, lv string) {
		allow := []string{"HF_HOME", "LLMW_FAKE_*"}
		if e := Env(map[string]string{ek: ev}, allow); e == nil {
			if !envKeyRe.MatchString(ek) || len(ek) > MaxEnvKeyLen || strings.ContainsRune(ev, 0) ||
				!utf8.ValidString(ev) || strings.HasPrefix(ek, "RBEE_") || len(ev) > MaxEnvValueLen ||
				(ek != "HF_HOME" && !strings.HasPrefix(ek, "LLMW_FAKE_")) {
				t.Fatalf("env %q=%q accepted", ek, ev)
			}
		} else if e.Code != "INVALID_ENV" && e.Code != "ENV_NOT_ALLOWED" {
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
		if ok, want := WorkerID(ek) == nil, ek != "" && len(ek) <= MaxIDLen && idRe.MatchString(ek); ok != want {
			t.Fatalf("WorkerID(%q) accepted %v, the pattern says %v", ek, ok, want)
		}
	})
}

// idRe is the pattern isID implements by hand.
var idRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
