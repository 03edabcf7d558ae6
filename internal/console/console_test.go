package console

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w
}

// Every response, a 404 and the redirect included, carries the headers that
// keep the page from being framed or scripted by injected markup.
func TestEveryResponseCarriesTheSecurityHeaders(t *testing.T) {
	h := Handler()
	for path, status := range map[string]int{
		"/ui/": 200, "/ui/console.js": 200, "/ui/console.css": 200, "/ui/favicon.svg": 200,
		"/ui": 301, "/ui/nope.js": 404, "/ui/index.html": 301,
	} {
		w := get(t, h, path)
		if w.Code != status {
			t.Errorf("%s: %d, want %d", path, w.Code, status)
		}
		for k, want := range map[string]string{
			"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
			"Referrer-Policy": "no-referrer",
		} {
			if got := w.Header().Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", path, k, got, want)
			}
		}
	}
	if loc := get(t, h, "/ui").Header().Get("Location"); loc != "/ui/" {
		t.Errorf("/ui redirects to %q", loc)
	}
	for path, ct := range map[string]string{"/ui/": "text/html", "/ui/console.js": "text/javascript", "/ui/console.css": "text/css", "/ui/favicon.svg": "image/svg+xml"} {
		if got := get(t, h, path).Header().Get("Content-Type"); !strings.HasPrefix(got, ct) {
			t.Errorf("%s: Content-Type %q, want %s", path, got, ct)
		}
	}
}

// The CSP forbids inline script and style, so the page must have none: a
// regression here would be a page that silently does nothing.
func TestPageHasNoInlineScriptOrStyle(t *testing.T) {
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"} {
		if !strings.Contains(CSP, want) {
			t.Errorf("CSP lacks %q: %s", want, CSP)
		}
	}
	if strings.Contains(CSP, "unsafe-") {
		t.Errorf("CSP allows something unsafe: %s", CSP)
	}
	html := get(t, Handler(), "/ui/").Body.String()
	for _, m := range regexp.MustCompile(`<script[^>]*>`).FindAllString(html, -1) {
		if !strings.Contains(m, "src=") {
			t.Errorf("inline script: %s", m)
		}
	}
	for _, re := range []string{`(?i)\son[a-z]+\s*=`, `(?i)\sstyle\s*=`, `<style`, `(?i)javascript:`} {
		if m := regexp.MustCompile(re).FindString(html); m != "" {
			t.Errorf("index.html has %q, which the CSP blocks", m)
		}
	}
	// Nothing is loaded from elsewhere (the SVG namespace is a name, not a load).
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, _ := assets.Open(p)
		b, _ := io.ReadAll(f)
		f.Close()
		s := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "")
		if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/`).FindString(s); m != "" {
			t.Errorf("%s refers to another site: %s", p, m)
		}
		if strings.Contains(s, "eval(") || strings.Contains(s, "innerHTML") || strings.Contains(s, "new Function") {
			t.Errorf("%s builds markup or code from strings (innerHTML/eval)", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The token never goes into a URL: the script sends it only as a header and
// keeps it in sessionStorage (never localStorage, never a cookie).
func TestScriptKeepsTheTokenOutOfURLs(t *testing.T) {
	js := get(t, Handler(), "/ui/console.js").Body.String()
	for _, bad := range []string{"localStorage", "document.cookie", "new EventSource", "?token", "&token", "access_token"} {
		if strings.Contains(js, bad) {
			t.Errorf("console.js uses %q", bad)
		}
	}
	if !strings.Contains(js, "sessionStorage") || !strings.Contains(js, "'Authorization'") {
		t.Errorf("console.js does not keep the token in sessionStorage and send it as Authorization")
	}
}
