// Package e2e drives real rbee-hive daemons and real worker processes
// through the real HTTP API and CLI.
package e2e

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/rbee/rbee-hive/internal/process"
)

func TestMain(m *testing.M) {
	// Workers whose parent (a daemon) was SIGKILLed are re-parented to this
	// process instead of a PID 1 that may never reap them.
	if err := process.BecomeSubreaper(); err != nil {
		panic(err)
	}
	r, err := process.StartReaper(nil)
	if err != nil {
		panic(err)
	}
	code := m.Run()
	r.Close()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("internal/poll.runtime_pollWait")); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}
