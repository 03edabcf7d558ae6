package state

import (
	"errors"
	"testing"
)

func TestCheckAllowsOnlyDrawnTransitions(t *testing.T) {
	allowed := map[[2]State]bool{}
	for from, tos := range transitions {
		for _, to := range tos {
			allowed[[2]State{from, to}] = true
		}
	}
	for _, from := range All {
		for _, to := range All {
			err := Check(from, to)
			if allowed[[2]State{from, to}] {
				if err != nil {
					t.Errorf("%s → %s refused: %v", from, to, err)
				}
				continue
			}
			if !errors.Is(err, ErrInvalidTransition) {
				t.Errorf("%s → %s: want ErrInvalidTransition, got %v", from, to, err)
			}
		}
	}
	for _, s := range []State{Terminated} {
		for _, to := range All {
			if Check(s, to) == nil {
				t.Errorf("terminal %s may move to %s", s, to)
			}
		}
	}
}

func TestReasonsEndWhereSpecSays(t *testing.T) {
	for _, r := range []Reason{Stopped, Killed, IdleTimeout, HiveShutdown} {
		if r.End() != Terminated {
			t.Errorf("%s ends %s", r, r.End())
		}
	}
	for _, r := range []Reason{Exited, Crashed, OOMKilled, ReadyTimeout, HealthCheckFailed, HeartbeatTimeout, SpawnFailed, CrashLoop} {
		if r.End() != Failed {
			t.Errorf("%s ends %s", r, r.End())
		}
	}
	for _, r := range Reasons {
		if p, err := ParseReason(string(r)); err != nil || p != r {
			t.Errorf("ParseReason(%s) = %v, %v", r, p, err)
		}
	}
	for _, s := range All {
		if p, err := Parse(string(s)); err != nil || p != s {
			t.Errorf("Parse(%s) = %v, %v", s, p, err)
		}
	}
	if _, err := Parse("bogus"); err == nil {
		t.Error("Parse(bogus) succeeded")
	}
}
