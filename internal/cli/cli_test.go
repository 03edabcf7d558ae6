package cli

import (
	"bytes"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden help files")

func runMain(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
	return out.String(), errb.String(), code
}

// Every group and command has --help: usage, arguments, flags, the
// settings keys for spawn, an example. The golden files are the help as a
// user sees it; `go test ./internal/cli -update` rewrites them.
func TestHelpGolden(t *testing.T) {
	cases := map[string][]string{"main": {"--help"}}
	for _, g := range groups {
		cases[g.name] = []string{g.name, "--help"}
	}
	for _, c := range commands {
		cases[strings.ReplaceAll(c.name, " ", "_")] = append(strings.Fields(c.name), "--help")
	}
	for name, args := range cases {
		out, errb, code := runMain(t, nil, args...)
		if code != 0 || errb != "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb)
		}
		if !strings.Contains(out, "Usage: rbee-hive") || !strings.Contains(out, "Example:\n  rbee-hive ") {
			t.Errorf("%v: help lacks usage or example:\n%s", args, out)
		}
		golden := filepath.Join("testdata", "help", name+".txt")
		if *update {
			if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run go test ./internal/cli -update)", err)
		}
		if out != string(want) {
			t.Errorf("%v: help differs from %s (run go test ./internal/cli -update if meant):\n%s", args, golden, out)
		}
	}
	// The other ways of asking give the same text.
	ref, _, _ := runMain(t, nil, "worker", "spawn", "--help")
	for _, args := range [][]string{{"help", "worker", "spawn"}, {"worker", "spawn", "-h"}, {"worker", "spawn", "x", "--help"},
		{"--output", "json", "worker", "spawn", "--help"}} {
		if out, _, code := runMain(t, nil, args...); out != ref || code != 0 {
			t.Errorf("%v: exit %d, different help", args, code)
		}
	}
	g, _, _ := runMain(t, nil, "worker", "--help")
	for _, args := range [][]string{{"worker", "help"}, {"help", "worker"}, {"worker", "-h"}} {
		if out, _, code := runMain(t, nil, args...); out != g || code != 0 {
			t.Errorf("%v: exit %d, different help", args, code)
		}
	}
}

// Help covers every flag a command registers and every settings key.
func TestSpawnHelpListsEverySettingAndFlag(t *testing.T) {
	out, _, _ := runMain(t, nil, "worker", "spawn", "--help")
	fs := newFlagSet("x")
	findCommand("worker spawn").flags(fs, &call{})
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(out, "--"+f.Name+" ") {
			t.Errorf("help lacks --%s", f.Name)
		}
	})
	for _, k := range []string{"idle_timeout", "restart.max_failures", "limits.memory_max_bytes", "health.interval"} {
		if !strings.Contains(out, "  "+k+" ") {
			t.Errorf("help lacks setting %s", k)
		}
	}
}

// A bad flag or argument exits 2 and sends nothing.
func TestUsageErrorsSendNothing(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "no", 500)
	}))
	defer srv.Close()
	env := map[string]string{"RBEE_HIVE_URL": srv.URL}
	for _, args := range [][]string{
		{"worker", "spawn", "file:/m.gguf", "--output", "yaml"},
		{"worker", "spawn", "file:/m.gguf", "--set", "restart.max_failures=abc"},
		{"worker", "spawn", "file:/m.gguf", "--set", "nope=1"},
		{"worker", "spawn", "file:/m.gguf", "--set", "novalue"},
		{"worker", "spawn", "hf:a b"},
		{"worker", "spawn"},
		{"worker", "get"},
		{"worker", "get", "a/b"},
		{"worker", "stop", "x", "--timeout", "1s"},
		{"worker", "logs", "x", "--tail", "-1"},
		{"worker", "list", "extra"},
		{"worker", "spwan"},
		{"worker"},
		{"nope"},
		{"status", "--hive", "ftp://x"},
		{"run", "m"},
		{"run", "m", "p", "--max-tokens", "-3"},
		{"model", "add", "noprovider", "/x"},
		{"daemon", "--log-format", "yaml"},
		{"daemon", "--output", "json"},
		{"version", "extra"},
	} {
		_, errb, code := runMain(t, env, args...)
		if code != 2 || errb == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
}

func TestNormalizeHive(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9200": "http://127.0.0.1:9200", "http://h:1/": "http://h:1", "https://h": "https://h", "[::1]:9200": "http://[::1]:9200",
	} {
		if got, err := normalizeHive(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "ftp://h", "http://h/x", "http://u:p@h", "h:1?q"} {
		if _, err := normalizeHive(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain text\tand tab": "plain text\tand tab",
		"héllo 世界":            "héllo 世界",
		"a\x1b[2Jb":           `a\x1b[2Jb`,
		"cr\rover":            `cr\x0dover`,
		"bell\a":              `bell\x07`,
		"c1\u009b31m":         `c1\u009b31m`,
		"bidi\u202eevil":      `bidi\u202eevil`,
		"bad\xffutf8":         `bad\xffutf8`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveModel(t *testing.T) {
	wd, _ := os.Getwd()
	for _, c := range []struct{ in, ref, path string }{
		{"hf:org/model", "hf:org/model", ""},
		{"file:/srv/m.gguf", "file:/srv/m.gguf", ""},
		{"/srv/m.gguf", "file:/srv/m.gguf", ""},
		{"m.gguf", "file:" + filepath.Join(wd, "m.gguf"), ""},
		{"./a/m.gguf", "file:" + filepath.Join(wd, "a/m.gguf"), ""},
		{"file:a/m.gguf", "file:" + filepath.Join(wd, "a/m.gguf"), ""},
		{"/srv/my model.gguf", "file:/srv/my_model.gguf", "/srv/my model.gguf"},
	} {
		ref, path, err := resolveModel(c.in)
		if err != nil || ref != c.ref || path != c.path {
			t.Errorf("%q: %q %q %v; want %q %q", c.in, ref, path, err, c.ref, c.path)
		}
	}
}

// cliDoc renders docs/cli.md from the same help texts the CLI prints.
func cliDoc(t *testing.T) string {
	var b strings.Builder
	b.WriteString("# The rbee-hive command line\n\n")
	b.WriteString("This page is the CLI's own `--help`, command by command (a test keeps it equal to\n")
	b.WriteString("what the binary prints). Global flags go before or after the command; a bad flag\n")
	b.WriteString("or argument exits 2 before anything is sent to the hive.\n\n")
	out, _, _ := runMain(t, nil, "--help")
	b.WriteString("```\n" + out + "```\n")
	for _, g := range groups {
		out, _, _ := runMain(t, nil, g.name, "--help")
		b.WriteString("\n## rbee-hive " + g.name + "\n\n```\n" + out + "```\n")
	}
	for _, c := range sortedCommands() {
		out, _, _ := runMain(t, nil, append(strings.Fields(c.name), "--help")...)
		b.WriteString("\n## rbee-hive " + c.name + "\n\n```\n" + out + "```\n")
	}
	return b.String()
}

func TestDocsCLIMatchesHelp(t *testing.T) {
	p := filepath.Join("..", "..", "docs", "cli.md")
	want := cliDoc(t)
	if *update {
		if err := os.WriteFile(p, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != want {
		t.Fatalf("docs/cli.md differs from the CLI's help (%v); run go test ./internal/cli -update", err)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
