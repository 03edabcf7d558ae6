package llama

import (
	"math"
	"testing"
)

func TestRoundF16MatchesConversion(t *testing.T) {
	check := func(f float32) {
		if got, want := roundF16(f), f16ToF32(f32ToF16(f)); math.Float32bits(got) != math.Float32bits(want) && !(math.IsNaN(float64(got)) && math.IsNaN(float64(want))) {
			t.Fatalf("roundF16(%g [%#x]) = %g, want %g", f, math.Float32bits(f), got, want)
		}
	}
	for b := uint32(0); b < 1<<32-1<<19; b += 1<<19 - 7 {
		check(math.Float32frombits(b))
	}
	for _, f := range []float32{0, 1, -1, 65504, 65519.99, 65520, 1e-8, 6.1e-5, 6.103515625e-05, -2.5, 1.0009765625, 1.00048828125, 1.00146484375} {
		check(f)
	}
	// Round trip of every half value.
	for h := range 1 << 16 {
		f := f16ToF32(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := f32ToF16(f); got != uint16(h) && !(f == 0 && got&0x7fff == 0) {
			t.Fatalf("f32ToF16(f16ToF32(%#x)) = %#x", h, got)
		}
	}
}
