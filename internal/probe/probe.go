// Package probe sends HTTP health and readiness probes to one worker over a
// connection it holds between probes.
//
// A probe is the hive's most frequent piece of work (every worker, every
// health interval; every 25–50 ms while a generic worker loads), and many
// servers close the connection after every answer, so each probe is often a
// new TCP connection. It is done with few system calls: a blocking socket
// and connect (immediate on loopback), then the socket handed to the Go
// runtime's network poller for the write and the wait for the answer (so
// the hive goes fully idle while the server thinks, rather than keeping a
// thread in a read and the runtime spinning), and a small response parser —
// none of net/http's transport, the net package's keep-alive options and
// address lookups, or their allocations. About half the CPU per probe of
// the net/http version (BenchmarkProbeClosingServer).
package probe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	clipper "github.com/rbee/rbee-hive/internal/clip"
)

// maxBody is how much of a probe response body is read; a longer body
// closes the connection instead of being drained.
const maxBody = 64 << 10

// maxHead bounds the status line and headers of a response.
const maxHead = 8 << 10

// ErrTimeout: the server did not answer within the probe's timeout.
var ErrTimeout = errors.New("probe timed out")

// Prober probes one address. It is not safe for concurrent use: at most one
// probe at a time (the worker's owner guarantees it). The zero value is not
// usable; use New.
type Prober struct {
	addr string
	sa   syscall.Sockaddr // nil when addr is not an IP:port (err says why)
	err  error
	conn *os.File // the held connection (non-blocking, in the poller); nil when none
	buf  []byte   // response buffer, kept between probes
	req  []byte   // the last request, kept while path stays the same
	path string
}

// New returns a prober for ip:port (a literal address, no name lookup). It
// does not connect yet.
func New(addr string) *Prober {
	p := &Prober{addr: addr}
	ap, err := netip.ParseAddrPort(addr)
	switch {
	case err != nil:
		p.err = fmt.Errorf("probe address %q: %w", addr, err)
	case ap.Addr().Is4():
		p.sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	default:
		p.sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	return p
}

// Addr returns the address probed.
func (p *Prober) Addr() string { return p.addr }

// Get requests path and returns nil when the answer's status is want. It
// blocks for at most timeout (plus a few milliseconds). A failure on a
// connection kept from an earlier probe (the server closed it while idle)
// is retried once on a new one.
func (p *Prober) Get(path string, want int, timeout time.Duration) error {
	if p.err != nil {
		return p.err
	}
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
		p.conn = nil
	}
}

func (p *Prober) request(path string) []byte {
	if p.req == nil || path != p.path {
		p.path = path
		p.req = []byte("GET " + path + " HTTP/1.1\r\nHost: " + p.addr + "\r\nUser-Agent: rbee-hive-probe\r\n\r\n")
	}
	return p.req
}

// get does one exchange. On any error the connection is closed.
func (p *Prober) get(path string, deadline time.Time) (int, error) {
	if p.conn == nil {
		c, err := dial(p.sa, deadline)
		if err != nil {
			return 0, fmt.Errorf("probe %s: %w", p.addr, err)
		}
		p.conn = c
	}
	status, keep, err := p.exchange(path, deadline)
	if err != nil || !keep {
		p.Close()
	}
	if err != nil {
		return 0, fmt.Errorf("probe %s%s: %w", p.addr, path, err)
	}
	return status, nil
}

// dial connects a blocking socket to sa — on loopback, connect completes
// (or is refused) at once; the send timeout bounds it otherwise — and
// returns it non-blocking, registered with the network poller.
func dial(sa syscall.Sockaddr, deadline time.Time) (*os.File, error) {
	family := syscall.AF_INET
	if _, ok := sa.(*syscall.SockaddrInet6); ok {
		family = syscall.AF_INET6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := setTimeout(fd, syscall.SO_SNDTIMEO, time.Until(deadline)); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	err = syscall.Connect(fd, sa)
	if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EINPROGRESS) || errors.Is(err, syscall.EAGAIN) {
		// Interrupted (or timed out) while the handshake goes on: wait
		// for it to finish, then ask how it ended.
		err = waitConnected(fd, deadline)
	}
	if err != nil {
		syscall.Close(fd)
		if errors.Is(err, syscall.EAGAIN) {
			err = ErrTimeout
		}
		return nil, os.NewSyscallError("connect", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("set non-blocking", err)
	}
	return os.NewFile(uintptr(fd), "probe"), nil
}

func waitConnected(fd int, deadline time.Time) error {
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			return ErrTimeout
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, min(ms, 100))
		if errors.Is(err, syscall.EINTR) || n == 0 && err == nil {
			continue
		}
		if err != nil {
			return err
		}
		v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
		if err != nil {
			return err
		}
		if v != 0 {
			return syscall.Errno(v)
		}
		return nil
	}
}

// setTimeout sets SO_SNDTIMEO or SO_RCVTIMEO to d (at least 1 ms).
func setTimeout(fd, opt int, d time.Duration) error {
	tv := syscall.NsecToTimeval(max(d, time.Millisecond).Nanoseconds())
	return os.NewSyscallError("setsockopt", syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, opt, &tv))
}

// exchange writes the request and reads the response on p.conn. keep
// reports whether the connection can serve the next probe.
func (p *Prober) exchange(path string, deadline time.Time) (status int, keep bool, err error) {
	c := p.conn
	if err := c.SetDeadline(deadline); err != nil {
		return 0, false, err
	}
	if _, err := c.Write(p.request(path)); err != nil {
		return 0, false, timeoutErr(err)
	}
	if p.buf == nil {
		p.buf = make([]byte, 4096)
	}
	// Status line and headers.
	buf := p.buf[:0]
	end := -1
	for end < 0 {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxHead {
				return 0, false, errors.New("response headers too long")
			}
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, false, timeoutErr(err)
		}
		buf = buf[:len(buf)+n]
		end = bytes.Index(buf, []byte("\r\n\r\n"))
	}
	p.buf = buf[:0:cap(buf)]
	h, err := parseHead(buf[:end+2])
	if err != nil {
		return 0, false, err
	}
	// Body: read it when its length is known and small (so the server
	// never sees a reset); else close the connection.
	if h.length < 0 || h.length > maxBody {
		return h.status, false, nil
	}
	left := h.length - (len(buf) - (end + 4))
	for left > 0 {
		n, err := c.Read(p.buf[:min(left, cap(p.buf))])
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, false, timeoutErr(err)
		}
		left -= n
	}
	return h.status, h.keepAlive && left == 0, nil
}

func timeoutErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ErrTimeout
	}
	return err
}

type head struct {
	status    int
	length    int // -1: unknown (chunked, or until close)
	keepAlive bool
}

// parseHead parses "HTTP/1.x NNN reason\r\n" and the header lines (each
// ending in \r\n) that follow.
func parseHead(b []byte) (head, error) {
	line, rest, _ := bytes.Cut(b, []byte("\r\n"))
	proto, code, _ := bytes.Cut(line, []byte(" "))
	if len(code) > 3 {
		code = code[:3]
	}
	st, err := strconv.Atoi(string(code))
	if err != nil || !bytes.HasPrefix(proto, []byte("HTTP/1.")) || st < 100 || st > 999 {
		return head{}, fmt.Errorf("malformed status line %q", clip(line))
	}
	h := head{status: st, length: -1, keepAlive: string(proto) != "HTTP/1.0"}
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 0 {
				return head{}, fmt.Errorf("malformed Content-Length %q", clip(v))
			}
			h.length = n
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			h.length, h.keepAlive = -1, false
			return h, nil
		case bytes.EqualFold(k, []byte("Connection")):
			switch {
			case bytes.EqualFold(v, []byte("close")):
				h.keepAlive = false
			case bytes.EqualFold(v, []byte("keep-alive")):
				h.keepAlive = true
			}
		}
	}
	if st == 204 || st == 304 || st < 200 {
		h.length = 0
	}
	return h, nil
}

func clip(b []byte) string { return clipper.String(string(b), 64) }
