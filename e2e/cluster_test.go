package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cluster"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/queen"
	"github.com/rbee/rbee-hive/internal/testutil/buildbin"
	"github.com/rbee/rbee-hive/internal/testutil/etcdtest"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// testQueen is a running rbee-queen process.
type testQueen struct {
	t   *testing.T
	URL string
	cmd *exec.Cmd
	out *hivetest.SyncBuffer
}

func startQueen(t *testing.T, etcd, prefix string) *testQueen {
	t.Helper()
	bin := buildbin.Build(t, "cmd/rbee-queen")
	port := hivetest.FreeRange(t, 1)
	dir := t.TempDir()
	cfg := fmt.Sprintf("listen: 127.0.0.1:%d\netcd: {endpoints: [%s]}\nprefix: %s\nlog_level: debug\n", port, etcd, prefix)
	path := filepath.Join(dir, "queen.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	q := &testQueen{t: t, URL: fmt.Sprintf("http://127.0.0.1:%d", port), out: &hivetest.SyncBuffer{}}
	q.cmd = exec.Command(bin, "--config", path)
	q.cmd.Stdout, q.cmd.Stderr = q.out, q.out
	if err := process.StartCmd(q.cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = process.WaitCmd(q.cmd); close(exited) }()
	t.Cleanup(func() {
		_ = q.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = q.cmd.Process.Kill()
			<-exited
			t.Errorf("rbee-queen did not exit on SIGTERM\n%s", q.out.String())
		}
	})
	if !hivetest.Eventually(t, 10*time.Second, func() bool {
		var h struct{ Synced bool }
		return q.get("/health", &h) == nil && h.Synced
	}) {
		t.Fatalf("queen not synced\n%s", q.out.String())
	}
	return q
}

func (q *testQueen) get(path string, v any) error {
	resp, err := http.Get(q.URL + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (q *testQueen) cluster() queen.Cluster {
	q.t.Helper()
	var c queen.Cluster
	if err := q.get("/v1/cluster", &c); err != nil {
		q.t.Fatal(err)
	}
	return c
}

func nodesOf(c queen.Cluster) string {
	var n []string
	for _, h := range c.Hives {
		n = append(n, h.Node)
	}
	sort.Strings(n)
	return strings.Join(n, ",")
}

// chat posts a chat completion for model and returns the status, the hive
// that answered and the body.
func (q *testQueen) chat(model string) (int, string, []byte) {
	q.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	b, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": "hi"}}})
	req, _ := http.NewRequestWithContext(ctx, "POST", q.URL+"/v1/chat/completions", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		q.t.Fatalf("chat %s: %v", model, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(queen.HiveHeader), body
}

// clusterHive starts a hive registered as node; extra is more models: YAML.
func clusterHive(t *testing.T, etcd, node, gen, extra string) (*hivetest.Hive, hivetest.Options) {
	o := hivetest.Options{Config: "profiles:\n" + gen +
		"models:\n  shared:\n    model_ref: file:cluster.gguf\n    profile: gen\n    idle_timeout: 5m\n" + extra +
		fmt.Sprintf("cluster: {etcd: [%s], node: %s, lease_ttl: 2s, prefix: /e2e/}\n", etcd, node)}
	h := hivetest.Start(t, o)
	// The models name the harness's model file by a name of their own
	// (resolved at the first cold start, after this).
	if err := os.Link(h.Model, filepath.Join(h.Models, "cluster.gguf")); err != nil {
		t.Fatal(err)
	}
	return h, o
}

func TestClusterQueenRoutesAcrossHivesAndDropsDeadOnes(t *testing.T) {
	et := etcdtest.StartEmbedded(t) // restarted below
	gen := genericProfile(t, "gen", nil)
	only := "  bonly:\n    model_ref: file:cluster.gguf\n    profile: gen\n    idle_timeout: 5m\n"
	a, _ := clusterHive(t, et.Endpoint, "a", gen, "")
	b, bo := clusterHive(t, et.Endpoint, "b", gen, only)
	c, _ := clusterHive(t, et.Endpoint, "c", gen, "")

	// The hives are registered before the queen starts: its first view
	// (list, then watch) has all three at once.
	cli, err := cluster.NewClient(et.Endpoints, config.ClusterTLS{}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if !hivetest.Eventually(t, 10*time.Second, func() bool {
		r, err := cli.Get(context.Background(), "/e2e/hives/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && r.Count == 3
	}) {
		t.Fatal("three hives did not register")
	}
	q := startQueen(t, et.Endpoint, "/e2e/")
	if got := nodesOf(q.cluster()); got != "a,b,c" {
		t.Fatalf("a queen started after the hives sees %q at once, want a,b,c", got)
	}

	// A model only B serves reaches B and cold-starts there.
	code, node, body := q.chat("bonly")
	if code != 200 || node != "b" {
		t.Fatalf("bonly: %d from %q: %s", code, node, body)
	}
	if ws := fdWorkers(t, b, "bonly"); len(ws) != 1 {
		t.Fatalf("hive b has %d bonly workers, want 1", len(ws))
	}
	// The shared model: a cold start on one hive, then that warm worker.
	code, first, body := q.chat("shared")
	if code != 200 || first == "" {
		t.Fatalf("shared: %d: %s", code, body)
	}
	if _, again, _ := q.chat("shared"); again != first {
		t.Errorf("the second shared request went to %s, want the warm worker on %s", again, first)
	}
	// /v1/cluster's workers match the hives'.
	if !hivetest.Eventually(t, 5*time.Second, func() bool {
		st := q.cluster()
		n := 0
		for _, h := range st.Hives {
			for _, w := range h.Workers {
				if w.State == "idle" {
					n++
				}
			}
		}
		return n == 2
	}) {
		t.Fatalf("/v1/cluster: %s", dump(q.cluster()))
	}
	for _, h := range q.cluster().Hives {
		hv := map[string]*hivetest.Hive{"a": a, "b": b, "c": c}[h.Node]
		live := 0
		for _, w := range fdWorkersAll(t, hv) {
			if !w.State.Ended() {
				live++
			}
		}
		if live != len(h.Workers) {
			t.Errorf("hive %s has %d live workers, /v1/cluster says %d", h.Node, live, len(h.Workers))
		}
	}

	// A hive whose address refuses connections (registered, but its
	// front door is gone) ranks first (a free worker, name order): the
	// request fails before any byte there and is retried on a real hive.
	dead := hivetest.FreeRange(t, 1)
	ctx := context.Background()
	if _, err := cli.Put(ctx, cluster.HiveKey("/e2e/", "0dead"), fmt.Sprintf(`{"node":"0dead","url":"http://127.0.0.1:%d","models":["shared"],"capacity":{"memory_free":1099511627776}}`, dead)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, cluster.WorkerKey("/e2e/", "0dead", "w"), `{"id":"w","model":"shared","state":"idle","in_flight":0,"max_concurrency":1}`); err != nil {
		t.Fatal(err)
	}
	if !hivetest.Eventually(t, 5*time.Second, func() bool { return strings.HasPrefix(nodesOf(q.cluster()), "0dead,") }) {
		t.Fatal("the fake hive did not reach the view")
	}
	if code, node, body := q.chat("shared"); code != 200 || node != first {
		t.Errorf("shared with a dead hive ranked first: %d from %q (want the retry on %s): %s", code, node, first, body)
	}
	// The queen logs the failed try before it retries, but its stderr
	// reaches q.out through a pipe and a copying goroutine that may lag
	// the answer (CI once looked before the line arrived).
	if !hivetest.Eventually(t, 5*time.Second, func() bool { return strings.Contains(q.out.String(), "node=0dead") }) {
		t.Errorf("the queen did not try the dead hive first:\n%s", q.out.String())
	}
	if _, err := cli.Delete(ctx, cluster.HiveKey("/e2e/", "0dead")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, cluster.WorkerKey("/e2e/", "0dead", "w")); err != nil {
		t.Fatal(err)
	}

	// SIGKILL hive B: within lease_ttl + 1 s the queen no longer routes
	// to it; its model is then not found; shared goes to A or C.
	b.Kill9()
	killed := time.Now()
	if !hivetest.Eventually(t, 3*time.Second, func() bool { return !strings.Contains(nodesOf(q.cluster()), "b") }) {
		t.Fatalf("hive b still in the view %s after SIGKILL", time.Since(killed))
	}
	t.Logf("hive b dropped out %s after SIGKILL", time.Since(killed).Round(time.Millisecond))
	code, _, body = q.chat("bonly")
	if code != 404 || errorOf(t, body).Code != "MODEL_NOT_FOUND" {
		t.Errorf("bonly after b died: %d %s", code, body)
	}
	if code, node, body := q.chat("shared"); code != 200 || (node != "a" && node != "c") {
		t.Errorf("shared after b died: %d from %q: %s", code, node, body)
	}
	// B comes back (re-adopting its worker), so that it stops it at the end.
	b.Restart(bo)

	// SIGSTOP hive C: it drops out when its lease expires, and comes back
	// under a new lease on SIGCONT.
	c.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			c.Signal(syscall.SIGCONT)
		}
	}()
	if !hivetest.Eventually(t, 4*time.Second, func() bool { return !strings.Contains(nodesOf(q.cluster()), "c") }) {
		t.Fatal("hive c still in the view while stopped")
	}
	c.Signal(syscall.SIGCONT)
	stopped = false
	if !hivetest.Eventually(t, 10*time.Second, func() bool { return nodesOf(q.cluster()) == "a,b,c" }) {
		t.Fatalf("hive c did not come back: %s\n%s", nodesOf(q.cluster()), c.Log())
	}

	// Restart etcd: hives and the queen recover by themselves and no
	// worker was stopped.
	before := map[string]bool{}
	for _, hv := range []*hivetest.Hive{a, b, c} {
		for _, w := range fdWorkersAll(t, hv) {
			if !w.State.Ended() {
				before[w.ID] = true
			}
		}
	}
	et.Restart()
	if !hivetest.Eventually(t, 15*time.Second, func() bool {
		st := q.cluster()
		n := 0
		for _, h := range st.Hives {
			n += len(h.Workers)
		}
		return nodesOf(st) == "a,b,c" && n == len(before)
	}) {
		t.Fatalf("after an etcd restart the view is %s", dump(q.cluster()))
	}
	if code, _, body := q.chat("bonly"); code != 200 {
		t.Errorf("bonly after the etcd restart: %d %s", code, body)
	}
	for _, hv := range []*hivetest.Hive{a, b, c} {
		for _, w := range fdWorkersAll(t, hv) {
			if before[w.ID] && w.State.Ended() {
				t.Errorf("worker %s ended across the etcd restart: %s", w.ID, w.Reason)
			}
		}
	}
}

func fdWorkersAll(t *testing.T, h *hivetest.Hive) []*apiv1.WorkerInfo {
	t.Helper()
	ws, err := h.Client.List(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

func fdWorkers(t *testing.T, h *hivetest.Hive, model string) []*apiv1.WorkerInfo {
	var out []*apiv1.WorkerInfo
	for _, w := range fdWorkersAll(t, h) {
		if w.Labels["rbee.model"] == model && !w.State.Ended() {
			out = append(out, w)
		}
	}
	return out
}
