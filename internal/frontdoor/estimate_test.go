package frontdoor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/gguf"
)

// The built-in model is estimated as its tensors' bytes plus the f16 KV
// cache at ctx (plus a tenth); a longer context needs more; a file that is
// not GGUF is its size × 1.2; a missing file is an error.
func TestEstimateFromFile(t *testing.T) {
	p, err := builtinmodel.WriteTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	var weights int64
	for _, tn := range f.Tensors {
		weights += tn.Size
	}
	arch, _ := f.String("general.architecture")
	layers, _ := f.Uint(arch + ".block_count")
	embd, _ := f.Uint(arch + ".embedding_length")
	heads, _ := f.Uint(arch + ".attention.head_count")
	kvHeads, ok := f.Uint(arch + ".attention.head_count_kv")
	if !ok {
		kvHeads = heads
	}
	f.Close()
	if weights == 0 || layers == 0 || embd == 0 || heads == 0 {
		t.Fatalf("built-in model: weights %d layers %d embd %d heads %d", weights, layers, embd, heads)
	}
	got, err := EstimateFromFile(p, 256)
	if err != nil {
		t.Fatal(err)
	}
	want := weights + 2*int64(layers)*256*int64(embd*kvHeads/heads)*2
	if got != want+want/10 {
		t.Fatalf("estimate %d, want %d + 10%%", got, want)
	}
	if longer, _ := EstimateFromFile(p, 4096); longer <= got {
		t.Fatalf("ctx 4096: %d, not more than ctx 256: %d", longer, got)
	}
	other := filepath.Join(t.TempDir(), "x.bin")
	if err := os.WriteFile(other, make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := EstimateFromFile(other, 128); err != nil || n != 1200 {
		t.Fatalf("non-GGUF: %d, %v", n, err)
	}
	if _, err := EstimateFromFile(filepath.Join(t.TempDir(), "missing"), 1); err == nil {
		t.Fatal("a missing file was estimated")
	}
}
