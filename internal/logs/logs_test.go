package logs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 10 * time.Second

func newWatcher(t *testing.T, opts Options) *Watcher {
	t.Helper()
	w, err := NewWatcher(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Watcher.Close: %v", err)
		}
	})
	return w
}

func open(t *testing.T, w *Watcher, path string) *Log {
	t.Helper()
	l, err := w.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// startChild runs script under /bin/sh with its stdout and stderr on l's file,
// in its own process group, killed and reaped at cleanup.
func startChild(t *testing.T, l *Log, script string) *exec.Cmd {
	t.Helper()
	cf, err := l.ChildFile()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Stdout, cmd.Stderr = cf, cf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		cf.Close()
		t.Fatal(err)
	}
	cf.Close()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait() // reaps; "already waited" when the test did
	})
	return cmd
}

// runChild runs script to completion and checks that it exited 0.
func runChild(t *testing.T, l *Log, script string) {
	t.Helper()
	if err := startChild(t, l, script).Wait(); err != nil {
		t.Fatalf("child %q: %v", script, err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitFor, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func lastLine(l *Log) string {
	t := l.Tail(1)
	if len(t) == 0 {
		return ""
	}
	return t[0]
}

func seqLines(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestChildStdoutAndStderrReachTail(t *testing.T) {
	w := newWatcher(t, Options{})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	if !l.LastOutput().IsZero() {
		t.Fatalf("LastOutput before any output = %v, want zero", l.LastOutput())
	}
	before := time.Now()
	startChild(t, l, `for i in $(seq 1 50); do echo line $i; done; echo err >&2`)
	select {
	case <-l.Changed():
	case <-time.After(waitFor):
		t.Fatal("Changed never fired")
	}
	eventually(t, "the stderr line", func() bool { return lastLine(l) == "err" })
	want := append(seqLines("line ", 1, 50), "err")
	if got := l.Tail(0); !equal(got, want) {
		t.Fatalf("Tail(0) = %q\nwant %q", got, want)
	}
	if got := l.Tail(3); !equal(got, []string{"line 49", "line 50", "err"}) {
		t.Fatalf("Tail(3) = %q", got)
	}
	if lo := l.LastOutput(); lo.Before(before) {
		t.Fatalf("LastOutput = %v, before the child started (%v)", lo, before)
	}
	fi, err := os.Stat(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("log file mode = %v, want 0600", fi.Mode().Perm())
	}
}

func TestRingKeepsOnlyRingLines(t *testing.T) {
	w := newWatcher(t, Options{RingLines: 10})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	runChild(t, l, `for i in $(seq 1 100); do echo l$i; done; printf 'unfinished'`)
	eventually(t, "the unfinished line", func() bool { return lastLine(l) == "unfinished" })
	want := append(seqLines("l", 91, 100), "unfinished")
	if got := l.Tail(0); !equal(got, want) {
		t.Fatalf("Tail(0) = %q\nwant %q", got, want)
	}
	if got := l.Tail(500); len(got) != 11 {
		t.Fatalf("Tail(500) has %d lines, want 11", len(got))
	}
}

func TestSyncMakesLastLinesVisibleAtOnce(t *testing.T) {
	w := newWatcher(t, Options{})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	err := startChild(t, l, `echo loading; echo 'fatal: no model' >&2; exit 3`).Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("child: %v, want exit 3", err)
	}
	l.Sync() // no waiting: the bytes are in the file, Sync must read them
	if got := l.Tail(2); !equal(got, []string{"loading", "fatal: no model"}) {
		t.Fatalf("Tail(2) after Sync = %q", got)
	}
}

// collector gathers lines from Follow.
type collector struct {
	mu    sync.Mutex
	lines []string
}

func (c *collector) add(s string) error {
	c.mu.Lock()
	c.lines = append(c.lines, s)
	c.mu.Unlock()
	return nil
}

func (c *collector) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

func (c *collector) last() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lines) == 0 {
		return ""
	}
	return c.lines[len(c.lines)-1]
}

// follow runs l.Follow (or TailFollow when tail >= 0) in a goroutine; stop
// cancels it and returns its error; wait returns its error without cancelling.
func follow(l *Log, tail int, fn func(string) error) (stop, wait func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		if tail >= 0 {
			errc <- l.TailFollow(ctx, tail, fn)
		} else {
			errc <- l.Follow(ctx, fn)
		}
	}()
	var once sync.Once
	var err error
	wait = func() error {
		once.Do(func() {
			select {
			case err = <-errc:
			case <-time.After(waitFor):
				err = errors.New("Follow did not return")
			}
			cancel()
		})
		return err
	}
	return func() error { cancel(); return wait() }, wait
}

// waitFollowers waits until n Follow calls are registered on l.
func waitFollowers(t *testing.T, l *Log, n int) {
	eventually(t, fmt.Sprintf("%d followers", n), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.followers) == n
	})
}

func TestFollowReceivesLinesInOrder(t *testing.T) {
	w := newWatcher(t, Options{})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	runChild(t, l, `echo before`)
	eventually(t, "before", func() bool { return lastLine(l) == "before" })

	var c collector
	stop, _ := follow(l, -1, c.add)
	waitFollowers(t, l, 1)
	runChild(t, l, `for i in $(seq 1 500); do echo n$i; done`)
	eventually(t, "n500", func() bool { return c.last() == "n500" })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow after cancel = %v, want context.Canceled", err)
	}
	if got, want := c.get(), seqLines("n", 1, 500); !equal(got, want) {
		t.Fatalf("followed %d lines, want n1..n500 exactly (first %q)", len(got), got[:min(5, len(got))])
	}
}

func TestFollowReturnsFnError(t *testing.T) {
	w := newWatcher(t, Options{})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	errStop := errors.New("stop here")
	stop, _ := follow(l, -1, func(s string) error {
		if s == "b" {
			return errStop
		}
		return nil
	})
	waitFollowers(t, l, 1)
	runChild(t, l, `echo a; echo b; echo c`)
	waitFollowers(t, l, 0)
	if err := stop(); !errors.Is(err, errStop) {
		t.Fatalf("Follow = %v, want %v", err, errStop)
	}
}

func TestTailFollowHasNoGapAndNoRepeat(t *testing.T) {
	w := newWatcher(t, Options{})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	runChild(t, l, `for i in $(seq 1 10); do echo t$i; done; printf 't1'`)
	eventually(t, "the unfinished t1", func() bool { return equal(l.Tail(2), []string{"t10", "t1"}) })

	var c collector
	stop, _ := follow(l, 3, c.add)
	waitFollowers(t, l, 1)
	runChild(t, l, `echo 1; for i in $(seq 12 20); do echo t$i; done`)
	eventually(t, "t20", func() bool { return c.last() == "t20" })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	// The unfinished "t1" is not in the tail; it arrives whole as "t11".
	if got, want := c.get(), seqLines("t", 8, 20); !equal(got, want) {
		t.Fatalf("TailFollow got %q\nwant %q", got, want)
	}
}

// dropAccounting checks that followed lines are "x<i>" in increasing order
// and that they plus the dropped counts make up total lines; it returns how
// many were dropped.
func dropAccounting(t *testing.T, name string, lines []string, total int) int {
	t.Helper()
	prev, seen, dropped := 0, 0, 0
	for _, s := range lines {
		if n, ok := strings.CutPrefix(s, "... "); ok {
			k, err := strconv.Atoi(strings.TrimSuffix(n, " lines dropped"))
			if err != nil {
				t.Fatalf("%s: bad marker %q", name, s)
			}
			dropped += k
			continue
		}
		i, err := strconv.Atoi(strings.TrimPrefix(s, "x"))
		if err != nil || i <= prev {
			t.Fatalf("%s: line %q after x%d", name, s, prev)
		}
		prev = i
		seen++
	}
	if seen+dropped != total {
		t.Fatalf("%s: %d lines + %d dropped != %d", name, seen, dropped, total)
	}
	return dropped
}

func TestSlowFollowerDoesNotBlockOthers(t *testing.T) {
	const total = 3000
	w := newWatcher(t, Options{FollowBuffer: 16})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))

	release := make(chan struct{})
	var slow collector
	_, waitSlow := follow(l, -1, func(s string) error {
		<-release
		return slow.add(s)
	})
	var fast collector
	_, waitFast := follow(l, -1, fast.add)
	waitFollowers(t, l, 2)

	runChild(t, l, fmt.Sprintf(`for i in $(seq 1 %d); do echo x$i; done`, total))
	last := fmt.Sprintf("x%d", total)
	// The slow follower is stuck in fn, yet the ring and the other follower
	// move on, and Close does not wait for it.
	eventually(t, "the last line in the ring", func() bool { return lastLine(l) == last })
	eventually(t, "the fast follower to get lines", func() bool { return len(fast.get()) > 0 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := waitFast(); err != nil {
		t.Fatalf("fast Follow = %v, want nil", err)
	}
	dropAccounting(t, "fast", fast.get(), total)

	close(release)
	if err := waitSlow(); err != nil {
		t.Fatalf("slow Follow = %v, want nil", err)
	}
	if d := dropAccounting(t, "slow", slow.get(), total); d == 0 {
		t.Fatal("slow follower with a 16-line buffer dropped nothing out of 3000 lines")
	}
}

func TestFollowersReturnOnLogClose(t *testing.T) {
	w := newWatcher(t, Options{})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	var c collector
	_, wait := follow(l, -1, c.add)
	waitFollowers(t, l, 1)
	runChild(t, l, `echo done; printf 'no newline'`)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Close reads what is left and hands the unfinished line over too.
	if err := wait(); err != nil {
		t.Fatalf("Follow after Log.Close = %v, want nil", err)
	}
	if got := c.get(); !equal(got, []string{"done", "no newline"}) {
		t.Fatalf("followed %q", got)
	}
	// Post-mortem: the ring stays readable, new calls see ErrClosed or end at once.
	if got := l.Tail(0); !equal(got, []string{"done", "no newline"}) {
		t.Fatalf("Tail after Close = %q", got)
	}
	if _, err := l.ChildFile(); !errors.Is(err, ErrClosed) {
		t.Fatalf("ChildFile after Close = %v, want ErrClosed", err)
	}
	var c2 collector
	if err := l.TailFollow(context.Background(), 1, c2.add); err != nil || !equal(c2.get(), []string{"done"}) {
		t.Fatalf("TailFollow on closed Log = %v, %q", err, c2.get())
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestReopenExistingFileLoadsLastLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	var sb strings.Builder
	for i := 1; i <= 5000; i++ {
		fmt.Fprintf(&sb, "old%d\n", i)
	}
	sb.WriteString("half")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	w := newWatcher(t, Options{RingLines: 200})
	l := open(t, w, path)
	if want := append(seqLines("old", 4801, 5000), "half"); !equal(l.Tail(0), want) {
		t.Fatalf("Tail after re-open = %q...", l.Tail(0)[:3])
	}
	if !l.LastOutput().IsZero() {
		t.Fatal("lines loaded by Open counted as new output")
	}
	runChild(t, l, `echo ' done'; echo new`)
	eventually(t, "new", func() bool { return lastLine(l) == "new" })
	if got := l.Tail(2); !equal(got, []string{"half done", "new"}) {
		t.Fatalf("Tail(2) = %q", got)
	}
	if l.LastOutput().IsZero() {
		t.Fatal("LastOutput did not move")
	}
}

// A worker keeps logging while the hive is gone; a new Watcher re-adopts
// its file and sees both what was written meanwhile (in the ring) and what
// comes next.
func TestReadoptionAfterHiveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	w1, err := NewWatcher(Options{})
	if err != nil {
		t.Fatal(err)
	}
	l1 := open(t, w1, path)
	cmd := exec.Command("/bin/sh", "-c", `echo first; read x; echo "while down"; read x; echo after`)
	cf, err := l1.ChildFile()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = cf, cf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cf.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	eventually(t, "first", func() bool { return lastLine(l1) == "first" })
	if err := w1.Close(); err != nil { // the hive goes away
		t.Fatal(err)
	}
	io.WriteString(stdin, "go\n")
	// Wait until the child has written, by the file's size.
	eventually(t, "the child to write while the hive is down", func() bool {
		b, _ := os.ReadFile(path)
		return strings.HasSuffix(string(b), "while down\n")
	})

	w2 := newWatcher(t, Options{})
	l2 := open(t, w2, path)
	if got := l2.Tail(0); !equal(got, []string{"first", "while down"}) {
		t.Fatalf("re-adopted Tail = %q", got)
	}
	io.WriteString(stdin, "go\n")
	eventually(t, "after", func() bool { return lastLine(l2) == "after" })
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

// writeAndFollow runs a child writing x1..x<total> to l and returns what a
// follower saw, after checking the lines are in increasing order.
func writeAndFollow(t *testing.T, l *Log, total int) []string {
	t.Helper()
	var c collector
	stop, _ := follow(l, -1, c.add)
	waitFollowers(t, l, 1)
	runChild(t, l, fmt.Sprintf(`for i in $(seq 1 %d); do echo x$i; done`, total))
	// The child has exited; after Sync and the rotation under way a last
	// line must arrive whatever was lost before.
	l.Sync()
	l.waitRotation()
	runChild(t, l, `echo end`)
	eventually(t, "the end line", func() bool { return c.last() == "end" })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	got := c.get()
	got = got[:len(got)-1]
	prev := 0
	for _, s := range got {
		i, err := strconv.Atoi(strings.TrimPrefix(s, "x"))
		if err != nil || i <= prev {
			t.Fatalf("line %q after x%d", s, prev)
		}
		prev = i
	}
	return got
}

func checkRotated(t *testing.T, l *Log, maxBytes int64) {
	t.Helper()
	l.waitRotation()
	fi, err := os.Stat(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	// At most the cap plus what one read after it brought in.
	if fi.Size() > maxBytes+64<<10 {
		t.Fatalf("log file is %d bytes with MaxBytes %d", fi.Size(), maxBytes)
	}
	old, err := os.ReadFile(l.Path() + ".1")
	if err != nil {
		t.Fatalf("no rotated file: %v", err)
	}
	if len(old) == 0 || !strings.Contains(string(old), "\nx") {
		t.Fatalf("rotated file has %d bytes: %.40q", len(old), old)
	}
	fi1, _ := os.Stat(l.Path() + ".1")
	if fi1.Mode().Perm() != 0o600 {
		t.Fatalf("rotated file mode %v", fi1.Mode().Perm())
	}
	if _, err := os.Stat(l.Path() + ".1.tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary rotation file left behind: %v", err)
	}
}

// On ext4/xfs rotation collapses the file's head in place: no line is lost
// while the child keeps writing.
func TestRotationAtMaxBytesLosesNothing(t *testing.T) {
	const total = 3000
	w := newWatcher(t, Options{MaxBytes: 4096, RingLines: 50, FollowBuffer: 1 << 20})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	got := writeAndFollow(t, l, total)
	checkRotated(t, l, 4096)
	l.mu.Lock()
	noCollapse := l.noCollapse
	l.mu.Unlock()
	if noCollapse {
		t.Logf("the test directory's filesystem cannot collapse ranges; copytruncate was used")
		return
	}
	if len(got) != total {
		t.Fatalf("follower saw %d of %d lines", len(got), total)
	}
}

// Where collapsing is unsupported (tmpfs), copytruncate is used: the child's
// O_APPEND fd keeps working and lines stay in order; a few may be lost.
func TestRotationByCopyTruncate(t *testing.T) {
	const total = 3000
	w := newWatcher(t, Options{MaxBytes: 4096, RingLines: 50, FollowBuffer: 1 << 20})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	l.mu.Lock()
	l.noCollapse = true
	l.mu.Unlock()
	got := writeAndFollow(t, l, total)
	checkRotated(t, l, 4096)
	t.Logf("copytruncate lost %d of %d lines", total-len(got), total)
}

func TestFileTruncatedUnderneath(t *testing.T) {
	w := newWatcher(t, Options{})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	runChild(t, l, `for i in $(seq 1 20); do echo before$i; done`)
	eventually(t, "before20", func() bool { return lastLine(l) == "before20" })
	if err := os.Truncate(l.Path(), 0); err != nil {
		t.Fatal(err)
	}
	runChild(t, l, `echo after`)
	eventually(t, "after", func() bool { return lastLine(l) == "after" })
}

func TestFileReplacedUnderneath(t *testing.T) {
	w := newWatcher(t, Options{})
	path := filepath.Join(t.TempDir(), "w.log")
	l := open(t, w, path)
	runChild(t, l, `echo old`)
	eventually(t, "old", func() bool { return lastLine(l) == "old" })

	if err := os.WriteFile(path+".new", []byte("new1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new1 from the replacing file", func() bool { return lastLine(l) == "new1" })
	runChild(t, l, `echo new2`) // ChildFile opens the new file
	eventually(t, "new2", func() bool { return lastLine(l) == "new2" })
	if got := l.Tail(0); !equal(got, []string{"old", "new1", "new2"}) {
		t.Fatalf("Tail = %q", got)
	}
}

func TestFileDeletedThenChildFileRecreatesIt(t *testing.T) {
	w := newWatcher(t, Options{})
	path := filepath.Join(t.TempDir(), "w.log")
	l := open(t, w, path)
	runChild(t, l, `echo one`)
	eventually(t, "one", func() bool { return lastLine(l) == "one" })
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	runChild(t, l, `echo two`)
	eventually(t, "two", func() bool { return lastLine(l) == "two" })
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("ChildFile did not recreate the file: %v", err)
	}
}

func TestLongLinesSplitAndInvalidUTF8Replaced(t *testing.T) {
	w := newWatcher(t, Options{})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	runChild(t, l, `head -c 20000 /dev/zero | tr '\0' a; echo; printf '\377\376ok\r\n'; echo end`)
	eventually(t, "end", func() bool { return lastLine(l) == "end" })
	got := l.Tail(0)
	a := strings.Repeat("a", MaxLineBytes)
	want := []string{a, a, strings.Repeat("a", 20000-2*MaxLineBytes), "\uFFFDok", "end"}
	if !equal(got, want) {
		t.Fatalf("got %d lines of lengths %v, want %v", len(got), lens(got), lens(want))
	}
}

func TestSplitKeepsRunesWhole(t *testing.T) {
	w := newWatcher(t, Options{})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	f, err := l.ChildFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// "é" straddles the MaxLineBytes boundary; write it in two pieces so the
	// split happens on the unfinished line.
	line := strings.Repeat("a", MaxLineBytes-1) + "é" + "b"
	f.WriteString(line[:MaxLineBytes])
	f.WriteString(line[MaxLineBytes:] + "\n")
	eventually(t, "the second piece", func() bool { return lastLine(l) == "éb" })
	got := l.Tail(2)
	if got[0] != strings.Repeat("a", MaxLineBytes-1) {
		t.Fatalf("first piece has %d bytes", len(got[0]))
	}
	for _, s := range got {
		if !utf8.ValidString(s) {
			t.Fatalf("invalid UTF-8 piece %q", s)
		}
	}
}

func lens(ss []string) []int {
	var out []int
	for _, s := range ss {
		out = append(out, len(s))
	}
	return out
}

func TestManyFilesOneGoroutine(t *testing.T) {
	const files = 300
	runtime.GC()
	base := runtime.NumGoroutine()
	w := newWatcher(t, Options{})
	dir := t.TempDir()
	logs := make([]*Log, files)
	for i := range logs {
		logs[i] = open(t, w, filepath.Join(dir, fmt.Sprintf("w%d.log", i)))
	}
	if g := runtime.NumGoroutine(); g > base+1 {
		t.Fatalf("%d goroutines with %d files watched, %d before the Watcher", g, files, base)
	}
	cmds := make([]*exec.Cmd, files)
	for i, l := range logs {
		cmds[i] = startChild(t, l, fmt.Sprintf(`echo hello %d; echo bye %d >&2`, i, i))
	}
	for i, l := range logs {
		want := fmt.Sprintf("bye %d", i)
		eventually(t, want, func() bool { return lastLine(l) == want })
		if got := l.Tail(0); !equal(got, []string{fmt.Sprintf("hello %d", i), want}) {
			t.Fatalf("file %d: Tail = %q", i, got)
		}
	}
	if g := runtime.NumGoroutine(); g > base+1 {
		t.Fatalf("%d goroutines after output from %d files, %d before the Watcher", g, files, base)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range logs {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	w.mu.Lock()
	nw, nl := len(w.watches), len(w.logs)
	w.mu.Unlock()
	if nw != 0 || nl != 0 {
		t.Fatalf("after closing every Log the Watcher still has %d watches, %d logs", nw, nl)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestWatcherCloseLeaksNothing(t *testing.T) {
	fds := countFDs(t)
	w, err := NewWatcher(Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var waits []func() error
	for i := range 5 {
		l := open(t, w, filepath.Join(dir, fmt.Sprintf("w%d.log", i)))
		runChild(t, l, `echo hi`)
		_, wait := follow(l, -1, func(string) error { return nil })
		waits = append(waits, wait)
		waitFollowers(t, l, 1)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, wait := range waits {
		if err := wait(); err != nil {
			t.Fatalf("Follow after Watcher.Close = %v, want nil", err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := w.Open(filepath.Join(dir, "late.log")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close = %v, want ErrClosed", err)
	}
	if got := countFDs(t); got != fds {
		t.Fatalf("%d open fds after Close, %d before", got, fds)
	}
	// goleak in TestMain checks the goroutine.
}

func BenchmarkConsume(b *testing.B) {
	w, err := NewWatcher(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	l := &Log{w: w, ringCap: DefaultRingLines, followers: map[*follower]struct{}{}}
	chunk := []byte(strings.Repeat("INFO loaded tensor blk.12.attn_q.weight in 3ms\n", 1000))
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		l.mu.Lock()
		l.consumeLocked(chunk, true)
		l.mu.Unlock()
	}
}

func TestOpenSameFileTwiceIsRefused(t *testing.T) {
	w := newWatcher(t, Options{})
	dir := t.TempDir()
	path := filepath.Join(dir, "w.log")
	l := open(t, w, path)
	if _, err := w.Open(path); !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("second Open = %v, want ErrAlreadyOpen", err)
	}
	if err := os.Link(path, filepath.Join(dir, "link.log")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Open(filepath.Join(dir, "link.log")); !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("Open of a hard link = %v, want ErrAlreadyOpen", err)
	}
	// The first Log is unharmed.
	runChild(t, l, `echo still here`)
	eventually(t, "still here", func() bool { return lastLine(l) == "still here" })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := open(t, w, path) // free again
	if got := l2.Tail(0); !equal(got, []string{"still here"}) {
		t.Fatalf("re-Open Tail = %q", got)
	}
}

func TestLastOutputMovesWithEachOutput(t *testing.T) {
	w := newWatcher(t, Options{})
	l := open(t, w, filepath.Join(t.TempDir(), "w.log"))
	runChild(t, l, `echo one`)
	eventually(t, "one", func() bool { return lastLine(l) == "one" })
	first := l.LastOutput()
	for !time.Now().After(first) { // make sure the clock can tell the two apart
	}
	<-l.Changed() // drain
	runChild(t, l, `echo two`)
	select {
	case <-l.Changed():
	case <-time.After(waitFor):
		t.Fatal("Changed did not fire for the second output")
	}
	if second := l.LastOutput(); !second.After(first) {
		t.Fatalf("LastOutput did not move: %v then %v", first, second)
	}
	if d := time.Since(l.LastOutput()); d < 0 || d > waitFor {
		t.Fatalf("LastOutput is %v away from now", d)
	}
}

// Regression: the single watcher goroutine rotated a log under its mutex,
// so a rotation (a copy of up to 64 MiB) held up every other worker's
// output events, and the stall clocks behind them. The rotation's
// temporary file is a FIFO here: the rotation blocks until the test reads
// it, however fast the disk is.
func TestRotationDoesNotDelayOtherLogsOutput(t *testing.T) {
	for _, collapse := range []bool{true, false} {
		t.Run(fmt.Sprintf("collapse=%v", collapse), func(t *testing.T) {
			w := newWatcher(t, Options{MaxBytes: 4096})
			dir := t.TempDir()
			big := open(t, w, filepath.Join(dir, "big.log"))
			if !collapse {
				big.mu.Lock()
				big.noCollapse = true
				big.mu.Unlock()
			}
			other := open(t, w, filepath.Join(dir, "other.log"))
			fifo := big.Path() + ".1.tmp"
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			drained := make(chan error, 1)
			drain := func() {
				r, err := os.Open(fifo) // lets the rotation's open go on
				if err == nil {
					_, err = io.Copy(io.Discard, r)
					r.Close()
				}
				drained <- err
			}

			runChild(t, big, `i=0; while [ $i -lt 400 ]; do echo "a line of the big log, number $i"; i=$((i+1)); done`)
			eventually(t, "the big log's rotation to start", func() bool {
				big.mu.Lock()
				defer big.mu.Unlock()
				return big.rotated != nil
			})
			select {
			case <-other.Changed():
			default:
			}
			runChild(t, other, `echo hello`)
			select {
			case <-other.Changed():
			case <-time.After(waitFor):
				go drain()
				<-drained
				t.Fatal("another log's output event waited for a rotation")
			}
			if got := lastLine(other); got != "hello" {
				t.Fatalf("other log's last line %q", got)
			}
			if got := lastLine(big); got != "a line of the big log, number 399" {
				t.Fatalf("big log's Tail waited or lost lines during the rotation: %q", got)
			}
			go drain()
			big.waitRotation()
			if err := <-drained; err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(big.Path())
			if err != nil || fi.Size() > 4096+64<<10 {
				t.Fatalf("big log after rotation: %v, %v", fi, err)
			}
		})
	}
}
