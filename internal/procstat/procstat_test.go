package procstat

import (
	"errors"
	"io/fs"
	"os"
	"testing"
)

func TestParseCountsFieldsFromTheLastParen(t *testing.T) {
	// A command name with spaces and parentheses ("a) (b") must not shift
	// the fields.
	line := "1234 (a) (b) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 5 6 20 0 4 0 98765 1000 200 18446744073709551615\n"
	s, err := Parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{State: 'S', PPID: 1, PGRP: 1234, UTime: 7, STime: 3, CUTime: 5, CSTime: 6, Threads: 4, StartTime: 98765}
	if s != want {
		t.Fatalf("Parse = %+v, want %+v", s, want)
	}
	if s.Dead() {
		t.Fatal("S is not dead")
	}
	// A name ending in "))" and the kernel's full field list.
	line = "4242 (a) b (c)) Z 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
	if s, err = Parse([]byte(line)); err != nil || s.State != 'Z' || !s.Dead() || s.PPID != 1 || s.PGRP != 4242 || s.StartTime != 987654 {
		t.Fatalf("Parse = %+v, %v", s, err)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) SS 1 1 1 0 -1 0 0 0 0 0 1 1 1 1 20 0 1 0 5", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 1 1 1 20 0 1 0 5"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestReadSelfAndGone(t *testing.T) {
	s, err := Read("", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.PPID != os.Getppid() || s.StartTime == 0 || s.Threads < 1 || s.Dead() {
		t.Fatalf("Read(self) = %+v", s)
	}
	if _, err := Read("", 1<<30); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of no process: %v, want ErrNotExist", err)
	}
}

func BenchmarkRead(b *testing.B) {
	pid := os.Getpid()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Read("", pid); err != nil {
			b.Fatal(err)
		}
	}
}
