// Package builtinmodel embeds the small model the reference worker serves
// out of the box: stories260K.gguf, Andrej Karpathy's 260K-parameter
// TinyStories Llama from llama2.c (MIT licence, see LICENSE.stories260K.md),
// converted to GGUF by llama.cpp. The daemon writes it into the default model
// root on start; tests and the benchmark write it where they need it.
package builtinmodel

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/rbee/rbee-hive/internal/atomicfile"
)

// FileName is the name the model is written under.
const FileName = "stories260K.gguf"

// SHA256 is the checksum of the embedded file.
const SHA256 = "047bf46455a544931cff6fef14d7910154c56afbc23ab1c5e56a72e69912c04b"

//go:embed stories260K.gguf
var data []byte

// Bytes returns the embedded model. The caller must not modify it.
func Bytes() []byte { return data }

// WriteTo writes the model into dir as FileName unless a file of that name
// is already there (which is left alone, whatever it holds), and returns its
// path. The write is atomic: a temporary file, synced, renamed into place,
// mode 0644. dir is created (0700, as the hive makes its model root) if
// missing.
func WriteTo(dir string) (string, error) {
	path := filepath.Join(dir, FileName)
	if _, err := os.Lstat(path); err == nil {
		return path, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("builtinmodel: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("builtinmodel: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o644, true); err != nil {
		return "", fmt.Errorf("builtinmodel: %w", err)
	}
	return path, nil
}
