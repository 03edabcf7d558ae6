package llama

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/gguf"
)

// writeValue encodes one metadata value.
func writeValue(b *bytes.Buffer, v gguf.Value) {
	le := func(x any) { binary.Write(b, binary.LittleEndian, x) }
	switch v.Type {
	case gguf.TypeUint8, gguf.TypeBool:
		b.WriteByte(byte(v.U))
	case gguf.TypeInt8:
		b.WriteByte(byte(v.I))
	case gguf.TypeUint16:
		le(uint16(v.U))
	case gguf.TypeInt16:
		le(int16(v.I))
	case gguf.TypeUint32:
		le(uint32(v.U))
	case gguf.TypeInt32:
		le(int32(v.I))
	case gguf.TypeFloat32:
		le(float32(v.F))
	case gguf.TypeUint64:
		le(v.U)
	case gguf.TypeInt64:
		le(v.I)
	case gguf.TypeFloat64:
		le(v.F)
	case gguf.TypeString:
		le(uint64(len(v.S)))
		b.WriteString(v.S)
	case gguf.TypeArray:
		le(uint32(v.ArrayType))
		le(uint64(len(v.Array)))
		for _, e := range v.Array {
			writeValue(b, e)
		}
	}
}

// convert rewrites the built-in model with every 2-D weight in typ (the
// norms stay F32, as llama.cpp's quantizer leaves them), the way
// llama-quantize does (rows that are not whole Q8_0 blocks go to F16), and
// returns the new file's path.
func convert(t *testing.T, typ gguf.TensorType) string {
	t.Helper()
	return rewrite(t, typ, nil, "")
}

// rewrite is convert with metadata changed (a nil value deletes the key)
// and the tensor called drop left out.
func rewrite(t *testing.T, typ gguf.TensorType, meta map[string]*gguf.Value, drop string) string {
	t.Helper()
	src, err := gguf.Parse(builtinmodel.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	keys := slices.Clone(src.Keys)
	for k, v := range meta {
		if v == nil {
			keys = slices.DeleteFunc(keys, func(x string) bool { return x == k })
			continue
		}
		if _, ok := src.Metadata[k]; !ok {
			keys = append(keys, k)
		}
		src.Metadata[k] = *v
	}
	tensors := slices.DeleteFunc(slices.Clone(src.Tensors), func(tt *gguf.Tensor) bool { return tt.Name == drop })
	var b, data bytes.Buffer
	le := func(x any) { binary.Write(&b, binary.LittleEndian, x) }
	b.WriteString("GGUF")
	le(uint32(3))
	le(uint64(len(tensors)))
	le(uint64(len(keys)))
	for _, k := range keys {
		le(uint64(len(k)))
		b.WriteString(k)
		v := src.Metadata[k]
		le(uint32(v.Type))
		writeValue(&b, v)
	}
	for _, tt := range tensors {
		f := make([]float32, tt.Elements())
		for i := range f {
			f[i] = math.Float32frombits(binary.LittleEndian.Uint32(tt.Data[4*i:]))
		}
		out := gguf.F32
		var enc []byte
		want := typ
		if (typ == gguf.Q8_0 || typ == gguf.Q4_0) && tt.Dims[0]%32 != 0 {
			want = gguf.F16 // llama-quantize's fallback for rows that are not whole blocks
		}
		switch {
		case len(tt.Dims) == 2 && want == gguf.F16:
			out = gguf.F16
			for _, v := range f {
				enc = binary.LittleEndian.AppendUint16(enc, f32ToF16(v))
			}
		case len(tt.Dims) == 2 && want == gguf.Q8_0:
			out = gguf.Q8_0
			q := make([]int8, 32)
			for blk := 0; blk < len(f); blk += 32 {
				var d float32
				quantizeQ8Block(f[blk:blk+32], q, &d)
				enc = binary.LittleEndian.AppendUint16(enc, f32ToF16(d))
				for _, x := range q {
					enc = append(enc, byte(x))
				}
			}
		case len(tt.Dims) == 2 && want == gguf.Q4_0:
			out = gguf.Q4_0
			for blk := 0; blk < len(f); blk += 32 {
				enc = appendQ4_0(enc, f[blk:blk+32])
			}
		case len(tt.Dims) == 2 && want != gguf.F32:
			out = want // a type this package cannot compute with: no data
		default:
			enc = tt.Data
		}
		le(uint64(len(tt.Name)))
		b.WriteString(tt.Name)
		le(uint32(len(tt.Dims)))
		for _, d := range tt.Dims {
			le(uint64(d))
		}
		le(uint32(out))
		le(uint64(data.Len()))
		data.Write(enc)
		for data.Len()%32 != 0 {
			data.WriteByte(0)
		}
	}
	for b.Len()%32 != 0 {
		b.WriteByte(0)
	}
	b.Write(data.Bytes())
	path := filepath.Join(t.TempDir(), "stories260K-"+typ.String()+".gguf")
	if typ == gguf.F32 {
		path = filepath.Join(t.TempDir(), "stories260K-rewritten.gguf")
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The F16, Q8_0 and Q4_0 paths: the model converted as llama-quantize would
// loads, and its greedy text starts as the F32 model's does (F16 and Q8_0
// give the whole reference text; 4-bit weights move the logits enough to
// part after 15 tokens; llama.cpp has no reference for these conversions
// here).
func TestQuantizedModels(t *testing.T) {
	for _, tc := range []struct {
		typ    gguf.TensorType
		prefix int // characters of the F32 completion that must match
	}{{gguf.F16, len(references[0].completion)}, {gguf.Q8_0, len(references[0].completion)}, {gguf.Q4_0, len(", there was a little girl named Lily. She loved to play outside in the ")}} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			f, err := gguf.Open(convert(t, tc.typ))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Tensor("blk.0.attn_q.weight").Type != tc.typ {
				t.Fatalf("conversion left %s", f.Tensor("blk.0.attn_q.weight").Type)
			}
			m, err := Load(f, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := greedy(t, m, references[0].prompt, 48)
			t.Logf("%s: %q", tc.typ, got)
			if want := references[0].completion[:tc.prefix]; !strings.HasPrefix(got, want) {
				t.Fatalf("%s greedy text %q does not start with %q", tc.typ, got, want)
			}
		})
	}
}

func TestUnsupportedTensorTypeIsNamed(t *testing.T) {
	f, err := gguf.Open(convert(t, gguf.TensorType(12))) // Q4_K
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = Load(f, Options{})
	if !errors.Is(err, gguf.ErrUnsupportedType) || !strings.Contains(err.Error(), "token_embd.weight has type Q4_K") {
		t.Fatalf("Load = %v", err)
	}
}

func TestLoadRejectsModelsItCannotRun(t *testing.T) {
	str := func(s string) *gguf.Value { return &gguf.Value{Type: gguf.TypeString, S: s} }
	u32 := func(n uint64) *gguf.Value { return &gguf.Value{Type: gguf.TypeUint32, U: n} }
	for _, tc := range []struct {
		name string
		meta map[string]*gguf.Value
		drop string
		want string
	}{
		{"other architecture", map[string]*gguf.Value{"general.architecture": str("gpt2")}, "", `architecture "gpt2"`},
		{"bpe tokenizer", map[string]*gguf.Value{"tokenizer.ggml.model": str("gpt2")}, "", `tokenizer.ggml.model is "gpt2"`},
		{"no width", map[string]*gguf.Value{"llama.embedding_length": nil}, "", "llama.embedding_length is missing"},
		{"heads do not divide", map[string]*gguf.Value{"llama.attention.head_count": u32(7)}, "", "do not divide"},
		{"wrong width", map[string]*gguf.Value{"llama.embedding_length": u32(32), "llama.attention.head_count": u32(4), "llama.attention.head_count_kv": u32(2)}, "", "tensor token_embd.weight is [64 512], want [32 512]"},
		{"missing tensor", nil, "blk.3.ffn_up.weight", "tensor blk.3.ffn_up.weight is missing"},
		{"bos outside vocab", map[string]*gguf.Value{"tokenizer.ggml.bos_token_id": u32(600)}, "", "outside the 512-token vocabulary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := gguf.Open(rewrite(t, gguf.F32, tc.meta, tc.drop))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, err = Load(f, Options{})
			if !errors.Is(err, ErrModel) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v; want ErrModel saying %q", err, tc.want)
			}
		})
	}
	// Without output.weight the head is tied to the embeddings: the file
	// still loads and generates.
	f, err := gguf.Open(rewrite(t, gguf.F32, nil, "output.weight"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Load(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.out != m.embd {
		t.Fatal("output head not tied to the embeddings")
	}
	if got, ids := greedy(t, m, "Once upon a time", 8); len(ids) != 8 {
		t.Fatalf("tied model generated %q", got)
	}
}

// appendQ4_0 is ggml's quantize_row_q4_0_ref for one block.
func appendQ4_0(enc []byte, x []float32) []byte {
	var amax, mx float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, mx = a, v
		}
	}
	d := mx / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	enc = binary.LittleEndian.AppendUint16(enc, f32ToF16(d))
	for j := range 16 {
		x0 := min(15, int8(x[j]*id+8.5))
		x1 := min(15, int8(x[16+j]*id+8.5))
		enc = append(enc, byte(x0)|byte(x1)<<4)
	}
	return enc
}
