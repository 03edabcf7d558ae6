package h1

import (
	"io"
	"strings"
	"testing"
	"time"
)

// With no ReadTimeout (rbee-queen's server), a request's body has no time
// limit, as net/http's: the header timeout bounds the head only. The lean
// server left the head's read deadline on the connection, so a body still
// arriving ReadHeaderTimeout after the head's first byte (or, on a
// kept-alive connection, IdleTimeout after the previous answer) was cut.
func TestBodyAfterTheHeadIsNotCutAtTheHeaderTimeout(t *testing.T) {
	ts := startServer(t, nil, func(s *Server) {
		s.ReadHeaderTimeout, s.IdleTimeout, s.ReadTimeout = 150*time.Millisecond, 300*time.Millisecond, 0
	})
	for _, idle := range []bool{false, true} {
		c, br := ts.dial(t)
		if idle { // a kept-alive connection's second request
			io.WriteString(c, post("/v1/completions", `{}`))
			if resp, _ := readResp(t, br); resp.StatusCode != 200 {
				t.Fatalf("first request: %s", resp.Status)
			}
			ts.next(t)
		}
		body := `{"model":"m","prompt":"slow"}`
		req := post("/v1/chat/completions", body)
		head := req[:len(req)-len(body)]
		io.WriteString(c, head+body[:5])
		time.Sleep(400 * time.Millisecond) // past the header timeout
		io.WriteString(c, body[5:])
		resp, got := readResp(t, br)
		if resp.StatusCode != 200 || !strings.HasPrefix(got, "h1 ") {
			t.Fatalf("idle %v: %s %q", idle, resp.Status, got)
		}
		if s := ts.next(t); s.body != body {
			t.Fatalf("idle %v: handler read %q", idle, s.body)
		}
	}
}
