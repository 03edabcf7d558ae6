package llama

import "math"

// f16ToF32 converts an IEEE 754 half-precision value to float32.
func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		mant &= 0x3ff
		return math.Float32frombits(sign | e<<23 | mant<<13)
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// f32ToF16 converts a float32 to half precision, rounding to nearest even
// (as the F16C instructions ggml uses do).
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff { // inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - e)
		h := mant >> shift
		rem := mant & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // may carry into the exponent, which is still right
	}
	return sign | uint16(h)
}

// roundF16 rounds f to the nearest half-precision value (ties to even).
// Values in the normal half range are rounded in place by dropping 13
// mantissa bits; the rest take the slow path.
func roundF16(f float32) float32 {
	b := math.Float32bits(f)
	if e := (b >> 23) & 0xff; e >= 127-14 && e < 127+15 {
		b += 0xfff + (b>>13)&1
		b &^= 0x1fff
		if (b>>23)&0xff < 127+16 { // still finite in half precision
			return math.Float32frombits(b)
		}
	} else if e < 127-14 {
		// Below the normal range halves are multiples of 2^-24: adding and
		// taking away 0.5, whose float32 ulp is 2^-24, rounds to one (ties
		// to even, as the FPU rounds).
		const c = float32(0.5)
		if f < 0 {
			f = -f
			return -((f + c) - c)
		}
		return (f + c) - c
	}
	return f16ToF32(f32ToF16(f))
}
