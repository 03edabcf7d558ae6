package sdnotify_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/sdnotify"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

func TestMain(m *testing.M) { hivetest.Main(m) }

// socket is a fake service manager: a unixgram listener that records every
// datagram.
type socket struct {
	addr string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	at   []time.Time // arrival of each of msgs
	done chan struct{}
}

func listen(t *testing.T, addr string) *socket {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &socket{addr: addr, conn: conn, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.at = append(s.at, time.Now())
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-s.done })
	return s
}

func (s *socket) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// count returns how many datagrams contain the line want.
func (s *socket) count(want string) int {
	n := 0
	for _, m := range s.messages() {
		for _, l := range strings.Split(m, "\n") {
			if l == want {
				n++
			}
		}
	}
	return n
}

func (s *socket) waitFor(t *testing.T, want string, n int) {
	t.Helper()
	if !hivetest.Eventually(t, 10*time.Second, func() bool { return s.count(want) >= n }) {
		t.Fatalf("got %d %q datagrams, want %d; all: %q", s.count(want), want, n, s.messages())
	}
}

func shortDir(t *testing.T) string {
	// sun_path holds 108 bytes; t.TempDir() names can be longer.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestFromEnv(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	n, err := sdnotify.FromEnv(env(nil))
	if n != nil || err != nil {
		t.Fatalf("unset: %v, %v; want nil, nil", n, err)
	}
	if err := n.Notify(sdnotify.Ready); err != nil {
		t.Errorf("nil Notifier: %v", err)
	}
	if _, err := sdnotify.FromEnv(env(map[string]string{"NOTIFY_SOCKET": "relative/sock"})); !errors.Is(err, sdnotify.ErrBadSocket) {
		t.Errorf("relative path: %v, want ErrBadSocket", err)
	}
	me := strconv.Itoa(os.Getpid())
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"2000000", "", 2 * time.Second},
		{"2000000", me, 2 * time.Second},
		{"2000000", "1", 0}, // meant for another process
		{"junk", "", 0},
	} {
		n, err := sdnotify.FromEnv(env(map[string]string{"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": c.usec, "WATCHDOG_PID": c.pid}))
		if err != nil {
			t.Fatal(err)
		}
		if got := n.WatchdogTimeout(); got != c.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, want %v", c.usec, c.pid, got, c.want)
		}
	}
}

func TestNotifyPathAndAbstractSockets(t *testing.T) {
	path := filepath.Join(shortDir(t), "notify.sock")
	abstract := "@rbee-hive-test-" + strconv.Itoa(os.Getpid())
	for _, addr := range []string{path, abstract} {
		s := listen(t, addr)
		n := sdnotify.New(addr, 0)
		if err := n.Notify(sdnotify.Ready, "STATUS=serving"); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		s.waitFor(t, sdnotify.Ready, 1)
		if m := s.messages(); len(m) != 1 || m[0] != "READY=1\nSTATUS=serving" {
			t.Errorf("%s: got %q", addr, m)
		}
	}
}

func TestNotifyWithoutListenerFails(t *testing.T) {
	n := sdnotify.New(filepath.Join(shortDir(t), "nobody.sock"), 0)
	if err := n.Notify(sdnotify.Ready); err == nil {
		t.Error("no error sending to a socket nobody listens on")
	}
}

func TestRunWatchdogPingsUntilCancelled(t *testing.T) {
	path := filepath.Join(shortDir(t), "wd.sock")
	s := listen(t, path)
	n := sdnotify.New(path, 40*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.RunWatchdog(ctx, func(err error) { t.Error(err) }) }()
	s.waitFor(t, sdnotify.Watchdog, 3)
	cancel()
	<-done
	// No watchdog asked: returns at once.
	sdnotify.New(path, 0).RunWatchdog(context.Background(), nil)
	var nilN *sdnotify.Notifier
	nilN.RunWatchdog(context.Background(), nil)
}

// TestDaemonNotifiesServiceManager runs the real daemon under a fake
// service manager: READY=1 once it serves, WATCHDOG=1 pings at half of
// WATCHDOG_USEC, STOPPING=1 at shutdown — and the workers it spawns do not
// inherit NOTIFY_SOCKET.
func TestDaemonNotifiesServiceManager(t *testing.T) {
	path := filepath.Join(shortDir(t), "notify.sock")
	s := listen(t, path)
	h := hivetest.Start(t, hivetest.Options{Env: []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=200000"}})
	s.waitFor(t, sdnotify.Ready, 1)
	if s.count(sdnotify.Stopping) != 0 {
		t.Fatal("STOPPING before shutdown")
	}
	s.waitFor(t, sdnotify.Watchdog, 3)
	var pings []time.Time
	s.mu.Lock()
	for i, m := range s.msgs {
		if m == sdnotify.Watchdog {
			pings = append(pings, s.at[i])
		}
	}
	s.mu.Unlock()
	if gap := pings[2].Sub(pings[0]); gap < 150*time.Millisecond || gap > 2*time.Second {
		t.Errorf("pings 1 to 3 took %v; want about 200ms (every WATCHDOG_USEC/2 = 100ms)", gap)
	}

	w := h.MustSpawn(apiv1.SpawnRequest{})
	info := h.WaitState(w.WorkerID, 20*time.Second, "idle")
	env, err := os.ReadFile("/proc/" + strconv.Itoa(info.PID) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "WATCHDOG_") {
			t.Errorf("worker inherited %s", kv)
		}
	}

	if err := h.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, sdnotify.Stopping, 1)
	msgs := s.messages()
	first, last := -1, -1
	for i, m := range msgs {
		if strings.Contains(m, sdnotify.Ready) && first < 0 {
			first = i
		}
		if strings.Contains(m, sdnotify.Stopping) {
			last = i
		}
	}
	if first != 0 || last <= first {
		t.Errorf("READY at %d, STOPPING at %d of %q", first, last, msgs)
	}
}

func TestDaemonAbstractNotifySocket(t *testing.T) {
	addr := "@rbee-hive-daemon-test-" + strconv.Itoa(os.Getpid())
	s := listen(t, addr)
	h := hivetest.Start(t, hivetest.Options{Env: []string{"NOTIFY_SOCKET=" + addr}})
	s.waitFor(t, sdnotify.Ready, 1)
	if err := h.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, sdnotify.Stopping, 1)
	if s.count(sdnotify.Watchdog) != 0 {
		t.Error("watchdog pings without WATCHDOG_USEC")
	}
}
