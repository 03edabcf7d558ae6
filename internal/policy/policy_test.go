package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/state"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func rp(policy config.RestartPolicy, maxFailures int) config.Restart {
	return config.Restart{
		Policy: policy, BaseDelay: config.Duration(time.Second), MaxDelay: config.Duration(time.Minute),
		Jitter: 0, MaxFailures: maxFailures,
		Window: config.Duration(5 * time.Minute), ResetAfter: config.Duration(5 * time.Minute),
	}
}

// fails returns a history of n failures, one every 10 s ending 10 s before t0.
func fails(n int) History {
	var h History
	for i := range n {
		h.Failures = append(h.Failures, Failure{At: t0.Add(-time.Duration(n-i) * 10 * time.Second), Reason: state.Crashed})
	}
	h.Restarts = n
	return h
}

func TestDecideWhichReasonsRestart(t *testing.T) {
	failures := []state.Reason{state.Crashed, state.OOMKilled, state.ReadyTimeout,
		state.HealthCheckFailed, state.HeartbeatTimeout, state.SpawnFailed}
	asked := []state.Reason{state.Stopped, state.Killed, state.IdleTimeout, state.HiveShutdown}
	other := []state.Reason{state.CrashLoop, state.Restarting, state.None, "bogus"}
	type tc struct {
		policy config.RestartPolicy
		reason state.Reason
		want   bool
	}
	var cases []tc
	for _, p := range []config.RestartPolicy{config.RestartNever, config.RestartOnFailure, config.RestartAlways, ""} {
		for _, r := range failures {
			cases = append(cases, tc{p, r, p != config.RestartNever})
		}
		for _, r := range append(asked, other...) {
			cases = append(cases, tc{p, r, false})
		}
		cases = append(cases, tc{p, state.Exited, p == config.RestartAlways})
	}
	cases = append(cases, tc{"sometimes", state.Crashed, false})
	for _, c := range cases {
		d := Decide(rp(c.policy, 5), History{}, c.reason, t0, 0.5)
		if d.Restart != c.want {
			t.Errorf("policy %q reason %q: Restart = %v, want %v (%s)", c.policy, c.reason, d.Restart, c.want, d.Reason)
		}
		if d.CrashLoop {
			t.Errorf("policy %q reason %q: CrashLoop on the first failure", c.policy, c.reason)
		}
		if !d.Restart && d.Delay != 0 {
			t.Errorf("policy %q reason %q: no restart but Delay %s", c.policy, c.reason, d.Delay)
		}
		if d.Reason == "" {
			t.Errorf("policy %q reason %q: empty Reason", c.policy, c.reason)
		}
	}
}

func TestDecideAskedReasonNeverRestartsEvenInCrashLoop(t *testing.T) {
	for _, r := range []state.Reason{state.Stopped, state.Killed, state.IdleTimeout, state.HiveShutdown} {
		d := Decide(rp(config.RestartAlways, 3), fails(10), r, t0, 0.5)
		if d.Restart || d.CrashLoop {
			t.Errorf("%s: %+v", r, d)
		}
	}
}

func TestDecideExponentialDelayAndCap(t *testing.T) {
	r := rp(config.RestartAlways, 1000)
	cases := []struct {
		n      int
		want   time.Duration
		capped bool
	}{
		{0, 1 * time.Second, false},
		{1, 2 * time.Second, false},
		{2, 4 * time.Second, false},
		{5, 32 * time.Second, false},
		{6, time.Minute, true}, // 64 s capped at 60 s
		{7, time.Minute, true},
		{62, time.Minute, true},
		{500, time.Minute, true}, // 2^500 must not overflow
	}
	for _, c := range cases {
		h := fails(c.n)
		r.Window = 0 // keep all of them
		d := Decide(r, h, state.Crashed, t0, 0.5)
		if !d.Restart || d.Delay != c.want {
			t.Errorf("n=%d: Restart=%v Delay=%s, want %s (%s)", c.n, d.Restart, d.Delay, c.want, d.Reason)
		}
		if got := strings.Contains(d.Reason, "capped at 1m0s"); got != c.capped {
			t.Errorf("n=%d: reason %q, capped mention = %v", c.n, d.Reason, got)
		}
		if d.Next.Restarts != c.n+1 {
			t.Errorf("n=%d: Next.Restarts = %d", c.n, d.Next.Restarts)
		}
	}
}

func TestDecideReasonIsReadable(t *testing.T) {
	r := rp(config.RestartOnFailure, 5)
	r.Jitter = 0.2
	d := Decide(r, fails(2), state.Crashed, t0, 0.5)
	want := "restart 3 after crashed: waiting 4s (base 1s × 2^2 = 4s, ±20% jitter)"
	if d.Reason != want {
		t.Errorf("reason %q, want %q", d.Reason, want)
	}
	d = Decide(rp(config.RestartOnFailure, 3), fails(2), state.OOMKilled, t0, 0.5)
	want = "crash loop: 3 failures within 5m0s (max_failures 3), last oom_killed"
	if d.Reason != want {
		t.Errorf("reason %q, want %q", d.Reason, want)
	}
}

func TestDecideJitterBounds(t *testing.T) {
	for _, jitter := range []float64{0, 0.1, 0.2, 0.5, 1} {
		for _, n := range []int{0, 3, 10} {
			r := rp(config.RestartOnFailure, 100)
			r.Jitter = jitter
			base, _ := backoff(r.BaseDelay.D(), r.MaxDelay.D(), n)
			lo := time.Duration(float64(base) * (1 - jitter))
			hi := time.Duration(float64(r.MaxDelay.D()) * (1 + jitter))
			seen := map[time.Duration]bool{}
			for _, rnd := range []float64{0, 1e-9, 0.25, 0.5, 0.75, 0.999999999, math1(), -3, 7} {
				d := Decide(r, fails(n), state.Crashed, t0, rnd)
				if d.Delay < 0 || d.Delay < lo-1 || d.Delay > time.Duration(float64(base)*(1+jitter))+1 || d.Delay > hi+1 {
					t.Errorf("jitter %v n %d rnd %v: delay %s outside [%s, %s]", jitter, n, rnd, d.Delay, lo, base)
				}
				seen[d.Delay] = true
			}
			if jitter > 0 && len(seen) < 3 {
				t.Errorf("jitter %v n %d: delays barely vary: %v", jitter, n, seen)
			}
			if jitter == 0 && len(seen) != 1 {
				t.Errorf("jitter 0 n %d: delays vary: %v", n, seen)
			}
		}
	}
	// Out-of-range jitter (refused by config.Validate) still gives a delay
	// that is never negative and never above max_delay × 2.
	for _, jitter := range []float64{-1, 5} {
		r := rp(config.RestartOnFailure, 100)
		r.Jitter = jitter
		for _, rnd := range []float64{0, 0.5, 0.9999} {
			d := Decide(r, fails(8), state.Crashed, t0, rnd)
			if d.Delay < 0 || d.Delay > 2*r.MaxDelay.D() {
				t.Errorf("jitter %v rnd %v: delay %s", jitter, rnd, d.Delay)
			}
		}
	}
}

func math1() float64 { return 1 } // rnd = 1 is out of range; clamped below 1

func TestDecideCrashLoopAtMaxFailures(t *testing.T) {
	cases := []struct {
		maxFailures int
		prior       int
		wantRestart bool
	}{
		{1, 0, false}, // max_failures 1: the first failure is a crash loop
		{0, 0, false}, // 0 (refused by Validate) behaves like 1
		{2, 0, true},
		{2, 1, false},
		{3, 0, true},
		{3, 1, true},
		{3, 2, false}, // max_failures 3 allows 2 restarts
		{3, 7, false},
		{5, 4, false},
		{5, 3, true},
	}
	for _, c := range cases {
		d := Decide(rp(config.RestartOnFailure, c.maxFailures), fails(c.prior), state.Crashed, t0, 0.5)
		if d.Restart != c.wantRestart || d.CrashLoop == c.wantRestart {
			t.Errorf("max_failures %d after %d failures: Restart=%v CrashLoop=%v (%s)",
				c.maxFailures, c.prior, d.Restart, d.CrashLoop, d.Reason)
		}
		if d.CrashLoop && !strings.HasPrefix(d.Reason, "crash loop:") {
			t.Errorf("crash loop reason %q", d.Reason)
		}
	}
}

// Walk a worker through successive failures the way the supervisor would,
// feeding Next back in.
func TestDecideSequenceMaxFailuresThree(t *testing.T) {
	r := rp(config.RestartOnFailure, 3)
	var h History
	now := t0
	var delays []time.Duration
	for i := 0; ; i++ {
		d := Decide(r, h, state.Crashed, now, 0.5)
		if !d.Restart {
			if !d.CrashLoop || i != 2 {
				t.Fatalf("failure %d: %+v", i+1, d)
			}
			break
		}
		delays = append(delays, d.Delay)
		h = d.Next
		now = now.Add(d.Delay + 100*time.Millisecond)
	}
	if len(delays) != 2 || delays[0] != time.Second || delays[1] != 2*time.Second {
		t.Errorf("delays %v, want [1s 2s]", delays)
	}
}

func TestDecideWindowExpiry(t *testing.T) {
	r := rp(config.RestartOnFailure, 3)
	h := History{Failures: []Failure{
		{At: t0.Add(-10 * time.Minute), Reason: state.Crashed},
		{At: t0.Add(-5 * time.Minute), Reason: state.Crashed}, // exactly window old: expired
		{At: t0.Add(-4 * time.Minute), Reason: state.Crashed},
	}, Restarts: 3}
	d := Decide(r, h, state.Crashed, t0, 0.5)
	if !d.Restart || d.Delay != 2*time.Second {
		t.Fatalf("want restart after 2s (one failure left in the window), got %+v", d)
	}
	if len(d.Next.Failures) != 2 || !d.Next.Failures[0].At.Equal(t0.Add(-4*time.Minute)) || !d.Next.Failures[1].At.Equal(t0) {
		t.Errorf("Next.Failures = %+v", d.Next.Failures)
	}
	if d.Next.Restarts != 4 {
		t.Errorf("Next.Restarts = %d, want 4 (restart_count is never reset)", d.Next.Restarts)
	}
	// The same history one minute earlier: three in the window → crash loop.
	if d := Decide(r, h, state.Crashed, t0.Add(-time.Minute+time.Second), 0.5); !d.CrashLoop {
		t.Errorf("want crash loop with three failures in the window, got %+v", d)
	}
}

func TestDecideResetAfterHealthyRunning(t *testing.T) {
	r := rp(config.RestartOnFailure, 3)
	r.Window = 0 // only the reset can forget
	h := fails(2)
	cases := []struct {
		name         string
		runningSince time.Time
		wantRestart  bool
		wantDelay    time.Duration
	}{
		{"not running", time.Time{}, false, 0},
		{"ran a little", t0.Add(-time.Minute), false, 0},
		{"ran just short of reset_after", t0.Add(-5*time.Minute + time.Nanosecond), false, 0},
		{"ran exactly reset_after", t0.Add(-5 * time.Minute), true, time.Second},
		{"ran long", t0.Add(-time.Hour), true, time.Second},
	}
	for _, c := range cases {
		h.RunningSince = c.runningSince
		d := Decide(r, h, state.HealthCheckFailed, t0, 0.5)
		if d.Restart != c.wantRestart || d.Delay != c.wantDelay {
			t.Errorf("%s: Restart=%v Delay=%s, want %v %s (%s)", c.name, d.Restart, d.Delay, c.wantRestart, c.wantDelay, d.Reason)
		}
		if !d.Next.RunningSince.IsZero() {
			t.Errorf("%s: Next.RunningSince not cleared", c.name)
		}
	}
	// reset_after 0 disables the reset.
	r.ResetAfter = 0
	h.RunningSince = t0.Add(-time.Hour)
	if d := Decide(r, h, state.Crashed, t0, 0.5); !d.CrashLoop {
		t.Errorf("reset_after 0 reset the count: %+v", d)
	}
}

func TestForget(t *testing.T) {
	r := rp(config.RestartOnFailure, 3)
	h := History{Failures: []Failure{
		{At: t0.Add(-6 * time.Minute)}, {At: t0.Add(-time.Minute)},
	}, Restarts: 2}
	orig := append([]Failure(nil), h.Failures...)
	got := Forget(r, h, t0)
	if len(got.Failures) != 1 || got.Restarts != 2 {
		t.Errorf("Forget = %+v", got)
	}
	if h.Failures[0] != orig[0] || h.Failures[1] != orig[1] {
		t.Error("Forget modified its input")
	}
	h.RunningSince = t0.Add(-5 * time.Minute)
	if got := Forget(r, h, t0); got.Failures != nil || got.Restarts != 2 || !got.RunningSince.Equal(h.RunningSince) {
		t.Errorf("Forget after reset_after = %+v", got)
	}
	r.Window = 0
	h.RunningSince = time.Time{}
	if got := Forget(r, h, t0); len(got.Failures) != 2 {
		t.Errorf("window 0 dropped failures: %+v", got)
	}
}

func TestDecideDoesNotAliasHistory(t *testing.T) {
	h := fails(2)
	h.Failures = append(make([]Failure, 0, 4), h.Failures...) // spare capacity that append could reuse
	before := append([]Failure(nil), h.Failures...)
	d1 := Decide(rp(config.RestartOnFailure, 5), h, state.Crashed, t0, 0.5)
	d2 := Decide(rp(config.RestartOnFailure, 5), h, state.OOMKilled, t0.Add(time.Second), 0.5)
	if d1.Next.Failures[2].Reason != state.Crashed || d2.Next.Failures[2].Reason != state.OOMKilled {
		t.Errorf("decisions share a backing array: %+v / %+v", d1.Next.Failures, d2.Next.Failures)
	}
	for i := range before {
		if h.Failures[i] != before[i] {
			t.Error("Decide modified its input")
		}
	}
}

func TestDecideZeroDelays(t *testing.T) {
	r := config.Restart{Policy: config.RestartAlways, MaxFailures: 10}
	d := Decide(r, fails(3), state.Exited, t0, 0.9)
	if !d.Restart || d.Delay != 0 {
		t.Errorf("zero base delay: %+v", d)
	}
	// MaxDelay 0: uncapped, but bounded.
	r.BaseDelay = config.Duration(time.Second)
	d = Decide(r, fails(8), state.Crashed, t0, 0.5)
	if d.Delay != 256*time.Second {
		t.Errorf("uncapped delay %s, want 256s (%s)", d.Delay, d.Reason)
	}
	r.MaxFailures = 1000
	r.Window = 0
	d = Decide(r, fails(100), state.Crashed, t0, 0.5)
	if d.Delay != uncapped {
		t.Errorf("uncapped delay after 100 failures %s, want %s", d.Delay, uncapped)
	}
}

func TestHistoryJSONRoundTrip(t *testing.T) {
	h := History{Failures: []Failure{{At: t0, Reason: state.OOMKilled}}, Restarts: 4, RunningSince: t0.Add(time.Minute)}
	data, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"failures":[{"at":"2025-01-02T03:04:05Z","reason":"oom_killed"}],"restarts":4,"running_since":"2025-01-02T03:05:05Z"}`
	if string(data) != want {
		t.Errorf("got  %s\nwant %s", data, want)
	}
	var back History
	if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, h) {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	if data, _ := json.Marshal(History{}); string(data) != `{"restarts":0}` {
		t.Errorf("zero History marshals to %s", data)
	}
}
