// Package console is the web console of a hive and of a queen (SPEC §13):
// a single page at /ui/ (on a queen it shows the cluster, from
// /v1/cluster) whose assets (HTML, one script, one style sheet, an icon) are
// embedded in the binary. The page holds no secrets and is served without
// auth; everything it shows comes from the operator API, called from the
// page with the token in an Authorization header (typed once, kept in the
// tab's sessionStorage, never in a URL).
//
// Every response carries a strict Content-Security-Policy (scripts and
// styles from the hive only, no inline script, no framing), X-Frame-Options
// DENY and nosniff, so that the page can be neither scripted by injected
// markup nor framed by another site (clickjacking). CrossSite is the
// browser guard both servers put in front of their APIs.
package console

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/clip"
)

//go:embed assets
var assets embed.FS

// Prefix is where the console is mounted.
const Prefix = "/ui/"

// CSP is the Content-Security-Policy of every console response: nothing
// but the hive's own scripts, styles, images and API (connect-src), no
// plugins, no <base>, forms only to the hive, and no framing.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the console under Prefix: GET /ui redirects to /ui/, and
// /ui/… serves the embedded files (index.html for /ui/). It is safe for
// concurrent use.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix(strings.TrimSuffix(Prefix, "/"), http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		// The assets change with the binary; revalidate on every load.
		h.Set("Cache-Control", "no-cache")
		if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
			http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
			return
		}
		// A path that names no asset is 404 in the API's error shape, not
		// the file server's plain text.
		if name := strings.Trim(path.Clean(strings.TrimPrefix(r.URL.Path, Prefix)), "/"); name != "." && name != "" {
			if _, err := fs.Stat(sub, name); err != nil {
				h.Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				_ = json.NewEncoder(w).Encode(apiv1.ErrorBody{Error: apiv1.ErrorDetail{Code: apiv1.CodeNotFound,
					Message: "no console page " + clip.String(path.Clean(r.URL.Path), 200)}})
				return
			}
		}
		files.ServeHTTP(w, r)
	})
}
