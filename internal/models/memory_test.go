package models

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

const mib1 = 1 << 20
const gib = 1 << 30

func TestPreflight(t *testing.T) {
	cases := []struct {
		name                     string
		size, available, reserve int64
		ok                       bool
		need                     int64
	}{
		{"fits", 1 * gib, 8 * gib, 2 * gib, true, 0},
		{"exactly the reserve left", 5 * gib, 8 * gib, 2 * gib, true, 0}, // need 6 GiB, 2 GiB left
		{"one byte short", 5 * gib, 8*gib - 1, 2 * gib, false, 6 * gib},
		{"too big", 10 * gib, 8 * gib, 2 * gib, false, 12 * gib},
		{"reserve alone too big", 0, 1 * gib, 2 * gib, false, 0},
		{"reserve 0", 5 * gib, 6 * gib, 0, true, 0},
		{"reserve 0 short", 5 * gib, 6*gib - 1, 0, false, 6 * gib},
		{"negative reserve disables", 100 * gib, 1, -1, true, 0},
		{"rounding up", 1, 2, 0, true, 0}, // need 2 bytes (1 × 1.2 rounded up)
		{"rounding up short", 1, 1, 0, false, 2},
		{"huge size saturates", math.MaxInt64, math.MaxInt64, 0, true, 0},
		{"huge size and reserve", math.MaxInt64, math.MaxInt64, 1, false, math.MaxInt64},
		{"negative size", -5, 1 * gib, 1 * gib, true, 0},
		{"nothing available", 1, 0, 0, false, 2},
	}
	for _, c := range cases {
		err := Preflight(c.size, c.available, c.reserve)
		if c.ok {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		var ie *InsufficientMemoryError
		if !errors.Is(err, ErrInsufficientMemory) || !errors.As(err, &ie) {
			t.Errorf("%s: got %v, want *InsufficientMemoryError", c.name, err)
			continue
		}
		if ie.Need != c.need || ie.Available != c.available || ie.Reserve != c.reserve {
			t.Errorf("%s: %+v, want need %d", c.name, ie, c.need)
		}
	}
}

func TestInsufficientMemoryErrorInMiB(t *testing.T) {
	err := Preflight(10*gib, 8*gib, 2*gib)
	want := "insufficient memory: the model needs about 12288.0 MiB (file size × 1.2), 8192.0 MiB is available and 2048.0 MiB must stay free"
	if err == nil || err.Error() != want {
		t.Errorf("got %q\nwant %q", err, want)
	}
}

func TestNeedBytes(t *testing.T) {
	for _, c := range []struct{ size, want int64 }{
		{0, 0}, {-1, 0}, {1, 2}, {5, 6}, {6, 8}, {10, 12}, {100 * mib1, 120 * mib1},
		{math.MaxInt64, math.MaxInt64}, {math.MaxInt64 / 6 * 5, math.MaxInt64 / 6 * 6},
	} {
		if got := NeedBytes(c.size); got != c.want {
			t.Errorf("NeedBytes(%d) = %d, want %d", c.size, got, c.want)
		}
	}
}

func TestMemAvailableReadsProc(t *testing.T) {
	n, err := MemAvailable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			total, _ = parseMemAvailable(strings.NewReader("MemAvailable:" + rest))
		}
	}
	if n <= 0 || n > total {
		t.Errorf("MemAvailable() = %d, MemTotal %d", n, total)
	}
}

func TestParseMemAvailable(t *testing.T) {
	good := "MemTotal:       16318480 kB\nMemFree:         1234567 kB\nMemAvailable:    8000000 kB\nBuffers: 1 kB\n"
	if n, err := parseMemAvailable(strings.NewReader(good)); err != nil || n != 8000000*1024 {
		t.Errorf("good: %d, %v", n, err)
	}
	for _, bad := range []string{
		"MemTotal: 1 kB\n",
		"MemAvailable: lots kB\n",
		"MemAvailable: 1 MB\n",
		"MemAvailable: -1 kB\n",
		"MemAvailable:\n",
		"MemAvailable: 99999999999999999999 kB\n",
		"",
	} {
		if n, err := parseMemAvailable(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed as %d", bad, n)
		}
	}
}
