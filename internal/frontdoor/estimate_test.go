package frontdoor

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// writeGGUF writes a GGUF v3 header with a llama model's shape (and, to be
// skipped, a string array and a float) followed by weights bytes.
func writeGGUF(t *testing.T, weights int) string {
	t.Helper()
	var b bytes.Buffer
	w := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	b.WriteString("GGUF")
	w(uint32(3))
	w(uint64(0)) // tensors
	w(uint64(7)) // kv pairs
	str("general.architecture")
	w(uint32(8))
	str("llama")
	str("tokenizer.ggml.tokens")
	w(uint32(9))
	w(uint32(8))
	w(uint64(3))
	str("<s>")
	str("</s>")
	str("hello")
	str("llama.rope.freq_base")
	w(uint32(6))
	w(float32(10000))
	for _, kv := range []struct {
		k string
		v uint32
	}{{"llama.block_count", 5}, {"llama.embedding_length", 64}, {"llama.attention.head_count", 8}, {"llama.attention.head_count_kv", 4}} {
		str(kv.k)
		w(uint32(4))
		w(kv.v)
	}
	b.Write(make([]byte, weights))
	p := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A GGUF model is estimated as its weights plus the f16 KV cache at ctx
// (plus a tenth); a file that is not GGUF as its size × 1.2.
func TestEstimateFromFile(t *testing.T) {
	p := writeGGUF(t, 100000)
	fi, _ := os.Stat(p)
	got, err := EstimateFromFile(p, 256)
	if err != nil {
		t.Fatal(err)
	}
	kv := int64(2 * 5 * 256 * (64 * 4 / 8) * 2) // K and V × layers × ctx × embd_kv × f16
	if want := fi.Size() + kv; got != want+want/10 {
		t.Fatalf("estimate %d, want %d + 10%%", got, want)
	}
	other := filepath.Join(t.TempDir(), "x.bin")
	os.WriteFile(other, make([]byte, 1000), 0o600)
	if n, err := EstimateFromFile(other, 128); err != nil || n != 1200 {
		t.Fatalf("non-GGUF: %d, %v", n, err)
	}
	if _, err := EstimateFromFile(filepath.Join(t.TempDir(), "missing"), 1); err == nil {
		t.Fatal("a missing file was estimated")
	}
}

// The real test model, where the checkout has it (shared/models).
func TestEstimateReadsTheSharedModel(t *testing.T) {
	for _, p := range []string{"../../../shared/models/stories260K.gguf", "/work/shared/models/stories260K.gguf"} {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		h, err := readGGUFHeader(f)
		f.Close()
		if err != nil || h.layers == 0 || h.embd == 0 || h.heads == 0 {
			t.Fatalf("%s: header %+v, %v", p, h, err)
		}
		return
	}
	t.Log("no shared/models/stories260K.gguf here; the synthetic header test covers the reader")
}
