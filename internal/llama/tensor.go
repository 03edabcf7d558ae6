package llama

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/rbee/rbee-hive/internal/gguf"
)

// matrix is a 2-D weight: rows × cols, row-major, in one of the supported
// element types. F32 data are a zero-copy view of the mapped file.
type matrix struct {
	name       string
	rows, cols int
	typ        gguf.TensorType
	f32        []float32 // F32 only
	raw        []byte    // F16 and Q8_0
	rowBytes   int
}

func newMatrix(t *gguf.Tensor, wantCols, wantRows int) (*matrix, error) {
	var rows, cols int
	switch len(t.Dims) {
	case 1:
		cols, rows = int(t.Dims[0]), 1
	case 2:
		cols, rows = int(t.Dims[0]), int(t.Dims[1])
	default:
		return nil, fmt.Errorf("tensor %s has %d dimensions, want 2", t.Name, len(t.Dims))
	}
	if cols != wantCols || rows != wantRows {
		return nil, fmt.Errorf("tensor %s is %v, want [%d %d]", t.Name, t.Dims, wantCols, wantRows)
	}
	if !t.Type.Supported() || t.Data == nil {
		return nil, fmt.Errorf("%w: tensor %s has type %s (supported: F32, F16, Q8_0, Q4_0)", gguf.ErrUnsupportedType, t.Name, t.Type)
	}
	m := &matrix{name: t.Name, rows: rows, cols: cols, typ: t.Type}
	switch t.Type {
	case gguf.F32:
		if uintptr(unsafe.Pointer(unsafe.SliceData(t.Data)))%4 != 0 {
			// Not reachable with an aligned GGUF in a mapping; copy to be safe.
			m.f32 = make([]float32, rows*cols)
			for i := range m.f32 {
				m.f32[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
			}
		} else {
			m.f32 = unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(t.Data))), rows*cols)
		}
	case gguf.F16:
		m.raw, m.rowBytes = t.Data, cols*2
	case gguf.Q8_0:
		m.raw, m.rowBytes = t.Data, cols/32*34
	case gguf.Q4_0:
		m.raw, m.rowBytes = t.Data, cols/32*18
	}
	return m, nil
}

// vector returns a 1-D tensor of length n as float32 values.
func vector(t *gguf.Tensor, n int) ([]float32, error) {
	m, err := newMatrix(t, n, 1)
	if err != nil {
		return nil, err
	}
	out := make([]float32, n)
	m.row(0, out)
	return out, nil
}

// row writes row r, dequantized, into dst.
func (m *matrix) row(r int, dst []float32) {
	switch m.typ {
	case gguf.F32:
		copy(dst, m.f32[r*m.cols:(r+1)*m.cols])
	case gguf.F16:
		b := m.raw[r*m.rowBytes:]
		for i := range m.cols {
			dst[i] = f16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case gguf.Q8_0:
		b := m.raw[r*m.rowBytes:]
		for blk := range m.cols / 32 {
			d := f16ToF32(binary.LittleEndian.Uint16(b[blk*34:]))
			q := b[blk*34+2 : blk*34+34]
			for j := range 32 {
				dst[blk*32+j] = d * float32(int8(q[j]))
			}
		}
	case gguf.Q4_0:
		b := m.raw[r*m.rowBytes:]
		for blk := range m.cols / 32 {
			d := f16ToF32(binary.LittleEndian.Uint16(b[blk*18:]))
			q := b[blk*18+2 : blk*18+18]
			for j := range 16 {
				dst[blk*32+j] = d * float32(int(q[j]&0xf)-8)
				dst[blk*32+j+16] = d * float32(int(q[j]>>4)-8)
			}
		}
	}
}

// prepared is an activation vector in the form a matrix type multiplies
// with, as ggml converts it (its vec_dot_type): F32 as is; for F16 weights,
// x rounded to half precision; for Q8_0 and Q4_0 weights, x quantized to
// Q8_0 blocks.
type prepared struct {
	f []float32 // F32 and F16
	q []int8    // Q8_0 values
	d []float32 // Q8_0 block scales (half-precision values)
}

// prepare converts x for products with m. buf is reused when big enough.
func (m *matrix) prepare(x []float32, buf *prepared) *prepared {
	switch m.typ {
	case gguf.F32:
		buf.f = x
	case gguf.F16:
		buf.f = grow(buf.f, len(x))
		for i, v := range x {
			buf.f[i] = roundF16(v)
		}
	case gguf.Q8_0, gguf.Q4_0:
		nb := len(x) / 32
		if cap(buf.q) < len(x) {
			buf.q = make([]int8, len(x))
		}
		buf.q = buf.q[:len(x)]
		buf.d = grow(buf.d, nb)
		for b := range nb {
			quantizeQ8Block(x[b*32:b*32+32], buf.q[b*32:b*32+32], &buf.d[b])
		}
	}
	return buf
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// quantizeQ8Block is ggml's quantize_row_q8_0_ref for one block: scale
// max|x|/127 stored in half precision, values round(x/scale).
func quantizeQ8Block(x []float32, q []int8, d *float32) {
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	dd := amax / 127
	var id float32
	if dd != 0 {
		id = 1 / dd
	}
	*d = roundF16(dd)
	for i, v := range x {
		q[i] = int8(math.Round(float64(v * id)))
	}
}

// dotRow returns the dot product of row r with the prepared vector.
func (m *matrix) dotRow(r int, x *prepared) float32 {
	switch m.typ {
	case gguf.F32:
		return dot(m.f32[r*m.cols:(r+1)*m.cols], x.f)
	case gguf.F16:
		b := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
		xf := x.f[:m.cols]
		var s0, s1 float32
		for i := 0; i+1 < len(xf); i += 2 {
			s0 += f16ToF32(binary.LittleEndian.Uint16(b[2*i:])) * xf[i]
			s1 += f16ToF32(binary.LittleEndian.Uint16(b[2*i+2:])) * xf[i+1]
		}
		if len(xf)%2 == 1 {
			s0 += f16ToF32(binary.LittleEndian.Uint16(b[2*len(xf)-2:])) * xf[len(xf)-1]
		}
		return s0 + s1
	case gguf.Q4_0: // as ggml_vec_dot_q4_0_q8_0
		b := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
		var s float32
		for blk := range m.cols / 32 {
			d := f16ToF32(binary.LittleEndian.Uint16(b[blk*18:]))
			q := b[blk*18+2 : blk*18+18]
			xq := x.q[blk*32 : blk*32+32]
			var sum int32
			for j := range 16 {
				sum += (int32(q[j]&0xf)-8)*int32(xq[j]) + (int32(q[j]>>4)-8)*int32(xq[j+16])
			}
			s += float32(sum) * (d * x.d[blk])
		}
		return s
	default: // Q8_0: integer products per block, as ggml_vec_dot_q8_0_q8_0
		b := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
		var s float32
		for blk := range m.cols / 32 {
			d := f16ToF32(binary.LittleEndian.Uint16(b[blk*34:]))
			q := b[blk*34+2 : blk*34+34]
			xq := x.q[blk*32 : blk*32+32]
			var sum int32
			for j := range 32 {
				sum += int32(int8(q[j])) * int32(xq[j])
			}
			s += float32(sum) * (d * x.d[blk])
		}
		return s
	}
}

func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	for len(a) >= 8 {
		x, y := a[:8:8], b[:8:8]
		s0 += x[0] * y[0]
		s1 += x[1] * y[1]
		s2 += x[2] * y[2]
		s3 += x[3] * y[3]
		s4 += x[4] * y[4]
		s5 += x[5] * y[5]
		s6 += x[6] * y[6]
		s7 += x[7] * y[7]
		a, b = a[8:], b[8:]
	}
	for i := range a {
		s0 += a[i] * b[i]
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}
