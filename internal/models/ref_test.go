package models

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseRefGood(t *testing.T) {
	cases := []struct{ ref, provider, rest string }{
		{"file:/models/llama.gguf", "file", "/models/llama.gguf"},
		{"hf:TheBloke/Llama-2-7B-GGUF", "hf", "TheBloke/Llama-2-7B-GGUF"},
		{"hf:org/repo:Q4_K_M", "hf", "org/repo:Q4_K_M"},
		{"ollama:llama3.1:8b", "ollama", "llama3.1:8b"},
		{"my_store-2:a", "my_store-2", "a"},
		{"file:/a/.../b", "file", "/a/.../b"},     // "..." is not ".."
		{"file:/a/..b/c..", "file", "/a/..b/c.."}, // neither is "..b"
		{"file:/a/./b", "file", "/a/./b"},         // "." is allowed; Resolve cleans it
		{"hf:" + strings.Repeat("a", MaxRefLen-3), "hf", strings.Repeat("a", MaxRefLen-3)},
	}
	for _, c := range cases {
		p, r, err := ParseRef(c.ref)
		if err != nil || p != c.provider || r != c.rest {
			t.Errorf("ParseRef(%q) = %q, %q, %v; want %q, %q", c.ref, p, r, err, c.provider, c.rest)
		}
	}
}

func TestParseRefBad(t *testing.T) {
	cases := []struct{ name, ref, msg string }{
		{"empty", "", "must not be empty"},
		{"no colon", "llama.gguf", "no provider"},
		{"empty provider", ":/models/x", "empty provider"},
		{"empty rest", "hf:", "empty reference"},
		{"upper-case provider", "HF:org/repo", "provider"},
		{"dotted provider", "h.f:org/repo", "provider"},
		{"slash in provider", "a/b:c", "provider"},
		{"too long", "hf:" + strings.Repeat("a", MaxRefLen-2), "at most 512"},
		{"dotdot alone", "hf:..", ".."},
		{"dotdot first", "file:../etc/passwd", ".."},
		{"dotdot after slash", "file:/../etc/passwd", ".."},
		{"dotdot middle", "file:/models/../etc/passwd", ".."},
		{"dotdot last", "file:/models/..", ".."},
		{"dotdot trailing slash", "file:/models/../", ".."},
		{"dotdot double slash", "file:/models//..//x", ".."},
		{"dotdot after colon", "hf:org/repo:..", ".."},
		{"dotdot between colons", "hf:a:..:b", ".."},
		{"dotdot as provider", "..:x", "provider"},
		{"NUL", "file:/models/x\x00.gguf", "control character"},
		{"newline", "file:/models/x\n", "control character"},
		{"tab", "hf:a\tb", "control character"},
		{"escape", "hf:a\x1b[31m", "control character"},
		{"DEL", "hf:a\x7f", "control character"},
		{"space", "hf:a b", "contains ' '"},
		{"backslash", `file:C:\models`, `contains '\\'`},
		{"shell", "hf:a;rm -rf", "contains ';'"},
		{"dollar", "hf:$HOME", "contains '$'"},
		{"percent", "hf:a%2e%2e", "contains '%'"},
		{"tilde", "file:~/x", "contains '~'"},
		{"unicode", "hf:modèle", "non-ASCII"},
		{"unicode slash lookalike", "file:/a\u2215..\u2215b", "non-ASCII"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, r, err := ParseRef(c.ref)
			if !errors.Is(err, ErrInvalidRef) {
				t.Fatalf("ParseRef(%q) = %q, %q, %v; want ErrInvalidRef", c.ref, p, r, err)
			}
			var me *Error
			if !errors.As(err, &me) || me.Field != "model_ref" {
				t.Fatalf("error %#v is not an *Error naming model_ref", err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("message %q does not mention %q", err, c.msg)
			}
			if strings.ContainsAny(err.Error(), "\x00\n\x1b") {
				t.Errorf("message %q echoes a control character", err)
			}
		})
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"file:/models/x.gguf", "hf:org/repo:Q4", "hf:..", "file:/a/../b", ":x", "a:", "x", "hf:a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		provider, rest, err := ParseRef(ref)
		if err != nil {
			if !errors.Is(err, ErrInvalidRef) {
				t.Fatalf("ParseRef(%q): error %v does not wrap ErrInvalidRef", ref, err)
			}
			return
		}
		if len(ref) > MaxRefLen || len(ref) == 0 {
			t.Fatalf("accepted %q of length %d", ref, len(ref))
		}
		for i := 0; i < len(ref); i++ {
			if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:-", rune(ref[i])) {
				t.Fatalf("accepted %q with byte 0x%02x", ref, ref[i])
			}
		}
		for _, seg := range strings.FieldsFunc(ref, func(r rune) bool { return r == '/' || r == ':' }) {
			if seg == ".." {
				t.Fatalf("accepted %q with a .. segment", ref)
			}
		}
		if provider == "" || rest == "" || provider+":"+rest != ref {
			t.Fatalf("ParseRef(%q) = %q, %q", ref, provider, rest)
		}
		if strings.Trim(provider, "abcdefghijklmnopqrstuvwxyz0123456789_-") != "" {
			t.Fatalf("accepted provider %q", provider)
		}
	})
}

func FuzzWithin(f *testing.F) {
	f.Add("/models", "/models/x")
	f.Add("/models", "/models2/x")
	f.Add("/models", "/models/../etc")
	f.Add("/", "/x")
	f.Fuzz(func(t *testing.T, dir, path string) {
		if len(dir) == 0 || len(path) == 0 || dir[0] != '/' || path[0] != '/' {
			return
		}
		dir, path = cleanAbs(dir), cleanAbs(path)
		got := within(dir, path)
		prefix := dir
		if prefix != "/" {
			prefix += "/"
		}
		want := path != dir && strings.HasPrefix(path, prefix)
		if got != want {
			t.Fatalf("within(%q, %q) = %v, want %v", dir, path, got, want)
		}
	})
}
