package relay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// Whatever answer head the relay reads itself, it reads as
// http.ReadResponse does (status, length, close, chunking, headers), and
// the body that follows is the same.
func FuzzReadResponse(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 503\r\nX: y\r\n\r\nbody until close",
		"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -0\r\n\r\n", // net/http refuses a sign (h1's FuzzParseHeaderLine found it there)
	} {
		f.Add([]byte(seed))
	}
	req := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: "/"}}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := readResponse(bufio.NewReader(bytes.NewReader(b)), req)
		if err != nil {
			return
		}
		want, werr := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), req)
		if werr != nil {
			t.Fatalf("read here, refused by net/http (%v): %q", werr, b)
		}
		if resp.StatusCode != want.StatusCode || resp.ContentLength != want.ContentLength || resp.Close != want.Close ||
			!reflect.DeepEqual(resp.TransferEncoding, want.TransferEncoding) || resp.Status != want.Status {
			t.Fatalf("read as %d %q length %d close %v te %v; net/http: %d %q length %d close %v te %v: %q",
				resp.StatusCode, resp.Status, resp.ContentLength, resp.Close, resp.TransferEncoding,
				want.StatusCode, want.Status, want.ContentLength, want.Close, want.TransferEncoding, b)
		}
		if len(resp.Header)+len(want.Header) > 0 && !reflect.DeepEqual(resp.Header, want.Header) {
			t.Fatalf("header %v, net/http's %v: %q", resp.Header, want.Header, b)
		}
		got, gerr := io.ReadAll(resp.Body)
		exp, eerr := io.ReadAll(want.Body)
		// A body read to its end here is one net/http reads to its end;
		// one cut here may be one net/http took (stricter is safe).
		if gerr == nil && (eerr != nil || !bytes.Equal(got, exp)) || gerr != nil && !bytes.HasPrefix(exp, got) {
			t.Fatalf("body %q (%v), net/http's %q (%v): %q", got, gerr, exp, eerr, b)
		}
	})
}

// A chunked answer's trailer is read at its end, so the next answer on the
// connection starts where it should; a body shorter than its length is an
// unexpected EOF, not a complete answer.
func TestReadResponseChunkedTrailerAndShortBody(t *testing.T) {
	req := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: "/"}}
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n" +
		"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nshort"))
	resp, err := readResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "abc" {
		t.Fatalf("chunked body %q %v", b, err)
	}
	resp, err = readResponse(br, req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("second answer %v %v", resp, err)
	}
	if b, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "short" {
		t.Fatalf("short body %q %v, want io.ErrUnexpectedEOF", b, err)
	}
}

// The request the relay writes itself is what net/http's server reads:
// method, path and query, Host, headers (an empty User-Agent left out, a
// line break in a value a space), the body.
func TestWriteRequestIsReadByNetHTTP(t *testing.T) {
	u, _ := url.Parse("http://127.0.0.1:9/v1/chat/completions?x=1")
	h := http.Header{"X-A": {"1", "2"}, "User-Agent": {""}, "X-Nl": {"a\r\nInjected: yes"}, "Content-Type": {"application/json"}}
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	writeRequest(bw, NewRequest(t.Context(), http.MethodPost, u, h, []byte(`{"model":"m"}`)), []byte(`{"model":"m"}`))
	bw.Flush()
	r, err := http.ReadRequest(bufio.NewReader(&buf))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.Method != "POST" || r.RequestURI != "/v1/chat/completions?x=1" || r.Host != "127.0.0.1:9" || string(b) != `{"model":"m"}` ||
		strings.Join(r.Header["X-A"], ",") != "1,2" || r.Header.Get("User-Agent") != "" || r.Header.Get("Injected") != "" ||
		r.Header.Get("X-Nl") != "a  Injected: yes" || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("read as %s %s host %s body %q header %v", r.Method, r.RequestURI, r.Host, b, r.Header)
	}
}
