// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): it sends READY=1, STOPPING=1, STATUS=… and WATCHDOG=1
// datagrams to the unix socket named by $NOTIFY_SOCKET, including abstract
// sockets (a name starting with '@'). Without $NOTIFY_SOCKET every call is a
// no-op, so the daemon can use it unconditionally.
package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The states the daemon sends.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
	Watchdog = "WATCHDOG=1"
)

// ErrBadSocket: $NOTIFY_SOCKET is set to something that is not a unix
// socket path or an abstract socket name.
var ErrBadSocket = errors.New("sdnotify: NOTIFY_SOCKET must be an absolute path or start with '@'")

// Notifier sends notifications to one socket. A nil *Notifier is valid and
// sends nothing. Its methods are safe for concurrent use; each call opens,
// writes and closes a datagram socket, so it holds no file between calls.
type Notifier struct {
	addr     string        // socket path, or "@name" for an abstract socket
	watchdog time.Duration // WATCHDOG_USEC for this process; 0: none asked
}

// FromEnv returns a Notifier for $NOTIFY_SOCKET as read through getenv (nil
// means os.Getenv), or nil and no error when the variable is unset or empty:
// the process is not run by a service manager that listens. The watchdog
// interval comes from WATCHDOG_USEC, honoured only when WATCHDOG_PID is unset
// or names this process (so a forked child does not ping for its parent).
// It does not touch the socket.
func FromEnv(getenv func(string) string) (*Notifier, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	addr := getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil, nil
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return nil, fmt.Errorf("%w (got %q)", ErrBadSocket, addr)
	}
	n := &Notifier{addr: addr}
	if us, err := strconv.ParseUint(getenv("WATCHDOG_USEC"), 10, 63); err == nil && us > 0 {
		pid := getenv("WATCHDOG_PID")
		if pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(us) * time.Microsecond
		}
	}
	return n, nil
}

// New returns a Notifier for the socket addr (a path, or "@name" for an
// abstract socket) with the given watchdog timeout (0: none).
func New(addr string, watchdog time.Duration) *Notifier {
	return &Notifier{addr: addr, watchdog: watchdog}
}

// Addr returns the socket address, or "" for a nil Notifier.
func (n *Notifier) Addr() string {
	if n == nil {
		return ""
	}
	return n.addr
}

// WatchdogTimeout returns the service manager's watchdog timeout, or 0 when
// none was asked (or n is nil). Ping at half of it.
func (n *Notifier) WatchdogTimeout() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Notify sends the given newline-separated assignments (e.g. "READY=1",
// "STATUS=serving") in one datagram. It blocks only for the local send. A
// nil Notifier returns nil.
func (n *Notifier) Notify(states ...string) error {
	if n == nil || len(states) == 0 {
		return nil
	}
	// Go maps a leading '@' to the abstract namespace itself.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	msg := strings.Join(states, "\n")
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sdnotify: send %q: %w", msg, err)
	}
	return nil
}

// RunWatchdog sends WATCHDOG=1 every half watchdog timeout until ctx ends,
// then returns. It returns at once when no watchdog was asked (or n is nil).
// The caller owns the goroutine that runs it and waits for it. Send errors
// are passed to onErr (may be nil) and do not stop the loop: a service
// manager that briefly cannot receive should not make the hive stop pinging.
func (n *Notifier) RunWatchdog(ctx context.Context, onErr func(error)) {
	iv := n.WatchdogTimeout() / 2
	if iv <= 0 {
		return
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := n.Notify(Watchdog); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}
