// Package browser tests the web console (SPEC §13) in a real headless
// Chromium driven over the DevTools protocol (github.com/chromedp/chromedp),
// against a real daemon (internal/testutil/hivetest) with real workers.
//
// Chromium is the Debian package `chromium` (.ci/run installs it); a
// missing browser fails the tests. Every browser runs in its own process
// group and user data directory, and each test checks that no process of
// its browser survives it.
package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

func TestMain(m *testing.M) { hivetest.Main(m) }

// chromiumPath finds the browser: $RBEE_CHROMIUM, else chromium or
// chromium-browser on PATH.
func chromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("RBEE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: install the Debian package chromium (.ci/run does), or set RBEE_CHROMIUM")
	return ""
}

// browser is one headless Chromium with one tab, and what the tab reported:
// console errors and warnings, uncaught exceptions, log entries (network
// failures, CSP violations), and every request it sent.
type browser struct {
	t    testing.TB
	ctx  context.Context
	dir  string // user data directory
	pgid int

	mu       sync.Mutex
	problems []string
	requests []*network.Request
}

// newBrowser starts Chromium; t.Cleanup closes it and checks that none of
// its processes is left.
func newBrowser(t testing.TB) *browser {
	t.Helper()
	dir, err := os.MkdirTemp("", "rbee-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append([]chromedp.ExecAllocatorOption{}, chromedp.DefaultExecAllocatorOptions[:]...)
	opts = append(opts,
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(dir),
		chromedp.NoSandbox, // we run as root, where Chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 900),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			if cmd.SysProcAttr == nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{}
			}
			cmd.SysProcAttr.Setpgid = true // one group to kill and to check
		}),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t, dir: dir}
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithListener(b.listen))
	b.ctx = ctx
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		b.assertGone()
		os.RemoveAll(dir)
	})
	// The first call starts the browser and must not carry a timeout (it
	// would end the browser); the allocator bounds the start itself.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	if p := chromedp.FromContext(ctx).Browser.Process(); p != nil {
		b.pgid = p.Pid
	}
	return b
}

func (b *browser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				if a.Value != nil {
					args = append(args, string(a.Value))
				} else {
					args = append(args, a.Description)
				}
			}
			b.problems = append(b.problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		b.problems = append(b.problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, msg))
	case *log.EventEntryAdded:
		if e := ev.Entry; e.Level == log.EntryLevelError || e.Level == log.EntryLevelWarning {
			b.problems = append(b.problems, fmt.Sprintf("log %s/%s: %s (%s)", e.Source, e.Level, e.Text, e.URL))
		}
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request)
	}
}

// Problems returns what the page has reported so far.
func (b *browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// Requests returns the requests the page has sent so far.
func (b *browser) Requests() []*network.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*network.Request(nil), b.requests...)
}

// run runs actions with a bounded time.
func (b *browser) run(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// must runs actions (10 s at most) and fails the test on error.
func (b *browser) must(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := b.run(10*time.Second, actions...); err != nil {
		b.t.Fatalf("browser: %v\nproblems: %v", err, b.Problems())
	}
}

// eval evaluates a JavaScript expression and decodes its value into *out
// (the value a promise resolves to, for a promise).
func eval[T any](b *browser, expr string, out *T) error {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err == nil {
		*out = v
	}
	return err
}

// waitJS polls a JavaScript boolean expression until it is true; it fails
// the test after timeout, saying what. It returns how long it waited.
func (b *browser) waitJS(timeout time.Duration, what, expr string) time.Duration {
	b.t.Helper()
	start := time.Now()
	var ok bool
	var err error
	if hivetest.Eventually(b.t, timeout, func() bool {
		ok = false
		err = eval(b, "Boolean("+expr+")", &ok)
		return err == nil && ok
	}) {
		return time.Since(start)
	}
	var text string
	_ = eval(b, `document.body.innerText`, &text)
	b.t.Fatalf("waited %s for %s (%s): %v\npage text:\n%s\nproblems: %v", timeout, what, expr, err, clip(text, 3000), b.Problems())
	return 0
}

// text returns the textContent of the first element matching sel ("" if none).
func (b *browser) text(sel string) string {
	b.t.Helper()
	var s string
	if err := eval(b, `(document.querySelector(`+jsString(sel)+`)||{}).textContent||""`, &s); err != nil {
		b.t.Fatalf("reading %s: %v", sel, err)
	}
	return s
}

// click clicks the first element matching sel (by the DOM, so that a row
// scrolled out of view is still clickable).
func (b *browser) click(sel string) {
	b.t.Helper()
	var ok bool
	if err := eval(b, `(()=>{const e=document.querySelector(`+jsString(sel)+`); if(!e) return false; e.click(); return true})()`, &ok); err != nil || !ok {
		b.t.Fatalf("click %s: found=%v err=%v", sel, ok, err)
	}
}

// assertGone waits (bounded) until no process of this browser is left:
// none in its process group and none using its user data directory. What
// is left is killed and fails the test.
func (b *browser) assertGone() {
	b.t.Helper()
	var left []int
	if hivetest.Eventually(b.t, 10*time.Second, func() bool { left = b.leftovers(); return len(left) == 0 }) {
		return
	}
	for _, pid := range left {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		b.t.Errorf("chromium process %d survived the test: %s", pid, clip(strings.ReplaceAll(string(cmdline), "\x00", " "), 200))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (b *browser) leftovers() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if !hivetest.Alive(pid) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state ppid pgrp …
		if len(f) > 2 && b.pgid > 0 && f[2] == strconv.Itoa(b.pgid) {
			out = append(out, pid)
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmdline), b.dir) {
			out = append(out, pid)
		}
	}
	return out
}

// noProblems fails the test if the page reported errors, warnings or
// exceptions, other than those containing one of the expected strings (an
// error status the test provoked is logged by the browser as a failed load).
func (b *browser) noProblems(expected ...string) {
	b.t.Helper()
	var p []string
next:
	for _, m := range b.Problems() {
		for _, e := range expected {
			if strings.Contains(m, e) {
				continue next
			}
		}
		p = append(p, m)
	}
	if len(p) > 0 {
		b.t.Fatalf("the page reported %d problem(s):\n%s", len(p), strings.Join(p, "\n"))
	}
}

func jsString(s string) string {
	bs, _ := json.Marshal(s)
	return string(bs)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// visible reports whether the first element matching sel is rendered (it
// exists, and neither it nor an ancestor is display: none).
func (b *browser) visible(sel string) bool {
	b.t.Helper()
	var v bool
	if err := eval(b, `(e => !!e && e.getClientRects().length > 0)(document.querySelector(`+jsString(sel)+`))`, &v); err != nil {
		b.t.Fatalf("visible %s: %v", sel, err)
	}
	return v
}
