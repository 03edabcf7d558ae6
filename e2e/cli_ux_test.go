package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// cliResult is one finished CLI run.
type cliResult struct {
	out, err string
	code     int
}

// cli runs the CLI against h (through RBEE_HIVE_URL) and returns its
// output and exit code.
func cli(t *testing.T, h *hivetest.Hive, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(h.Bin, args...)
	cmd.Env = append(os.Environ(), "RBEE_HIVE_URL="+h.URL)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := process.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	err := process.WaitCmd(cmd)
	r := cliResult{out: stdout.String(), err: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.out, r.err)
}

func workerCount(t *testing.T, h *hivetest.Hive) int {
	t.Helper()
	ws, err := h.Client.List(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	return len(ws)
}

// Regression: `worker spawn FILE --output yaml` started a worker and then
// exited 1; scripts that retried leaked workers. Every flag is checked
// before anything is sent.
func TestCLIBadFlagLeavesNoWorker(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--output", "yaml"}, `--output must be table or json, not "yaml"`},
		{[]string{"--set", "restart.max_failures=abc"}, `restart.max_failures: got "abc", want a whole number`},
		{[]string{"--set", "health=5s"}, "health is a group of settings; set one of them: health.failure_threshold"},
		{[]string{"--set", "idle_timeout=30"}, `idle_timeout: got "30", want a duration with a unit`},
		{[]string{"--set", "idle_timout=30s"}, `unknown setting "idle_timout" (did you mean "idle_timeout"?)`},
		{[]string{"--set", "limits.memory_max_bytes=lots"}, `want a size in bytes, such as 4294967296, "8GiB"`},
		{[]string{"--env", "lower=1"}, "--env: env key"},
		{[]string{"--label", "novalue"}, `--label wants KEY=VALUE, got "novalue"`},
		{[]string{"--backend", "a b"}, "--backend"},
		{[]string{"--device", "-1"}, "--device -1"},
		{[]string{"--timeout", "5s"}, "--timeout needs --wait"},
		{[]string{"--wiat"}, "flag provided but not defined: -wiat (did you mean --wait?)"},
		{[]string{"extra"}, "takes at most 1 argument"},
	} {
		r := cli(t, h, append([]string{"worker", "spawn", h.Ref}, c.args...)...)
		if r.code != 2 || !strings.Contains(r.err, c.want) {
			t.Errorf("%v: want exit 2 and %q; got %s", c.args, c.want, r)
		}
	}
	if n := workerCount(t, h); n != 0 {
		t.Fatalf("bad flags started %d workers", n)
	}
	// The sizes the errors ask for are accepted.
	r := cli(t, h, "worker", "spawn", h.Ref, "--wait", "--set", "limits.memory_max_bytes=512MiB", "-o", "json")
	var w apiv1.WorkerInfo
	if r.code != 0 || json.Unmarshal([]byte(r.out), &w) != nil || w.Limits.MemoryMaxBytes != 512<<20 {
		t.Fatalf("512MiB: %s", r)
	}
}

// Regression: `rbee-hive --output json worker list` and `rbee-hive --hive
// URL status` said "unknown command"; --hive without a scheme failed in the
// URL parser.
func TestCLIGlobalFlagsAnywhere(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := cli(t, h, "--output", "json", "worker", "list")
	var l apiv1.WorkerList
	if r.code != 0 || json.Unmarshal([]byte(r.out), &l) != nil || l.Workers == nil {
		t.Fatalf("--output before the command: %s", r)
	}
	r = cli(t, h, "--hive", h.Addr, "status")
	if r.code != 0 || !strings.Contains(r.out, "version") {
		t.Fatalf("--hive host:port before the command: %s", r)
	}
	r = cli(t, h, "status", "--hive=http://"+h.Addr+"/", "-o", "json")
	var st apiv1.Status
	if r.code != 0 || json.Unmarshal([]byte(r.out), &st) != nil {
		t.Fatalf("--hive= after the command: %s", r)
	}
	// status says the cgroup mode once.
	r = cli(t, h, "status")
	for _, l := range strings.Split(r.out, "\n") {
		if strings.HasPrefix(l, "cgroups") && strings.Count(l, st.CgroupMode) > 1 {
			t.Errorf("cgroup mode said twice: %q", l)
		}
	}
	r = cli(t, h, "--hive", "http://x y", "status")
	if r.code != 2 || !strings.Contains(r.err, "want the hive's address, such as 127.0.0.1:9200") {
		t.Fatalf("bad --hive: %s", r)
	}
	r = cli(t, h, "worker", "list", "extra")
	if r.code != 2 || !strings.Contains(r.err, "takes no arguments") {
		t.Fatalf("list extra: %s", r)
	}
	r = cli(t, h, "daemon", "--hive", h.Addr)
	if r.code != 2 || !strings.Contains(r.err, "does not take --hive") {
		t.Fatalf("daemon --hive: %s", r)
	}
}

// Regression: spawn said worker_id, spawn --wait id; logs --output json
// printed text. One shape per thing.
func TestCLIOneJSONShapePerThing(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	var ids []string
	for _, args := range [][]string{
		{"worker", "spawn", h.Ref, "-o", "json"},
		{"worker", "spawn", h.Ref, "-o", "json", "--wait"},
	} {
		r := cli(t, h, args...)
		var w apiv1.WorkerInfo
		if r.code != 0 || json.Unmarshal([]byte(r.out), &w) != nil || !strings.HasPrefix(w.ID, "worker-") || w.ModelRef != h.Ref {
			t.Fatalf("%v: %s", args, r)
		}
		ids = append(ids, w.ID)
	}
	h.WaitState(ids[0], wait, "idle")
	for _, verb := range []string{"get", "stop"} {
		r := cli(t, h, "worker", verb, ids[0], "-o", "json")
		var w apiv1.WorkerInfo
		if r.code != 0 || json.Unmarshal([]byte(r.out), &w) != nil || w.ID != ids[0] {
			t.Fatalf("%s: %s", verb, r)
		}
	}
	r := cli(t, h, "worker", "logs", ids[1], "-o", "json")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	for _, l := range lines {
		var v struct {
			WorkerID string `json:"worker_id"`
			Line     *string
		}
		if json.Unmarshal([]byte(l), &v) != nil || v.WorkerID != ids[1] || v.Line == nil {
			t.Fatalf("logs json line %q: %s", l, r)
		}
	}
}

// Regression: ids had to be typed whole (43 characters).
func TestCLIWorkerIDPrefix(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	a := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(a.WorkerID, wait, "idle")
	prefix := strings.TrimPrefix(a.WorkerID, "worker-")[:6]
	for _, p := range []string{prefix, "worker-" + prefix, a.WorkerID} {
		r := cli(t, h, "worker", "get", p)
		if r.code != 0 || !strings.Contains(r.out, a.WorkerID) {
			t.Fatalf("get %s: %s", p, r)
		}
	}
	r := cli(t, h, "worker", "get", "zzzz")
	if r.code != 1 || !strings.Contains(r.err, "no worker matches \"zzzz\"; run `rbee-hive worker list") {
		t.Fatalf("no match: %s", r)
	}
	b := h.MustSpawn(apiv1.SpawnRequest{})
	r = cli(t, h, "worker", "stop", "worker-")
	if r.code != 1 || !strings.Contains(r.err, "matches 2 workers") {
		t.Fatalf("ambiguous: %s", r)
	}
	h.WaitState(b.WorkerID, wait, "idle")
	r = cli(t, h, "worker", "stop", prefix, "--wait")
	if r.code != 0 || !strings.Contains(r.out, "idle → stopping (stopped)") ||
		!strings.Contains(r.out, a.WorkerID+" terminated (stopped)") {
		t.Fatalf("stop --wait: %s", r)
	}
	r = cli(t, h, "worker", "restart", strings.TrimPrefix(b.WorkerID, "worker-")[:8], "--wait", "--timeout", "20s")
	if r.code != 0 || !strings.Contains(r.out, "stopping → spawning (restarting)") || !strings.Contains(r.out, "is idle again at") {
		t.Fatalf("restart --wait: %s", r)
	}
	r = cli(t, h, "worker", "kill", b.WorkerID, "--wait")
	if r.code != 0 || !strings.Contains(r.out, b.WorkerID+" terminated (killed)") {
		t.Fatalf("kill --wait: %s", r)
	}
}

// Regression: spawn --wait printed nothing for a worker that reports no
// progress, never showed the id, and on Ctrl-C printed "context canceled"
// and exited 0.
func TestCLISpawnWaitPlainLines(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := cli(t, h, "worker", "spawn", h.Ref, "--wait", "--env", "LLMW_FAKE_LOAD_MS=600")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if r.code != 0 || len(lines) < 4 || !strings.Contains(lines[0], " spawned (pid ") ||
		!strings.Contains(r.out, "spawning → loading") || !strings.Contains(r.out, "loading → idle") ||
		!strings.Contains(lines[len(lines)-1], " is idle at http://127.0.0.1:") {
		t.Fatalf("spawn --wait: %s", r)
	}
	if !regexp.MustCompile(`(?m)^[0-9:.]+  loading [1-9][0-9]*% \([0-9]+ of [0-9]+\)$`).MatchString(r.out) {
		t.Errorf("no progress lines on a non-terminal: %s", r)
	}
	if strings.Contains(r.out, "\r") || strings.Contains(r.out, "\x1b") {
		t.Errorf("terminal control in non-terminal output: %q", r.out)
	}
}

func TestCLISpawnWaitTimeout(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	start := time.Now()
	r := cli(t, h, "worker", "spawn", h.Ref, "--wait", "--timeout", "700ms", "--env", "LLMW_FAKE_NEVER_READY=1")
	if r.code != 124 || !strings.Contains(r.err, "keeps loading in the hive; stop it with `rbee-hive worker stop worker-") {
		t.Fatalf("timeout: %s", r)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("--timeout 700ms took %s", el)
	}
	ws, _ := h.Client.List(t.Context(), false)
	if len(ws) != 1 || ws[0].State != "loading" {
		t.Fatalf("the worker should keep loading: %+v", ws)
	}
}

func TestCLISpawnWaitInterrupt(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	cmd := exec.Command(h.Bin, "worker", "spawn", h.Ref, "--wait", "--env", "LLMW_FAKE_NEVER_READY=1")
	cmd.Env = append(os.Environ(), "RBEE_HIVE_URL="+h.URL)
	var out, errb hivetest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := process.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	if !hivetest.Eventually(t, wait, func() bool { return strings.Contains(out.String(), "spawning → loading") }) {
		cmd.Process.Kill()
		process.WaitCmd(cmd)
		t.Fatalf("no loading line: %q %q", out.String(), errb.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := process.WaitCmd(cmd)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("Ctrl-C: %v %q", err, errb.String())
	}
	id := strings.Fields(out.String())[0]
	if !strings.Contains(errb.String(), "interrupted; worker "+id+" keeps loading in the hive; stop it with `rbee-hive worker stop "+id+"`") {
		t.Fatalf("Ctrl-C message: %q", errb.String())
	}
	if w := h.Get(id); w.State != "loading" {
		t.Fatalf("the worker should keep loading: %s", w.State)
	}
}

// SPEC §14: the CLI shows worker output with control characters escaped.
func TestCLIEscapesWorkerOutput(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Config: `profiles:
  noisy:
    command: [/bin/sh, -c, "printf 'red\e[31m\\rover\\n'; exec sleep 100", "{port}"]
  dying:
    command: [/bin/sh, -c, "printf 'bye\e[2J\\n' >&2; exit 3", "{port}"]
`})
	r := cli(t, h, "worker", "spawn", h.Ref, "--profile", "dying")
	if r.code != 1 || !strings.Contains(r.err, `bye\x1b[2J`) || strings.Contains(r.err, "\x1b") {
		t.Fatalf("SPAWN_FAILED: %s", r)
	}
	r = cli(t, h, "worker", "spawn", h.Ref, "--profile", "dying", "--raw")
	if r.code != 1 || !strings.Contains(r.err, "bye\x1b[2J") {
		t.Fatalf("SPAWN_FAILED --raw: %s", r)
	}
	r = cli(t, h, "worker", "spawn", h.Ref, "--profile", "noisy", "-o", "json")
	var w apiv1.WorkerInfo
	if r.code != 0 || json.Unmarshal([]byte(r.out), &w) != nil {
		t.Fatalf("spawn: %s", r)
	}
	var got cliResult
	hivetest.Eventually(t, wait, func() bool {
		got = cli(t, h, "worker", "logs", w.ID)
		return strings.Contains(got.out, "over")
	})
	if !strings.Contains(got.out, `red\x1b[31m\x0dover`) || strings.Contains(got.out, "\x1b") {
		t.Fatalf("logs not escaped: %q", got.out)
	}
	got = cli(t, h, "worker", "logs", w.ID, "--raw")
	if !strings.Contains(got.out, "red\x1b[31m\rover") {
		t.Fatalf("logs --raw: %q", got.out)
	}
	// An ended worker's last lines, in `worker get`.
	if r := cli(t, h, "worker", "kill", w.ID, "--wait"); r.code != 0 {
		t.Fatalf("kill: %s", r)
	}
	got = cli(t, h, "worker", "get", w.ID)
	if !strings.Contains(got.out, `red\x1b[31m\x0dover`) || strings.Contains(got.out, "\x1b[31m\r") {
		t.Fatalf("get not escaped: %q", got.out)
	}
}

// Regression: a relative path and a bare absolute path were refused as
// MODEL; a file name with a space worked only through --model-path;
// file:<model root> said "not inside a model root".
func TestCLIModelPaths(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	spaced := filepath.Join(h.Models, "my model.gguf")
	data, err := os.ReadFile(h.Model)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spaced, data, 0o600); err != nil {
		t.Fatal(err)
	}
	rel := filepath.Join("models", filepath.Base(h.Model))
	for _, m := range []string{h.Model, rel, "./" + rel, "file:" + rel, spaced} {
		cmd := exec.Command(h.Bin, "worker", "spawn", m, "-o", "json")
		cmd.Dir = h.Dir
		cmd.Env = append(os.Environ(), "RBEE_HIVE_URL="+h.URL)
		b, err := process.RunCmd(cmd)
		var w apiv1.WorkerInfo
		if err != nil || json.Unmarshal(b, &w) != nil {
			t.Fatalf("spawn %q: %v %s", m, err, b)
		}
		if want, _ := filepath.EvalSymlinks(filepath.Join(h.Dir, strings.TrimPrefix(strings.TrimPrefix(m, "file:"), h.Dir))); m != spaced && w.ModelPath != want {
			t.Errorf("%q: model_path %q, want %q", m, w.ModelPath, want)
		}
		if m == spaced && !strings.HasSuffix(w.ModelPath, "my model.gguf") {
			t.Errorf("spaced: model_path %q", w.ModelPath)
		}
	}
	r := cli(t, h, "worker", "spawn", "file:"+h.Models)
	if r.code != 1 || !strings.Contains(r.err, "MODEL_PATH_NOT_ALLOWED (400): model_ref: "+h.Models+" is a directory (a model root itself)") {
		t.Fatalf("model root as MODEL: %s", r)
	}
}

// Regression: the README's llama-server profile failed only at the first
// spawn; a typo'd placeholder reached the worker literally; config errors
// leaked Go type names.
func TestCLIConfigErrorsAtLoad(t *testing.T) {
	bin := hivetest.Binaries(t)
	dir := t.TempDir()
	for _, c := range []struct{ yaml, want string }{
		{"defaults:\n  idle_timout: 5m\n", `line 2: unknown key "idle_timout" in defaults (did you mean "idle_timeout"?)`},
		{"idle_timeout: 5m\n", `line 1: unknown key "idle_timeout" (did you mean "defaults.idle_timeout"?)`},
		{"defaults:\n  restart: {max_failures: abc}\n", `line 2: defaults.restart.max_failures: got "abc", want a whole number`},
		{"profiles:\n  llama-server:\n    command: [llama-server-not-here, --port, \"{port}\"]\n",
			`line 3: profiles.llama-server.command: "llama-server-not-here" not found beside`},
		{"profiles:\n  x:\n    command: [/bin/true, --port, \"{prot}\"]\n",
			`line 3: profiles.x.command: unknown placeholder {prot} (did you mean {port}?)`},
	} {
		p := filepath.Join(dir, "hive.yaml")
		if err := os.WriteFile(p, []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := process.RunCmd(exec.Command(bin, "daemon", "--config", p, "--state-dir", dir))
		if err == nil || !strings.Contains(string(b), c.want) || strings.Contains(string(b), "Go struct") {
			t.Errorf("%q: want %q; got %v %s", c.yaml, c.want, err, b)
		}
	}
}

// The daemon warns when cpu_max exceeds the machine's cores (the limit
// cannot bind), and the CLI does for --set on a local hive.
func TestCPUMaxAboveCoresWarns(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  limits: {cpu_max: 4096}\n"})
	if !hivetest.Eventually(t, wait, func() bool {
		return strings.Contains(h.Log(), "defaults.limits.cpu_max is 4096 cores but this machine has")
	}) {
		t.Fatalf("no warning in the log:\n%s", h.Log())
	}
	r := cli(t, h, "worker", "spawn", h.Ref, "--set", "limits.cpu_max=4096", "--output", "json")
	if !strings.Contains(r.err, "warning: limits.cpu_max=4096 is more than this machine's") {
		t.Fatalf("no CLI warning: %s", r)
	}
}

// `rbee-hive models` and `rbee-hive run` against the real front door
// (SPEC §10).
func TestCLIModelsAndRun(t *testing.T) {
	gw := hivetest.GenericWorker(t)
	h := hivetest.Start(t, hivetest.Options{Config: fmt.Sprintf(`profiles:
  gen:
    command: [%s, --port, "{port}", --model, "{model}"]
    protocol: http
    readiness: {path: /health, status: 200}
models:
  m1:
    model_ref: file:stories260K.gguf
    profile: gen
`, gw)})
	r := cli(t, h, "models")
	if r.code != 0 || !regexp.MustCompile(`(?m)^m1 +none +0 +0$`).MatchString(r.out) {
		t.Fatalf("models before any request: %s", r)
	}
	r = cli(t, h, "run", "m1", "Once upon a time")
	if r.code != 0 || strings.TrimSpace(r.out) == "" {
		t.Fatalf("run: %s", r)
	}
	r = cli(t, h, "models", "-o", "json")
	var l apiv1.OpenAIModelList
	if r.code != 0 || json.Unmarshal([]byte(r.out), &l) != nil || len(l.Data) == 0 || l.Data[0].ID != "m1" {
		t.Fatalf("models json: %s", r)
	}
	r = cli(t, h, "run", "nope", "hi")
	if r.code != 1 || !strings.Contains(r.err, "MODEL_NOT_FOUND") {
		t.Fatalf("unknown model: %s", r)
	}
}
