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
		return nil, fmt.Errorf("%w: tensor %s has type %s (supported: F32, F16, Q8_0)", gguf.ErrUnsupportedType, t.Name, t.Type)
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
	}
}

// dotRow returns the dot product of row r with x.
func (m *matrix) dotRow(r int, x []float32) float32 {
	switch m.typ {
	case gguf.F32:
		return dot(m.f32[r*m.cols:(r+1)*m.cols], x)
	case gguf.F16:
		b := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
		var s float32
		for i := range m.cols {
			s += f16ToF32(binary.LittleEndian.Uint16(b[2*i:])) * x[i]
		}
		return s
	default: // Q8_0
		b := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
		var s float32
		for blk := range m.cols / 32 {
			d := f16ToF32(binary.LittleEndian.Uint16(b[blk*34:]))
			q := b[blk*34+2 : blk*34+34]
			xs := x[blk*32 : blk*32+32]
			var bs float32
			for j := range 32 {
				bs += float32(int8(q[j])) * xs[j]
			}
			s += d * bs
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
