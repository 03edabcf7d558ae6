package refworker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/gguf"
	"github.com/rbee/rbee-hive/internal/testutil/buildbin"
)

// eventually polls cond every 10 ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- fake hive ---

type gotHeartbeat struct {
	WorkerID       string `json:"worker_id"`
	Timestamp      string `json:"timestamp"`
	HealthStatus   string `json:"health_status"`
	State          string `json:"state"`
	SlotsTotal     *int   `json:"slots_total"`
	SlotsAvailable *int   `json:"slots_available"`
	Progress       *struct {
		Done  int64 `json:"done"`
		Total int64 `json:"total"`
	} `json:"progress"`
}

type gotReady struct {
	WorkerID string `json:"worker_id"`
	URL      string `json:"url"`
	ModelRef string `json:"model_ref"`
	Backend  string `json:"backend"`
	Device   int    `json:"device"`
}

// fakeHive records ready callbacks and heartbeats, checking the bearer token
// and decoding bodies strictly, as the hive does.
type fakeHive struct {
	srv         *httptest.Server
	token       string
	readyStatus int // answer to the ready callback; 0: 200

	mu      sync.Mutex
	readies []gotReady
	beats   []gotHeartbeat
	errs    []string
}

const testToken = "worker-secret-token"

func newFakeHive(t *testing.T) *fakeHive {
	h := &fakeHive{token: testToken}
	h.srv = httptest.NewServer(h)
	h.cleanup(t)
	return h
}

// newFakeHiveOn starts the fake hive on addr (a port reserved earlier).
func newFakeHiveOn(t *testing.T, addr string) *fakeHive {
	h := &fakeHive{token: testToken}
	h.srv = httptest.NewUnstartedServer(h)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h.srv.Listener.Close()
	h.srv.Listener = ln
	h.srv.Start()
	h.cleanup(t)
	return h
}

func (h *fakeHive) cleanup(t *testing.T) {
	t.Cleanup(func() {
		h.srv.CloseClientConnections()
		h.srv.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, e := range h.errs {
			t.Errorf("fake hive: %s", e)
		}
	})
}

func (h *fakeHive) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if got := r.Header.Get("Authorization"); got != "Bearer "+h.token {
		h.errs = append(h.errs, fmt.Sprintf("%s %s: Authorization %q", r.Method, r.URL.Path, got))
		rw.WriteHeader(http.StatusUnauthorized)
		return
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/workers/ready":
		var b gotReady
		if err := dec.Decode(&b); err != nil {
			h.errs = append(h.errs, "ready body: "+err.Error())
		}
		h.readies = append(h.readies, b)
		if h.readyStatus != 0 {
			rw.WriteHeader(h.readyStatus)
			io.WriteString(rw, `{"error":{"code":"WORKER_NOT_FOUND","message":"no such worker"}}`)
			return
		}
		io.WriteString(rw, `{"message":"Worker registered as ready"}`)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/heartbeat":
		var b gotHeartbeat
		if err := dec.Decode(&b); err != nil {
			h.errs = append(h.errs, "heartbeat body: "+err.Error())
		}
		if _, err := time.Parse(time.RFC3339Nano, b.Timestamp); err != nil {
			h.errs = append(h.errs, "heartbeat timestamp: "+err.Error())
		}
		h.beats = append(h.beats, b)
		io.WriteString(rw, `{"message":"Heartbeat received"}`)
	default:
		h.errs = append(h.errs, "unexpected "+r.Method+" "+r.URL.Path)
		rw.WriteHeader(http.StatusNotFound)
	}
}

func (h *fakeHive) readyCalls() []gotReady {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]gotReady(nil), h.readies...)
}

func (h *fakeHive) heartbeats() []gotHeartbeat {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]gotHeartbeat(nil), h.beats...)
}

func (h *fakeHive) heartbeatsIn(state string) []gotHeartbeat {
	var out []gotHeartbeat
	for _, b := range h.heartbeats() {
		if b.State == state {
			out = append(out, b)
		}
	}
	return out
}

// --- worker process ---

type workerOpts struct {
	hiveURL string // "" for standalone
	model   string // "" for a fresh 64 KiB model file
	port    int    // 0: any free port
	args    []string
	env     []string
	// noTestMode starts the worker without --test-mode (LLMW_FAKE_* ignored).
	noTestMode bool
}

// proc is a running worker binary in its own process group, with stdout and
// stderr going to files.
type proc struct {
	t       testing.TB
	cmd     *exec.Cmd
	pid     int
	outPath string
	errPath string
	done    chan struct{}
	state   *os.ProcessState
	addr    string // set by waitListening
	client  *http.Client
}

// writeModel writes the built-in stories260K model into a fresh directory.
func writeModel(t testing.TB) string {
	t.Helper()
	p, err := builtinmodel.WriteTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// modelTensorBytes is the load progress total of a model: its tensor bytes.
func modelTensorBytes(t testing.TB, path string) int64 {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int64
	for _, tt := range f.Tensors {
		n += tt.Size
	}
	return n
}

func startWorker(t *testing.T, o workerOpts) *proc {
	t.Helper()
	bin := buildbin.Build(t, "cmd/llm-worker-rbee")
	if o.model == "" {
		o.model = writeModel(t)
	}
	args := []string{
		"--worker-id", "worker-test-1", "--model", o.model, "--model-ref", "file:" + o.model,
		"--backend", "cpu", "--device", "0", "--port", strconv.Itoa(o.port), "--hive-url", o.hiveURL,
	}
	if !o.noTestMode {
		args = append(args, "--test-mode")
	}
	args = append(args, o.args...)
	dir := t.TempDir()
	p := &proc{
		t:       t,
		outPath: filepath.Join(dir, "stdout"),
		errPath: filepath.Join(dir, "stderr"),
		done:    make(chan struct{}),
		client:  &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	}
	stdout, err := os.Create(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(p.errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = stdout, stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RBEE_") {
			env = append(env, kv)
		}
	}
	p.cmd.Env = append(append(env, "RBEE_WORKER_TOKEN="+testToken), o.env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.pid = p.cmd.Process.Pid
	go func() {
		p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-p.pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("worker %d not reaped 10 s after SIGKILL", p.pid)
		}
		if t.Failed() {
			t.Logf("worker stdout:\n%s\nworker stderr:\n%s", p.stdout(), p.stderr())
		}
	})
	return p
}

func (p *proc) stdout() string { b, _ := os.ReadFile(p.outPath); return string(b) }
func (p *proc) stderr() string { b, _ := os.ReadFile(p.errPath); return string(b) }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits for the worker to end and returns its exit code, or -1 and
// the signal if a signal killed it.
func (p *proc) waitExit(timeout time.Duration) (int, syscall.Signal) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("worker %d still running after %v\nstderr:\n%s", p.pid, timeout, p.stderr())
	}
	ws := p.state.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -1, ws.Signal()
	}
	return ws.ExitStatus(), 0
}

var listenRE = regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)

func (p *proc) waitListening() string {
	p.t.Helper()
	eventually(p.t, 10*time.Second, "the worker to listen", func() bool {
		if m := listenRE.FindStringSubmatch(p.stderr()); m != nil {
			p.addr = m[1]
			return true
		}
		if p.exited() {
			p.t.Fatalf("worker exited before listening:\n%s", p.stderr())
		}
		return false
	})
	return p.addr
}

func (p *proc) waitLog(what string) {
	p.t.Helper()
	eventually(p.t, 10*time.Second, fmt.Sprintf("%q in the worker's output", what), func() bool {
		return strings.Contains(p.stderr(), what) || strings.Contains(p.stdout(), what)
	})
}

func (p *proc) waitReady() {
	p.t.Helper()
	p.waitListening()
	p.waitLog("msg=ready")
}

func (p *proc) url(path string) string { return "http://" + p.addr + path }

// getJSON GETs path and decodes the answer.
func (p *proc) getJSON(path string) (int, map[string]any) {
	p.t.Helper()
	resp, err := p.client.Get(p.url(path))
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		p.t.Fatalf("GET %s: decode: %v", path, err)
	}
	return resp.StatusCode, m
}

func (p *proc) post(ctx context.Context, path, body string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url(path), strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return p.client.Do(req)
}

// errorCode POSTs and expects a JSON error answer; it returns status and code.
func (p *proc) errorCode(path, body string) (int, string) {
	p.t.Helper()
	resp, err := p.post(context.Background(), path, body)
	if err != nil {
		p.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error.Code
}

// sseEvents reads "data: …" payloads from r until [DONE] (included) or EOF.
func sseEvents(r io.Reader, each func(string)) []string {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		out = append(out, line)
		if each != nil {
			each(line)
		}
		if line == "[DONE]" {
			break
		}
	}
	return out
}

type tokenEvent struct {
	Token string `json:"token"`
	Index int    `json:"index"`
}

// infer runs one inference to the end and returns its tokens.
func (p *proc) infer(prompt string, maxTokens int) []string {
	p.t.Helper()
	resp, err := p.post(context.Background(), "/v1/inference", fmt.Sprintf(`{"prompt":%q,"max_tokens":%d}`, prompt, maxTokens))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		p.t.Fatalf("inference: %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return decodeTokens(p.t, sseEvents(resp.Body, nil))
}

func decodeTokens(t testing.TB, events []string) []string {
	t.Helper()
	if len(events) == 0 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream does not end in [DONE]: %q", events)
	}
	var toks []string
	for i, e := range events[:len(events)-1] {
		var ev tokenEvent
		if err := json.Unmarshal([]byte(e), &ev); err != nil {
			t.Fatalf("event %q: %v", e, err)
		}
		if ev.Index != i {
			t.Fatalf("event %d has index %d", i, ev.Index)
		}
		toks = append(toks, ev.Token)
	}
	return toks
}

// reservePort returns a port that was free a moment ago.
func reservePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// procStatusKB reads a "Name: N kB" field of /proc/pid/status.
func procStatusKB(t testing.TB, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
