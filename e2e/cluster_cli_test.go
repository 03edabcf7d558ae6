package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/cluster"
	"github.com/rbee/rbee-hive/internal/testutil/etcdtest"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// `rbee-hive cluster status` reads etcd itself: the hive registered there,
// its GPUs (capacity.gpus, from a JSON inventory), its GPU models, and its
// worker, as a table and as JSON; then the hive's key vanishes on a clean
// stop and the CLI says no hive is left.
func TestClusterStatusCLIShowsHivesWorkersAndGPUsFromEtcd(t *testing.T) {
	et := etcdtest.Start(t)
	prefix := et.Prefix("cli")
	dir := t.TempDir()
	inv := filepath.Join(dir, "gpus.json")
	writeGPUs(t, inv, twoGPUs()) // 2 GiB free on GPU 0, 6 GiB on GPU 1
	gen := genericProfile(t, "gen", nil)
	gpuGen := strings.Replace(genericProfile(t, "ggen", nil), "    protocol: http\n", "    protocol: http\n    gpu: true\n", 1)
	h := hivetest.Start(t, hivetest.Options{Config: fmt.Sprintf("gpu_inventory: %s\nvram_reserve_bytes: 0\nprofiles:\n%s%s", inv, gen, gpuGen) +
		"models:\n  shared:\n    model_ref: file:cluster.gguf\n    profile: gen\n    idle_timeout: 5m\n" +
		"  big:\n    model_ref: file:cluster.gguf\n    profile: ggen\n" +
		fmt.Sprintf("cluster: {etcd: [%s], node: n1, lease_ttl: 2s, prefix: %s}\n", et.Endpoint, prefix)})
	if err := os.Link(h.Model, filepath.Join(h.Models, "cluster.gguf")); err != nil {
		t.Fatal(err)
	}
	// One worker, through the hive's front door.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", h.URL+"/v1/chat/completions",
		bytes.NewReader([]byte(`{"model":"shared","messages":[{"role":"user","content":"hi"}]}`)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %s", resp.Status)
	}
	ws := fdWorkers(t, h, "shared")
	if len(ws) != 1 {
		t.Fatalf("%d shared workers, want 1", len(ws))
	}
	id := ws[0].ID

	var st cluster.State
	var r cliResult
	if !hivetest.Eventually(t, 10*time.Second, func() bool {
		r = cli(t, h, "cluster", "status", "--etcd", et.Endpoint, "--prefix", prefix, "-o", "json")
		st = cluster.State{}
		if r.code != 0 || json.Unmarshal([]byte(r.out), &st) != nil || len(st.Hives) != 1 || len(st.Hives[0].Workers) != 1 {
			return false
		}
		return st.Hives[0].Workers[0].State == "idle"
	}) {
		t.Fatalf("cluster status --output json never showed n1 with its idle worker:\n%s", r)
	}
	hv := st.Hives[0]
	if hv.Node != "n1" || hv.URL != h.URL || hv.Workers[0].ID != id || hv.Workers[0].Model != "shared" {
		t.Errorf("hive %+v, want n1 at %s with worker %s of shared", hv, h.URL, id)
	}
	if strings.Join(hv.Models, ",") != "big,shared" || strings.Join(hv.GPUModels, ",") != "big" {
		t.Errorf("models %v, gpu_models %v; want big,shared and big", hv.Models, hv.GPUModels)
	}
	g := hv.Capacity.GPUs
	if len(g) != 2 || g[0].UUID != gpu0 || g[1].UUID != gpu1 || g[0].MemoryFree != 2<<30 || g[1].MemoryFree != 6<<30 ||
		g[1].MemoryTotal != 8<<30 || g[1].Name != "Fake 8G" {
		t.Errorf("capacity.gpus %+v, want the inventory's two devices with 2 and 6 GiB free", g)
	}
	if len(st.Models) != 2 || st.Models[1].Name != "shared" || st.Models[1].Workers["idle"] != 1 {
		t.Errorf("models summary %+v", st.Models)
	}

	// The table, with etcd named by the hive's own config file.
	r = cli(t, h, "cluster", "status", "--config", h.Config)
	if r.code != 0 {
		t.Fatalf("cluster status --config:\n%s", r)
	}
	rows := columnRows(strings.Split(r.out, "\n\n")[0])
	if len(rows) != 1 || rows[0]["HIVE"] != "n1" || rows[0]["URL"] != h.URL || rows[0]["WORKERS"] != "1" ||
		rows[0]["GPUS (VRAM FREE)"] != "0:2.0 1:6.0 GiB" {
		t.Errorf("hive table %v:\n%s", rows, r.out)
	}
	parts := strings.Split(r.out, "\n\n")
	if len(parts) != 2 {
		t.Fatalf("want a hive table and a worker table:\n%s", r.out)
	}
	wrows := columnRows(parts[1])
	if len(wrows) != 1 || wrows[0]["WORKER"] != id || wrows[0]["MODEL"] != "shared" || wrows[0]["STATE"] != "idle" || wrows[0]["IN FLIGHT"] != "0/1" {
		t.Errorf("worker table %v:\n%s", wrows, r.out)
	}

	// Usage and unreachable etcd.
	if r := cli(t, h, "cluster", "status"); r.code != 2 || !strings.Contains(r.err, "--config") {
		t.Errorf("cluster status with no etcd:\n%s", r)
	}
	if r := cli(t, h, "cluster", "status", "--hive", h.URL, "--etcd", et.Endpoint); r.code != 2 || !strings.Contains(r.err, "--hive") {
		t.Errorf("cluster status --hive:\n%s", r)
	}
	dead := hivetest.FreeRange(t, 1)
	t0 := time.Now()
	r = cli(t, h, "cluster", "status", "--etcd", fmt.Sprintf("http://127.0.0.1:%d", dead), "--timeout", "1s")
	if r.code != 1 || !strings.Contains(r.err, "etcd at") || time.Since(t0) > 10*time.Second {
		t.Errorf("cluster status against no etcd (%s):\n%s", time.Since(t0).Round(time.Millisecond), r)
	}

	// A clean stop revokes the lease: the hive is gone at once.
	if err := h.Stop(wait); err != nil {
		t.Fatal(err)
	}
	r = cli(t, h, "cluster", "status", "--etcd", et.Endpoint, "--prefix", prefix)
	if r.code != 0 || !strings.Contains(r.out, "no hive registered under "+prefix) {
		t.Errorf("after the hive stopped:\n%s", r)
	}
}

// columnRows reads a table whose headers and cells may hold single spaces:
// a column starts where its header does (text/tabwriter aligns them).
func columnRows(out string) []map[string]string {
	lines := strings.Split(strings.Trim(out, "\n"), "\n")
	head := lines[0]
	var starts []int
	for i := 0; i < len(head); i++ {
		if head[i] != ' ' && (i == 0 || (i >= 2 && head[i-1] == ' ' && head[i-2] == ' ')) {
			starts = append(starts, i)
		}
	}
	cell := func(l string, k int) string {
		a, b := starts[k], len(l)
		if k+1 < len(starts) {
			b = min(starts[k+1], len(l))
		}
		if a >= len(l) {
			return ""
		}
		return strings.TrimSpace(l[a:b])
	}
	var rows []map[string]string
	for _, l := range lines[1:] {
		row := map[string]string{}
		for k := range starts {
			row[cell(head, k)] = cell(l, k)
		}
		rows = append(rows, row)
	}
	return rows
}
