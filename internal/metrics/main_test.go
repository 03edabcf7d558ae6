package metrics_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/rbee/rbee-hive/internal/process"
)

func TestMain(m *testing.M) {
	// Workers of a daemon that died are re-parented here and reaped.
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
