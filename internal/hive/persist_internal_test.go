package hive

import (
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/state"
)

// The records on a cold start's path to its first byte (spawning, loading,
// the first ready state) and on a restart's path (failed, backoff) are
// written without fsync; every other durable change still is.
func TestStartAndRestartStepsAreWrittenWithoutFsync(t *testing.T) {
	cases := []struct {
		from, to state.State
		step     bool // written without fsync
		later    bool // fsynced in the background
	}{
		{"", state.Spawning, true, false},
		{state.Backoff, state.Spawning, true, false},
		{state.Spawning, state.Loading, true, true}, // the first record with the PID
		{state.Loading, state.Idle, true, true},
		{state.Spawning, state.Idle, true, true}, // an rbee worker's ready callback before the exec was seen
		{state.Idle, state.Busy, false, false},   // not written at all (persist)
		{state.Idle, state.Stopping, false, false},
		{state.Stopping, state.Terminated, false, false},
		{state.Busy, state.Failed, true, true},
		{state.Stopping, state.Failed, true, true},
		{state.Failed, state.Backoff, true, true},
		{state.Backoff, state.Terminated, false, false},
		{state.Stopping, state.Spawning, true, false}, // a restart's new process
	}
	for _, c := range cases {
		ev := &apiv1.Event{From: c.from, To: c.to}
		if got := unsynced(ev); got != c.step {
			t.Errorf("%s -> %s: written without fsync %v, want %v", c.from, c.to, got, c.step)
		}
		if got := syncedSoon(ev); got != c.later {
			t.Errorf("%s -> %s: fsynced in the background %v, want %v", c.from, c.to, got, c.later)
		}
	}
}

// The first ready record is written in the background; a later change
// written meanwhile (a stop, say) must not be overwritten by it, and one
// written after it must land after it.
func TestBackgroundRecordWriteNeverOverwritesALaterChange(t *testing.T) {
	var o recordOrder
	var got []string
	put := func(s string) func() { return func() { got = append(got, s) } }

	write := o.later() // idle, written later
	o.now(put("stopping"))
	if write(put("idle")) {
		t.Fatal("the background write ran after a later change was written")
	}
	if len(got) != 1 || got[0] != "stopping" {
		t.Fatalf("written %v, want [stopping]", got)
	}

	got = nil
	write = o.later()
	if !write(put("idle")) {
		t.Fatal("the background write, still the latest, did not run")
	}
	o.now(put("stopping"))
	if len(got) != 2 || got[0] != "idle" || got[1] != "stopping" {
		t.Fatalf("written %v, want [idle stopping]", got)
	}
}

// The owner waits for the spawning record, written in the background,
// before its process starts (WaitWritten): the wait returns only once the
// write is done.
func TestWaitingForBackgroundWritesWaitsForTheWrite(t *testing.T) {
	var o recordOrder
	write := o.later()
	done := false
	go func() {
		time.Sleep(20 * time.Millisecond)
		write(func() { done = true })
	}()
	o.pending.Wait()
	if !done {
		t.Fatal("the wait returned before the background write was done")
	}
	// A write dropped because a later one came first ends the wait too.
	write = o.later()
	o.now(func() {})
	go write(func() { t.Error("a superseded write ran") })
	o.pending.Wait()
}
