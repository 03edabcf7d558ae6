package supervisor

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/state"
)

// The count of failed health checks is consecutive: a success resets it,
// so failures that never come three in a row never stop the worker.
func TestHealthSuccessResetsTheFailureCount(t *testing.T) {
	w := newWorker(Deps{Logger: slog.New(slog.DiscardHandler)},
		record.Spec{ID: "w", Settings: config.DefaultSettings(), Profile: config.Profile{Protocol: config.ProtocolRbee}})
	o := newOwner(w)
	o.cur = apiv1.WorkerInfo{ID: "w", PID: 42, State: state.Idle}
	fail := probeResult{kind: probeLiveness, pid: 42, err: errors.New("timeout")}
	ok := probeResult{kind: probeLiveness, pid: 42}
	steps := []struct {
		r    probeResult
		want int
	}{{fail, 1}, {fail, 2}, {ok, 0}, {fail, 1}, {fail, 2}, {ok, 0}}
	for i, s := range steps {
		o.probing = true
		o.onProbe(s.r)
		if o.cur.FailedHealthChecks != s.want || o.cur.State != state.Idle {
			t.Fatalf("step %d: failures %d state %s, want %d idle", i, o.cur.FailedHealthChecks, o.cur.State, s.want)
		}
		if got := w.Info().FailedHealthChecks; got != s.want {
			t.Fatalf("step %d: published failures %d, want %d", i, got, s.want)
		}
	}
	// A result from an earlier incarnation (another pid) is ignored.
	o.onProbe(probeResult{kind: probeLiveness, pid: 41, err: errors.New("old")})
	if o.cur.FailedHealthChecks != 0 {
		t.Fatal("a stale probe result counted")
	}
}

// A worker's last output quoted in the SPAWN_FAILED message carries no raw
// terminal escapes (OSC 52 clipboard write, screen clear).
func TestSpawnFailedMessageEscapesTerminalControls(t *testing.T) {
	e := &SpawnError{LastLine: []string{"\x1b]52;c;ZXZpbA==\x07\x1b[2J done\ttab \u202e"}}
	msg := e.Error()
	for _, bad := range []string{"\x1b", "\x07", "\u202e"} {
		if strings.Contains(msg, bad) {
			t.Fatalf("message carries %q: %q", bad, msg)
		}
	}
	if !strings.Contains(msg, `\x1b]52;c;ZXZpbA==\a\x1b[2J done`+"\ttab") {
		t.Fatalf("message %q", msg)
	}
}
