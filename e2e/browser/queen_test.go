package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cluster"
	"github.com/rbee/rbee-hive/internal/console"
	"github.com/rbee/rbee-hive/internal/process"
	"github.com/rbee/rbee-hive/internal/testutil/buildbin"
	"github.com/rbee/rbee-hive/internal/testutil/etcdtest"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// queenProc is a running rbee-queen.
type queenProc struct {
	URL string
	out *hivetest.SyncBuffer
}

// startQueen runs rbee-queen over etcd's prefix (dev mode without tokens)
// and waits until its view is synced; t.Cleanup stops it and checks that it
// exits.
func startQueen(t *testing.T, etcd, prefix string, tokens ...string) *queenProc {
	t.Helper()
	bin := buildbin.Build(t, "cmd/rbee-queen")
	port := hivetest.FreeRange(t, 1)
	cfg := fmt.Sprintf("listen: 127.0.0.1:%d\netcd: {endpoints: [%s]}\nprefix: %s\n", port, etcd, prefix)
	if len(tokens) > 0 {
		cfg += "inference_tokens: [" + strings.Join(tokens, ", ") + "]\n"
	}
	path := filepath.Join(t.TempDir(), "queen.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	q := &queenProc{URL: fmt.Sprintf("http://127.0.0.1:%d", port), out: &hivetest.SyncBuffer{}}
	cmd := exec.Command(bin, "--config", path)
	cmd.Stdout, cmd.Stderr = q.out, q.out
	if err := process.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = process.WaitCmd(cmd); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("rbee-queen did not exit on SIGTERM\n%s", q.out.String())
		}
	})
	if !hivetest.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(q.URL + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h struct {
			Synced bool
			Role   string
		}
		return json.NewDecoder(resp.Body).Decode(&h) == nil && h.Synced && h.Role == "queen"
	}) {
		t.Fatalf("queen not synced (or /health without role queen)\n%s", q.out.String())
	}
	return q
}

// clusterHive starts a hive registered in etcd under prefix as node, with
// a served model "stories" (the harness's model) and a 2 s lease.
func clusterHive(t *testing.T, etcd, prefix, node string) *hivetest.Hive {
	t.Helper()
	return hivetest.Start(t, hivetest.Options{Config: "models:\n  stories:\n    model_ref: file:stories260K.gguf\n" +
		fmt.Sprintf("cluster: {etcd: [%s], node: %s, lease_ttl: 2s, prefix: %s}\n", etcd, node, prefix)})
}

func hiveSel(node string) string { return `#hives section.hive[data-node="` + node + `"]` }

// The queen's console shows every hive registered in etcd (real hives on a
// real etcd) with its workers: a worker spawned on a hive appears within a
// bounded wait, with its state badge in its colour; a hive that stops
// disappears from the page; the page reports no console error, and /ui/
// carries the console's strict headers.
func TestQueenConsoleShowsHivesAndTheirWorkers(t *testing.T) {
	et := etcdtest.Start(t)
	prefix := et.Prefix("queenui")
	a := clusterHive(t, et.Endpoint, prefix, "alpha")
	b := clusterHive(t, et.Endpoint, prefix, "beta")
	q := startQueen(t, et.Endpoint, prefix)

	br := newBrowser(t)
	br.must(chromedp.Navigate(q.URL + "/ui/"))
	br.waitJS(10*time.Second, "the cluster poll to be live", `document.querySelector('#conn').dataset.state === 'live'`)
	br.waitJS(10*time.Second, "both hives", `document.querySelector('`+hiveSel("alpha")+`') && document.querySelector('`+hiveSel("beta")+`')`)
	if got := br.text(`header h1`); got != "rbee-queen" {
		t.Errorf("title %q, want rbee-queen", got)
	}
	if br.visible(`nav`) || br.visible(`#spawn`) || br.visible(`#tab-workers`) || br.visible(`#token-form`) || br.visible(`#auth-msg`) {
		t.Errorf("the queen's page shows the hive's tabs, the spawn form or a token prompt (dev mode)")
	}
	if info := br.text(`#hive-info`); !strings.Contains(info, "2 hive(s)") || !strings.Contains(info, "dev mode") {
		t.Errorf("info line %q", info)
	}
	alpha := br.text(hiveSel("alpha"))
	for _, want := range []string{a.URL, "Memory", "free", "Models: stories", "No workers.", "lease live"} {
		if !strings.Contains(alpha, want) {
			t.Errorf("hive alpha's panel lacks %q: %q", want, alpha)
		}
	}
	var href string
	if err := eval(br, `document.querySelector('`+hiveSel("alpha")+` h2 a').href`, &href); err != nil || href != a.URL+"/ui/" {
		t.Errorf("link to the hive's console %q (%v), want %s/ui/", href, err, a.URL)
	}

	// A worker spawned on alpha appears under alpha, then goes idle.
	r := a.MustSpawn(apiv1.SpawnRequest{})
	row := hiveSel("alpha") + ` tr[data-id="` + r.WorkerID + `"]`
	took := br.waitJS(10*time.Second, "the spawned worker under alpha", `document.querySelector('`+row+`')`)
	t.Logf("the worker appeared on the queen's page %s after the spawn answered", took)
	a.WaitState(r.WorkerID, 20*time.Second, "idle")
	took = br.waitJS(10*time.Second, "the worker to be idle", `document.querySelector('`+row+`').dataset.state === 'idle'`)
	t.Logf("idle shown %s after the hive said idle", took)
	var colour string
	if err := eval(br, `getComputedStyle(document.querySelector('`+row+` .state.idle')).backgroundColor`, &colour); err != nil || colour == "" || colour == "rgba(0, 0, 0, 0)" {
		t.Errorf("the idle badge has no colour: %q (%v)", colour, err)
	}
	if got := br.text(row + ` td.col-inflight`); !strings.HasPrefix(got, "0") {
		t.Errorf("in flight %q", got)
	}
	if br.visible(row+` button`) || br.visible(`#log`) {
		t.Errorf("the queen's page offers worker actions or a log (the hive's token would be needed)")
	}
	if strings.Contains(br.text(hiveSel("beta")), r.WorkerID[:8]) {
		t.Errorf("alpha's worker shown under beta")
	}

	// beta stops: its key goes, and it disappears from the page.
	if err := b.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	took = br.waitJS(10*time.Second, "beta to disappear", `!document.querySelector('`+hiveSel("beta")+`')`)
	t.Logf("a stopped hive left the page %s after it exited", took)
	br.waitJS(3*time.Second, "the count", `document.querySelector('#hive-info').textContent.includes('1 hive(s)')`)
	if !br.visible(hiveSel("alpha")) {
		t.Errorf("alpha went too")
	}
	br.noProblems()

	// /ui/ and its files carry the console's headers on the queen too.
	for _, p := range []string{"/ui/", "/ui/console.js", "/ui/console.css"} {
		resp, err := http.Get(q.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != console.CSP ||
			resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %v", p, resp.StatusCode, resp.Header)
		}
	}
	if !strings.Contains(console.CSP, "frame-ancestors 'none'") {
		t.Errorf("CSP without frame-ancestors 'none': %s", console.CSP)
	}
}

// A queen with inference tokens: the page asks for one, a wrong one gets a
// clear message, the right one is sent only in the Authorization header.
func TestQueenConsoleWrongTokenShowsClearMessage(t *testing.T) {
	const tok = "queen-console-token-0123456789"
	et := etcdtest.Start(t)
	q := startQueen(t, et.Endpoint, et.Prefix("queenui"), tok)
	br := newBrowser(t)
	br.must(chromedp.Navigate(q.URL + "/ui/"))
	br.waitJS(5*time.Second, "the token prompt", `document.querySelector('#token-form').getClientRects().length > 0 && document.querySelector('#auth-msg').getClientRects().length > 0`)
	if msg := br.text(`#auth-msg`); !strings.Contains(msg, "queen needs one of its inference tokens") {
		t.Errorf("no-token message %q", msg)
	}
	br.must(chromedp.SendKeys(chromedp.CSS(`#token-input`), "not-the-token"), chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	br.waitJS(5*time.Second, "the wrong-token message", `document.querySelector('#auth-msg').textContent.includes('refused the token')`)
	if msg := br.text(`#auth-msg`); !strings.Contains(msg, "INVALID_API_KEY") || !strings.Contains(msg, "invalid API token") {
		t.Errorf("wrong-token message %q", msg)
	}
	if !br.visible(`#token-form`) {
		t.Errorf("the token form is not shown again after a wrong token")
	}
	br.must(chromedp.SendKeys(chromedp.CSS(`#token-input`), tok), chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	br.waitJS(10*time.Second, "the poll to be live", `document.querySelector('#conn').dataset.state === 'live'`)
	br.waitJS(5*time.Second, "the empty cluster", `document.querySelector('#no-hives').getClientRects().length > 0`)
	if br.visible(`#auth-msg`) || br.visible(`#token-form`) {
		t.Errorf("the error or the token form stays after the right token: %q", br.text(`#auth-msg`))
	}
	saw := false
	for _, rq := range br.Requests() {
		if strings.Contains(rq.URL, tok) {
			t.Errorf("the token is in a URL: %s", rq.URL)
		}
		if auth, _ := rq.Headers["Authorization"].(string); strings.HasSuffix(rq.URL, "/v1/cluster") && auth == "Bearer "+tok {
			saw = true
		}
	}
	if !saw {
		t.Errorf("no /v1/cluster request carried the token in Authorization")
	}
	br.noProblems("status of 401 (Unauthorized) (" + q.URL + "/v1/cluster)")
}

// A page served from another origin can neither read the queen's API
// (CORS), nor drive it with a request the browser sends without asking (a
// no-cors POST of an inference: the Origin guard refuses it, and the hive
// it would have been relayed to sees nothing), nor frame its console.
func TestQueenConsoleCrossOriginPageCannotCallAPI(t *testing.T) {
	et := etcdtest.Start(t)
	prefix := et.Prefix("queenui")
	// A stand-in hive that counts what reaches it, registered by hand.
	var reached atomic.Int64
	hiveSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"choices":[]}`)
	}))
	defer hiveSrv.Close()
	rec, _ := json.Marshal(cluster.HiveRecord{Node: "stand-in", URL: hiveSrv.URL, Models: []string{"m"}, Capacity: cluster.Capacity{MemoryFree: 1 << 30}})
	cli := et.Client()
	if _, err := cli.Put(context.Background(), cluster.HiveKey(prefix, "stand-in"), string(rec)); err != nil {
		t.Fatal(err)
	}
	q := startQueen(t, et.Endpoint, prefix)
	// The route works for a client that is not a browser.
	resp, err := http.Post(q.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || reached.Load() != 1 {
		t.Fatalf("a direct request: %d, %d reached the hive", resp.StatusCode, reached.Load())
	}

	page := `<!doctype html><meta charset=utf-8><title>other site</title><body>
<pre id=out></pre>
<iframe id=frame src="` + q.URL + `/ui/"></iframe>
<script>
const queen = ` + jsString(q.URL) + `;
const out = (k, v) => { document.getElementById('out').textContent += k + '=' + v + '\n'; };
async function tryIt(k, f) { try { const r = await f(); out(k, 'status ' + r.status + ' type ' + r.type); } catch (e) { out(k, 'error ' + e.name); } }
(async () => {
  await tryIt('cluster', () => fetch(queen + '/v1/cluster'));
  await tryIt('models', () => fetch(queen + '/v1/models'));
  await tryIt('chat-cors', () => fetch(queen + '/v1/chat/completions', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{"model":"m"}'}));
  await tryIt('chat-nocors', () => fetch(queen + '/v1/chat/completions', {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: '{"model":"m"}'}));
  out('done', 1);
})();
</script>`
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, page)
	}))
	defer other.Close()

	br := newBrowser(t)
	br.must(chromedp.Navigate(other.URL + "/"))
	br.waitJS(15*time.Second, "the other page's attempts", `document.getElementById('out').textContent.includes('done=1')`)
	out := br.text(`#out`)
	t.Logf("the other origin's page saw:\n%s", out)
	for _, k := range []string{"cluster", "models", "chat-cors"} {
		if !strings.Contains(out, k+"=error TypeError") {
			t.Errorf("%s: a cross-origin fetch must fail, got:\n%s", k, out)
		}
	}
	if !strings.Contains(out, "chat-nocors=status 0 type opaque") {
		t.Errorf("chat-nocors: want an opaque answer, got:\n%s", out)
	}
	if n := reached.Load(); n != 1 {
		t.Errorf("%d cross-origin request(s) were relayed to the hive", n-1)
	}
	framed := false
	for _, p := range br.Problems() {
		if strings.Contains(p, "frame-ancestors") || strings.Contains(p, "X-Frame-Options") {
			framed = true
		}
	}
	if !framed {
		t.Errorf("no frame refusal reported; problems: %v", br.Problems())
	}
}
