package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/client"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// Regression tests for issue 11 (SPEC §3 state dir lock, §7 adoption, §14).

// genericWithAllow is a generic profile running the test worker whose
// requests may set GENERIC_* and WORKER_OPT.
func genericWithAllow(t *testing.T, extra string) string {
	return fmt.Sprintf(`profiles:
  generic:
    command: [%s, --port, "{port}", --model, "{model}"]
    protocol: http
    allow_env: ["GENERIC_*", WORKER_OPT]
%s`, hivetest.GenericWorker(t), extra)
}

// procEnv reads a process's environment as exec'd, entry by entry.
func procEnv(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// procStatus returns the value of one /proc/PID/status field.
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// Item 1: a second daemon on a running hive's state dir adopted its
// workers and, when stopped, killed them.
func TestSecondDaemonOnSameStateDirRefusesNamingHolderPID(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	out := runDaemonToFailure(t, nil, "--config", h.Config, "--addr", "127.0.0.1:0")
	if want := fmt.Sprintf("PID %d", h.PID()); !strings.Contains(out, want) || !strings.Contains(out, "hive.lock") {
		t.Fatalf("second daemon's refusal does not name the holder (%s):\n%s", want, out)
	}
	if strings.Contains(out, "Recovered") {
		t.Fatalf("second daemon recovered workers:\n%s", out)
	}
	info := h.Get(r.WorkerID)
	if info.State != "idle" || info.PID != r.PID || !hivetest.Alive(r.PID) {
		t.Fatalf("first hive's worker disturbed: %s pid %d", info.State, info.PID)
	}
}

// Item 2: Detach (--keep-workers-on-exit) during a spawn's start grace
// never ended the grace, so the spawn call got no answer.
func TestDetachDuringStartGraceAnswersTheSpawn(t *testing.T) {
	keep := hivetest.Options{Args: []string{"--keep-workers-on-exit"}}
	h := hivetest.Start(t, keep)
	type res struct {
		r   *apiv1.SpawnResponse
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := h.Spawn(apiv1.SpawnRequest{Settings: settings(`{"start_grace":"30s"}`)})
		ch <- res{r, err}
	}()
	var id string
	hivetest.Eventually(t, wait, func() bool {
		l, _ := h.Client.List(context.Background(), false)
		if len(l) == 1 && l[0].PID > 0 {
			id = l[0].ID
			return true
		}
		return false
	})
	h.Signal(syscall.SIGTERM)
	select {
	case got := <-ch:
		if got.err != nil || got.r == nil || got.r.WorkerID != id {
			t.Fatalf("spawn during detach: %+v %v\n%s", got.r, got.err, h.Log())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("spawn not answered 10 s after SIGTERM\n%s", h.Log())
	}
	<-h.Exited()
	// The next hive adopts the worker, and its clean stop ends it.
	waitBindable(t, h.Addr)
	h.Restart(hivetest.Options{})
	h.WaitState(id, wait, "loading", "idle")
}

// Item 2: a spawn during shutdown is refused with 503 SHUTTING_DOWN and
// leaves no worker behind.
func TestSpawnDuringShutdownIsRefusedAndLeavesNoOrphan(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  stop_timeout: 2s\n"})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_IGNORE_SHUTDOWN": "1"}})
	h.WaitState(r.WorkerID, wait, "idle")
	h.Signal(syscall.SIGTERM)
	hivetest.Eventually(t, wait, func() bool { return strings.Contains(h.Log(), "Shutting down 1 workers") })
	_, err := h.Spawn(apiv1.SpawnRequest{})
	if ae := apiErr(t, err); ae.Status != 503 || ae.Code != "SHUTTING_DOWN" {
		t.Fatalf("spawn during shutdown: %+v", ae)
	}
	<-h.Exited()
	if l := h.Leftovers(); len(l) != 0 {
		t.Fatalf("processes left: %v", l)
	}
	if !strings.Contains(h.Log(), "1/1 workers stopped") {
		t.Fatalf("shutdown count:\n%s", h.Log())
	}
}

// Items 3 and 4: request env reached the reference worker's test knobs
// (RBEE_BENCH_READY_STAMP) and HOME/PYTHONWARNINGS etc.; the hive's own
// environment and the request's both reached the worker.
func TestRequestEnvRBEENamesAndUnlistedNamesRefused(t *testing.T) {
	stamp := filepath.Join(t.TempDir(), "root-owned")
	h := hivetest.Start(t, hivetest.Options{})
	for _, env := range []map[string]string{
		{"RBEE_BENCH_READY_STAMP": stamp}, {"HOME": t.TempDir()}, {"PYTHONWARNINGS": "x"}, {"LLAMA_ARG_HOST": "0.0.0.0"},
		{"TRITON_CACHE_DIR": "/tmp"},
	} {
		_, err := h.Spawn(apiv1.SpawnRequest{Env: env})
		ae := apiErr(t, err)
		for k := range env {
			if ae.Status != 400 || ae.Code != "ENV_NOT_ALLOWED" || !strings.Contains(ae.Message, k) {
				t.Fatalf("env %s: %+v", k, ae)
			}
		}
	}
	if _, err := os.Stat(stamp); err == nil {
		t.Fatal("the stamp file was written")
	}
}

func TestRequestEnvIsAllowListedAndWorkerEnvIsOneMap(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{
		Env:    []string{"HOME=/tmp/hive-home", "HIVE_ONLY_VAR=1", "PATH=/tmp/evil:" + os.Getenv("PATH")},
		Config: genericWithAllow(t, `    env: {GENERIC_LOAD_MS: "0", WORKER_OPT: profile, HOME: /profile-home}`+"\n"),
	})
	// The generic profile lists WORKER_OPT: the request's value wins over
	// the profile's; the profile's HOME over the base.
	r := h.MustSpawn(apiv1.SpawnRequest{Profile: "generic", Env: map[string]string{"WORKER_OPT": "request"}})
	h.WaitState(r.WorkerID, wait, "idle")
	env := procEnv(t, r.PID)
	seen := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := seen[k]; dup {
			t.Fatalf("%s twice in the worker's environment: %q", k, env)
		}
		seen[k] = v
	}
	if seen["WORKER_OPT"] != "request" || seen["HOME"] != "/profile-home" || seen["HIVE_ONLY_VAR"] != "" ||
		strings.Contains(seen["PATH"], "/tmp/evil") || seen["RBEE_WORKER_ID"] != r.WorkerID {
		t.Fatalf("worker environment: %q", env)
	}
	// Without a profile HOME, HOME is the worker user's (here root's), not
	// the hive's.
	cfgNoHome := strings.Replace(genericWithAllow(t, ""), "generic:", "plain:", 1)
	h2 := hivetest.Start(t, hivetest.Options{Env: []string{"HOME=/tmp/hive-home"}, Config: cfgNoHome})
	r2 := h2.MustSpawn(apiv1.SpawnRequest{Profile: "plain"})
	h2.WaitState(r2.WorkerID, wait, "idle")
	if n := procStatus(t, r2.PID, "NoNewPrivs"); n != "1" {
		t.Fatalf("worker NoNewPrivs %s", n)
	}
	me, _ := user.Current()
	for _, kv := range procEnv(t, r2.PID) {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok && v != me.HomeDir {
			t.Fatalf("worker HOME %q, want the worker user's %q", v, me.HomeDir)
		}
	}
}

// testUser creates a real unprivileged system user for the test and
// removes it afterwards.
func testUser(t *testing.T) *user.User {
	t.Helper()
	name := testAccount(t, "rbeet", "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin")
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// testGroup adds a system group for the test and removes it at the end.
func testGroup(t *testing.T) *user.Group {
	t.Helper()
	g, err := user.LookupGroup(testAccount(t, "rbeeg", "groupadd", "--system"))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// testAccount makes a system account (a user with useradd, a group with
// groupadd; the suite runs as root, as CI does) named prefix and a random
// number, deleted at the test's end (userdel, groupdel), and returns its
// name.
func testAccount(t *testing.T, prefix, add string, args ...string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d", prefix, rand.IntN(1e6))
	if out, err := process.RunCmd(exec.Command(add, append(args, name)...)); err != nil {
		t.Fatalf("%s: %v\n%s", add, err, out)
	}
	del := strings.Replace(add, "add", "del", 1)
	t.Cleanup(func() {
		if out, err := process.RunCmd(exec.Command(del, name)); err != nil {
			t.Errorf("%s: %v\n%s", del, err, out)
		}
	})
	return name
}

// Item 5: workers ran as root and could gain privileges; run_as runs them
// as an unprivileged user, supplementary groups cleared, no_new_privs set.
func TestWorkersRunAsUnprivilegedUserWithNoNewPrivs(t *testing.T) {
	u := testUser(t)
	// The worker user must be able to read the model: a root it can reach.
	root, err := os.MkdirTemp("", "rbee-runas-models-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	model := filepath.Join(root, "m.gguf")
	if err := os.WriteFile(model, []byte("weights"), 0o644); err != nil || os.Chmod(root, 0o755) != nil {
		t.Fatal(err)
	}
	h := hivetest.Start(t, hivetest.Options{Config: "run_as: {user: " + u.Username + "}\nmodel_roots: [" + root + "]\n" + genericWithAllow(t, "")})
	r := h.MustSpawn(apiv1.SpawnRequest{ModelRef: "file:" + model, Profile: "generic", Env: map[string]string{"GENERIC_LOAD_MS": "0"}})
	h.WaitState(r.WorkerID, wait, "idle")
	if uid := strings.Fields(procStatus(t, r.PID, "Uid")); uid[0] != u.Uid || uid[1] != u.Uid {
		t.Fatalf("worker uid %v, want %s", uid, u.Uid)
	}
	if g := procStatus(t, r.PID, "Groups"); g != "" {
		t.Fatalf("worker supplementary groups %q, want none", g)
	}
	if n := procStatus(t, r.PID, "NoNewPrivs"); n != "1" {
		t.Fatalf("worker NoNewPrivs %s", n)
	}
	for _, kv := range procEnv(t, r.PID) {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok && v != u.HomeDir {
			t.Fatalf("worker HOME %q, want %q", v, u.HomeDir)
		}
	}
	h.Client.Stop(context.Background(), r.WorkerID)
	h.WaitState(r.WorkerID, wait, "terminated")
}

// Item 5: a worker running as the hive's user read RBEE_API_TOKEN from the
// hive's /proc/PID/environ; a non-dumpable hive's /proc files belong to root.
func TestHiveIsNotDumpable(t *testing.T) {
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	h := hivetest.Start(t, hivetest.Options{Credential: nobody})
	st, err := os.Stat(fmt.Sprintf("/proc/%d/environ", h.PID()))
	if err != nil {
		t.Fatal(err)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 0 {
		t.Fatalf("hive's /proc environ owned by uid %d: the hive is dumpable, its user's processes can read it", uid)
	}
}

// Item 7: a request turned configured limits off, 1 ms intervals were
// accepted, and spawns were limited only by the port range.
func TestIntervalFloors(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	for _, js := range []string{
		`{"health":{"interval":"1ms","timeout":"1s","failure_threshold":3}}`,
		`{"heartbeat":{"interval":"1ms","timeout":"1s"}}`,
	} {
		_, err := h.Spawn(apiv1.SpawnRequest{Settings: settings(js)})
		if ae := apiErr(t, err); ae.Status != 400 || ae.Code != "INVALID_SETTINGS" || !strings.Contains(ae.Message, "interval") {
			t.Fatalf("%s: %+v", js, ae)
		}
	}
}

func TestSpawnCannotLoosenLimitsOrIntervalsAndMaxWorkers(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{
		Config:   "max_workers: 2\nlimits_max: {nofile: 1024}\n",
		Settings: "  limits: {nofile: 256}\n",
	})
	for _, c := range []struct{ settings, code string }{
		{`{"limits":{"nofile":0}}`, "LIMITS_NOT_ALLOWED"},
		{`{"limits":{"nofile":4096}}`, "LIMITS_NOT_ALLOWED"},
		{`{"health":{"interval":"1ms","timeout":"1s","failure_threshold":3}}`, "INVALID_SETTINGS"},
		{`{"heartbeat":{"interval":"1ms","timeout":"1s"}}`, "INVALID_SETTINGS"},
	} {
		_, err := h.Spawn(apiv1.SpawnRequest{Settings: settings(c.settings)})
		if ae := apiErr(t, err); ae.Status != 400 || ae.Code != c.code {
			t.Fatalf("%s: %+v", c.settings, ae)
		}
	}
	a := h.MustSpawn(apiv1.SpawnRequest{Settings: settings(`{"limits":{"nofile":512}}`)})
	b := h.MustSpawn(apiv1.SpawnRequest{})
	if got := h.Get(a.WorkerID).Limits.Nofile; got != 512 {
		t.Fatalf("tightened nofile %d", got)
	}
	if got := h.Get(b.WorkerID).Limits.Nofile; got != 256 {
		t.Fatalf("default nofile %d", got)
	}
	_, err := h.Spawn(apiv1.SpawnRequest{})
	if ae := apiErr(t, err); ae.Status != 503 || ae.Code != "TOO_MANY_WORKERS" {
		t.Fatalf("third spawn: %+v", ae)
	}
}

// Item 9: a record without a cgroup, naming an unrelated live process with
// its right start time, got that process adopted (and later killed).
func TestAdoptionNeedsTheMarkerNotJustTheStartTime(t *testing.T) {
	o := hivetest.Options{Settings: "  restart: {policy: never}\n"}
	h := hivetest.Start(t, o)
	r, _, sleepDone := recordAStranger(t, h, func(rec *record.Record, pid int, start uint64) {
		rec.Info.PID, rec.PGID, rec.StartTime, rec.Cgroup = pid, pid, start, false
	})
	waitBindable(t, h.Addr)
	h.Restart(o)
	info := h.WaitState(r.WorkerID, wait, "failed")
	if info.Reason != "crashed" {
		t.Fatalf("record naming an unmarked process: %s/%s %q", info.State, info.Reason, info.Detail)
	}
	if err := h.Stop(wait); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-sleepDone:
		t.Fatalf("unrelated process ended: %v", err)
	default:
	}
}

// Item 10: the --pprof listener answered any Host (DNS rebinding from a
// web page).
func TestPprofAnswersOnlyLoopbackHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := hivetest.Start(t, hivetest.Options{Args: []string{"--pprof", addr}})
	get := func(host string) int {
		var code int
		hivetest.Eventually(t, wait, func() bool {
			req, _ := http.NewRequest("GET", "http://"+addr+"/debug/pprof/cmdline", nil)
			req.Host = host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			code = resp.StatusCode
			return true
		})
		return code
	}
	if c := get("attacker.example:80"); c != http.StatusForbidden {
		t.Fatalf("foreign Host answered %d", c)
	}
	if c := get(addr); c != 200 {
		t.Fatalf("loopback Host answered %d\n%s", c, h.Log())
	}
}

// escapeCgroups moves pid to the root cgroup of every hierarchy mounted
// under /sys/fs/cgroup (what a root process inside a worker can do).
func escapeCgroups(t *testing.T, pid int) {
	t.Helper()
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*")
	dirs = append(dirs, "/sys/fs/cgroup")
	for _, d := range dirs {
		_ = os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if strings.Contains(string(b), "worker-") {
		t.Fatalf("child still in a worker cgroup:\n%s", b)
	}
}

// Item 6: a setsid child that wrote itself into the root cgroups survived
// its worker's end, re-parented to the hive, until the next hive start.
func TestEscapedChildHandedToHiveIsKilled(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Settings: "  restart: {policy: never}\n"})
	r := h.MustSpawn(apiv1.SpawnRequest{Env: map[string]string{"LLMW_FAKE_FORK_CHILD": "setsid"}})
	h.WaitState(r.WorkerID, wait, "idle")
	child := childPID(t, h, r.WorkerID)
	escapeCgroups(t, child)
	syscall.Kill(r.PID, syscall.SIGKILL)
	h.WaitState(r.WorkerID, wait, "failed")
	if !hivetest.Eventually(t, 5*time.Second, func() bool { return !hivetest.Alive(child) }) {
		syscall.Kill(child, syscall.SIGKILL)
		t.Fatalf("escaped child %d survived its worker\n%s", child, h.Log())
	}
	// The hive logs the kill after sending it: wait for the line too.
	if !hivetest.Eventually(t, 5*time.Second, func() bool { return strings.Contains(h.Log(), "escaped its worker") }) {
		t.Fatalf("escape not logged:\n%s", h.Log())
	}
}

// Item 8: 230 unauthenticated keep-alive connections exhausted the hive's
// descriptors and locked the operator out; 6,000 bad tokens made 6,000
// WARN lines.
func TestUnauthenticatedConnectionsCannotLockOutTheOperator(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Env: []string{"RBEE_API_TOKEN=" + opToken}, Config: "max_connections: 32\n"})
	op := client.New(h.URL, opToken)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 60; i++ {
		c, err := net.Dial("tcp", h.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: %s\r\n\r\n", h.Addr)
	}
	// The operator still gets in, at once.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := op.List(ctx, false); err != nil {
		t.Fatalf("operator locked out: %v", err)
	}
	// Idle unauthenticated connections are closed after 10 s.
	deadline := time.Now().Add(15 * time.Second)
	buf := make([]byte, 4096)
	for i, c := range conns {
		c.SetReadDeadline(deadline)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("connection %d still open after 15 s", i)
				}
				break
			}
		}
	}
	// Bad tokens: the log line is rate-limited.
	bad := client.New(h.URL, "not-the-token-000000000000000000")
	for i := 0; i < 200; i++ {
		bad.List(context.Background(), false)
	}
	if n := strings.Count(h.Log(), "Rejected operator token"); n > 10 {
		t.Fatalf("%d rejected-token lines for 200 bad requests", n)
	}
}

// Item 8: the per-client stream bound was shared by every loopback client,
// so any local process could lock the operator out of /v1/events. On
// loopback the bound counts per local user.
func TestLocalUserCannotTakeTheOperatorsEventStreams(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	curl := func(maxTime string) *exec.Cmd {
		c := exec.Command("curl", "-sN", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", maxTime, h.URL+"/v1/events")
		c.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		return c
	}
	var streams []*exec.Cmd
	t.Cleanup(func() {
		for _, c := range streams {
			c.Process.Kill()
			process.WaitCmd(c)
		}
	})
	// Another local user opens streams until its next one is refused.
	refused := false
	for i := 0; i < 40 && !refused; i++ {
		c := curl("60")
		if err := process.StartCmd(c); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, c)
		if i < 15 {
			continue
		}
		out, _ := process.RunCmd(curl("1"))
		refused = strings.TrimSpace(string(out)) == "429"
	}
	if !refused {
		t.Fatal("the local user's streams were never refused")
	}
	// The operator (this test's user) still gets its stream.
	resp, err := http.Get(h.URL + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("operator's event stream: %d", resp.StatusCode)
	}
}

// Connections that never send a request held every slot (for up to
// ReadHeaderTimeout each), so a token holder arriving then was refused at
// accept. At max_connections the oldest unauthenticated connection is
// closed to admit the new one.
func TestSilentConnectionsCannotLockOutTheOperator(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{Env: []string{"RBEE_API_TOKEN=" + opToken}, Config: "max_connections: 16\n"})
	op := client.New(h.URL, opToken)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 16; i++ {
		c, err := net.Dial("tcp", h.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Every slot is taken by a connection that sends nothing; each
	// request below comes on a new connection.
	op.HTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := op.List(ctx, false)
		cancel()
		if err != nil {
			t.Fatalf("operator request %d locked out: %v", i, err)
		}
	}
}

// A run_as that names only a group ({group: G}) was ignored: with no
// user to switch to (a root hive without a user "rbee"), workers ran with
// the hive's group, root, instead of the group the config names.
func TestRunAsGroupWithoutUserIsApplied(t *testing.T) {
	g := testGroup(t)
	h := hivetest.Start(t, hivetest.Options{Config: "run_as: {group: " + g.Name + "}\n"})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, wait, "idle")
	if gid := strings.Fields(procStatus(t, r.PID, "Gid")); gid[0] != g.Gid || gid[1] != g.Gid {
		t.Fatalf("worker gid %v, want %s (run_as.group %s)", gid, g.Gid, g.Name)
	}
	if gs := procStatus(t, r.PID, "Groups"); gs != "" {
		t.Fatalf("worker supplementary groups %q, want none", gs)
	}
	h.Client.Stop(context.Background(), r.WorkerID)
	h.WaitState(r.WorkerID, wait, "terminated")
}

// The --pprof listener checked only Host: a page of another site in the
// operator's browser could start a CPU profile or an execution trace of
// the hive (<img src="http://127.0.0.1:P/debug/pprof/trace?seconds=60">);
// the hive API's browser guard refuses such requests.
func TestPprofRefusesCrossSiteRequests(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := hivetest.Start(t, hivetest.Options{Args: []string{"--pprof", addr}})
	get := func(hdr map[string]string) int {
		var code int
		hivetest.Eventually(t, wait, func() bool {
			req, _ := http.NewRequest("GET", "http://"+addr+"/debug/pprof/cmdline", nil)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			code = resp.StatusCode
			return true
		})
		return code
	}
	for _, hdr := range []map[string]string{
		{"Origin": "http://attacker.example"},
		{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
	} {
		if c := get(hdr); c != http.StatusForbidden {
			t.Fatalf("cross-site request %v answered %d", hdr, c)
		}
	}
	if c := get(nil); c != http.StatusOK {
		t.Fatalf("plain request answered %d\n%s", c, h.Log())
	}
}
