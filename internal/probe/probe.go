// Package probe sends HTTP health and readiness probes to one worker over a
// connection it holds between probes. With a thousand workers probed every
// few seconds, net/http's client (a pooled transport with a reader and a
// writer goroutine per connection) costs the hive more than the probes
// themselves; a Prober is one blocking request on one socket.
package probe

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// maxBody is how much of a probe response body is read; a longer body
// closes the connection instead of being drained.
const maxBody = 64 << 10

// Prober probes one address. It is not safe for concurrent use: at most one
// probe at a time (the worker's owner guarantees it). The zero value is not
// usable; use New.
type Prober struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
}

// New returns a prober for host:port. It does not connect yet.
func New(addr string) *Prober { return &Prober{addr: addr} }

// Addr returns the address probed.
func (p *Prober) Addr() string { return p.addr }

// Get requests path and returns nil when the answer's status is want. It
// blocks for at most timeout. A failure on a connection kept from an earlier
// probe (the server closed it while idle) is retried once on a new one.
func (p *Prober) Get(path string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	reused := p.conn != nil
	status, err := p.get(path, deadline)
	if err != nil && reused && staleConn(err) && time.Now().Before(deadline) {
		status, err = p.get(path, deadline)
	}
	if err != nil {
		return err
	}
	if status != want {
		return fmt.Errorf("status %d, want %d", status, want)
	}
	return nil
}

func (p *Prober) get(path string, deadline time.Time) (int, error) {
	if p.conn == nil {
		c, err := net.DialTimeout("tcp", p.addr, time.Until(deadline))
		if err != nil {
			return 0, err
		}
		p.conn, p.br = c, bufio.NewReaderSize(c, 4096)
	}
	if err := p.conn.SetDeadline(deadline); err != nil {
		p.Close()
		return 0, err
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + p.addr + "\r\nUser-Agent: rbee-hive-probe\r\n\r\n"
	if _, err := io.WriteString(p.conn, req); err != nil {
		p.Close()
		return 0, err
	}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		p.Close()
		return 0, err
	}
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if err != nil || n == maxBody || resp.Close {
		p.Close() // not reusable: broken, too long to drain, or closed by the server
	}
	return resp.StatusCode, nil
}

// staleConn reports whether err is what a kept connection that the server
// had closed gives on first use.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// Close closes the held connection, if any. The Prober stays usable.
func (p *Prober) Close() {
	if p.conn != nil {
		p.conn.Close()
		p.conn, p.br = nil, nil
	}
}
