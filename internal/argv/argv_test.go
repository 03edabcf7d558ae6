package argv

import (
	"strings"
	"testing"
)

func TestExpandKeepsEachValueOneArgument(t *testing.T) {
	tmpl := []string{"llama-server", "-m", "{model}", "--port", "{port}", "--alias={worker_id}"}
	got := Expand(tmpl, map[string]string{"model": "/models/my model; rm -rf /", "port": "8081", "worker_id": "w-1"})
	want := []string{"llama-server", "-m", "/models/my model; rm -rf /", "--port", "8081", "--alias=w-1"}
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Fatalf("got %q, want %q", got, want)
	}
	if tmpl[2] != "{model}" {
		t.Fatal("template modified")
	}
}

func TestExpandLeavesUnknownPlaceholders(t *testing.T) {
	got := Expand([]string{"{nope}", "{port}{port}"}, map[string]string{"port": "1"})
	if got[0] != "{nope}" || got[1] != "11" {
		t.Fatalf("got %q", got)
	}
}

func FuzzExpand(f *testing.F) {
	f.Add("{model}", "a b;c")
	f.Add("--x={port}", "$(reboot)")
	f.Add("{{model}}", "{model}")
	f.Fuzz(func(t *testing.T, tmpl, val string) {
		got := Expand([]string{"cmd", tmpl, "tail"}, map[string]string{"model": val, "port": val})
		if len(got) != 3 || got[0] != "cmd" || got[2] != "tail" {
			t.Fatalf("argv changed shape: %q", got)
		}
		if !strings.Contains(tmpl, "{") && got[1] != tmpl {
			t.Fatalf("template without placeholders changed: %q → %q", tmpl, got[1])
		}
	})
}
