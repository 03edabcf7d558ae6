package queen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An empty inference token in the queen's config was accepted, and the
// queen's auth trims what follows "Bearer ": a client sending "Bearer "
// and a non-breaking space matched it. The queen now refuses such a
// config, as the hive does.
func TestQueenConfigRefusesAnEmptyInferenceToken(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		tokens string
		ok     bool
	}{
		{`["good-token"]`, true},
		{`[""]`, false},
		{`["good", "has space"]`, false},
		{"[\"tab\\tbed\"]", false},
	} {
		path := filepath.Join(dir, "queen.yaml")
		y := "etcd: {endpoints: [http://127.0.0.1:2379]}\ninference_tokens: " + tc.tokens + "\n"
		if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path)
		if tc.ok && err != nil {
			t.Errorf("tokens %s: %v", tc.tokens, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "inference token")) {
			t.Errorf("tokens %s: want a clear error, got %v", tc.tokens, err)
		}
	}
}

// The queen took inference_tokens and inference_tokens_file together (the
// file's tokens added to the list); the hive refuses that, and so does
// the queen now: one source of tokens, so that removing a token from the
// file is enough to revoke it.
func TestQueenConfigRefusesTokensAndATokensFileTogether(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := "etcd: {endpoints: [http://127.0.0.1:2379]}\ninference_tokens: [inline]\ninference_tokens_file: " + file + "\n"
	_, err := ParseConfig([]byte(y))
	if err == nil || !strings.Contains(err.Error(), "both set") {
		t.Fatalf("want a clear error, got %v", err)
	}
	c, err := ParseConfig([]byte("etcd: {endpoints: [http://127.0.0.1:2379]}\ninference_tokens_file: " + file + "\n"))
	if err != nil || len(c.InferenceTokens) != 1 || c.InferenceTokens[0] != "from-file" {
		t.Fatalf("file alone: %+v %v", c.InferenceTokens, err)
	}
}
