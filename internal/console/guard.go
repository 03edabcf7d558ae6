package console

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/rbee/rbee-hive/internal/clip"
)

// CrossSite is the browser guard of the hive's and the queen's HTTP APIs
// (SPEC §13): it returns why r must be refused (403 FORBIDDEN), or "" to
// admit it. It refuses what a web browser sends on behalf of a page of
// another site, so that a page the operator visits cannot drive the server
// (cross-site request forgery) nor read it through DNS rebinding:
//
//  1. a request whose Origin header is not the server's own: browsers send
//     Origin on cross-origin requests and on every POST/DELETE, and no other
//     client (the CLI, the Go client, workers, a queen) sends one. The
//     server's own origin is the scheme it is served over plus the Host the
//     request came to (the web console at /ui/ calls the API from there);
//     "null", a malformed Origin, or any other scheme, host or port is
//     refused;
//  2. in dev mode (no token) a Host that is not a loopback name or
//     address: a rebound DNS name reaches 127.0.0.1 with the attacker's
//     host name (and its page would then be same-origin by rule 1);
//  3. a request a browser marks as coming from another origin
//     (Sec-Fetch-Site other than same-origin or none) although it carries
//     no Origin, except a navigation to the console's pages.
//
// With a token, a rebound page is same-origin but holds no token: the
// console keeps it in the tab's sessionStorage, which is per origin, and
// neither server sets cookies. name ("hive", "queen") goes into the
// messages.
func CrossSite(r *http.Request, devMode bool, name string) string {
	if devMode && !LoopbackHost(r.Host) {
		return "dev mode (no API token) answers only requests addressed to a loopback host, not " +
			strconv.Quote(clip.String(r.Host, 200))
	}
	if vals := r.Header.Values("Origin"); len(vals) > 0 && (len(vals) > 1 || !SameOrigin(vals[0], r)) {
		return "requests from web pages of another origin are refused (Origin " +
			strconv.Quote(clip.String(vals[0], 200)) + " is not this " + name + "'s)"
	}
	// A browser sends no Origin on a GET that a page of another site makes
	// through markup (<img>, <script>, <link>), but it does say where the
	// request comes from: refuse those too (they could hold event streams
	// open against the per-client bound). Typing the console's address, or
	// following a link to it, stays possible (navigations to /ui/).
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" &&
		!(strings.HasPrefix(r.URL.Path, "/ui") && r.Header.Get("Sec-Fetch-Mode") == "navigate") {
		return "requests from web pages of another origin are refused (Sec-Fetch-Site: " + clip.String(site, 200) + ")"
	}
	return ""
}

// SameOrigin reports whether origin (an Origin header) is the origin r was
// sent to: the same scheme (https where the connection is TLS, else http)
// and the same host and port as r.Host, default ports made explicit and
// host names compared without case.
func SameOrigin(origin string, r *http.Request) bool {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	rest, ok := strings.CutPrefix(origin, scheme+"://")
	if !ok || rest == "" || strings.ContainsAny(rest, "/?#@\\") || r.Host == "" {
		return false
	}
	a, okA := canonicalHostPort(rest, scheme)
	b, okB := canonicalHostPort(r.Host, scheme)
	return okA && okB && a == b
}

// canonicalHostPort lower-cases a host[:port] and adds the scheme's default
// port when it has none.
func canonicalHostPort(hp, scheme string) (string, bool) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		// No port (or a malformed one): the whole thing is the host.
		if strings.Contains(strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), ":") && !strings.HasPrefix(hp, "[") {
			return "", false
		}
		host = strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]")
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	if host == "" || port == "" {
		return "", false
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", false
	}
	return net.JoinHostPort(strings.ToLower(host), port), true
}

// LoopbackHost reports whether a Host header names localhost or a loopback
// address (with or without a port).
func LoopbackHost(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") || strings.EqualFold(h, "localhost.") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
