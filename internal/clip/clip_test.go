package clip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"0123456789abc", 10, "0123456789…"},
		{"01234567é", 10, "01234567é"}, // "é" is 2 bytes: 10 in all
		// A rune is never cut in half: here "é" is at offsets 9-10.
		{"012345678é", 10, "012345678…"},
		{"", 0, ""},
	} {
		if got := String(c.in, c.max); got != c.want {
			t.Errorf("String(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
	long := strings.Repeat("日本", 100)
	if got := String(long, 64); !utf8.ValidString(got) || len(got) > 64+len("…") {
		t.Fatalf("String of a long multi-byte string = %q", got)
	}
}
