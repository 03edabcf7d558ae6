package modelsize

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
)

// FuzzDetail: a model file is outside input (anything an operator puts
// under a model root). Invariant: the estimator never panics (the parser's
// panics are turned into errors) and accepted files give no negative
// figure.
func FuzzDetail(f *testing.F) {
	f.Add(builtinmodel.Bytes()[:4096])
	f.Add([]byte("GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "f.gguf")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, layers := range []int{0, AllLayers} {
			d, err := detail(p, 512, layers)
			if err == nil && (d.RAM < 0 || d.VRAM < 0) {
				t.Fatalf("negative estimate %+v", d)
			}
		}
	})
}
