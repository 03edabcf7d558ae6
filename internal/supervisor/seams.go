package supervisor

// What the owner uses of the world outside it — the process, the readiness
// and liveness probe, the worker's log — as small interfaces. Production
// wires the real ones (process.Proc, probe.Prober, logs.Log); the tests in
// this package put the owner on channel-based fakes, so that
// testing/synctest runs its timers on virtual time (a bubble's clock only
// moves while every goroutine in it waits on a channel or a timer, never on
// a syscall). The timers need no seam: inside a bubble the time package
// itself is virtual.

import (
	"os"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/logs"
	"github.com/rbee/rbee-hive/internal/probe"
	"github.com/rbee/rbee-hive/internal/process"
)

// proc is a worker's process as the owner uses it (process.Proc).
type proc interface {
	Done() <-chan struct{}
	Exit() process.Exit
	Signal(sig syscall.Signal) error
	SignalGroup(sig syscall.Signal) error
	GroupAlive() bool
	Close() error
	// ident is what the record keeps to adopt the process again.
	ident() procIdent
}

type procIdent struct {
	PID, PGID int
	StartTime uint64
	BootID    string
}

// realProc is the production proc.
type realProc struct{ *process.Proc }

func (p realProc) ident() procIdent {
	return procIdent{PID: p.PID, PGID: p.PGID, StartTime: p.StartTime, BootID: p.BootID}
}

// prober is one held probe connection (probe.Prober).
type prober interface {
	Addr() string
	Get(path string, want int, timeout time.Duration) error
	Close()
}

// workerLog is the worker's output log as the owner uses it (logs.Log).
type workerLog interface {
	Path() string
	ChildFile() (*os.File, error)
	Sync()
	Tail(n int) []string
	Changed() <-chan struct{}
	Close() error
}

// seams replaces the real process start, probe and log (tests only; a nil
// *seams or a nil field: the real one).
type seams struct {
	start    func(process.Spec) (proc, error)
	newProbe func(addr string) prober
	openLog  func(path string) (workerLog, error)
}

func (d *Deps) startProc(spec process.Spec) (proc, error) {
	if d.seams != nil && d.seams.start != nil {
		return d.seams.start(spec)
	}
	p, err := process.Start(spec)
	if err != nil {
		return nil, err
	}
	return realProc{p}, nil
}

func (d *Deps) newProber(addr string) prober {
	if d.seams != nil && d.seams.newProbe != nil {
		return d.seams.newProbe(addr)
	}
	return probe.New(addr)
}

// openLog opens the worker's log; the *logs.Log is nil under a seam.
func (d *Deps) openLog(path string) (workerLog, *logs.Log, error) {
	if d.seams != nil && d.seams.openLog != nil {
		l, err := d.seams.openLog(path)
		return l, nil, err
	}
	l, err := d.Logs.Open(path)
	if err != nil {
		return nil, nil, err
	}
	return l, l, nil
}
