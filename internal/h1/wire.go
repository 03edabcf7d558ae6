package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/textproto"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The HTTP/1.1 wire pieces the lean server and internal/relay (the client
// side) share: finding a head's end in a reader's buffer, taking its header
// lines one by one, and reading a Content-Length as net/http does. Header names, values and tokens are
// checked with golang.org/x/net/http/httpguts, net/http's own rules.

// HeadLength waits until br holds a whole head (its last line blank) and
// returns its length with the blank line, consuming nothing; 0 when the
// head is not for a lean reader: larger than br's buffer, or ending in a
// bare LF. A connection that ends within a head is io.ErrUnexpectedEOF.
func HeadLength(br *bufio.Reader) (int, error) {
	for want := 1; ; want = br.Buffered() + 1 {
		if buf, err := br.Peek(want); len(buf) < want {
			if errors.Is(err, bufio.ErrBufferFull) {
				return 0, nil
			}
			if err == io.EOF && want > 1 {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		buf, _ := br.Peek(br.Buffered())
		switch n := headEnd(buf); {
		case n > 0:
			return n, nil
		case n < 0 || len(buf) == br.Size():
			return 0, nil
		}
	}
}

// headEnd returns the length of the head at the start of buf through its
// blank line; 0 when buf holds no blank line yet; -1 when the first blank
// line follows a bare LF.
func headEnd(buf []byte) int {
	crlf := bytes.Index(buf, []byte("\n\r\n"))
	lf := bytes.Index(buf, []byte("\n\n"))
	switch {
	case lf >= 0 && (crlf < 0 || lf < crlf):
		return -1
	case crlf >= 0:
		return crlf + 3
	}
	return 0
}

// ParseContentLength reads a Content-Length value as net/http does: digits
// only (no sign: "-0" and "+1" are refused), at most 2⁶³−1.
func ParseContentLength(v string) (int64, bool) {
	if v == "" || v[0] < '0' || v[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 63)
	return int64(n), err == nil
}

// HeaderLine takes the first line of hs, a head's header lines (each ending
// in CRLF, the last one blank, as HeadLength found them): the line's
// canonical key, its value without the spaces and tabs around it, and the
// lines after it. end is set for the blank line. ok is false for a line
// net/http would refuse: no CR before its LF, no colon, a bad name or value.
func HeaderLine(hs string) (k, v, rest string, end, ok bool) {
	eol := strings.IndexByte(hs, '\n')
	if eol < 1 || hs[eol-1] != '\r' {
		return "", "", "", false, false
	}
	line, rest := hs[:eol-1], hs[eol+1:]
	if line == "" {
		return "", "", rest, true, true
	}
	colon := strings.IndexByte(line, ':')
	if colon <= 0 || !httpguts.ValidHeaderFieldName(line[:colon]) {
		return "", "", "", false, false
	}
	v = strings.Trim(line[colon+1:], " \t")
	if !httpguts.ValidHeaderFieldValue(v) {
		return "", "", "", false, false
	}
	return textproto.CanonicalMIMEHeaderKey(line[:colon]), v, rest, false, true
}
