package relay

import (
	"encoding/json"
	"strings"
)

// Model reads the "model" member of an inference body (a JSON object): the
// string, or "" when there is none or it is not a string. err is the JSON
// error when the body is not a JSON object. It matches the member as
// encoding/json does (the last of duplicates, case-insensitively, escapes
// decoded) without decoding the rest: json.Unmarshal into a struct
// validated the body, then walked it again through reflection, allocating;
// here one allocation-free validation pass and a skim of the top level.
func Model(body []byte) (model string, err error) {
	if !json.Valid(body) {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			return "", err
		}
		return "", &json.SyntaxError{Offset: 0}
	}
	i := skipWS(body, 0)
	if body[i] != '{' {
		var head struct{}
		return "", json.Unmarshal(body, &head) // the type error, worded by encoding/json
	}
	i = skipWS(body, i+1)
	if body[i] == '}' {
		return "", nil
	}
	for {
		// A key, a colon, a value; the body is valid JSON.
		end := skipString(body, i)
		key := body[i+1 : end-1]
		i = skipWS(body, end)
		i = skipWS(body, i+1) // ':'
		vend := skipValue(body, i)
		if keyIs(key, "model") {
			model = ""
			if body[i] == '"' {
				model = stringValue(body[i:vend])
			}
		}
		i = skipWS(body, vend)
		if body[i] == '}' {
			return model, nil
		}
		i = skipWS(body, i+1) // ','
	}
}

func keyIs(key []byte, name string) bool {
	if len(key) == len(name) && strings.EqualFold(string(key), name) {
		return true
	}
	for _, c := range key {
		if c == '\\' {
			var k string
			if json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &k) == nil {
				return strings.EqualFold(k, name)
			}
			return false
		}
	}
	return false
}

// stringValue decodes a JSON string token.
func stringValue(tok []byte) string {
	for _, c := range tok[1 : len(tok)-1] {
		if c == '\\' || c >= 0x80 {
			var s string
			_ = json.Unmarshal(tok, &s) // escapes; invalid UTF-8 replaced as encoding/json does
			return s
		}
	}
	return string(tok[1 : len(tok)-1])
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string token that starts at i.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index after the value that starts at i.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default: // number, true, false, null
		for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
			i++
		}
		return i
	}
}
