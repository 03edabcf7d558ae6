package relay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"github.com/rbee/rbee-hive/internal/h1"
	"golang.org/x/net/http/httpguts"
)

// The relay's own HTTP/1.1 wire format for the common case: a request
// whose body is in memory (NewRequest) is written without net/http's
// request writer, and an answer whose head fits the connection's buffer
// and has nothing unusual in it is read without http.ReadResponse. Both
// were about a seventh of the hive's CPU per proxied request. Anything
// else goes through net/http's reader and writer as before.

// memBody is NewRequest's body: the bytes it was built from.
type memBody struct {
	*bytes.Reader
	b []byte
}

func (memBody) Close() error { return nil }

// writeRequest writes req, whose body is b, to bw: the request line,
// Host, the header (net/http's rules: no User-Agent when it is empty, and
// a line break inside a value is a space), Content-Length, the body.
func writeRequest(bw *bufio.Writer, req *http.Request, b []byte) {
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vs := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
			continue
		case "User-Agent":
			if len(vs) == 0 || vs[0] == "" {
				continue
			}
			vs = vs[:1]
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			if strings.ContainsAny(v, "\r\n") {
				v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
			}
			bw.WriteString(strings.TrimSpace(v))
			bw.WriteString("\r\n")
		}
	}
	if len(b) > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.Itoa(len(b)))
		bw.WriteString("\r\n")
	}
	if req.Close {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	bw.Write(b)
}

// validField reports whether line is "name: value" with a valid name and
// value (net/http's rules).
func validField(line string) bool {
	name, value, ok := strings.Cut(line, ":")
	return ok && httpguts.ValidHeaderFieldName(name) && httpguts.ValidHeaderFieldValue(value)
}

// errUnusual: the answer's head is not one readResponse reads; nothing was
// consumed, and http.ReadResponse reads it.
var errUnusual = errors.New("relay: unusual response head")

// readResponse reads an answer's head from br when all of it is already
// buffered or arrives within the buffer, with HTTP/1.1 (or 1.0) status
// line, CRLF line ends, valid names and values, at most one
// Content-Length, and no Transfer-Encoding but "chunked". Otherwise it
// consumes nothing and returns errUnusual.
func readResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	n, err := h1.HeadLength(br)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errUnusual
	}
	head, _ := br.Peek(n)
	resp := parseResponse(head, req)
	if resp == nil {
		return nil, errUnusual
	}
	_, _ = br.Discard(n)
	switch {
	case resp.StatusCode < 200 || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified ||
		req.Method == http.MethodHead:
		resp.Body = http.NoBody
		resp.ContentLength = 0
	case resp.TransferEncoding != nil:
		resp.Body = &chunkedBody{br: br, r: httputil.NewChunkedReader(br)}
	case resp.ContentLength >= 0:
		if resp.ContentLength == 0 {
			resp.Body = http.NoBody
		} else {
			resp.Body = &lengthBody{br: br, n: resp.ContentLength}
		}
	default:
		resp.Close = true // the body ends with the connection
		resp.Body = io.NopCloser(br)
	}
	return resp, nil
}

// parseResponse reads a head (CRLF lines, the last blank) into a
// response without a body; nil when it is unusual (see readResponse).
func parseResponse(head []byte, req *http.Request) *http.Response {
	eol := bytes.IndexByte(head, '\n')
	line := head[:eol]
	if len(line) < 13 || line[len(line)-1] != '\r' || line[12] != ' ' && len(line) != 13 {
		return nil
	}
	for _, c := range line[12 : len(line)-1] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil
		}
	}
	minor := 1
	switch string(line[:9]) {
	case "HTTP/1.1 ":
	case "HTTP/1.0 ":
		minor = 0
	default:
		return nil
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return nil
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return nil
	}
	hs := string(head[eol+1:])
	lines := strings.Count(hs, "\n") - 1
	h := make(http.Header, lines)
	vals := make([]string, lines)
	length := int64(-1)
	lengths := 0
	chunked, closing, keepAlive := false, false, false
	for i := 0; ; i++ {
		k, v, rest, end, ok := h1.HeaderLine(hs)
		if !ok {
			return nil
		}
		if end {
			break
		}
		hs = rest
		switch k {
		case "Content-Length":
			lengths++
			n, ok := h1.ParseContentLength(v)
			if !ok {
				return nil
			}
			length = n
		case "Transfer-Encoding":
			if !strings.EqualFold(v, "chunked") || chunked {
				return nil
			}
			chunked = true
			continue // not a header of the answer (as http.ReadResponse)
		case "Connection":
			closing = closing || httpguts.HeaderValuesContainsToken([]string{v}, "close")
			keepAlive = keepAlive || httpguts.HeaderValuesContainsToken([]string{v}, "keep-alive")
		}
		vals[i] = v
		if old, ok := h[k]; ok {
			h[k] = append(old, v)
		} else {
			h[k] = vals[i : i+1 : i+1]
		}
	}
	if lengths > 1 {
		return nil
	}
	if closing && minor == 1 {
		delete(h, "Connection") // as net/http
	}
	resp := &http.Response{
		Status:        string(line[9 : len(line)-1]),
		StatusCode:    code,
		Proto:         "HTTP/1." + strconv.Itoa(minor),
		ProtoMajor:    1,
		ProtoMinor:    minor,
		Header:        h,
		ContentLength: length,
		Close:         closing || minor == 0 && !keepAlive,
		Request:       req,
	}
	if chunked && (minor == 0 || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified) {
		return nil // net/http's rules for these are its own
	}
	if chunked {
		resp.TransferEncoding = []string{"chunked"}
		resp.ContentLength = -1
		delete(h, "Content-Length") // as net/http: chunked wins
	}
	return resp
}

// lengthBody is a body of n bytes: it ends there, and an earlier end of
// the connection is io.ErrUnexpectedEOF.
type lengthBody struct {
	br *bufio.Reader
	n  int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	if b.n == 0 {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }

// maxTrailer bounds the trailer read after a chunked body.
const maxTrailer = 16 << 10

// chunkedBody is a chunked body; at its end its trailer (not relayed) is
// read up to the blank line, so that the connection can serve again.
type chunkedBody struct {
	br *bufio.Reader
	r  io.Reader
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		total := 0
		for {
			line, lerr := b.br.ReadSlice('\n')
			total += len(line)
			if lerr != nil || total > maxTrailer {
				return n, io.ErrUnexpectedEOF
			}
			if len(line) < 2 || line[len(line)-2] != '\r' {
				return n, io.ErrUnexpectedEOF // a bare LF: stricter than net/http, never looser
			}
			if len(line) == 2 {
				break
			}
			if !validField(string(line[:len(line)-2])) {
				return n, io.ErrUnexpectedEOF
			}
		}
	}
	return n, err
}

func (b *chunkedBody) Close() error { return nil }
