// Package sse reads server-sent event streams (text/event-stream): the
// hive's /v1/events and the front door's streamed completions.
package sse

import (
	"bufio"
	"io"
	"strings"
)

// Event is one event of a stream: its name ("" when the stream named none:
// the default "message") and its data, the "data:" lines joined by "\n".
type Event struct {
	Name string
	Data string
}

// Read calls fn for each event of r, in order, until r ends (nil), a line
// is longer than maxLine bytes or r fails (that error), or fn returns an
// error (that error). It knows the "event:" and "data:" fields (one space
// after the colon is dropped, per the SSE format); comments, other fields
// and events without data are skipped. An event not ended by a blank line
// when r ends is not delivered.
func Read(r io.Reader, maxLine int, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, min(64<<10, maxLine)), maxLine)
	var name string
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if len(data) > 0 {
				if err := fn(Event{Name: name, Data: strings.Join(data, "\n")}); err != nil {
					return err
				}
			}
			name, data = "", data[:0]
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			name = value
		case "data":
			data = append(data, value)
		}
	}
	return sc.Err()
}
