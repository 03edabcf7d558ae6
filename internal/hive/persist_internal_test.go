package hive

import (
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/state"
)

// The records on a cold start's path to its first byte (spawning, loading,
// the first ready state) are written without fsync; every other durable
// change still is.
func TestStartStepsAreWrittenWithoutFsync(t *testing.T) {
	cases := []struct {
		from, to state.State
		step     bool
	}{
		{"", state.Spawning, true},
		{state.Backoff, state.Spawning, true},
		{state.Spawning, state.Loading, true},
		{state.Loading, state.Idle, true},
		{state.Spawning, state.Idle, true}, // an rbee worker's ready callback before the exec was seen
		{state.Idle, state.Stopping, false},
		{state.Stopping, state.Terminated, false},
		{state.Busy, state.Failed, false},
		{state.Failed, state.Backoff, false},
		{state.Stopping, state.Spawning, true}, // a restart's new process
	}
	for _, c := range cases {
		if got := startStep(&apiv1.Event{From: c.from, To: c.to}); got != c.step {
			t.Errorf("%s -> %s: start step %v, want %v", c.from, c.to, got, c.step)
		}
	}
}
