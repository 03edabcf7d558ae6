package sse

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	in := ": a comment\n" +
		"event: state\ndata: {\"a\":1}\n\n" +
		"data:[DONE]\n\n" + // no space after the colon
		"event: error\ndata: line1\ndata: line2\nid: 7\n\n" +
		"event: empty\n\n" + // no data: skipped
		"data: unfinished\n" // no blank line: not delivered
	var got []Event
	if err := Read(strings.NewReader(in), 1<<10, func(e Event) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []Event{{"state", `{"a":1}`}, {"", "[DONE]"}, {"error", "line1\nline2"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestReadStopsOnFnErrorAndLongLine(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := Read(strings.NewReader("data: 1\n\ndata: 2\n\n"), 1<<10, func(Event) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Read = %v after %d events, want stop after 1", err, n)
	}
	if err := Read(strings.NewReader("data: "+strings.Repeat("x", 100)+"\n\n"), 32, func(Event) error { return nil }); err == nil {
		t.Fatal("a line over maxLine was accepted")
	}
}
