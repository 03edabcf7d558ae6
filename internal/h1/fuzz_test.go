package h1

import (
	"bufio"
	"bytes"
	"net/http"
	"reflect"
	"testing"
)

// Whatever head the lean server reads, net/http reads the same way: the
// same method, path, Host, length, Connection: close and headers. (What
// it does not read goes to net/http.) A head the two read differently
// would be a way to smuggle a request past one of them.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n",
		"POST /v1/completions HTTP/1.1\r\nhost: localhost:8080\r\ncontent-length: 10\r\nAuthorization: Bearer x\r\nX-A: 1\r\nx-a: 2\r\nConnection: keep-alive, close\r\n\r\n",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 0\r\nUser-Agent: \t a b \t\r\n\r\n",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 02\r\nX-\xff: \xfe\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	s := &Server{}
	s.routes = map[string]bool{"/v1/chat/completions": true, "/v1/completions": true}
	f.Fuzz(func(t *testing.T, head []byte) {
		end := bytes.Index(head, []byte("\r\n\r\n"))
		if end < 0 || bytes.IndexByte(head, '\n') < 0 {
			return
		}
		head = head[:end+4]
		r := s.parse(head)
		if r == nil {
			return
		}
		want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("read here, refused by net/http (%v): %q", err, head)
		}
		if r.Method != want.Method || r.URL.Path != want.URL.Path || r.Host != want.Host ||
			r.ContentLength != want.ContentLength || r.Close != want.Close || r.RequestURI != want.RequestURI {
			t.Fatalf("read as %s %s host %q length %d close %v, net/http: %s %s host %q length %d close %v: %q",
				r.Method, r.URL.Path, r.Host, r.ContentLength, r.Close,
				want.Method, want.URL.Path, want.Host, want.ContentLength, want.Close, head)
		}
		// net/http moves Host out of the header.
		got := r.Header.Clone()
		delete(got, "Host")
		if len(got) == 0 && len(want.Header) == 0 {
			return
		}
		if !reflect.DeepEqual(got, want.Header) {
			t.Fatalf("header %v, net/http's %v: %q", got, want.Header, head)
		}
	})
}

// FuzzParseHeaderLine is FuzzParse with the head's skeleton fixed and the
// fuzzer's bytes in one header line, a Host and a Content-Length value,
// where a random head rarely reaches.
func FuzzParseHeaderLine(f *testing.F) {
	for _, seed := range [][3]string{
		{"X-A: 1", "h", "2"},
		{"x-a:\t 1 \t", "localhost:8080", "0"},
		{"Transfer-Encoding: chunked", "h", "2"},
		{"Content-Length: 3", "h", "2"},
		{"Host: other", "h", "2"},
		{"Connection: keep-alive,close", "[::1]:9", "010"},
		{"X-\xc3\xa9: v", "h", "2"},
		{"X: a\xffb", "h", "2"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	s := &Server{}
	s.routes = map[string]bool{"/v1/chat/completions": true}
	f.Fuzz(func(t *testing.T, line, host, length string) {
		head := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: " + host + "\r\n" + line + "\r\nContent-Length: " + length + "\r\n\r\n")
		if bytes.Count(head, []byte("\r\n\r\n")) != 1 || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
			return
		}
		r := s.parse(head)
		if r == nil {
			return
		}
		want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("read here, refused by net/http (%v): %q", err, head)
		}
		if r.Host != want.Host || r.ContentLength != want.ContentLength || r.Close != want.Close {
			t.Fatalf("host %q length %d close %v, net/http: host %q length %d close %v: %q",
				r.Host, r.ContentLength, r.Close, want.Host, want.ContentLength, want.Close, head)
		}
		got := r.Header.Clone()
		delete(got, "Host")
		if !reflect.DeepEqual(got, want.Header) {
			t.Fatalf("header %v, net/http's %v: %q", got, want.Header, head)
		}
	})
}
