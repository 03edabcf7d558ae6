package models

import (
	"strings"
)

// MaxRefLen is the longest model reference accepted, in bytes.
const MaxRefLen = 512

// ProviderFile is the provider of references that name a file directly
// (file:/absolute/path).
const ProviderFile = "file"

// ParseRef splits a model reference `provider:reference` at its first colon
// and validates it (SPEC §4):
//
//   - at most MaxRefLen bytes, only [A-Za-z0-9_./:-] (so no control
//     characters, spaces or non-ASCII);
//   - provider non-empty, only [a-z0-9_-];
//   - rest non-empty;
//   - no ".." segment anywhere, segments being split on both "/" and ":".
//
// ParseRef does not check that a file: reference is absolute; Resolve does.
// Errors are *Error values wrapping ErrInvalidRef with Field "model_ref".
func ParseRef(ref string) (provider, rest string, err error) {
	bad := func(format string, a ...any) (string, string, error) {
		return "", "", newError(ErrInvalidRef, "model_ref", "model_ref: "+format, a...)
	}
	if ref == "" {
		return bad("must not be empty (want provider:reference, e.g. file:/models/x.gguf)")
	}
	if len(ref) > MaxRefLen {
		return bad("is %d characters long, at most %d are allowed", len(ref), MaxRefLen)
	}
	for i := 0; i < len(ref); i++ {
		c := ref[i]
		if c < 0x20 || c == 0x7f {
			return bad("contains a control character (byte 0x%02x at offset %d)", c, i)
		}
		if !refChar(c) {
			if c >= 0x80 {
				return bad("contains a non-ASCII byte at offset %d; only A-Z a-z 0-9 _ . / : - are allowed", i)
			}
			return bad("contains %q at offset %d; only A-Z a-z 0-9 _ . / : - are allowed", c, i)
		}
	}
	provider, rest, ok := strings.Cut(ref, ":")
	if !ok {
		return bad("%q has no provider (want provider:reference, e.g. file:/models/x.gguf)", ref)
	}
	if provider == "" {
		return bad("%q has an empty provider (want provider:reference)", ref)
	}
	for i := 0; i < len(provider); i++ {
		if c := provider[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return bad("provider %q may only contain a-z 0-9 _ -", provider)
		}
	}
	if rest == "" {
		return bad("%q has an empty reference after the provider", ref)
	}
	if hasDotDot(ref) {
		return bad("%q contains a \"..\" path segment", ref)
	}
	return provider, rest, nil
}

func refChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '/' || c == ':' || c == '-'
}

// hasDotDot reports whether s has a segment, split on '/' and ':', that is
// exactly "..".
func hasDotDot(s string) bool {
	for seg := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == '/' || r == ':' }) {
		if seg == ".." {
			return true
		}
	}
	return false
}
