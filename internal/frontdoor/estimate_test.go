package frontdoor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/modelsize"
)

// The built-in model is estimated by modelsize (more for a longer
// context); a file that is not GGUF is its size × 1.2; a missing file is
// an error.
func TestEstimateFromFile(t *testing.T) {
	p, err := builtinmodel.WriteTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got, err := EstimateFromFile(p, 256)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := modelsize.Estimate(p, 256, 0)
	if err != nil || got != want || got <= 0 {
		t.Fatalf("estimate %d, modelsize says %d (%v)", got, want, err)
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
