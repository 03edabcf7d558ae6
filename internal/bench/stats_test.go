package bench

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var xs []float64
	for i := 1; i <= 200; i++ {
		xs = append(xs, float64(201-i))
	}
	d := Summarize(xs)
	if d.Trials != 200 || d.Median != 100 || d.P99 != 198 || d.Max != 200 {
		t.Fatalf("got %+v", d)
	}
	if (Summarize(nil) != Dist{}) {
		t.Fatal("empty input must give a zero Dist")
	}
	if d := Summarize([]float64{7}); d.Median != 7 || d.P99 != 7 {
		t.Fatalf("one sample: %+v", d)
	}
	if got := ms([]time.Duration{1500 * time.Microsecond}); got[0] != 1.5 {
		t.Fatalf("ms: %v", got)
	}
}
