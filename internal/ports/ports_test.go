package ports

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// freeRange finds n consecutive ports that are bindable now.
func freeRange(t *testing.T, n int) int {
	t.Helper()
	for base := 20000 + len(t.Name())*977%20000; base < 60000; base += n {
		ok := true
		for p := base; p < base+n; p++ {
			if !Bindable(p) {
				ok = false
				break
			}
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

func TestAcquireSkipsPortsInUseAndLogs(t *testing.T) {
	base := freeRange(t, 3)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var logged safeBuf
	a := New(base, base+2, slog.New(slog.NewTextHandler(&logged, nil)))
	p, err := a.Acquire("w1")
	if err != nil || p != base+1 {
		t.Fatalf("Acquire = %d, %v; want %d", p, err, base+1)
	}
	want := "Port " + strconv.Itoa(base) + " in use, trying " + strconv.Itoa(base+1)
	if !logged.contains(want) {
		t.Errorf("log %q lacks %q", logged.String(), want)
	}
	p2, _ := a.Acquire("w2")
	if p2 != base+2 {
		t.Fatalf("second Acquire = %d", p2)
	}
	if _, err := a.Acquire("w3"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want ErrExhausted, got %v", err)
	}
	a.Release(p, "w1")
	if p3, err := a.Acquire("w3"); err != nil || p3 != p {
		t.Fatalf("after release Acquire = %d, %v", p3, err)
	}
}

func TestReleaseByOtherWorkerIsIgnored(t *testing.T) {
	base := freeRange(t, 2)
	a := New(base, base+1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	p, _ := a.Acquire("w1")
	a.Release(p, "someone-else")
	if !a.Holds(p, "w1") {
		t.Fatal("port released by a worker that did not hold it")
	}
}

func TestConcurrentAcquireNeverSharesAPort(t *testing.T) {
	base := freeRange(t, 40)
	a := New(base, base+39, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var mu sync.Mutex
	seen := map[int]bool{}
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p, err := a.Acquire("w" + strconv.Itoa(i))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[p] {
				t.Errorf("port %d handed out twice", p)
			}
			seen[p] = true
		}(i)
	}
	wg.Wait()
}

type safeBuf struct {
	mu sync.Mutex
	b  []byte
}

func (s *safeBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}
func (s *safeBuf) String() string         { s.mu.Lock(); defer s.mu.Unlock(); return string(s.b) }
func (s *safeBuf) contains(x string) bool { return strings.Contains(s.String(), x) }

// Regression: Acquire checked bindability while holding the allocator's
// lock, so one slow bind check held up every other Acquire (and Release,
// Holds) of the hive.
func TestAcquireDoesNotSerializeOnSlowBind(t *testing.T) {
	base := freeRange(t, 4)
	a := New(base, base+3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	entered, unblock := make(chan int, 1), make(chan struct{})
	a.bindable = func(p int) bool {
		if p == base {
			entered <- p
			<-unblock // the first check hangs until the test lets it go
		}
		return Bindable(p)
	}
	first := make(chan int, 1)
	go func() {
		p, err := a.Acquire("slow")
		if err != nil {
			t.Error(err)
		}
		first <- p
	}()
	<-entered
	done := make(chan int, 1)
	go func() {
		p, err := a.Acquire("fast")
		if err != nil {
			t.Error(err)
		}
		done <- p
	}()
	select {
	case p := <-done:
		if p == base {
			t.Fatalf("second Acquire got port %d, which the first is still checking", p)
		}
	case <-time.After(10 * time.Second):
		close(unblock)
		t.Fatal("second Acquire waited for the first one's bind check")
	}
	if a.Holds(base, "fast") || !a.Holds(base, "slow") {
		t.Fatal("the port under check is not reserved for the Acquire checking it")
	}
	close(unblock)
	if p := <-first; p != base {
		t.Fatalf("first Acquire got %d, want %d", p, base)
	}
}

// A candidate that turns out busy is given back, and the lowest port is
// handed out again once it is bindable.
func TestAcquireGivesBackABusyCandidate(t *testing.T) {
	base := freeRange(t, 3)
	a := New(base, base+2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Acquire("w1")
	if err != nil || p != base+1 {
		t.Fatalf("Acquire = %d, %v; want %d", p, err, base+1)
	}
	if a.Holds(base, "w1") || a.InUse() != 1 {
		t.Fatalf("busy candidate %d still held (in use %d)", base, a.InUse())
	}
	l.Close()
	if p, err := a.Acquire("w2"); err != nil || p != base {
		t.Fatalf("Acquire after the port was freed = %d, %v; want %d", p, err, base)
	}
}

// Bindable (four raw system calls since it is on every spawn's path) still
// says no for a port a listener holds, on 127.0.0.1 or on every address,
// and yes once it is closed, even with a connection of it in TIME_WAIT (as
// a worker's own SO_REUSEADDR listener could bind it).
func TestBindableSeesListenersNotTimeWait(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "0.0.0.0"} {
		l, err := net.Listen("tcp", host+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if Bindable(port) {
			t.Fatalf("port %d held by a listener on %s: Bindable said yes", port, host)
		}
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				accepted <- c
			}
			close(accepted)
		}()
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := <-accepted; ok {
			s.Close() // the server side closes first: its end goes to TIME_WAIT
		}
		c.Close()
		l.Close()
		deadline := time.Now().Add(5 * time.Second)
		for !Bindable(port) {
			if time.Now().After(deadline) {
				t.Fatalf("port %d not bindable after its listener closed", port)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if Bindable(0) || Bindable(70000) {
		t.Fatal("Bindable of a port out of range said yes")
	}
}
