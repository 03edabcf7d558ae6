// Package logs captures worker output. A worker's stdout and stderr are not
// pipes to the hive: the hive opens a per-worker log file and hands that file
// to the child as fds 1 and 2, so the worker keeps logging while the hive is
// down and a grandchild holding the descriptors can block nothing. One Watcher
// per hive tails every such file with a single inotify instance and a single
// goroutine (no per-file polling), keeping for each file a bounded ring of
// recent lines, streaming new lines to followers, noting when output last
// arrived, and capping the file's size by rotation.
//
// Lines are split at '\n'; a trailing '\r' is dropped; a line longer than
// MaxLineBytes is cut into pieces of at most MaxLineBytes bytes (on a UTF-8
// rune boundary where possible). Invalid UTF-8 is replaced by U+FFFD, so every
// line handed out is valid UTF-8 and safe to put into JSON as is.
package logs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Defaults for the zero fields of Options.
const (
	DefaultRingLines    = 200
	DefaultMaxBytes     = 64 << 20
	DefaultFollowBuffer = 4096
)

// MaxLineBytes is the longest line kept whole; longer lines are split.
const MaxLineBytes = 8 << 10

// watchMask is what each file is watched for: new bytes, and the signs that
// the path may now name another file (unlink or rename over it, move away).
const watchMask = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_MOVE_SELF | unix.IN_DELETE_SELF

// Errors callers may branch on.
var (
	// ErrClosed is returned by calls on a closed Watcher or Log.
	ErrClosed = errors.New("logs: closed")
	// ErrAlreadyOpen is returned by Open for a file (the same inode, under
	// any path) that another open Log of the same Watcher tails.
	ErrAlreadyOpen = errors.New("log file already open")
)

// Options configure a Watcher. The zero value is usable.
type Options struct {
	// RingLines is how many recent lines each Log keeps in memory.
	// Zero or negative means DefaultRingLines (200).
	RingLines int
	// MaxBytes caps a log file's size in bytes. When the hive has read past
	// it, the file's older bytes move to <path>.1 (replacing an older .1)
	// and the file shrinks; the child's O_APPEND descriptor keeps working.
	// On filesystems that can collapse a range (ext4, xfs) nothing is lost
	// and the file keeps its last partial block, so <path>.1 may start and
	// end mid-line. Elsewhere (tmpfs) it is logrotate's copytruncate, and
	// bytes the child writes in the instant between the final catch-up read
	// and the truncate are lost. Zero means DefaultMaxBytes (64 MiB);
	// negative means no cap.
	MaxBytes int64
	// FollowBuffer is how many lines a follower may lag behind before lines
	// are dropped for it (it then sees a "... N lines dropped" line). The
	// queue grows only as far as the follower lags. Zero or negative means
	// DefaultFollowBuffer (4096).
	FollowBuffer int
	// Logger receives rotation notices and read errors. Nil discards them.
	Logger *slog.Logger
}

// Watcher tails many log files with one inotify instance and one goroutine,
// which blocks in the netpoller while no file changes (no polling). Create
// it with NewWatcher; one per hive. It is safe for concurrent use. The
// goroutine reads new bytes for every file, so Tail on a file being read
// waits for that read; followers never hold it up.
type Watcher struct {
	opts Options
	log  *slog.Logger
	inf  *os.File // the inotify fd, read through the netpoller
	fd   int      // inf's descriptor, for add/rm watch; used only under mu while !closed
	done chan struct{}
	// rotations counts the rotations under way (each in its own goroutine).
	rotations sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	watches map[int32]*Log // watch descriptor → the Log tailing that inode
	logs    map[*Log]struct{}
}

// NewWatcher starts a Watcher and its goroutine. Call Close to stop it.
func NewWatcher(opts Options) (*Watcher, error) {
	if opts.RingLines <= 0 {
		opts.RingLines = DefaultRingLines
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.FollowBuffer <= 0 {
		opts.FollowBuffer = DefaultFollowBuffer
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("logs: inotify_init1: %w", err)
	}
	w := &Watcher{
		opts:    opts,
		log:     lg,
		inf:     os.NewFile(uintptr(fd), "inotify"),
		fd:      fd,
		done:    make(chan struct{}),
		watches: make(map[int32]*Log),
		logs:    make(map[*Log]struct{}),
	}
	go w.run()
	return w, nil
}

// Close stops the goroutine, waits for it, and closes every Log still open
// (their followers return; their rings stay readable). It is idempotent.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return nil
	}
	w.closed = true
	open := make([]*Log, 0, len(w.logs))
	for l := range w.logs {
		open = append(open, l)
	}
	w.mu.Unlock()

	err := w.inf.Close() // wakes the blocked Read in run
	<-w.done
	for _, l := range open {
		l.Close()
	}
	w.rotations.Wait() // a closed Log's rotation gives up at its next step
	if err != nil {
		return fmt.Errorf("logs: close inotify: %w", err)
	}
	return nil
}

// run is the Watcher's one goroutine: it reads inotify events and lets each
// affected Log read its new bytes.
func (w *Watcher) run() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	pending := make(map[*Log]uint32)
	var order []*Log
	for {
		n, err := w.inf.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			w.log.Error("logs: reading inotify events failed; output capture stopped", "err", err)
			return
		}
		// Collect the batch first, so a file written many times in it is
		// read once.
		overflow := false
		w.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := binary.NativeEndian.Uint32(buf[off+12:])
			off += unix.SizeofInotifyEvent + int(nameLen)
			if mask&unix.IN_Q_OVERFLOW != 0 {
				overflow = true
				continue
			}
			if l := w.watches[wd]; l != nil {
				if _, ok := pending[l]; !ok {
					order = append(order, l)
				}
				pending[l] |= mask
			}
		}
		if overflow {
			// Events were lost: look at every file.
			for l := range w.logs {
				if _, ok := pending[l]; !ok {
					order = append(order, l)
				}
				pending[l] |= unix.IN_MODIFY | unix.IN_ATTRIB
			}
		}
		w.mu.Unlock()
		for _, l := range order {
			l.handle(pending[l])
		}
		clear(pending)
		clear(order)
		order = order[:0]
	}
}

// watch adds an inotify watch on path for l and returns its descriptor.
// The file must not be tailed by another Log of this Watcher.
func (w *Watcher) watch(l *Log, path string) (int32, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return -1, ErrClosed
	}
	wd, err := unix.InotifyAddWatch(w.fd, path, watchMask)
	if err != nil {
		return -1, fmt.Errorf("logs: inotify_add_watch %s: %w", path, err)
	}
	if other := w.watches[int32(wd)]; other != nil && other != l {
		// Same inode, same mask: the add changed nothing for other.
		return -1, fmt.Errorf("logs: %s: %w (as %s)", path, ErrAlreadyOpen, other.path)
	}
	w.watches[int32(wd)] = l
	w.logs[l] = struct{}{}
	return int32(wd), nil
}

// unwatch drops the watch wd of l. When forget is set, l is also forgotten
// by the Watcher.
func (w *Watcher) unwatch(l *Log, wd int32, forget bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if forget {
		delete(w.logs, l)
	}
	if w.watches[wd] != l {
		return
	}
	delete(w.watches, wd)
	if !w.closed {
		// EINVAL here means the kernel already dropped the watch (file gone).
		_, _ = unix.InotifyRmWatch(w.fd, uint32(wd))
	}
}

// Open starts tailing the log file at path, creating it (mode 0600) if it is
// missing. When it exists — a worker re-adopted after a hive restart — reading
// starts at its current end, but its last RingLines lines are loaded into the
// ring first (they do not count as new output for LastOutput or Changed).
// A file another open Log of w tails (same inode, any path) is refused with
// ErrAlreadyOpen; after Close, ErrClosed. Open does not block beyond the
// file reads it needs. The Log lives until Log.Close or Watcher.Close.
func (w *Watcher) Open(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("logs: open: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("logs: open: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("logs: open %s: not a regular file", path)
	}
	l := &Log{
		w:         w,
		path:      path,
		ringCap:   w.opts.RingLines,
		changed:   make(chan struct{}, 1),
		f:         f,
		followers: make(map[*follower]struct{}),
	}
	l.dev, l.ino = fileID(fi)

	// Hold l.mu until l is fully set up: the watcher goroutine may see an
	// event for it as soon as the watch exists.
	l.mu.Lock()
	defer l.mu.Unlock()
	size := fi.Size()
	if err := l.loadTailLocked(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("logs: open %s: %w", path, err)
	}
	l.off = size
	wd, err := w.watch(l, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	l.wd = wd
	l.readLocked() // bytes written before the watch existed; may rotate
	return l, nil
}

// fileID returns the device and inode of fi.
func fileID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino)
	}
	return 0, 0
}
