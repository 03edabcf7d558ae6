package wallgrid

import (
	"testing"
	"time"
)

func TestNextAndCeilFallOnTheGrid(t *testing.T) {
	base := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		t          time.Time
		every      time.Duration
		next, ceil time.Time
	}{
		{base, 10 * time.Second, base.Add(10 * time.Second), base},
		{base.Add(time.Nanosecond), 10 * time.Second, base.Add(10 * time.Second), base.Add(10 * time.Second)},
		{base.Add(9999 * time.Millisecond), 10 * time.Second, base.Add(10 * time.Second), base.Add(10 * time.Second)},
		{base.Add(25 * time.Second), 30 * time.Second, base.Add(30 * time.Second), base.Add(30 * time.Second)},
		{base.Add(3 * time.Second), 5 * time.Second, base.Add(5 * time.Second), base.Add(5 * time.Second)},
	} {
		if got := Next(c.t, c.every); !got.Equal(c.next) {
			t.Errorf("Next(%v, %v) = %v, want %v", c.t, c.every, got, c.next)
		}
		if got := Ceil(c.t, c.every); !got.Equal(c.ceil) {
			t.Errorf("Ceil(%v, %v) = %v, want %v", c.t, c.every, got, c.ceil)
		}
	}
}

// Periods that divide each other share their ticks: a 30 s job fires on
// every third tick of a 10 s one, whatever the moment each was started.
func TestDividingPeriodsShareTicks(t *testing.T) {
	start := time.Date(2026, 11, 29, 7, 3, 7, 123456789, time.UTC)
	ten := map[time.Time]bool{}
	for at := start; at.Before(start.Add(2 * time.Minute)); at = Next(at, 10*time.Second) {
		ten[at] = true
	}
	n := 0
	for at := Next(start.Add(4*time.Second), 30*time.Second); at.Before(start.Add(2 * time.Minute)); at = Next(at, 30*time.Second) {
		if !ten[at] {
			t.Fatalf("30 s tick %v is not a 10 s tick", at)
		}
		n++
	}
	if n < 3 {
		t.Fatalf("only %d ticks of 30 s in 2 minutes", n)
	}
}
