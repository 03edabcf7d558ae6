package browser

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/client"
	"github.com/rbee/rbee-hive/internal/console"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// noRestart keeps a crashed worker failed (the default policy would restart it).
var noRestart = []byte(`{"restart":{"policy":"never"}}`)

// openConsole loads /ui/ and waits until the event stream is live.
func openConsole(t *testing.T, b *browser, h *hivetest.Hive) {
	t.Helper()
	b.must(chromedp.Navigate(h.URL + "/ui/"))
	b.waitJS(10*time.Second, "the event stream to be live", `document.querySelector('#conn').dataset.state === 'live'`)
}

func rowSel(id string) string { return `#workers tr[data-id="` + id + `"]` }

// The page loads, sends the console's headers, connects, and reports no
// console error, warning or exception, in dev mode (no token).
func TestConsoleLoadsWithoutErrors(t *testing.T) {
	// A GPU from a JSON inventory (SPEC §11).
	inv := filepath.Join(t.TempDir(), "gpus.json")
	if err := os.WriteFile(inv, []byte(`{"gpus":[{"index":0,"uuid":"GPU-00000000-0000-0000-0000-000000000001","name":"Fake 24G",`+
		`"memory_total_bytes":25769803776,"memory_used_bytes":6442450944,"utilization_percent":12}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := hivetest.Start(t, hivetest.Options{Config: "gpu_inventory: " + inv + "\n" +
		"models:\n  stories:\n    model_ref: file:stories260K.gguf\n"})
	b := newBrowser(t)
	openConsole(t, b, h)
	b.waitJS(5*time.Second, "the hive info line", `document.querySelector('#hive-info').textContent.includes('dev mode')`)
	if b.visible(`#token-form`) || b.visible(`#auth-msg`) {
		t.Errorf("dev mode shows the token form or an auth message")
	}
	b.waitJS(10*time.Second, "the memory and GPU bars", `document.querySelector('#bars').textContent.includes('GPU 0 Fake 24G, 12% busy')`)
	if bars := b.text(`#bars`); !strings.Contains(bars, "6.0 GiB of 24 GiB used (25%)") || !strings.Contains(bars, "Memory") {
		t.Errorf("bars: %q", bars)
	}
	// Every view renders.
	for _, tab := range []string{"models", "events", "workers"} {
		b.click(`nav button[data-tab="` + tab + `"]`)
		b.waitJS(2*time.Second, tab+" tab", `!document.querySelector('#tab-`+tab+`').hidden`)
		if tab == "models" {
			b.waitJS(5*time.Second, "the served model's row", `document.querySelector('#model-table tr[data-model="stories"]') !== null`)
		}
	}
	b.noProblems()

	// The headers of every console response.
	for _, p := range []string{"/ui/", "/ui/console.js", "/ui/console.css", "/ui/favicon.svg"} {
		resp, err := http.Get(h.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
		for k, want := range map[string]string{
			"Content-Security-Policy": console.CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", p, k, got, want)
			}
		}
	}
	if !strings.Contains(console.CSP, "frame-ancestors 'none'") || strings.Contains(console.CSP, "unsafe-inline") {
		t.Errorf("CSP not strict: %s", console.CSP)
	}
}

// A worker spawned through the API appears in the table within a second of
// the spawn's answer, without a reload; stopping it from the page (with the
// confirmation) ends it.
func TestConsoleShowsSpawnedWorkerAndStopsIt(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	b := newBrowser(t)
	openConsole(t, b, h)
	var navs int
	_ = eval(b, `performance.getEntriesByType('navigation').length`, &navs)

	r := h.MustSpawn(apiv1.SpawnRequest{})
	took := b.waitJS(time.Second, "the spawned worker's row", `document.querySelector('`+rowSel(r.WorkerID)+`')`)
	t.Logf("row appeared %s after the spawn answered", took)
	h.WaitState(r.WorkerID, 20*time.Second, "idle")
	b.waitJS(5*time.Second, "the row to say idle", `document.querySelector('`+rowSel(r.WorkerID)+`').dataset.state === 'idle'`)
	if got := b.text(rowSel(r.WorkerID) + ` td.col-pid`); got != fmt.Sprint(r.PID) {
		t.Errorf("PID cell %q, want %d", got, r.PID)
	}
	b.waitJS(5*time.Second, "the model cell", `document.querySelector('`+rowSel(r.WorkerID)+` td.col-model').textContent === `+jsString(h.Ref))

	// Stop from the page: cancelling the confirmation does nothing …
	b.click(rowSel(r.WorkerID) + ` button[data-act="stop"]`)
	b.waitJS(2*time.Second, "the confirmation", `document.querySelector('#confirm').open`)
	b.click(`#confirm-cancel`)
	b.waitJS(2*time.Second, "the confirmation to close", `!document.querySelector('#confirm').open`)
	if st := h.Get(r.WorkerID).State; st != "idle" {
		t.Fatalf("cancelled stop: worker is %s", st)
	}
	// … confirming stops it.
	b.click(rowSel(r.WorkerID) + ` button[data-act="stop"]`)
	b.waitJS(2*time.Second, "the confirmation", `document.querySelector('#confirm').open`)
	b.click(`#confirm-ok`)
	info := h.WaitState(r.WorkerID, 20*time.Second, "terminated")
	if info.Reason != "stopped" {
		t.Errorf("reason %q, want stopped", info.Reason)
	}
	if hivetest.Alive(r.PID) {
		t.Errorf("worker process %d still alive after the stop", r.PID)
	}
	b.waitJS(5*time.Second, "the row to say terminated", `document.querySelector('`+rowSel(r.WorkerID)+`').dataset.state === 'terminated'`)
	// The event stream shows the changes, and the page never reloaded.
	b.click(`nav button[data-tab="events"]`)
	b.waitJS(2*time.Second, "the stop events", `[...document.querySelectorAll('#events tr[data-worker="`+r.WorkerID+`"]')].some(tr => tr.textContent.includes('terminated'))`)
	// The filter narrows the stream.
	b.must(chromedp.SendKeys(chromedp.CSS(`#event-filter`), "terminated"))
	b.waitJS(2*time.Second, "only the terminated event", `[...document.querySelectorAll('#events tbody tr')].filter(tr => !tr.hidden).length === 1`)
	b.must(chromedp.SendKeys(chromedp.CSS(`#event-filter`), "-no-such"))
	b.waitJS(2*time.Second, "no event", `[...document.querySelectorAll('#events tbody tr')].every(tr => tr.hidden)`)
	var navs2 int
	_ = eval(b, `performance.getEntriesByType('navigation').length`, &navs2)
	if navs2 != navs {
		t.Errorf("the page navigated (%d → %d)", navs, navs2)
	}
	b.noProblems()
}

// A loading worker shows its progress; a worker that dies (SIGKILL from
// outside, restart policy never) shows as failed with its reason.
func TestConsoleShowsCrashAsFailedWithReason(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	b := newBrowser(t)
	openConsole(t, b, h)
	// The reference worker (in test mode) stretches its load over 5 s.
	r := h.MustSpawn(apiv1.SpawnRequest{Settings: noRestart, Env: map[string]string{"LLMW_FAKE_LOAD_MS": "5000"}})
	b.waitJS(5*time.Second, "the load's progress in the row",
		`/loading\s*\d+%/.test(document.querySelector('`+rowSel(r.WorkerID)+` td.col-state').textContent)`)
	h.WaitState(r.WorkerID, 20*time.Second, "idle")
	b.waitJS(5*time.Second, "the row to say idle", `document.querySelector('`+rowSel(r.WorkerID)+`').dataset.state === 'idle'`)
	if err := syscall.Kill(r.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := b.waitJS(5*time.Second, "the row to say failed", `document.querySelector('`+rowSel(r.WorkerID)+`').dataset.state === 'failed'`)
	t.Logf("failed shown %s after the SIGKILL", took)
	if got := b.text(rowSel(r.WorkerID) + ` td.col-state`); !strings.Contains(got, "failed") || !strings.Contains(got, "crashed") {
		t.Errorf("state cell %q, want failed and crashed", got)
	}
	// The detail says how it ended.
	b.click(rowSel(r.WorkerID))
	b.waitJS(5*time.Second, "the detail's exit line", `document.querySelector('#detail-fields').textContent.includes('signal 9')`)
	b.noProblems()
}

// The log tail follows new output, with control characters shown escaped.
func TestConsoleLogTailFollows(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	b := newBrowser(t)
	openConsole(t, b, h)
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, 20*time.Second, "idle")
	b.waitJS(5*time.Second, "the row", `document.querySelector('`+rowSel(r.WorkerID)+`')`)
	b.click(rowSel(r.WorkerID))
	b.waitJS(5*time.Second, "the worker's start-up lines", `document.querySelector('#log').textContent.includes('listening on')`)

	// The worker writes to its own log file; append to it as it would.
	f, err := os.OpenFile(filepath.Join(h.Dir, "logs", r.WorkerID+".log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 3 {
		if _, err := fmt.Fprintf(f, "follow-test %d \x1b[31mred\x1b[0m bell\x07 rtl\u202eevil\n", i); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`follow-test %d \e[31mred\e[0m bell\x07 rtl\u202eevil`, i)
		took := b.waitJS(5*time.Second, "line "+fmt.Sprint(i)+" in the log view", `document.querySelector('#log').textContent.includes(`+jsString(want)+`)`)
		t.Logf("line %d shown %s after it was written", i, took)
	}
	var raw bool
	if err := eval(b, `document.querySelector('#log').textContent.includes('\x1b')`, &raw); err != nil || raw {
		t.Errorf("a raw ESC reached the page (err %v)", err)
	}
	b.noProblems()
}

// A hive with a token: the page asks for it, a wrong one gets a clear
// message, the right one is kept in sessionStorage and sent only in the
// Authorization header, never in a URL.
func TestConsoleWrongTokenShowsClearMessage(t *testing.T) {
	const tok = "console-test-token-0123456789"
	h := hivetest.Start(t, hivetest.Options{Env: []string{"RBEE_API_TOKEN=" + tok}})
	h.Client = client.New(h.URL, tok)
	b := newBrowser(t)
	b.must(chromedp.Navigate(h.URL + "/ui/"))
	b.waitJS(5*time.Second, "the token prompt", `document.querySelector('#token-form').getClientRects().length > 0 && document.querySelector('#auth-msg').getClientRects().length > 0`)
	if msg := b.text(`#auth-msg`); !strings.Contains(msg, "needs its operator token") {
		t.Errorf("no-token message %q", msg)
	}
	b.must(chromedp.SendKeys(chromedp.CSS(`#token-input`), "not-the-token"), chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	b.waitJS(5*time.Second, "the wrong-token message", `document.querySelector('#auth-msg').textContent.includes('refused the token')`)
	msg := b.text(`#auth-msg`)
	if !strings.Contains(msg, "INVALID_API_KEY") || !strings.Contains(msg, "invalid API token") {
		t.Errorf("wrong-token message %q", msg)
	}
	if !b.visible(`#token-form`) {
		t.Errorf("the token form is not shown again after a wrong token")
	}

	r := h.MustSpawn(apiv1.SpawnRequest{})
	b.must(chromedp.SendKeys(chromedp.CSS(`#token-input`), tok), chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	b.waitJS(10*time.Second, "the stream to be live", `document.querySelector('#conn').dataset.state === 'live'`)
	b.waitJS(5*time.Second, "the worker's row", `document.querySelector('`+rowSel(r.WorkerID)+`')`)
	if b.visible(`#auth-msg`) || b.visible(`#token-form`) {
		t.Errorf("the error or the token form stays after the right token: %q", b.text(`#auth-msg`))
	}
	if !b.visible(`#token-forget`) {
		t.Errorf("no way to forget the token")
	}
	var stored string
	if err := eval(b, `sessionStorage.getItem('rbee-hive-token')`, &stored); err != nil || stored != tok {
		t.Errorf("sessionStorage token %q (%v)", stored, err)
	}
	// The log stream too carries the token in its header.
	b.click(rowSel(r.WorkerID))
	b.waitJS(5*time.Second, "the log", `document.querySelector('#log').textContent.length > 0`)
	var sawEvents, sawLogs bool
	for _, rq := range b.Requests() {
		if strings.Contains(rq.URL, tok) || strings.Contains(rq.URLFragment, tok) {
			t.Errorf("the token is in a URL: %s", rq.URL)
		}
		auth, _ := rq.Headers["Authorization"].(string)
		switch {
		case strings.HasSuffix(rq.URL, "/v1/events"):
			sawEvents = sawEvents || auth == "Bearer "+tok
		case strings.Contains(rq.URL, "/logs?"):
			sawLogs = sawLogs || auth == "Bearer "+tok
		}
	}
	if !sawEvents || !sawLogs {
		t.Errorf("the event stream (%v) and the log follow (%v) must carry the token in Authorization", sawEvents, sawLogs)
	}
	var href string
	_ = eval(b, `location.href`, &href)
	if strings.Contains(href, tok) {
		t.Errorf("the token is in the page URL: %s", href)
	}
}

// A page served from another origin cannot read the API (CORS: the hive
// sends no Access-Control-Allow-Origin), cannot drive it with a request the
// browser sends without asking (a no-cors POST: the Origin guard refuses it
// and the worker lives on), and cannot frame the console.
func TestConsoleCrossOriginPageCannotCallAPI(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, 20*time.Second, "idle")

	page := `<!doctype html><meta charset=utf-8><title>other site</title><body>
<pre id=out></pre>
<iframe id=frame src="` + h.URL + `/ui/"></iframe>
<img id=img src="` + h.URL + `/v1/workers/` + r.WorkerID + `">
<script>
const hive = ` + jsString(h.URL) + `;
const out = (k, v) => { document.getElementById('out').textContent += k + '=' + v + '\n'; };
async function tryIt(k, f) { try { const r = await f(); out(k, 'status ' + r.status + ' type ' + r.type); } catch (e) { out(k, 'error ' + e.name); } }
(async () => {
  await tryIt('list', () => fetch(hive + '/v1/workers/list'));
  await tryIt('status', () => fetch(hive + '/v1/status', {headers: {'Content-Type': 'application/json'}}));
  await tryIt('kill-cors', () => fetch(hive + '/v1/workers/` + r.WorkerID + `/kill', {method: 'POST'}));
  await tryIt('kill-nocors', () => fetch(hive + '/v1/workers/` + r.WorkerID + `/kill', {method: 'POST', mode: 'no-cors'}));
  await tryIt('spawn-nocors', () => fetch(hive + '/v1/workers/spawn', {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({model_ref: ` + jsString(h.Ref) + `})}));
  out('done', 1);
})();
</script>`
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, page)
	}))
	defer other.Close()

	b := newBrowser(t)
	b.must(chromedp.Navigate(other.URL + "/"))
	b.waitJS(15*time.Second, "the other page's attempts", `document.getElementById('out').textContent.includes('done=1')`)
	out := b.text(`#out`)
	t.Logf("the other origin's page saw:\n%s", out)
	for _, k := range []string{"list", "status", "kill-cors"} {
		if !strings.Contains(out, k+"=error TypeError") {
			t.Errorf("%s: a cross-origin fetch must fail, got:\n%s", k, out)
		}
	}
	for _, k := range []string{"kill-nocors", "spawn-nocors"} {
		if !strings.Contains(out, k+"=status 0 type opaque") {
			t.Errorf("%s: want an opaque answer, got:\n%s", k, out)
		}
	}
	// The hive refused them: the worker is alive and idle, and no worker
	// was spawned.
	if info := h.Get(r.WorkerID); info.State != "idle" || !hivetest.Alive(r.PID) {
		t.Errorf("the cross-origin kill reached the worker: %s/%s", info.State, info.Reason)
	}
	list, err := h.Client.List(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Errorf("%d workers after a cross-origin spawn attempt, want 1", len(list))
	}
	// The <img> GET (no Origin, Sec-Fetch-Site: cross-site) was refused.
	resp, err := http.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`rbee_hive_api_requests_total\{code="403",route="GET /v1/workers/\{id\}"\} [1-9]`).Match(metrics) {
		t.Errorf("the cross-site <img> GET was not refused with 403; metrics:\n%s", grepLines(string(metrics), "api_requests_total"))
	}
	// The console refused to be framed.
	framed := false
	for _, p := range b.Problems() {
		if strings.Contains(p, "frame-ancestors") || strings.Contains(p, "X-Frame-Options") {
			framed = true
		}
	}
	if !framed {
		t.Errorf("no frame refusal reported; problems: %v", b.Problems())
	}
}

// The spawn form starts a worker (its settings JSON goes through), says
// clearly what is wrong with a bad request, and restart and kill from the
// page do what they say.
func TestConsoleSpawnFormRestartAndKill(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	b := newBrowser(t)
	openConsole(t, b, h)
	b.click(`#spawn summary`)
	b.waitJS(2*time.Second, "the spawn form", `document.querySelector('#spawn').open`)
	fill := func(name, v string) {
		t.Helper()
		var ok bool
		if err := eval(b, `(f => { f.elements[`+jsString(name)+`].value = `+jsString(v)+`; return true })(document.querySelector('#spawn-form'))`, &ok); err != nil {
			t.Fatal(err)
		}
	}
	submit := func() { b.click(`#spawn-form button[type="submit"]`) }

	// Settings that are not JSON never reach the hive.
	fill("model_ref", h.Ref)
	fill("settings", `{"restart": `)
	submit()
	b.waitJS(2*time.Second, "the JSON error", `document.querySelector('#spawn-result').textContent.includes('not valid JSON')`)
	// A request the hive refuses shows its code and message.
	fill("settings", `{"restart": {"policy": "sometimes"}}`)
	submit()
	b.waitJS(5*time.Second, "the hive's refusal", `document.querySelector('#spawn-result').textContent.includes('INVALID_SETTINGS')`)
	if list, _ := h.Client.List(context.Background(), true); len(list) != 0 {
		t.Fatalf("%d workers after refused spawns", len(list))
	}
	// A good one.
	fill("settings", `{"restart": {"policy": "never"}, "idle_timeout": "7m"}`)
	fill("profile", "rbee")
	submit()
	b.waitJS(10*time.Second, "the spawn's answer", `document.querySelector('#spawn-result').textContent.startsWith('spawned worker-')`)
	list, err := h.Client.List(context.Background(), true)
	if err != nil || len(list) != 1 {
		t.Fatalf("after the form's spawn: %d workers (%v)", len(list), err)
	}
	id := list[0].ID
	first := h.WaitState(id, 20*time.Second, "idle")
	b.waitJS(5*time.Second, "the row to say idle", `document.querySelector('`+rowSel(id)+`').dataset.state === 'idle'`)

	// Restart: same id, a new process.
	b.click(rowSel(id) + ` button[data-act="restart"]`)
	b.waitJS(2*time.Second, "the confirmation", `document.querySelector('#confirm').open && document.querySelector('#confirm-text').textContent.includes('Restart')`)
	b.click(`#confirm-ok`)
	var again *apiv1.WorkerInfo
	if !hivetest.Eventually(t, 20*time.Second, func() bool {
		again = h.Get(id)
		return again.State == "idle" && again.PID != first.PID
	}) {
		t.Fatalf("no restart: %s pid %d (was %d)", again.State, again.PID, first.PID)
	}
	b.waitJS(5*time.Second, "the new PID in the row", `document.querySelector('`+rowSel(id)+` td.col-pid').textContent === '`+fmt.Sprint(again.PID)+`'`)

	// Kill: at once, terminated/killed.
	b.click(rowSel(id) + ` button[data-act="kill"]`)
	b.waitJS(2*time.Second, "the confirmation", `document.querySelector('#confirm').open && document.querySelector('#confirm-text').textContent.includes('Kill')`)
	b.click(`#confirm-ok`)
	if info := h.WaitState(id, 10*time.Second, "terminated"); info.Reason != "killed" {
		t.Errorf("reason %q, want killed", info.Reason)
	}
	b.waitJS(5*time.Second, "the row to say killed", `document.querySelector('`+rowSel(id)+` td.col-state').textContent.includes('killed')`)
	if hivetest.Alive(again.PID) {
		t.Errorf("killed worker's process %d alive", again.PID)
	}
	b.noProblems("status of 400 (Bad Request) (" + h.URL + "/v1/workers/spawn)")
}

// The page survives a hive restart without a reload: the stream says it is
// reconnecting while the hive is down, comes back live, and the re-adopted
// worker's next change arrives through the new stream.
func TestConsoleReconnectsAfterHiveRestart(t *testing.T) {
	h := hivetest.Start(t, hivetest.Options{})
	r := h.MustSpawn(apiv1.SpawnRequest{})
	h.WaitState(r.WorkerID, 20*time.Second, "idle")
	b := newBrowser(t)
	openConsole(t, b, h)
	b.waitJS(5*time.Second, "the row", `document.querySelector('`+rowSel(r.WorkerID)+`')`)

	h.Kill9()
	b.waitJS(10*time.Second, "the stream to say it reconnects", `document.querySelector('#conn').dataset.state !== 'live'`)
	h.Restart(hivetest.Options{})
	b.waitJS(20*time.Second, "the stream to be live again", `document.querySelector('#conn').dataset.state === 'live'`)
	h.WaitState(r.WorkerID, 10*time.Second, "idle")
	if _, err := h.Client.Stop(context.Background(), r.WorkerID); err != nil {
		t.Fatal(err)
	}
	b.waitJS(20*time.Second, "the stop, seen through the new stream", `document.querySelector('`+rowSel(r.WorkerID)+`').dataset.state === 'terminated'`)
	// Failed loads while the hive was down are expected.
	b.noProblems("net::ERR_CONNECTION_REFUSED", "net::ERR_CONNECTION_RESET", "net::ERR_INCOMPLETE_CHUNKED_ENCODING", "net::ERR_EMPTY_RESPONSE")
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
