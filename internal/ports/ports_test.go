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
