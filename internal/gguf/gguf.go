// Package gguf reads GGUF model files (versions 2 and 3), the format
// llama.cpp uses: a header, metadata key/value pairs, tensor descriptions
// and the aligned tensor data.
//
// Open memory-maps the file read-only, so many processes that load the same
// model share its pages in the page cache, and the tensor data is never
// copied onto the Go heap: Tensor.Data is a view into the mapping. Parse does
// the same from a byte slice (tests, fuzzing).
//
// Every count, length, size and offset read from the file is checked against
// the file's size before it is used, so a malformed or hostile file yields an
// error (wrapping ErrFormat) and never a panic or a large allocation.
package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrFormat marks a file that is not a well-formed GGUF file.
var ErrFormat = errors.New("gguf: malformed file")

// ErrUnsupportedType marks a tensor whose element type this package cannot
// compute with.
var ErrUnsupportedType = errors.New("gguf: unsupported tensor type")

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// Limits on what a file may declare, far above any real model but low
// enough that a lie cannot make the reader allocate much.
const (
	maxStringLen = 1 << 26 // 64 MiB
	maxDims      = 4
	// maxArrayDepth bounds arrays of arrays (the format allows them; no
	// real file nests them, and unbounded nesting would recurse forever).
	maxArrayDepth = 4
	// maxArrayElements bounds the elements of all metadata arrays together
	// (a large vocabulary's tokens, scores, types and merges are about a
	// million). Each becomes a Value of some 80 bytes, so a check against
	// the bytes left alone let a file of N bytes of one-byte elements cost
	// 80·N; this caps it at about 320 MiB.
	maxArrayElements = 1 << 22
)

// ValueType is the type tag of a metadata value.
type ValueType uint32

// The metadata value types of the GGUF specification.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

// size is the encoded size of a scalar value type, 0 for string and array.
func (t ValueType) size() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// TensorType is a ggml element type.
type TensorType uint32

// The ggml tensor types this package computes with, and the names of the
// others for error messages.
const (
	F32  TensorType = 0
	F16  TensorType = 1
	Q4_0 TensorType = 2
	Q4_1 TensorType = 3
	Q5_0 TensorType = 6
	Q5_1 TensorType = 7
	Q8_0 TensorType = 8
)

var tensorTypeNames = map[TensorType]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
	10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
	16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
	22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
	29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0",
}

func (t TensorType) String() string {
	if n, ok := tensorTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// blockLayout gives the elements per block and bytes per block of the types
// this package supports; ok is false for the others.
func (t TensorType) blockLayout() (elems, bytes int64, ok bool) {
	switch t {
	case F32:
		return 1, 4, true
	case F16:
		return 1, 2, true
	case Q8_0:
		return 32, 34, true
	case Q4_0:
		return 32, 18, true
	}
	return 0, 0, false
}

// Supported reports whether this package can compute with tensors of type t.
func (t TensorType) Supported() bool { _, _, ok := t.blockLayout(); return ok }

// Value is one metadata value. Exactly one field is meaningful, chosen by
// Type: scalars live in the numeric fields (unsigned in U, signed in I,
// floats in F, bools in U as 0/1), strings in S and arrays in Array (with
// ArrayType the element type).
type Value struct {
	Type      ValueType
	U         uint64
	I         int64
	F         float64
	S         string
	ArrayType ValueType
	Array     []Value
}

// Tensor describes one tensor and gives access to its bytes.
type Tensor struct {
	Name string
	// Dims are ggml's ne: Dims[0] is the innermost (row) length.
	Dims []int64
	Type TensorType
	// Offset is the tensor's offset from the start of the data section.
	Offset uint64
	// Size is the tensor's size in bytes.
	Size int64
	// Data is the tensor's bytes: a view into the mapped file, valid until
	// the File is closed. Nil for unsupported types.
	Data []byte
}

// Elements returns the number of elements of t.
func (t *Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF file.
type File struct {
	Version   uint32
	Metadata  map[string]Value
	Keys      []string // metadata keys in file order
	Tensors   []*Tensor
	Alignment uint64
	// DataOffset is where the data section starts in the file.
	DataOffset int64

	byName map[string]*Tensor
	mapped []byte // the whole mapping, nil when parsed from a slice
}

// Open memory-maps and parses the GGUF file at path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrFormat, path)
	}
	size := fi.Size()
	if size < 24 {
		return nil, fmt.Errorf("%w: %s is %d bytes, too short for a GGUF header", ErrFormat, path, size)
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("%w: %s is too large", ErrFormat, path)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("gguf: mmap %s: %w", path, err)
	}
	gf, err := Parse(data)
	if err != nil {
		_ = unix.Munmap(data)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	gf.mapped = data
	return gf, nil
}

// Close unmaps the file. Tensor data must not be used afterwards.
func (f *File) Close() error {
	if f.mapped == nil {
		return nil
	}
	m := f.mapped
	f.mapped = nil
	for _, t := range f.Tensors {
		t.Data = nil
	}
	return unix.Munmap(m)
}

// Tensor returns the tensor called name, or nil.
func (f *File) Tensor(name string) *Tensor { return f.byName[name] }

// reader decodes little-endian values from a byte slice, never reading past
// its end.
type reader struct {
	b     []byte
	off   int64
	elems uint64 // array elements read so far, up to maxArrayElements
}

func (r *reader) need(n int64, what string) error {
	if n < 0 || n > int64(len(r.b))-r.off {
		return fmt.Errorf("%w: truncated at byte %d reading %s (%d bytes needed, %d left)",
			ErrFormat, r.off, what, n, int64(len(r.b))-r.off)
	}
	return nil
}

func (r *reader) u32(what string) (uint32, error) {
	if err := r.need(4, what); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v, nil
}

func (r *reader) u64(what string) (uint64, error) {
	if err := r.need(8, what); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint64(r.b[r.off:])
	r.off += 8
	return v, nil
}

func (r *reader) str(what string) (string, error) {
	n, err := r.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > maxStringLen {
		return "", fmt.Errorf("%w: %s is %d bytes long (limit %d)", ErrFormat, what, n, maxStringLen)
	}
	if err := r.need(int64(n), what); err != nil {
		return "", err
	}
	s := string(r.b[r.off : r.off+int64(n)])
	r.off += int64(n)
	return s, nil
}

func (r *reader) scalar(t ValueType, what string) (Value, error) {
	n := int64(t.size())
	if err := r.need(n, what); err != nil {
		return Value{}, err
	}
	b := r.b[r.off:]
	r.off += n
	v := Value{Type: t}
	switch t {
	case TypeUint8:
		v.U = uint64(b[0])
	case TypeBool:
		if b[0] > 1 {
			return Value{}, fmt.Errorf("%w: %s: bool value %d", ErrFormat, what, b[0])
		}
		v.U = uint64(b[0])
	case TypeInt8:
		v.I = int64(int8(b[0]))
	case TypeUint16:
		v.U = uint64(binary.LittleEndian.Uint16(b))
	case TypeInt16:
		v.I = int64(int16(binary.LittleEndian.Uint16(b)))
	case TypeUint32:
		v.U = uint64(binary.LittleEndian.Uint32(b))
	case TypeInt32:
		v.I = int64(int32(binary.LittleEndian.Uint32(b)))
	case TypeFloat32:
		v.F = float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
	case TypeUint64:
		v.U = binary.LittleEndian.Uint64(b)
	case TypeInt64:
		v.I = int64(binary.LittleEndian.Uint64(b))
	case TypeFloat64:
		v.F = math.Float64frombits(binary.LittleEndian.Uint64(b))
	}
	return v, nil
}

func (r *reader) value(t ValueType, what string, depth int) (Value, error) {
	switch t {
	case TypeString:
		s, err := r.str(what)
		return Value{Type: TypeString, S: s}, err
	case TypeArray:
		if depth >= maxArrayDepth {
			return Value{}, fmt.Errorf("%w: %s: arrays nested deeper than %d", ErrFormat, what, maxArrayDepth)
		}
		et, err := r.u32(what + " element type")
		if err != nil {
			return Value{}, err
		}
		n, err := r.u64(what + " element count")
		if err != nil {
			return Value{}, err
		}
		elem := ValueType(et)
		minSize := int64(elem.size())
		switch elem {
		case TypeString:
			minSize = 8
		case TypeArray:
			minSize = 12
		}
		if minSize == 0 {
			return Value{}, fmt.Errorf("%w: %s: unknown array element type %d", ErrFormat, what, et)
		}
		// Every element takes at least minSize bytes: a count the rest of
		// the file cannot hold is a lie, refused before allocating.
		if left := int64(len(r.b)) - r.off; n > uint64(left/minSize) {
			return Value{}, fmt.Errorf("%w: %s: %d elements cannot fit in the %d bytes left", ErrFormat, what, n, left)
		}
		if n > maxArrayElements-r.elems {
			return Value{}, fmt.Errorf("%w: %s: %d elements pass the limit of %d array elements in all", ErrFormat, what, n, maxArrayElements)
		}
		r.elems += n
		arr := make([]Value, n)
		for i := range arr {
			if arr[i], err = r.value(elem, what, depth+1); err != nil {
				return Value{}, err
			}
		}
		return Value{Type: TypeArray, ArrayType: elem, Array: arr}, nil
	}
	if t.size() == 0 {
		return Value{}, fmt.Errorf("%w: %s: unknown value type %d", ErrFormat, what, uint32(t))
	}
	return r.scalar(t, what)
}

// Parse parses a whole GGUF file held in data. Tensor.Data are views into
// data.
func Parse(data []byte) (*File, error) {
	r := &reader{b: data}
	if err := r.need(4, "magic"); err != nil {
		return nil, err
	}
	if string(data[:4]) != Magic {
		return nil, fmt.Errorf("%w: wrong magic %q (want %q): not a GGUF file", ErrFormat, data[:4], Magic)
	}
	r.off = 4
	version, err := r.u32("version")
	if err != nil {
		return nil, err
	}
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("%w: version %d is not supported (2 and 3 are)", ErrFormat, version)
	}
	nTensors, err := r.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := r.u64("metadata count")
	if err != nil {
		return nil, err
	}
	left := uint64(int64(len(data)) - r.off)
	// A key/value takes at least 8+4 bytes, a tensor info at least 8+4+8+4+8.
	if nKV > left/12 {
		return nil, fmt.Errorf("%w: %d metadata entries cannot fit in a %d-byte file", ErrFormat, nKV, len(data))
	}
	if nTensors > left/32 {
		return nil, fmt.Errorf("%w: %d tensors cannot fit in a %d-byte file", ErrFormat, nTensors, len(data))
	}
	f := &File{Version: version, Metadata: make(map[string]Value, nKV), Alignment: DefaultAlignment}
	for i := range nKV {
		key, err := r.str(fmt.Sprintf("metadata key %d", i))
		if err != nil {
			return nil, err
		}
		t, err := r.u32("type of " + key)
		if err != nil {
			return nil, err
		}
		v, err := r.value(ValueType(t), key, 0)
		if err != nil {
			return nil, err
		}
		if _, dup := f.Metadata[key]; dup {
			return nil, fmt.Errorf("%w: duplicate metadata key %q", ErrFormat, key)
		}
		f.Metadata[key] = v
		f.Keys = append(f.Keys, key)
	}
	if v, ok := f.Metadata["general.alignment"]; ok {
		if v.Type != TypeUint32 || v.U == 0 || v.U&(v.U-1) != 0 || v.U > 1<<16 {
			return nil, fmt.Errorf("%w: general.alignment must be a power-of-two uint32 up to 65536", ErrFormat)
		}
		f.Alignment = v.U
	}
	f.byName = make(map[string]*Tensor, nTensors)
	for i := range nTensors {
		t := &Tensor{}
		if t.Name, err = r.str(fmt.Sprintf("tensor %d name", i)); err != nil {
			return nil, err
		}
		nd, err := r.u32("dimensions of " + t.Name)
		if err != nil {
			return nil, err
		}
		if nd == 0 || nd > maxDims {
			return nil, fmt.Errorf("%w: tensor %q has %d dimensions (1 to %d allowed)", ErrFormat, t.Name, nd, maxDims)
		}
		elems := uint64(1)
		for j := range nd {
			d, err := r.u64("dimension of " + t.Name)
			if err != nil {
				return nil, err
			}
			if d == 0 || d > math.MaxInt64/8 {
				return nil, fmt.Errorf("%w: tensor %q dimension %d is %d", ErrFormat, t.Name, j, d)
			}
			hi, lo := mul64(elems, d)
			if hi != 0 || lo > math.MaxInt64/8 {
				return nil, fmt.Errorf("%w: tensor %q has absurdly many elements", ErrFormat, t.Name)
			}
			elems = lo
			t.Dims = append(t.Dims, int64(d))
		}
		typ, err := r.u32("type of " + t.Name)
		if err != nil {
			return nil, err
		}
		t.Type = TensorType(typ)
		if t.Offset, err = r.u64("offset of " + t.Name); err != nil {
			return nil, err
		}
		if _, dup := f.byName[t.Name]; dup {
			return nil, fmt.Errorf("%w: duplicate tensor %q", ErrFormat, t.Name)
		}
		f.byName[t.Name] = t
		f.Tensors = append(f.Tensors, t)
		if be, bb, ok := t.Type.blockLayout(); ok {
			if int64(elems)%be != 0 || t.Dims[0]%be != 0 {
				return nil, fmt.Errorf("%w: tensor %q: row of %d elements is not a whole number of %s blocks",
					ErrFormat, t.Name, t.Dims[0], t.Type)
			}
			t.Size = int64(elems) / be * bb
		}
	}
	f.DataOffset = int64(alignUp(uint64(r.off), f.Alignment))
	if f.DataOffset > int64(len(data)) {
		if nTensors > 0 {
			return nil, fmt.Errorf("%w: data section starts at %d, past the end of the %d-byte file", ErrFormat, f.DataOffset, len(data))
		}
		f.DataOffset = int64(len(data))
	}
	dataLen := uint64(int64(len(data)) - f.DataOffset)
	for _, t := range f.Tensors {
		if t.Offset%f.Alignment != 0 {
			return nil, fmt.Errorf("%w: tensor %q offset %d is not aligned to %d", ErrFormat, t.Name, t.Offset, f.Alignment)
		}
		if !t.Type.Supported() {
			continue // described, but its data are not checked or exposed
		}
		if t.Offset > dataLen || uint64(t.Size) > dataLen-t.Offset {
			return nil, fmt.Errorf("%w: tensor %q (%d bytes at data offset %d) runs past the end of the file (%d data bytes)",
				ErrFormat, t.Name, t.Size, t.Offset, dataLen)
		}
		start := f.DataOffset + int64(t.Offset)
		t.Data = data[start : start+t.Size : start+t.Size]
	}
	return f, nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

func mul64(a, b uint64) (hi, lo uint64) {
	if a == 0 || b == 0 {
		return 0, 0
	}
	lo = a * b
	if lo/b != a {
		return 1, lo
	}
	return 0, lo
}

// String returns the string value of key, with ok false when it is absent
// or not a string.
func (f *File) String(key string) (string, bool) {
	v, ok := f.Metadata[key]
	if !ok || v.Type != TypeString {
		return "", false
	}
	return v.S, true
}

// Uint returns a non-negative integer value of key (any integer type), with
// ok false when it is absent, not an integer or negative.
func (f *File) Uint(key string) (uint64, bool) {
	v, ok := f.Metadata[key]
	if !ok {
		return 0, false
	}
	switch v.Type {
	case TypeUint8, TypeUint16, TypeUint32, TypeUint64:
		return v.U, true
	case TypeInt8, TypeInt16, TypeInt32, TypeInt64:
		if v.I >= 0 {
			return uint64(v.I), true
		}
	}
	return 0, false
}

// Float returns a float value of key (float32 or float64), with ok false
// when it is absent or not a float.
func (f *File) Float(key string) (float64, bool) {
	v, ok := f.Metadata[key]
	if !ok || (v.Type != TypeFloat32 && v.Type != TypeFloat64) {
		return 0, false
	}
	return v.F, true
}

// Bool returns a bool value of key, with ok false when it is absent or not
// a bool.
func (f *File) Bool(key string) (bool, bool) {
	v, ok := f.Metadata[key]
	if !ok || v.Type != TypeBool {
		return false, false
	}
	return v.U == 1, true
}

// Strings returns a string array value of key.
func (f *File) Strings(key string) ([]string, bool) {
	v, ok := f.Metadata[key]
	if !ok || v.Type != TypeArray || v.ArrayType != TypeString {
		return nil, false
	}
	out := make([]string, len(v.Array))
	for i, e := range v.Array {
		out[i] = e.S
	}
	return out, true
}

// Floats returns a float array value of key.
func (f *File) Floats(key string) ([]float32, bool) {
	v, ok := f.Metadata[key]
	if !ok || v.Type != TypeArray || (v.ArrayType != TypeFloat32 && v.ArrayType != TypeFloat64) {
		return nil, false
	}
	out := make([]float32, len(v.Array))
	for i, e := range v.Array {
		out[i] = float32(e.F)
	}
	return out, true
}

// Ints returns an integer array value of key.
func (f *File) Ints(key string) ([]int64, bool) {
	v, ok := f.Metadata[key]
	if !ok || v.Type != TypeArray {
		return nil, false
	}
	out := make([]int64, len(v.Array))
	for i, e := range v.Array {
		switch e.Type {
		case TypeUint8, TypeUint16, TypeUint32, TypeUint64:
			out[i] = int64(e.U)
		case TypeInt8, TypeInt16, TypeInt32, TypeInt64:
			out[i] = e.I
		default:
			return nil, false
		}
	}
	return out, true
}

// Describe is a one-line summary for logs.
func (f *File) Describe() string {
	arch, _ := f.String("general.architecture")
	name, _ := f.String("general.name")
	types := map[string]int{}
	for _, t := range f.Tensors {
		types[t.Type.String()]++
	}
	var parts []string
	for k, n := range types {
		parts = append(parts, fmt.Sprintf("%s×%d", k, n))
	}
	return fmt.Sprintf("GGUF v%d arch=%s name=%q tensors=%d (%s)", f.Version, arch, name, len(f.Tensors), strings.Join(parts, ","))
}
