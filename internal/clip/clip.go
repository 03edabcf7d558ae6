// Package clip shortens strings quoted in messages (a client's path, a
// header, a name), so that a huge value cannot make a huge error.
package clip

import "unicode/utf8"

// String returns s when it has at most max bytes; else its longest prefix of
// at most max bytes that ends on a rune boundary, followed by "…".
func String(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
