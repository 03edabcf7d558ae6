// Package relay is the one HTTP relay of the hive's front door (client →
// hive → worker) and of rbee-queen (client → queen → hive): a lean
// HTTP/1.1 round tripper (Transport), the outgoing request built without
// net/http's reverse-proxy machinery, and the answer copied back unchanged
// — status, headers less the hop-by-hop ones, the body chunk by chunk with
// a flush per chunk when it streams (an event stream, or a body of unknown
// length), through the server's write buffer when its length is known
// (never held whole).
//
// httputil.ReverseProxy cloned each request, copied its headers twice and
// ran hooks through the request's context; the queen's net/http Transport
// handed every request and answer between goroutines. Measured at 10
// clients on this project's 2-core machine (bench/frontdoor-results.md),
// the queen's CPU per proxied request fell by about 40 % with this relay;
// the front door's, which already had the round tripper, stayed within
// its run-to-run spread. Trailers are not relayed (no inference server
// sends them).
package relay

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
)

// hopHeaders are the hop-by-hop headers (RFC 9110 §7.6.1), not relayed in
// either direction; nor is a header named in Connection.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func isHop(k string, connection []string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	for _, v := range connection {
		for _, f := range strings.Split(v, ",") {
			if textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(f)) == k {
				return true
			}
		}
	}
	return false
}

// CopyHeader copies src's end-to-end headers into dst, less those skip
// names (canonical keys). The values are shared, not copied: neither side
// changes them afterwards.
func CopyHeader(dst, src http.Header, skip ...string) {
	conn := src["Connection"]
next:
	for k, vs := range src {
		for _, s := range skip {
			if k == s {
				continue next
			}
		}
		if isHop(k, conn) {
			continue
		}
		dst[k] = vs
	}
}

// Target is base with in's path appended (base's path, if any, first) and
// in's query.
func Target(base *url.URL, in *url.URL) *url.URL {
	u := *base
	switch {
	case u.Path == "" || u.Path == "/":
		u.Path = in.Path
	case strings.HasSuffix(u.Path, "/"):
		u.Path += strings.TrimPrefix(in.Path, "/")
	default:
		u.Path += "/" + strings.TrimPrefix(in.Path, "/")
	}
	u.RawPath = ""
	switch {
	case base.RawQuery == "":
		u.RawQuery = in.RawQuery
	case in.RawQuery != "":
		u.RawQuery = base.RawQuery + "&" + in.RawQuery
	}
	return &u
}

// NewRequest is the outgoing request: method to u with body (in memory, so
// that it leaves with the head in one write) and header. A header without
// User-Agent gets none (not Go's default).
func NewRequest(ctx context.Context, method string, u *url.URL, header http.Header, body []byte) *http.Request {
	if _, ok := header["User-Agent"]; !ok {
		header["User-Agent"] = []string{""}
	}
	r := &http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          http.NoBody,
		ContentLength: int64(len(body)),
		Host:          u.Host,
	}
	if len(body) > 0 {
		r.Body = memBody{bytes.NewReader(body), body}
		r.GetBody = func() (io.ReadCloser, error) { return memBody{bytes.NewReader(body), body}, nil }
	}
	return r.WithContext(ctx)
}

// Streams reports whether resp's body is relayed with a flush per chunk:
// an event stream, or a body of unknown length.
func Streams(resp *http.Response) bool {
	return resp.ContentLength < 0 || IsEventStream(resp)
}

// IsEventStream reports whether resp is a server-sent event stream.
func IsEventStream(resp *http.Response) bool {
	ct := resp.Header["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream")
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// WriteResponse relays resp to w: the status, the end-to-end headers (added
// to what w already has), and the body, chunk by chunk with a flush per
// chunk when it streams. It closes resp.Body. wrote reports whether the
// status went out; an error after that is the answer breaking off (or the
// client going away): the caller cuts the client's stream, since a handler
// that returns normally would end it as if complete.
func WriteResponse(w http.ResponseWriter, resp *http.Response) (wrote bool, err error) {
	defer resp.Body.Close()
	CopyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	flush := Streams(resp)
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return true, werr
			}
			if flush {
				if ferr := rc.Flush(); ferr != nil {
					return true, ferr
				}
			}
		}
		if rerr == io.EOF {
			return true, nil
		}
		if rerr != nil {
			return true, rerr
		}
	}
}
