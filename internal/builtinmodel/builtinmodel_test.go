package builtinmodel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteToWritesOnceAtomically(t *testing.T) {
	if sum := sha256.Sum256(Bytes()); hex.EncodeToString(sum[:]) != SHA256 {
		t.Fatalf("embedded model sha256 %x, want %s", sum, SHA256)
	}
	dir := filepath.Join(t.TempDir(), "models")
	p, err := WriteTo(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(b, Bytes()) {
		t.Fatalf("written file differs (%v)", err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", fi.Mode())
	}
	// A file already there is left alone, whatever it holds.
	os.WriteFile(p, []byte("mine"), 0o600)
	if _, err := WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "mine" {
		t.Fatalf("existing file overwritten")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}
