package queen

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cluster"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/testutil/etcdtest"
)

func TestRouteWarmFewestInFlightThenMostFreeMemoryAndNeverAGoneHive(t *testing.T) {
	e := etcdtest.Start(t)
	cli, err := cluster.NewClient(e.Endpoints, config.ClusterTLS{}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	p := e.Prefix("q")
	must := func(k, v string) {
		t.Helper()
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	hive := func(node string, free int64) string {
		b, _ := json.Marshal(cluster.HiveRecord{Node: node, URL: "http://" + node, Models: []string{"m"},
			Capacity: cluster.Capacity{MemoryFree: free}})
		return string(b)
	}
	must(p+"hives/a", hive("a", 1<<30))
	must(p+"hives/b", hive("b", 8<<30))
	must(p+"hives/c", hive("c", 4<<30))
	must(p+"workers/a/w1", `{"id":"w1","model":"m","state":"busy","in_flight":2,"max_concurrency":4}`)
	must(p+"workers/c/w2", `{"id":"w2","model":"m","state":"idle","in_flight":0,"max_concurrency":4}`)
	// A full worker does not make its hive warm.
	must(p+"workers/b/w3", `{"id":"w3","model":"m","state":"busy","in_flight":1,"max_concurrency":1}`)
	// A worker of a hive whose key is gone is not routed to.
	must(p+"workers/z/w4", `{"id":"w4","model":"m","state":"idle","in_flight":0,"max_concurrency":1}`)
	v := cluster.NewView(cli, p, nil)
	defer v.Close()
	q := New(Config{}, v, nil, true)
	order := func() string {
		var n []string
		for _, c := range q.Route("m") {
			n = append(n, c.node)
		}
		return strings.Join(n, ",")
	}
	if got := waitOrder(v, order, "c,a,b"); got != "c,a,b" {
		t.Fatalf("route order %q, want c (warm, 0 in flight), a (warm, 2), b (cold, most free memory)", got)
	}
	if _, err := cli.Delete(ctx, p+"hives/c"); err != nil {
		t.Fatal(err)
	}
	if got := waitOrder(v, order, "a,b"); got != "a,b" {
		t.Fatalf("after c's key went: %q, want a,b", got)
	}
	if len(q.Route("other")) != 0 {
		t.Error("a model no hive serves has candidates")
	}
}

func TestQueenAuthAndErrorsHaveTheFrontDoorShape(t *testing.T) {
	e := etcdtest.Start(t)
	cli, err := cluster.NewClient(e.Endpoints, config.ClusterTLS{}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	v := cluster.NewView(cli, e.Prefix("q"), nil)
	defer v.Close()
	q := New(Config{InferenceTokens: []string{"tok-1"}, MaxBodyBytes: 1 << 20}, v, nil, false)
	srv := httptest.NewServer(q.Handler())
	defer srv.Close()
	do := func(tok, body string) (int, apiv1.ErrorDetail) {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/chat/completions", strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e apiv1.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error
	}
	for _, tc := range []struct {
		tok, body string
		status    int
		code      string
	}{
		{"", `{"model":"m"}`, 401, apiv1.CodeMissingAPIKey},
		{"nope", `{"model":"m"}`, 401, apiv1.CodeInvalidAPIKey},
		{"tok-1", `{"model":`, 400, apiv1.CodeInvalidRequest},
		{"tok-1", `{"model":"m"}`, 404, apiv1.CodeModelNotFound},
	} {
		st, e := do(tc.tok, tc.body)
		if st != tc.status || e.Code != tc.code || e.Type == "" {
			t.Errorf("%q %s: %d %+v, want %d %s with a type", tc.tok, tc.body, st, e, tc.status, tc.code)
		}
	}
}

func TestQueenRefusesNonLoopbackListenWithoutTokens(t *testing.T) {
	cfg, err := ParseConfig([]byte("listen: 0.0.0.0:0\netcd: {endpoints: [http://127.0.0.1:1]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "inference tokens required") {
		t.Fatalf("got %v", err)
	}
	if _, err := ParseConfig([]byte("listen: x\n")); err == nil {
		t.Error("a config without etcd endpoints was accepted")
	}
	if _, err := ParseConfig([]byte("etcd: {endpoints: [x]}\nbogus: 1\n")); err == nil {
		t.Error("an unknown key was accepted")
	}
}

func TestRouteColdGPUModelByMostVRAMOnOneDeviceCPUModelByMemory(t *testing.T) {
	e := etcdtest.Start(t)
	cli, err := cluster.NewClient(e.Endpoints, config.ClusterTLS{}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	prefix := e.Prefix("q")
	put := func(node string, mem int64, gpuModels []string, vram ...int64) {
		t.Helper()
		h := cluster.HiveRecord{Node: node, URL: "http://" + node, Models: []string{"g", "c"}, GPUModels: gpuModels,
			Capacity: cluster.Capacity{MemoryFree: mem, GPUs: []cluster.GPU{}}}
		for i, v := range vram {
			h.Capacity.GPUs = append(h.Capacity.GPUs, cluster.GPU{Index: i, MemoryTotal: 8 << 30, MemoryFree: v})
		}
		b, _ := json.Marshal(h)
		if _, err := cli.Put(context.Background(), cluster.HiveKey(prefix, node), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	// one: 6 GiB on one device (2+6); two: 8 GiB in all but 4 on each;
	// cpu: no GPU, most memory; big: GPUs, but runs g on the CPU.
	put("one", 1<<30, []string{"g"}, 2<<30, 6<<30)
	put("two", 64<<30, []string{"g"}, 4<<30, 4<<30)
	put("cpu", 128<<30, nil)
	put("big", 32<<30, nil, 8<<30)
	v := cluster.NewView(cli, prefix, nil)
	defer v.Close()
	q := New(Config{}, v, nil, true)
	order := func(m string) string {
		var n []string
		for _, c := range q.Route(m) {
			n = append(n, c.node)
		}
		return strings.Join(n, ",")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(q.Route("g")) < 4 && time.Now().Before(deadline) {
		<-v.Changed()
	}
	if got := order("g"); got != "one,two,cpu,big" {
		t.Errorf("GPU model g: %q, want one (6 GiB on a device), two (4), then by memory: cpu, big", got)
	}
	if got := order("c"); got != "cpu,two,big,one" {
		t.Errorf("CPU model c: %q, want by memory alone: cpu,two,big,one", got)
	}
}

// waitOrder waits up to 5 s for order() to return want, taking the view's
// change channel before each look so that a change between the look and
// the wait is not missed (the first version waited on a channel taken
// after the look, with no timeout, and hung when the last change came in
// between).
func waitOrder(v *cluster.View, order func() string, want string) string {
	timeout := time.After(5 * time.Second)
	for {
		ch := v.Changed()
		got := order()
		if got == want {
			return got
		}
		select {
		case <-ch:
		case <-timeout:
			return got
		}
	}
}
