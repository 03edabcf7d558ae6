package hive

import "testing"

func TestParseMeminfo(t *testing.T) {
	m := parseMeminfo([]byte("MemTotal:       16318480 kB\nMemFree:  1 kB\nMemAvailable:    8000000 kB\n"))
	if m == nil || m.TotalBytes != 16318480*1024 || m.AvailableBytes != 8000000*1024 {
		t.Fatalf("got %+v", m)
	}
	for _, bad := range []string{"", "MemTotal: 1 kB\n", "MemAvailable: 1 kB\n", "MemTotal: x kB\nMemAvailable: 1 kB\n", "MemTotal: 1 MB\nMemAvailable: 1 kB\n"} {
		if m := parseMeminfo([]byte(bad)); m != nil {
			t.Errorf("%q: got %+v, want nil", bad, m)
		}
	}
	if m := hostMemory(); m == nil || m.TotalBytes <= 0 || m.AvailableBytes > m.TotalBytes {
		t.Errorf("hostMemory() = %+v", m)
	}
}
