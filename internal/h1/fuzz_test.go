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
