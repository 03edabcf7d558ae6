package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/api"
	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/client"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

const opToken = "op-token-3f9c1a7e5b2d4c6e8a0b1c2d3e4f5a6b"

// answer is a raw HTTP answer.
type answer struct {
	status int
	header http.Header
	code   string // error code, when the body is the error shape
	body   string
}

// send makes one request with exactly the given headers.
func send(t *testing.T, method, url string, hdr map[string]string, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
	var eb apiv1.ErrorBody
	if json.Unmarshal(b, &eb) == nil {
		a.code = eb.Error.Code
		if resp.StatusCode >= 400 && (eb.Error.Code == "" || eb.Error.Message == "") {
			t.Fatalf("%s %s: %d without the error shape: %s", method, url, resp.StatusCode, b)
		}
	}
	return a
}

func bearerHdr(tok string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + tok}
}

// runDaemonToFailure runs `rbee-hive daemon args…` expecting it to refuse to
// start; it returns the output. A daemon that is still running after 20 s
// fails the test (and is killed).
func runDaemonToFailure(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(hivetest.Binaries(t), append([]string{"daemon"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RBEE_API_TOKEN=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := process.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- process.WaitCmd(cmd) }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("daemon %v exited %v, want a non-zero exit\n%s", args, err, out.String())
		}
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("daemon %v started although it should have refused\n%s", args, out.String())
	}
	return out.String()
}

func TestOperatorAuthOnTheDaemon(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Env: []string{"RBEE_API_TOKEN=" + opToken}})
	list := h.URL + "/v1/workers/list"
	cases := []struct {
		name string
		hdr  map[string]string
		code string
	}{
		{"missing", nil, apiv1.CodeMissingAPIKey},
		{"wrong", bearerHdr("not-the-token"), apiv1.CodeInvalidAPIKey},
		{"lowercase bearer", map[string]string{"Authorization": "bearer " + opToken}, apiv1.CodeInvalidAPIKey},
		{"empty token", map[string]string{"Authorization": "Bearer "}, apiv1.CodeInvalidAPIKey},
		{"empty header", map[string]string{"Authorization": ""}, apiv1.CodeInvalidAPIKey},
		{"tab inside the token", bearerHdr(opToken[:8] + "\t" + opToken[8:]), apiv1.CodeInvalidAPIKey},
		{"over-long (8 KiB+)", bearerHdr(opToken + strings.Repeat("x", 9<<10)), apiv1.CodeInvalidAPIKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := send(t, "GET", list, c.hdr, "")
			if a.status != 401 || a.code != c.code {
				t.Fatalf("%d %s, want 401 %s: %s", a.status, a.code, c.code, a.body)
			}
			if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate %q", a.header.Get("WWW-Authenticate"))
			}
		})
	}
	// A control character never reaches the handler: Go's HTTP server
	// refuses the header itself (400), which is no less a refusal.
	conn, err := net.Dial("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "GET /v1/workers/list HTTP/1.1\r\nHost: "+h.Addr+"\r\nAuthorization: Bearer "+opToken[:8]+"\x01"+opToken[8:]+"\r\n\r\n")
	line, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if !strings.Contains(line, " 400 ") && !strings.Contains(line, " 401 ") {
		t.Fatalf("control character in the token: %q", line)
	}
	// A header block over the server's MaxHeaderBytes is 431.
	if a := send(t, "GET", list, map[string]string{"X-Pad": strings.Repeat("p", 64<<10)}, ""); a.status != 431 {
		t.Fatalf("huge header: %d", a.status)
	}
	// The right token works, through the Go client too.
	if a := send(t, "GET", list, bearerHdr(opToken), ""); a.status != 200 {
		t.Fatalf("right token: %d %s", a.status, a.body)
	}
	op := client.New(h.URL, opToken)
	if _, err := op.List(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	// Public routes; /metrics is public on loopback.
	for _, p := range []string{"/health", "/v1/health", "/metrics"} {
		if a := send(t, "GET", h.URL+p, nil, ""); a.status != 200 {
			t.Fatalf("%s without a token: %d", p, a.status)
		}
	}
	// The token never reaches the log, nor a worker; a fingerprint does.
	r, err := op.Spawn(context.Background(), &apiv1.SpawnRequest{ModelRef: h.Ref})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.WaitFor(context.Background(), r.WorkerID, 20*time.Millisecond, func(i *apiv1.WorkerInfo) bool { return i.State == "idle" }); err != nil {
		t.Fatal(err)
	}
	environ, err := os.ReadFile("/proc/" + strconv.Itoa(r.PID) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(environ, []byte(opToken)) || bytes.Contains(environ, []byte("RBEE_API_TOKEN=")) {
		t.Fatal("the operator token reached a worker's environment")
	}
	log := h.Log()
	if strings.Contains(log, opToken) {
		t.Fatal("the operator token is in the daemon log")
	}
	if fp := api.Fingerprint(opToken); len(fp) != 6 || !strings.Contains(log, "token_fingerprint="+fp) {
		t.Fatalf("the log lacks the token fingerprint %s", fp)
	}
	if strings.Contains(log, "Dev mode") {
		t.Fatal("the log says dev mode although a token is set")
	}
}

func TestOperatorTokenFromFile(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(opToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := hivetest.Start(t, hivetest.Options{Config: "api_token_file: " + tokFile + "\n"})
	if a := send(t, "GET", h.URL+"/v1/status", nil, ""); a.status != 401 || a.code != apiv1.CodeMissingAPIKey {
		t.Fatalf("no token: %d %s", a.status, a.code)
	}
	if a := send(t, "GET", h.URL+"/v1/status", bearerHdr(opToken), ""); a.status != 200 {
		t.Fatalf("token from the file: %d %s", a.status, a.body)
	}
	if strings.Contains(h.Log(), opToken) {
		t.Fatal("the token file's content is in the log")
	}

	// Token files and values the daemon refuses.
	state := t.TempDir()
	cfg := func(body string) string {
		p := filepath.Join(t.TempDir(), "hive.yaml")
		if err := os.WriteFile(p, []byte("addr: 127.0.0.1:0\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	loose := filepath.Join(dir, "loose")
	os.WriteFile(loose, []byte(opToken), 0o600)
	os.Chmod(loose, 0o644)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	for _, c := range []struct {
		name, config string
		env          []string
		want         string
	}{
		{"world-readable file", "api_token_file: " + loose + "\n", nil, "other users can read or change it"},
		{"empty file", "api_token_file: " + empty + "\n", nil, "is empty"},
		{"missing file", "api_token_file: " + dir + "/nope\n", nil, "no such file"},
		{"both set", "api_token: abc\napi_token_file: " + tokFile + "\n", nil, "both set"},
		{"space inside the token", "", []string{"RBEE_API_TOKEN=two words"}, "spaces or control characters"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := runDaemonToFailure(t, c.env, "--config", cfg(c.config), "--state-dir", state)
			if !strings.Contains(out, c.want) {
				t.Fatalf("output lacks %q:\n%s", c.want, out)
			}
			if strings.Contains(out, opToken) {
				t.Fatalf("the error echoes the token:\n%s", out)
			}
		})
	}
}

func TestNonLoopbackBindNeedsToken(t *testing.T) {
	base := hivetest.FreeRange(t, 61)
	for _, addr := range []string{"0.0.0.0:" + strconv.Itoa(base), ":" + strconv.Itoa(base), "[::]:" + strconv.Itoa(base)} {
		out := runDaemonToFailure(t, nil, "--addr", addr, "--state-dir", t.TempDir())
		if !strings.Contains(out, "API token required for non-loopback bind") {
			t.Fatalf("--addr %s without a token:\n%s", addr, out)
		}
	}
	// With a token it starts; /metrics is no longer public off loopback.
	h := hivetest.Start(t, hivetest.Options{PortMin: base, Env: []string{"RBEE_API_TOKEN=" + opToken},
		Args: []string{"--addr", "0.0.0.0:" + strconv.Itoa(base)}})
	if a := send(t, "GET", h.URL+"/metrics", nil, ""); a.status != 401 {
		t.Fatalf("/metrics off loopback without a token: %d", a.status)
	}
	if a := send(t, "GET", h.URL+"/v1/workers/list", bearerHdr(opToken), ""); a.status != 200 {
		t.Fatalf("list: %d", a.status)
	}
	if err := h.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Loopback without a token is dev mode, and the log says so.
	dev := hivetest.Start(t, hivetest.Options{})
	if !strings.Contains(dev.Log(), "Dev mode") {
		t.Fatalf("dev mode not logged:\n%s", dev.Log())
	}
}

// workerToken reads a live worker's RBEE_WORKER_TOKEN from its environment.
func workerToken(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, "RBEE_WORKER_TOKEN="); ok && v != "" {
			return v
		}
	}
	t.Fatalf("worker %d has no RBEE_WORKER_TOKEN", pid)
	return ""
}

func heartbeatBody(id string) string {
	return `{"worker_id":"` + id + `","timestamp":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","health_status":"healthy","state":"idle"}`
}

func readyBody(id string) string {
	return `{"worker_id":"` + id + `","url":"http://127.0.0.1:1","model_ref":"hf:x","backend":"cpu","device":0}`
}

func TestWorkerTokensAreScopedToTheirWorker(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Env: []string{"RBEE_API_TOKEN=" + opToken}})
	op := client.New(h.URL, opToken)
	ctx := context.Background()
	odd := "$(touch /tmp/pwned); `id` | cat && x > y"
	spawn := func(env map[string]string) *apiv1.SpawnResponse {
		r, err := op.Spawn(ctx, &apiv1.SpawnRequest{ModelRef: h.Ref, Env: env})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := op.WaitFor(ctx, r.WorkerID, 20*time.Millisecond, func(i *apiv1.WorkerInfo) bool { return i.State == "idle" }); err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := spawn(map[string]string{"LLMW_FAKE_ODD_VALUE": odd}), spawn(nil)
	tokA, tokB := workerToken(t, a.PID), workerToken(t, b.PID)
	if tokA == tokB || len(tokA) < 32 {
		t.Fatalf("worker tokens not distinct and long: %d chars", len(tokA))
	}
	hb, ready := h.URL+"/v1/heartbeat", h.URL+"/v1/workers/ready"
	cases := []struct {
		name        string
		method, url string
		hdr         map[string]string
		body        string
		status      int
		code        string
	}{
		{"A's token for B's heartbeat", "POST", hb, bearerHdr(tokA), heartbeatBody(b.WorkerID), 401, apiv1.CodeInvalidAPIKey},
		{"A's token for B's ready", "POST", ready, bearerHdr(tokA), readyBody(b.WorkerID), 401, apiv1.CodeInvalidAPIKey},
		{"A's token to list", "GET", h.URL + "/v1/workers/list", bearerHdr(tokA), "", 401, apiv1.CodeInvalidAPIKey},
		{"A's token to spawn", "POST", h.URL + "/v1/workers/spawn", bearerHdr(tokA), `{"model_ref":"file:` + h.Model + `"}`, 401, apiv1.CodeInvalidAPIKey},
		{"A's token to stop B", "POST", h.URL + "/v1/workers/" + b.WorkerID + "/stop", bearerHdr(tokA), "", 401, apiv1.CodeInvalidAPIKey},
		{"A's token to read A", "GET", h.URL + "/v1/workers/" + a.WorkerID, bearerHdr(tokA), "", 401, apiv1.CodeInvalidAPIKey},
		{"A's token for events", "GET", h.URL + "/v1/events", bearerHdr(tokA), "", 401, apiv1.CodeInvalidAPIKey},
		{"operator token for A's heartbeat", "POST", hb, bearerHdr(opToken), heartbeatBody(a.WorkerID), 401, apiv1.CodeInvalidAPIKey},
		{"operator token for A's ready", "POST", ready, bearerHdr(opToken), readyBody(a.WorkerID), 401, apiv1.CodeInvalidAPIKey},
		{"no token for A's heartbeat", "POST", hb, nil, heartbeatBody(a.WorkerID), 401, apiv1.CodeMissingAPIKey},
		{"lowercase bearer for A's heartbeat", "POST", hb, map[string]string{"Authorization": "bearer " + tokA}, heartbeatBody(a.WorkerID), 401, apiv1.CodeInvalidAPIKey},
		// Behind the token, the body is validated.
		{"A's heartbeat, bad timestamp", "POST", hb, bearerHdr(tokA), `{"worker_id":"` + a.WorkerID + `","timestamp":"yesterday","health_status":"healthy"}`, 400, "INVALID_TIMESTAMP"},
		{"A's heartbeat, bad health", "POST", hb, bearerHdr(tokA), `{"worker_id":"` + a.WorkerID + `","timestamp":"2024-01-01T00:00:00Z","health_status":"fine"}`, 400, "INVALID_HEALTH_STATUS"},
		{"A's heartbeat, bad slots", "POST", hb, bearerHdr(tokA), `{"worker_id":"` + a.WorkerID + `","timestamp":"2024-01-01T00:00:00Z","health_status":"healthy","slots_total":-1}`, 400, "INVALID_SLOTS"},
		{"A's ready while idle", "POST", ready, bearerHdr(tokA), readyBody(a.WorkerID), 409, apiv1.CodeInvalidState},
		{"A's own heartbeat", "POST", hb, bearerHdr(tokA), heartbeatBody(a.WorkerID), 200, ""},
		{"B's own heartbeat", "POST", hb, bearerHdr(tokB), heartbeatBody(b.WorkerID), 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := send(t, c.method, c.url, c.hdr, c.body)
			if got.status != c.status || got.code != c.code {
				t.Fatalf("%d %s, want %d %s: %s", got.status, got.code, c.status, c.code, got.body)
			}
		})
	}
	// The token is in the environment only: not on the command line (which
	// every local user can read), not in the log, not in the API.
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(a.PID) + "/cmdline")
	if bytes.Contains(cmdline, []byte(tokA)) || len(cmdline) == 0 {
		t.Fatalf("worker token on the command line (or no command line): %q", cmdline)
	}
	info := send(t, "GET", h.URL+"/v1/workers/"+a.WorkerID, bearerHdr(opToken), "")
	all := send(t, "GET", h.URL+"/v1/workers/list?all=true", bearerHdr(opToken), "")
	var logs strings.Builder
	if err := op.Logs(ctx, a.WorkerID, 1000, false, &logs); err != nil {
		t.Fatal(err)
	}
	for where, s := range map[string]string{"hive log": h.Log(), "worker info": info.body, "list": all.body, "worker log": logs.String()} {
		if strings.Contains(s, tokA) || strings.Contains(s, tokB) {
			t.Fatalf("a worker token is in the %s", where)
		}
	}
	// Request env reaches the worker verbatim, as one variable: no shell.
	environ, _ := os.ReadFile("/proc/" + strconv.Itoa(a.PID) + "/environ")
	if !bytes.Contains(environ, []byte("\x00LLMW_FAKE_ODD_VALUE="+odd+"\x00")) {
		t.Fatal("env value did not reach the worker verbatim")
	}
	// A token is per incarnation: after a restart the old one is dead.
	if _, err := op.Restart(ctx, a.WorkerID); err != nil {
		t.Fatal(err)
	}
	info2, err := op.WaitFor(ctx, a.WorkerID, 20*time.Millisecond, func(i *apiv1.WorkerInfo) bool { return i.State == "idle" && i.PID != a.PID })
	if err != nil {
		t.Fatal(err)
	}
	if got := send(t, "POST", hb, bearerHdr(tokA), heartbeatBody(a.WorkerID)); got.status != 401 {
		t.Fatalf("the previous incarnation's token still works: %d", got.status)
	}
	if tok2 := workerToken(t, info2.PID); tok2 == tokA {
		t.Fatal("a restart kept the worker token")
	}
}

// In dev mode (no operator token) the worker callbacks still need the
// worker's own token.
func TestDevModeStillChecksWorkerTokens(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	if a := send(t, "POST", h.URL+"/v1/heartbeat", nil, heartbeatBody(r.WorkerID)); a.status != 401 || a.code != apiv1.CodeMissingAPIKey {
		t.Fatalf("heartbeat without a token in dev mode: %d %s", a.status, a.code)
	}
	if a := send(t, "POST", h.URL+"/v1/heartbeat", bearerHdr("guess"), heartbeatBody(r.WorkerID)); a.status != 401 {
		t.Fatalf("heartbeat with a wrong token in dev mode: %d", a.status)
	}
	if a := send(t, "POST", h.URL+"/v1/heartbeat", bearerHdr(workerToken(t, r.PID)), heartbeatBody(r.WorkerID)); a.status != 200 {
		t.Fatalf("heartbeat with the worker's token: %d %s", a.status, a.body)
	}
	// A web page cannot drive a dev-mode hive: a request with an Origin, or
	// one addressed to a rebound DNS name, is 403.
	if a := send(t, "POST", h.URL+"/v1/workers/"+r.WorkerID+"/kill", map[string]string{"Origin": "https://evil.example"}, ""); a.status != 403 || a.code != apiv1.CodeForbidden {
		t.Fatalf("cross-site kill: %d %s", a.status, a.code)
	}
	if a := send(t, "GET", h.URL+"/v1/workers/list", map[string]string{"Host": "rebound.evil.example"}, ""); a.status != 403 {
		t.Fatalf("DNS-rebound list: %d", a.status)
	}
	if info := h.Get(r.WorkerID); info.State != "idle" {
		t.Fatalf("worker is %s after refused requests", info.State)
	}
}

// The state directory and everything the hive writes in it are private;
// the hive refuses a state directory other users can write.
func TestPrivateStateFiles(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	if _, err := h.Client.AddModel(context.Background(), "hf:org/tiny", h.Model); err != nil {
		t.Fatal(err)
	}
	var logsSeen int
	check := func() {
		t.Helper()
		err := filepath.WalkDir(h.Dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				return nil
			}
			perm := fi.Mode().Perm()
			if d.IsDir() && perm != 0o700 {
				t.Errorf("directory %s has mode %o, want 700", p, perm)
			}
			if !d.IsDir() && perm&0o077 != 0 {
				t.Errorf("file %s has mode %o, readable by other users", p, perm)
			}
			if strings.HasSuffix(p, ".log") && filepath.Base(filepath.Dir(p)) == "logs" {
				logsSeen++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check()
	if logsSeen == 0 {
		t.Fatal("no worker log file under <state>/logs")
	}
	if _, err := os.Stat(filepath.Join(h.Dir, "models.json")); err != nil {
		t.Fatalf("catalog file: %v", err)
	}
	if err := h.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	check() // and after a clean shutdown (state written on exit)

	// A state dir other users can write is refused.
	if err := os.Chmod(h.Dir, 0o777); err != nil {
		t.Fatal(err)
	}
	out := runDaemonToFailure(t, nil, "--config", h.Config)
	if !strings.Contains(out, "writable by other users") || !strings.Contains(out, h.Dir) {
		t.Fatalf("0777 state dir:\n%s", out)
	}
	// So is one another user owns.
	os.Chmod(h.Dir, 0o700)
	if err := os.Chown(h.Dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	out = runDaemonToFailure(t, nil, "--config", h.Config)
	os.Chown(h.Dir, os.Geteuid(), os.Getegid())
	if !strings.Contains(out, "owned by uid 65534") {
		t.Fatalf("state dir of another user:\n%s", out)
	}
	// A readable one is tightened to 0700.
	os.Chmod(h.Dir, 0o755)
	h.Restart(hivetest.Options{})
	if fi, err := os.Stat(h.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir after start: %v %v", fi.Mode(), err)
	}
}

// Body, header and stream limits, and slow clients, on the real daemon.
func TestLimitsAndSlowClients(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})

	t.Run("body over 1 MiB is 413", func(t *testing.T) {
		big := `{"worker_id":"` + strings.Repeat("w", api.MaxBodyBytes) + `"}`
		for _, p := range []string{"/v1/workers/spawn", "/v1/heartbeat", "/v1/workers/ready", "/v1/models"} {
			if a := send(t, "POST", h.URL+p, nil, big); a.status != 413 || a.code != apiv1.CodeBodyTooLarge {
				t.Fatalf("%s: %d %s", p, a.status, a.code)
			}
		}
	})

	t.Run("header over the limit is 431", func(t *testing.T) {
		if a := send(t, "GET", h.URL+"/health", map[string]string{"X-Pad": strings.Repeat("p", 64<<10)}, ""); a.status != 431 {
			t.Fatalf("%d", a.status)
		}
	})

	t.Run("the 17th event stream of a client is 429", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var resps []*http.Response
		defer func() {
			cancel()
			for _, r := range resps {
				r.Body.Close()
			}
		}()
		for i := range api.MaxStreamsPerClient {
			req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/v1/events", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("stream %d: %v %v", i+1, err, resp)
			}
			resps = append(resps, resp)
		}
		a := send(t, "GET", h.URL+"/v1/events", nil, "")
		if a.status != 429 || a.code != apiv1.CodeTooManyStreams {
			t.Fatalf("17th stream: %d %s", a.status, a.code)
		}
		// Everything else still answers.
		if a := send(t, "GET", h.URL+"/v1/workers/list", nil, ""); a.status != 200 {
			t.Fatalf("list with 16 streams open: %d", a.status)
		}
	})

	t.Run("slow clients do not hold the server", func(t *testing.T) {
		const dribblers, silent = 8, 8
		start := time.Now()
		var conns []net.Conn
		var wg sync.WaitGroup
		stop := make(chan struct{})
		defer func() {
			close(stop)
			for _, c := range conns {
				c.Close()
			}
			wg.Wait()
		}()
		for i := range dribblers + silent {
			c, err := net.Dial("tcp", h.Addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			if i >= dribblers {
				continue // connects and never sends a byte
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A request line, then a header one byte every 100 ms, never
				// ending.
				if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
					return
				}
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					if _, err := c.Write([]byte("a")); err != nil {
						return
					}
				}
			}()
		}
		// Others are served at once while the slow ones hang.
		fresh := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for i := range 20 {
			t0 := time.Now()
			resp, err := fresh.Get(h.URL + "/health")
			if err != nil {
				t.Fatalf("request %d while slow clients hang: %v", i, err)
			}
			resp.Body.Close()
			if d := time.Since(t0); resp.StatusCode != 200 || d > time.Second {
				t.Fatalf("request %d: %d after %s", i, resp.StatusCode, d)
			}
		}
		// The server closes every slow connection once ReadHeaderTimeout
		// (5 s) has passed.
		for i, c := range conns {
			c.SetReadDeadline(start.Add(15 * time.Second))
			_, err := io.ReadAll(c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("slow connection %d still open after %s", i, time.Since(start))
			}
		}
		if d := time.Since(start); d < 4*time.Second {
			t.Fatalf("slow connections closed after only %s: not the header timeout", d)
		}
	})
}

// The rejected-inference-token log line was written once per request, not
// rate-limited as the operator's and the workers' are (SPEC §14): a client
// with a wrong inference key could flood the hive's log.
func TestRejectedInferenceTokensAreRateLimitedInTheLog(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Env: []string{"RBEE_API_TOKEN=" + opToken},
		Config: "inference_tokens: [inference-secret-1]\n"})
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	for i := 0; i < 200; i++ {
		a := send(t, http.MethodPost, h.URL+"/v1/chat/completions", bearerHdr("not-an-inference-token"), body)
		if a.status != http.StatusUnauthorized {
			t.Fatalf("bad inference token: %d %s, want 401", a.status, a.body)
		}
	}
	if n := strings.Count(h.Log(), "Rejected inference token"); n == 0 || n > 10 {
		t.Fatalf("%d rejected-inference-token lines for 200 bad requests, want 1..10\n%s", n, h.Log())
	}
}

// A connection that presented a valid inference token was not marked
// authenticated (only operator and worker tokens were): with the
// connection table nearly full, an inference client's connection was
// closed after its first request, as an anonymous one is, and any of its
// connections after 10 s idle.
func TestInferenceTokenAuthenticatesItsConnection(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Env: []string{"RBEE_API_TOKEN=" + opToken},
		Config: "max_connections: 16\ninference_tokens: [inference-secret-1]\n"})
	// 10 anonymous connections, each with half a request head: fewer than
	// the reserve (8) of 16 are left, so new connections are on probation.
	var anon []net.Conn
	defer func() {
		for _, a := range anon {
			a.Close()
		}
	}()
	for i := 0; i < 10; i++ {
		a, err := net.Dial("tcp", h.Addr)
		if err != nil {
			t.Fatal(err)
		}
		anon = append(anon, a)
		io.WriteString(a, "GET /health HTTP/1.1\r\n")
	}
	c, err := net.Dial("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	// A POST read by the lean server (internal/h1), then one read by
	// net/http.
	body := `{"model":"not-served","prompt":"hi"}`
	for i, req := range []string{
		"POST /v1/completions HTTP/1.1\r\nHost: " + h.Addr + "\r\nAuthorization: Bearer inference-secret-1\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body,
		"GET /v1/models HTTP/1.1\r\nHost: " + h.Addr + "\r\nAuthorization: Bearer inference-secret-1\r\n\r\n",
	} {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err := io.WriteString(c, req)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(br, nil)
		}
		if err != nil {
			t.Fatalf("inference request %d on one connection: %v (the connection was closed as unauthenticated)", i+1, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if want := []int{http.StatusNotFound, http.StatusOK}[i]; resp.StatusCode != want {
			t.Fatalf("inference request %d: %s, want %d", i+1, resp.Status, want)
		}
	}
}

// A path under a model root through a symlink that leads out of it was
// 404 MODEL_NOT_FOUND when the file it named was missing and 400
// MODEL_PATH_NOT_ALLOWED when it existed: the API told the caller which
// files exist outside the roots, in directories the caller cannot read.
func TestSymlinkOutOfTheModelRootIsNoOracleForMissingFiles(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(h.Models, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "gone"), filepath.Join(h.Models, "dangling")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		filepath.Join(h.Models, "out", "secret"),
		filepath.Join(h.Models, "out", "missing"),
		filepath.Join(h.Models, "out", "missing", "deeper"),
		filepath.Join(h.Models, "dangling"),
	} {
		for _, req := range []apiv1.SpawnRequest{{ModelRef: "file:" + p}, {ModelRef: "file:" + h.Model, ModelPath: p}} {
			_, err := h.Spawn(req)
			if ae := apiErr(t, err); ae.Status != http.StatusBadRequest || ae.Code != "MODEL_PATH_NOT_ALLOWED" {
				t.Errorf("%+v: %d %s %s, want 400 MODEL_PATH_NOT_ALLOWED whether or not the file exists", req, ae.Status, ae.Code, ae.Message)
			}
		}
	}
}

// A console path that names no asset was answered by net/http's file
// server in plain text ("404 page not found"), not in the API's error shape
// (SPEC §4: every error is {"error":{"code","message"}}).
func TestConsoleMissingAssetIsNotFoundInTheErrorShape(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	for _, p := range []string{"/ui/missing.js", "/ui/no/such/dir/"} {
		a := send(t, http.MethodGet, h.URL+p, nil, "")
		if a.status != http.StatusNotFound || a.code != apiv1.CodeNotFound {
			t.Fatalf("GET %s: %d %q, want 404 NOT_FOUND in the error shape", p, a.status, a.body)
		}
		if csp := a.header.Get("Content-Security-Policy"); csp == "" {
			t.Fatalf("GET %s: no Content-Security-Policy", p)
		}
	}
	if a := send(t, http.MethodGet, h.URL+"/ui/", nil, ""); a.status != http.StatusOK || !strings.Contains(a.body, "<html") {
		t.Fatalf("GET /ui/: %d %.200s", a.status, a.body)
	}
}

// /metrics is public on a loopback-bound hive because only local processes
// can reach it; but with a token the browser guard does not check Host, so a
// web page whose DNS name was rebound to 127.0.0.1 read /metrics (worker
// ids, model refs, GPUs) without a token.
func TestLoopbackMetricsAreNotPublicToARebindingPage(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Env: []string{"RBEE_API_TOKEN=" + opToken}})
	_, port, _ := net.SplitHostPort(h.Addr)
	if a := send(t, http.MethodGet, h.URL+"/metrics", nil, ""); a.status != http.StatusOK {
		t.Fatalf("GET /metrics on loopback: %d, want 200 without a token", a.status)
	}
	rebound := map[string]string{"Host": "rebind.example:" + port}
	if a := send(t, http.MethodGet, h.URL+"/metrics", rebound, ""); a.status != http.StatusUnauthorized || a.code != apiv1.CodeMissingAPIKey {
		t.Fatalf("GET /metrics with Host rebind.example: %d %.200s, want 401 MISSING_API_KEY", a.status, a.body)
	}
	rebound["Authorization"] = "Bearer " + opToken
	if a := send(t, http.MethodGet, h.URL+"/metrics", rebound, ""); a.status != http.StatusOK {
		t.Fatalf("GET /metrics with Host rebind.example and the token: %d", a.status)
	}
}
