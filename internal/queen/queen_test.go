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
	"github.com/rbee/rbee-hive/internal/console"
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
	// Wait for all four hives (a change channel taken after the look, with
	// no timeout, hung when the last change came in between: seen once
	// under load).
	waitOrder(v, func() string { return order("g") }, "one,two,cpu,big")
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

// The queen's API sits behind the hive's browser guard (console.CrossSite):
// a page of another origin is refused with 403 FORBIDDEN in the error
// shape on every route, the queen's own origin (its console) is admitted,
// dev mode answers only loopback Host names (DNS rebinding), and the
// console is served at /ui/ with its strict headers.
func TestQueenBrowserGuardRefusesOtherOriginsOnEveryRoute(t *testing.T) {
	e := etcdtest.Start(t)
	cli, err := cluster.NewClient(e.Endpoints, config.ClusterTLS{}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	v := cluster.NewView(cli, e.Prefix("q"), nil)
	defer v.Close()
	withTok := New(Config{InferenceTokens: []string{"tok-1"}, MaxBodyBytes: 1 << 20}, v, nil, false).Handler()
	dev := New(Config{MaxBodyBytes: 1 << 20}, v, nil, true).Handler()
	do := func(h http.Handler, method, path, body string, hdr http.Header) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Host = "127.0.0.1:9300"
		for k, vs := range hdr {
			if k == "Host" {
				req.Host = vs[0]
				continue
			}
			req.Header[k] = vs
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	forbidden := func(what string, w *httptest.ResponseRecorder) {
		t.Helper()
		var eb apiv1.ErrorBody
		if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || w.Code != 403 || eb.Error.Code != apiv1.CodeForbidden || eb.Error.Message == "" || eb.Error.Type == "" {
			t.Errorf("%s: %d %s, want 403 FORBIDDEN in the error shape", what, w.Code, w.Body)
		}
	}
	auth := "Bearer tok-1"
	routes := []struct{ method, path, body string }{
		{"GET", "/health", ""}, {"GET", "/v1/cluster", ""}, {"GET", "/v1/models", ""},
		{"POST", "/v1/chat/completions", `{"model":"m"}`}, {"POST", "/v1/completions", `{"model":"m"}`}, {"POST", "/v1/embeddings", `{"model":"m"}`},
	}
	for name, h := range map[string]http.Handler{"token": withTok, "dev": dev} {
		for _, rt := range routes {
			for _, origin := range []string{"https://evil.example", "null", "http://127.0.0.1:9301", "http://localhost:9300"} {
				w := do(h, rt.method, rt.path, rt.body, http.Header{"Origin": {origin}, "Authorization": {auth}})
				forbidden(name+" "+rt.method+" "+rt.path+" Origin "+origin, w)
				if strings.Contains(w.Body.String(), `"choices"`) {
					t.Errorf("%s: relayed", rt.path)
				}
			}
			// A cross-site <img>/<script> GET carries no Origin but says
			// where it comes from.
			forbidden(name+" "+rt.path+" Sec-Fetch-Site", do(h, rt.method, rt.path, rt.body,
				http.Header{"Sec-Fetch-Site": {"cross-site"}, "Sec-Fetch-Mode": {"no-cors"}, "Authorization": {auth}}))
		}
		// Two Origin headers, one of them right: refused.
		forbidden(name+" two Origins", do(h, "GET", "/v1/cluster", "", http.Header{"Origin": {"http://127.0.0.1:9300", "https://evil.example"}, "Authorization": {auth}}))
		// The queen's own origin (its console) is admitted.
		if w := do(h, "GET", "/v1/cluster", "", http.Header{"Origin": {"http://127.0.0.1:9300"}, "Sec-Fetch-Site": {"same-origin"}, "Authorization": {auth}}); w.Code != 200 {
			t.Errorf("%s: own origin: %d %s", name, w.Code, w.Body)
		}
		// Typing or following a link to the console stays possible.
		w := do(h, "GET", "/ui/", "", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Sec-Fetch-Mode": {"navigate"}})
		if w.Code != 200 || w.Header().Get("Content-Security-Policy") != console.CSP || w.Header().Get("X-Frame-Options") != "DENY" ||
			!strings.Contains(w.Body.String(), "console.js") {
			t.Errorf("%s: GET /ui/: %d %v", name, w.Code, w.Header())
		}
		if w := do(h, "GET", "/ui", "", nil); w.Code != http.StatusMovedPermanently || w.Header().Get("Location") != "/ui/" {
			t.Errorf("%s: GET /ui: %d %v", name, w.Code, w.Header())
		}
		var health struct{ Role, Status string }
		if w := do(h, "GET", "/health", "", nil); w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &health) != nil || health.Role != "queen" {
			t.Errorf("%s: /health: %d %s, want role queen", name, w.Code, w.Body)
		}
	}
	// Dev mode: a Host that is not loopback (a rebound DNS name) is refused;
	// with tokens any Host is fine.
	for _, host := range []string{"evil.example:9300", "127.0.0.1.evil.example", "0.0.0.0:9300", ""} {
		forbidden("dev Host "+host, do(dev, "GET", "/v1/cluster", "", http.Header{"Host": {host}}))
	}
	for _, host := range []string{"localhost:9300", "[::1]:9300", "127.0.0.2"} {
		if w := do(dev, "GET", "/v1/cluster", "", http.Header{"Host": {host}}); w.Code != 200 {
			t.Errorf("dev Host %s: %d %s", host, w.Code, w.Body)
		}
	}
	if w := do(withTok, "GET", "/v1/cluster", "", http.Header{"Host": {"queen.example:9300"}, "Authorization": {auth}}); w.Code != 200 {
		t.Errorf("with tokens, Host queen.example: %d %s", w.Code, w.Body)
	}
}

// A worker's record names its model, a request may name one of the
// model's aliases: the queen took a hive with a ready worker for a cold
// one when the request named an alias, and sent it to the hive with the
// most free memory, which started a second worker.
func TestRouteARequestNamingAnAliasToTheHiveWithAReadyWorker(t *testing.T) {
	e := etcdtest.Start(t)
	cli, err := cluster.NewClient(e.Endpoints, config.ClusterTLS{}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	p := e.Prefix("alias")
	must := func(k, v string) {
		t.Helper()
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	// What hives write: models with their aliases, and which model each
	// alias names.
	must(p+"hives/a", `{"node":"a","url":"http://a","models":["l","llama"],"aliases":{"l":"llama"},"capacity":{"memory_free":1073741824}}`)
	must(p+"hives/b", `{"node":"b","url":"http://b","models":["l","llama"],"aliases":{"l":"llama"},"capacity":{"memory_free":8589934592}}`)
	must(p+"workers/a/w1", `{"id":"w1","model":"llama","state":"idle","in_flight":0,"max_concurrency":1}`)
	v := cluster.NewView(cli, p, nil)
	defer v.Close()
	q := New(Config{}, v, nil, true)
	order := func(model string) func() string {
		return func() string {
			var n []string
			for _, c := range q.Route(model) {
				n = append(n, c.node)
			}
			return strings.Join(n, ",")
		}
	}
	if got := waitOrder(v, order("llama"), "a,b"); got != "a,b" {
		t.Fatalf("route order for llama %q, want a (a ready worker), b", got)
	}
	if got := order("l")(); got != "a,b" {
		t.Errorf("route order for its alias l %q, want a (a ready worker of llama), b", got)
	}
}
