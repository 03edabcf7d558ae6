package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
)

// builder writes GGUF files for tests.
type builder struct{ bytes.Buffer }

func (b *builder) u32(v uint32) *builder { binary.Write(&b.Buffer, binary.LittleEndian, v); return b }
func (b *builder) u64(v uint64) *builder { binary.Write(&b.Buffer, binary.LittleEndian, v); return b }
func (b *builder) str(s string) *builder { b.u64(uint64(len(s))); b.WriteString(s); return b }

// small is a valid GGUF v3 file: a few metadata values of every kind and
// two tensors (an F32 [4 2] and a Q8_0 [32]).
func small() []byte {
	var b builder
	b.WriteString("GGUF")
	b.u32(3).u64(2).u64(6)
	b.str("general.architecture").u32(uint32(TypeString)).str("llama")
	b.str("a.u8").u32(uint32(TypeUint8)).WriteByte(7)
	b.str("a.f32").u32(uint32(TypeFloat32)).u32(math.Float32bits(1.5))
	b.str("a.bool").u32(uint32(TypeBool)).WriteByte(1)
	b.str("a.arr").u32(uint32(TypeArray)).u32(uint32(TypeInt32)).u64(3).u32(1).u32(2).u32(0xffffffff)
	b.str("a.nested").u32(uint32(TypeArray)).u32(uint32(TypeArray)).u64(1).u32(uint32(TypeString)).u64(1).str("x")
	b.str("w").u32(2).u64(4).u64(2).u32(uint32(F32)).u64(0)
	b.str("q").u32(1).u64(32).u32(uint32(Q8_0)).u64(32)
	for b.Len()%32 != 0 {
		b.WriteByte(0)
	}
	for i := range 8 {
		b.u32(math.Float32bits(float32(i)))
	}
	b.Write(make([]byte, 34))
	return b.Bytes()
}

func TestParseSmall(t *testing.T) {
	f, err := Parse(small())
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := f.String("general.architecture"); s != "llama" {
		t.Errorf("architecture %q", s)
	}
	if v, _ := f.Uint("a.u8"); v != 7 {
		t.Errorf("a.u8 = %d", v)
	}
	if v, _ := f.Float("a.f32"); v != 1.5 {
		t.Errorf("a.f32 = %v", v)
	}
	if v, ok := f.Bool("a.bool"); !v || !ok {
		t.Errorf("a.bool = %v %v", v, ok)
	}
	if v, _ := f.Ints("a.arr"); len(v) != 3 || v[2] != -1 {
		t.Errorf("a.arr = %v", v)
	}
	if v := f.Metadata["a.nested"]; len(v.Array) != 1 || v.Array[0].ArrayType != TypeString || v.Array[0].Array[0].S != "x" {
		t.Errorf("a.nested = %+v", v)
	}
	w := f.Tensor("w")
	if w == nil || w.Size != 32 || len(w.Data) != 32 || w.Data[4] != 0 || math.Float32frombits(binary.LittleEndian.Uint32(w.Data[28:])) != 7 {
		t.Fatalf("tensor w = %+v", w)
	}
	if q := f.Tensor("q"); q == nil || q.Size != 34 {
		t.Fatalf("tensor q = %+v", q)
	}
}

func TestOpenStories260K(t *testing.T) {
	path, err := builtinmodel.WriteTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Tensors) != 48 || f.Tensor("token_embd.weight").Size != 64*512*4 {
		t.Fatalf("unexpected tensors: %s", f.Describe())
	}
	toks, _ := f.Strings("tokenizer.ggml.tokens")
	if len(toks) != 512 || toks[1] != "<s>" {
		t.Fatalf("tokens: %d, %q", len(toks), toks[:2])
	}
}

func TestMalformedFilesGiveClearErrors(t *testing.T) {
	good := small()
	header := func(tensors, kvs uint64) []byte {
		var b builder
		b.WriteString("GGUF")
		b.u32(3).u64(tensors).u64(kvs)
		return b.Bytes()
	}
	tensorFile := func(dims []uint64, typ TensorType, offset uint64) []byte {
		var b builder
		b.WriteString("GGUF")
		b.u32(3).u64(1).u64(0)
		b.str("t").u32(uint32(len(dims)))
		for _, d := range dims {
			b.u64(d)
		}
		b.u32(uint32(typ)).u64(offset)
		for b.Len()%32 != 0 {
			b.WriteByte(0)
		}
		b.Write(make([]byte, 64))
		return b.Bytes()
	}
	arrayFile := func(count uint64) []byte {
		var b builder
		b.Write(header(0, 1))
		b.str("k").u32(uint32(TypeArray)).u32(uint32(TypeUint64)).u64(count)
		return b.Bytes()
	}
	var longStr builder
	longStr.Write(header(0, 1))
	longStr.u64(1 << 62)
	longStr.Write(make([]byte, 16))
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"wrong magic", append([]byte("GGML"), good[4:]...), "wrong magic"},
		{"version 1", append(append([]byte("GGUF"), 1, 0, 0, 0), good[8:]...), "version 1"},
		{"truncated header", good[:20], "truncated"},
		{"truncated data", good[:len(good)-1], "runs past the end"},
		{"absurd tensor count", header(1<<60, 0), "tensors cannot fit"},
		{"absurd metadata count", header(0, 1<<60), "metadata entries cannot fit"},
		{"absurd string length", longStr.Bytes(), "bytes long"},
		{"absurd array count", arrayFile(1 << 40), "cannot fit"},
		{"absurd tensor size", tensorFile([]uint64{1 << 40, 1 << 40}, F32, 0), "absurdly many"},
		{"huge tensor", tensorFile([]uint64{1 << 30}, F32, 0), "runs past the end"},
		{"offset past end", tensorFile([]uint64{4}, F32, 1<<50), "runs past the end"},
		{"unaligned offset", tensorFile([]uint64{4}, F32, 3), "not aligned"},
		{"zero dimension", tensorFile([]uint64{0}, F32, 0), "dimension 0 is 0"},
		{"five dimensions", tensorFile([]uint64{1, 1, 1, 1, 1}, F32, 0), "5 dimensions"},
		{"partial q8_0 block", tensorFile([]uint64{33}, Q8_0, 0), "whole number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data)
			if err == nil || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v; want an ErrFormat mentioning %q", err, tc.want)
			}
		})
	}
}

func TestEveryTruncationIsAnError(t *testing.T) {
	good := small()
	for n := range len(good) {
		if _, err := Parse(good[:n]); err == nil {
			t.Fatalf("Parse of the first %d of %d bytes succeeded", n, len(good))
		}
	}
}

func TestUnsupportedTensorTypeIsDescribedNotExposed(t *testing.T) {
	var b builder
	b.WriteString("GGUF")
	b.u32(3).u64(1).u64(0)
	b.str("k").u32(1).u64(256).u32(12).u64(0) // Q4_K
	for b.Len()%32 != 0 {
		b.WriteByte(0)
	}
	f, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if tt := f.Tensor("k"); tt.Type.String() != "Q4_K" || tt.Data != nil || tt.Type.Supported() {
		t.Fatalf("tensor = %+v (%s)", tt, tt.Type)
	}
}

func TestOpenRejectsNonGGUF(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tiny.gguf")
	os.WriteFile(path, bytes.Repeat([]byte("rbee model weights "), 10), 0o644)
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "wrong magic") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open = %v", err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Open(dir) = %v", err)
	}
	if _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open(missing) = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(small())
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Add(builtinmodel.Bytes()[:4096])
	f.Fuzz(func(t *testing.T, data []byte) {
		gf, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error does not wrap ErrFormat: %v", err)
			}
			return
		}
		for _, tt := range gf.Tensors {
			if tt.Data != nil && int64(len(tt.Data)) != tt.Size {
				t.Fatalf("tensor %q: %d data bytes, size %d", tt.Name, len(tt.Data), tt.Size)
			}
		}
	})
}

// TestAByteArrayAllocatedEightyTimesTheFileSize: an array of one-byte
// elements was checked only against the bytes left, and each element became
// an 80-byte Value, so a file of N bytes made the reader allocate 80·N (a
// 4 GiB file, 320 GiB: a fatal out-of-memory, not an error).
func TestAByteArrayAllocatedEightyTimesTheFileSize(t *testing.T) {
	const n = 16 << 20
	var b builder
	b.WriteString("GGUF")
	b.u32(3).u64(0).u64(1)
	b.str("a.bytes").u32(uint32(TypeArray)).u32(uint32(TypeUint8)).u64(n)
	b.Write(make([]byte, n))
	data := b.Bytes()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Parse(data)
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 4*uint64(len(data)) {
		t.Fatalf("parsing a %d-byte file allocated %d bytes (err %v)", len(data), got, err)
	}
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("want ErrFormat, got %v", err)
	}
}
