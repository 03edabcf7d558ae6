package h1

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of a request served here. The head
// goes out with the first body bytes past the buffer, at the first flush,
// or at the end: a body of unknown length that ends before either is sent
// with its Content-Length, a longer one chunked.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header

	status   int
	wrote    bool  // WriteHeader was called
	sent     bool  // the head is out (in the writer's buffer)
	chunked  bool  // the body is sent in chunks
	cl       int64 // the declared Content-Length; -1: none
	written  int64
	pending  []byte // body bytes held before the head, when cl is -1
	closing  bool   // Connection: close
	err      error  // a write failed: the connection is lost
	noBody   bool   // the status has no body (1xx, 204, 304)
	overflow bool   // the handler wrote past its Content-Length
	// wdl is the answer's write deadline: WriteTimeout after the head was
	// read, unless the handler set another. It is applied when the head
	// goes out (nothing reaches the connection before), so the usual
	// streaming handler, which lifts it first, costs no timer.
	wdl time.Time
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.wrote {
		return
	}
	if code < 100 || code > 999 {
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 {
		return // informational answers are not sent (no route here asks for one)
	}
	w.wrote, w.status = true, code
	w.noBody = code == http.StatusNoContent || code == http.StatusNotModified
	if v := w.header.Get("Content-Length"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			w.header.Del("Content-Length") // as net/http: an invalid one is dropped
		} else {
			w.cl = n
		}
	}
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.noBody {
		return 0, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		w.overflow = true
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.sent {
		if w.cl < 0 && len(w.pending)+len(p) <= bufSize {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		w.sendHead(w.cl < 0)
	}
	w.body(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// body writes p, in a chunk when the body is chunked.
func (w *response) body(p []byte) {
	if len(p) == 0 || w.err != nil {
		return
	}
	bw := w.c.bw
	if w.chunked {
		var hex [16]byte
		bw.Write(strconv.AppendInt(hex[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	bw.Write(p)
	if w.chunked {
		bw.WriteString("\r\n")
	}
	if _, err := bw.Write(nil); err != nil {
		w.err = err
	}
}

// Flush sends what was written (the head, chunked when no length was
// declared, first).
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is Flush with its error (http.ResponseController uses it).
func (w *response) FlushError() error {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if !w.sent {
		w.sendHead(w.cl < 0 && !w.noBody)
	}
	if err := w.c.bw.Flush(); err != nil {
		w.err = err
	}
	return w.err
}

// SetWriteDeadline lets a handler whose answer streams lift the server's
// write timeout (http.ResponseController).
func (w *response) SetWriteDeadline(t time.Time) error {
	w.wdl = t
	if !w.sent {
		return nil
	}
	return w.c.setWriteDeadline(t)
}

// sendHead writes the status line and the headers to the buffer, with
// pending bytes after them.
func (w *response) sendHead(chunked bool) {
	w.sent, w.chunked = true, chunked
	_ = w.c.setWriteDeadline(w.wdl)
	bw := w.c.bw
	bw.WriteString(statusLine(w.status))
	h := w.header
	if chunked {
		delete(h, "Content-Length")
	}
	delete(h, "Transfer-Encoding")
	delete(h, "Connection")
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range h[k] {
			bw.WriteString(k)
			bw.WriteString(": ")
			if strings.ContainsAny(v, "\r\n") {
				v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
			}
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(date())
		bw.WriteString("\r\n")
	}
	switch {
	case w.noBody:
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case w.cl < 0:
		// The whole body is pending: its length is known.
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.Itoa(len(w.pending)))
		bw.WriteString("\r\n")
	}
	if w.closing || w.req.Close || w.c.s.shutting.Load() {
		w.closing = true
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	p := w.pending
	w.pending = nil
	w.body(p)
}

// finish ends the answer after the handler returned and reports whether
// the connection can serve another request.
func (w *response) finish() bool {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return false
	}
	if !w.sent {
		w.sendHead(false)
	}
	if w.chunked {
		w.c.bw.WriteString("0\r\n\r\n")
	}
	if err := w.c.bw.Flush(); err != nil {
		return false
	}
	// A declared length not met (or exceeded) leaves the client reading
	// a body that will not come: the connection ends.
	if w.cl >= 0 && !w.noBody && (w.written != w.cl || w.overflow) {
		return false
	}
	return !w.closing
}

// statusLine is "HTTP/1.1 <code> <text>\r\n".
func statusLine(code int) string {
	if code == http.StatusOK {
		return "HTTP/1.1 200 OK\r\n"
	}
	return "HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n"
}

// date is the Date header's value, formatted once a second.
func date() string {
	now := time.Now().Unix()
	if d := dateCache.Load(); d != nil && d.unix == now {
		return d.s
	}
	d := &dated{unix: now, s: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.s
}

type dated struct {
	unix int64
	s    string
}

var dateCache atomic.Pointer[dated]
