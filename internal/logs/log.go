package logs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Log is one tailed log file. Get one from Watcher.Open. All methods are safe
// for concurrent use. After Close the ring stays readable (Tail), which is
// what a post-mortem view needs.
type Log struct {
	w       *Watcher
	path    string
	ringCap int
	changed chan struct{}
	last    atomic.Pointer[time.Time] // when new bytes were last read; nil: never

	mu        sync.Mutex
	closed    bool
	f         *os.File // O_RDWR on the file now at path (read with pread, truncated on rotation)
	dev, ino  uint64   // identity of f
	wd        int32    // inotify watch on f's inode
	off       int64    // how far f has been read
	partial   []byte   // bytes after the last '\n'
	ring      []string // up to ringCap lines; oldest at head once full
	head      int
	followers map[*follower]struct{}
	errLogged bool
	// noCollapse: the filesystem cannot collapse ranges; rotate by copytruncate.
	noCollapse bool
	// rotated is closed when the rotation under way ends; nil when none is.
	rotated chan struct{}
}

// follower is one Follow call's mailbox: a queue bounded by
// Options.FollowBuffer, filled by the watcher without blocking, drained by
// the Follow call. Lock order: Log.mu, then follower.mu.
type follower struct {
	limit int
	wake  chan struct{} // capacity 1: "the queue or closed changed"

	mu      sync.Mutex
	queue   []item
	dropped int  // lines dropped since the last queued item
	closed  bool // the Log is closed: nothing more will be queued
}

// item is a line for a follower, with the count of lines dropped just before it.
type item struct {
	line    string
	dropped int
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// Path returns the file's path.
func (l *Log) Path() string { return l.path }

// ChildFile opens a new O_WRONLY|O_APPEND descriptor on the log file (creating
// it, mode 0600, if it has gone missing) for a child's stdout and stderr. The
// caller closes it once the child has started. If the path now names another
// file than the one being tailed, tailing switches to it.
func (l *Log) ChildFile() (*os.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	cf, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("logs: child file: %w", err)
	}
	fi, err := cf.Stat()
	if err != nil {
		cf.Close()
		return nil, fmt.Errorf("logs: child file: %w", err)
	}
	if dev, ino := fileID(fi); dev != l.dev || ino != l.ino {
		l.switchLocked()
	}
	return cf, nil
}

// Sync reads any new bytes now, so that what the child wrote before this
// call is in the ring. Call it before reporting a spawn failure. It blocks
// only for the reads. A no-op after Close.
func (l *Log) Sync() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.readLocked()
}

// Tail returns the last n lines, oldest first; an unfinished last line is
// included (and counts as one of the n). n <= 0 means all lines in the ring.
func (l *Log) Tail(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tailLocked(n, true)
}

// LastOutput returns when new bytes were last read from the file; zero if
// never. Lines loaded by Open from an existing file do not count.
func (l *Log) LastOutput() time.Time {
	if t := l.last.Load(); t != nil {
		return *t
	}
	return time.Time{}
}

// Changed returns a channel that receives a value (sent without blocking on a
// channel of capacity 1) whenever new bytes have been read, so an owner can
// reset a stall timer without polling. Several changes may yield one value.
func (l *Log) Changed() <-chan struct{} { return l.changed }

// Follow calls fn for each new complete line, in order, as it arrives, until
// ctx is done (returning ctx.Err()), fn returns an error (returned as is), or
// the Log is closed (returning nil, at once if it already is). fn runs on the
// caller's goroutine. A follower that falls more than Options.FollowBuffer
// lines behind loses lines and is told so by a line "... N lines dropped"; it
// never slows the watcher or other followers.
func (l *Log) Follow(ctx context.Context, fn func(line string) error) error {
	return l.follow(ctx, -1, fn)
}

// TailFollow is Tail(n) followed by Follow, with no line lost or repeated in
// between. The unfinished last line is not part of the tail here: it is
// delivered whole once it is complete. n <= 0 means all complete lines in the
// ring. On a closed Log it delivers the tail and returns nil.
func (l *Log) TailFollow(ctx context.Context, n int, fn func(line string) error) error {
	if n <= 0 {
		n = 0
	}
	return l.follow(ctx, n, fn)
}

func (l *Log) follow(ctx context.Context, n int, fn func(string) error) error {
	l.mu.Lock()
	var backlog []string
	if n >= 0 {
		backlog = l.tailLocked(n, false)
	}
	if l.closed {
		l.mu.Unlock()
		for _, s := range backlog {
			if err := fn(s); err != nil {
				return err
			}
		}
		return nil
	}
	f := &follower{limit: l.w.opts.FollowBuffer, wake: make(chan struct{}, 1)}
	l.followers[f] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.followers, f)
		l.mu.Unlock()
	}()

	for _, s := range backlog {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(s); err != nil {
			return err
		}
	}
	var batch []item
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		f.mu.Lock()
		batch, f.queue = f.queue, batch[:0]
		closed, dropped := f.closed, f.dropped
		f.mu.Unlock()
		for i, it := range batch {
			if i > 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if it.dropped > 0 {
				if err := fn(dropMarker(it.dropped)); err != nil {
					return err
				}
			}
			if err := fn(it.line); err != nil {
				return err
			}
		}
		clear(batch) // let the strings go
		if closed {
			if dropped > 0 {
				return fn(dropMarker(dropped))
			}
			return nil
		}
		if len(batch) > 0 {
			continue // more may have come meanwhile
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.wake:
		}
	}
}

func dropMarker(n int) string { return fmt.Sprintf("... %d lines dropped", n) }

// Close stops watching the file (it stays on disk). It reads the bytes still
// unread first, hands an unfinished last line to followers as a line, and
// then makes every Follow return. The ring stays readable. Idempotent.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.readLocked()
	if len(l.partial) > 0 {
		s := validString(l.partial)
		for f := range l.followers {
			f.offer(s)
		}
	}
	l.closed = true
	for f := range l.followers {
		f.close()
	}
	err := l.f.Close()
	wd := l.wd
	l.mu.Unlock()

	l.w.unwatch(l, wd, true)
	if err != nil {
		return fmt.Errorf("logs: close %s: %w", l.path, err)
	}
	return nil
}

// handle reacts to the inotify events in mask; called by the watcher goroutine.
func (l *Log) handle(mask uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if mask&(unix.IN_ATTRIB|unix.IN_MOVE_SELF|unix.IN_DELETE_SELF|unix.IN_IGNORED) != 0 {
		// The path may name another file now (renamed over, deleted and
		// recreated). While nothing is at the path, keep tailing the old
		// inode: the child still writes there.
		if fi, err := os.Stat(l.path); err == nil {
			if dev, ino := fileID(fi); dev != l.dev || ino != l.ino {
				l.switchLocked()
				return
			}
		}
	}
	l.readLocked()
}

// switchLocked moves tailing to the file now at l.path, reading it from 0.
// The old file is drained first and its unfinished last line ends as a line.
func (l *Log) switchLocked() {
	l.readLocked()
	nf, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		l.logErr("reopen", err)
		return
	}
	fi, err := nf.Stat()
	if err != nil {
		nf.Close()
		l.logErr("reopen", err)
		return
	}
	dev, ino := fileID(fi)
	if dev == l.dev && ino == l.ino {
		nf.Close()
		return
	}
	wd, err := l.w.watch(l, l.path)
	if err != nil {
		nf.Close()
		l.logErr("reopen", err)
		return
	}
	if wd != l.wd {
		l.w.unwatch(l, l.wd, false)
	}
	if len(l.partial) > 0 {
		l.emitLocked(l.partial, true)
		l.partial = l.partial[:0]
	}
	l.f.Close()
	l.f, l.dev, l.ino, l.wd, l.off = nf, dev, ino, wd, 0
	l.w.log.Info("logs: file replaced, tailing the new one from its start", "path", l.path)
	l.readLocked()
}

// readLocked reads the bytes appended since the last read, up to the size
// seen at its start (so a child writing without pause cannot hold the watcher
// goroutine: later bytes come with later events), then rotates when over the
// cap. A file shorter than what was read was truncated: it is read from 0.
func (l *Log) readLocked() {
	if l.closed {
		return
	}
	fi, err := l.f.Stat()
	if err != nil {
		l.logErr("stat", err)
		return
	}
	size := fi.Size()
	if size < l.off {
		if len(l.partial) > 0 {
			l.emitLocked(l.partial, true)
			l.partial = l.partial[:0]
		}
		l.off = 0
	}
	if size == l.off {
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	got := false
	for l.off < size {
		want := min(int64(len(buf)), size-l.off)
		n, err := l.f.ReadAt(buf[:want], l.off)
		if n > 0 {
			l.off += int64(n)
			l.consumeLocked(buf[:n], true)
			got = true
		}
		if err != nil {
			if err != io.EOF {
				l.logErr("read", err)
			}
			break
		}
	}
	if got {
		now := time.Now()
		l.last.Store(&now)
		select {
		case l.changed <- struct{}{}:
		default:
		}
	}
	if limit := l.w.opts.MaxBytes; limit > 0 && l.off > limit {
		l.startRotationLocked()
	}
}

// startRotationLocked hands the rotation to a goroutine of its own (one
// per Log at a time), so that the copy of up to MaxBytes never runs on the
// watcher goroutine nor under l.mu: other logs' output events, and this
// log's Tail, Sync and followers, are not held up by it.
func (l *Log) startRotationLocked() {
	if l.rotated != nil {
		return // one is under way; it looks at the size again when done
	}
	l.rotated = make(chan struct{})
	l.w.rotations.Add(1)
	go l.rotate()
}

// rotate rotates until the file is under the cap (more may have been
// read meanwhile) or a rotation fails.
func (l *Log) rotate() {
	defer l.w.rotations.Done()
	for {
		ok := l.rotateOnce()
		l.mu.Lock()
		again := ok && !l.closed && l.w.opts.MaxBytes > 0 && l.off > l.w.opts.MaxBytes
		if !again {
			close(l.rotated)
			l.rotated = nil
		}
		l.mu.Unlock()
		if !again {
			return
		}
	}
}

// waitRotation waits for a rotation under way, if any.
func (l *Log) waitRotation() {
	l.mu.Lock()
	ch := l.rotated
	l.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// rotateOnce moves the file's older bytes to <path>.1 (replacing it) so the
// file shrinks below the cap, without disturbing the child's O_APPEND fd.
// It runs without l.mu but for the steps that change the file's size.
//
// Where the filesystem supports it (ext4, xfs, and overlayfs on them):
//  1. Pick n: the read bytes, rounded down to the block size, short of EOF.
//  2. Copy [0, n) into <path>.1.tmp (without the lock: these bytes do not
//     change, the file only grows at its end).
//  3. Under the lock, fallocate(FALLOC_FL_COLLAPSE_RANGE, 0, n): the kernel
//     drops the first n bytes, atomically with respect to the child's
//     appends, so nothing is lost; the file keeps its tail (less than a
//     block plus what is unread).
//  4. Rename the copy over <path>.1.
//
// Elsewhere (tmpfs, …) it falls back to copytruncate: copy what was read
// (without the lock, until less than copyUnlockedMin is left), then under
// the lock copy the rest, read and copy what was appended meanwhile,
// truncate to 0, rename. Bytes the child writes between that last read and
// the truncate are lost.
//
// When the file changed meanwhile (replaced, truncated underneath, the Log
// closed), the rotation is dropped; the next read past the cap starts again.
func (l *Log) rotateOnce() bool {
	dst := l.path + ".1"
	tmp := dst + ".tmp"
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	f, off, noCollapse := l.f, l.off, l.noCollapse
	l.mu.Unlock()
	// same is true while the Log still tails f from at least at; it is
	// checked under l.mu.
	same := func(at int64) bool { return !l.closed && l.f == f && l.off >= at }

	fi, err := f.Stat()
	if err != nil {
		l.rotateErr(err)
		return false
	}
	var n int64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && !noCollapse && st.Blksize > 0 {
		blk := int64(st.Blksize)
		n = min(off, fi.Size()-1) / blk * blk
	}
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		l.rotateErr(err)
		return false
	}
	drop := func(err error) bool {
		out.Close()
		os.Remove(tmp)
		if err != nil {
			l.rotateErr(err)
		}
		return false
	}
	how := "collapse"
	if n > 0 {
		if _, err := io.Copy(out, io.NewSectionReader(f, 0, n)); err != nil {
			return drop(err)
		}
		l.mu.Lock()
		if !same(n) {
			l.mu.Unlock()
			return drop(nil)
		}
		err := l.collapse(n)
		if err == nil {
			l.off -= n
		} else if errors.Is(err, unix.EOPNOTSUPP) {
			l.noCollapse = true
		}
		l.mu.Unlock()
		if err != nil {
			// Start over with copytruncate.
			if err := out.Truncate(0); err != nil {
				return drop(err)
			}
			if _, err := out.Seek(0, io.SeekStart); err != nil {
				return drop(err)
			}
			n = 0
		}
	}
	if n == 0 {
		how = "copytruncate"
		var copied int64
		for {
			l.mu.Lock()
			if !same(copied) {
				l.mu.Unlock()
				return drop(nil)
			}
			to := l.off
			if to-copied <= copyUnlockedMin {
				break // l.mu stays held for the rest
			}
			l.mu.Unlock()
			if _, err := io.Copy(out, io.NewSectionReader(f, copied, to-copied)); err != nil {
				return drop(err)
			}
			copied = to
		}
		err := l.copyTruncateLocked(out, copied)
		if err == nil {
			n = l.off
			l.off = 0
		}
		l.mu.Unlock()
		if err != nil {
			return drop(err)
		}
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		l.rotateErr(err)
		return false
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		l.rotateErr(err)
		return false
	}
	l.w.log.Info("logs: rotated log file", "path", l.path, "to", dst, "bytes", n, "how", how)
	return true
}

// copyUnlockedMin: a copytruncate copies what was read without the lock
// until less than this is left.
const copyUnlockedMin = 1 << 20

func (l *Log) rotateErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.logErr("rotate", err)
}

// collapse removes the first n bytes of the file.
func (l *Log) collapse(n int64) error {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Fallocate(int(fd), unix.FALLOC_FL_COLLAPSE_RANGE, 0, n)
			if ferr != unix.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	if ferr != nil {
		return fmt.Errorf("fallocate collapse range: %w", ferr)
	}
	return nil
}

// copyTruncateLocked copies the read bytes from offset from on to out (the
// rotation copied those before it already), catches up with what was
// appended meanwhile, and truncates the file to 0. The last catch-up read
// and the truncate are raw system calls issued back to back (no scheduler
// hand-off between them), to keep the window in which appends are lost as
// short as possible; the caught-up bytes reach the ring and out only after.
// The caller sets l.off to 0.
func (l *Log) copyTruncateLocked(out *os.File, from int64) error {
	if _, err := io.Copy(out, io.NewSectionReader(l.f, from, l.off-from)); err != nil {
		return err
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for range 64 { // bounded catch-up, the ordinary way
		n, err := l.f.ReadAt(buf, l.off)
		if n > 0 {
			l.off += int64(n)
			l.consumeLocked(buf[:n], true)
			if _, werr := out.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil || n < len(buf) {
			break
		}
	}
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var errno syscall.Errno
	cerr := rc.Control(func(fd uintptr) {
		r, _, e := syscall.RawSyscall6(syscall.SYS_PREAD64, fd,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(l.off), 0, 0)
		if e != 0 {
			r = 0
		}
		n = int(r)
		_, _, errno = syscall.RawSyscall(syscall.SYS_FTRUNCATE, fd, 0, 0)
	})
	if cerr != nil {
		return cerr
	}
	if n > 0 {
		l.off += int64(n)
		l.consumeLocked(buf[:n], true)
		if _, err := out.Write(buf[:n]); err != nil {
			return err
		}
	}
	if errno != 0 {
		return fmt.Errorf("ftruncate: %w", errno)
	}
	return nil
}

func (l *Log) logErr(op string, err error) {
	if l.errLogged {
		return
	}
	l.errLogged = true
	l.w.log.Warn("logs: "+op+" failed", "path", l.path, "err", err)
}

// consumeLocked splits p into lines. live lines go to followers too.
func (l *Log) consumeLocked(p []byte, live bool) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			// Emit what is already known to be too long, so the
			// unfinished line stays under MaxLineBytes.
			for len(l.partial) > MaxLineBytes {
				cut := cutPoint(l.partial)
				l.emitLocked(l.partial[:cut], live)
				l.partial = l.partial[:copy(l.partial, l.partial[cut:])]
			}
			break
		}
		line := p[:i]
		p = p[i+1:]
		if len(l.partial) > 0 {
			l.partial = append(l.partial, line...)
			line = l.partial
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		for len(line) > MaxLineBytes {
			cut := cutPoint(line)
			l.emitLocked(line[:cut], live)
			line = line[cut:]
		}
		l.emitLocked(line, live)
		l.partial = l.partial[:0]
	}
	if cap(l.partial) > 4*MaxLineBytes {
		l.partial = append([]byte(nil), l.partial...)
	}
}

// cutPoint returns where to cut b, longer than MaxLineBytes: at
// MaxLineBytes, moved back to the start of a UTF-8 sequence if that is near.
func cutPoint(b []byte) int {
	for c := MaxLineBytes; c > MaxLineBytes-utf8.UTFMax; c-- {
		if utf8.RuneStart(b[c]) {
			return c
		}
	}
	return MaxLineBytes
}

func (l *Log) emitLocked(b []byte, live bool) {
	s := validString(b)
	if len(l.ring) < l.ringCap {
		l.ring = append(l.ring, s)
	} else {
		l.ring[l.head] = s
		l.head = (l.head + 1) % l.ringCap
	}
	if live {
		for f := range l.followers {
			f.offer(s)
		}
	}
}

// offer queues s for the follower without blocking, counting it as dropped
// when the follower's queue is full.
func (f *follower) offer(s string) {
	f.mu.Lock()
	if len(f.queue) >= f.limit {
		f.dropped++
		f.mu.Unlock()
		return
	}
	f.queue = append(f.queue, item{line: s, dropped: f.dropped})
	f.dropped = 0
	f.mu.Unlock()
	f.notify()
}

// close tells the follower that nothing more will come.
func (f *follower) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.notify()
}

func (f *follower) notify() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (l *Log) tailLocked(n int, withPartial bool) []string {
	p := 0
	if withPartial && len(l.partial) > 0 {
		p = 1
	}
	total := len(l.ring) + p
	if n <= 0 || n > total {
		n = total
	}
	out := make([]string, 0, n)
	k := n - p
	for i := len(l.ring) - k; i < len(l.ring); i++ {
		out = append(out, l.ring[(l.head+i)%len(l.ring)])
	}
	if p == 1 {
		out = append(out, validString(l.partial))
	}
	return out
}

// loadTailLocked reads backwards from size until it has RingLines complete
// lines (or the start of the file) and puts them in the ring; the bytes after
// the last '\n' become the unfinished line.
func (l *Log) loadTailLocked(size int64) error {
	const chunk = 64 << 10
	limit := int64(l.ringCap) * (MaxLineBytes + 1)
	start := size
	var tail []byte
	newlines := 0
	for start > 0 && newlines <= l.ringCap && size-start < limit {
		n := min(int64(chunk), start)
		start -= n
		b := make([]byte, n, n+int64(len(tail)))
		if _, err := l.f.ReadAt(b, start); err != nil && err != io.EOF {
			return err
		}
		newlines += bytes.Count(b, []byte{'\n'})
		tail = append(b, tail...)
	}
	if start > 0 {
		// The first line is cut; drop it.
		if i := bytes.IndexByte(tail, '\n'); i >= 0 {
			tail = tail[i+1:]
		}
	}
	l.consumeLocked(tail, false)
	return nil
}

func validString(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return string(bytes.ToValidUTF8(b, []byte("\uFFFD")))
}
