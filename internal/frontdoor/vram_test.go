package frontdoor

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

func TestPlanGPU(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	idle := func(id, model string, mem int64, used int) Snapshot {
		return Snapshot{ID: id, Model: model, Memory: mem, Idle: true, LastUsed: at(used)}
	}
	busy := func(id, model string, mem int64) Snapshot { return Snapshot{ID: id, Model: model, Memory: mem} }
	const auto = apiv1.DeviceAuto
	cases := []struct {
		name    string
		need    int64
		devs    []Device
		verdict Verdict
		device  int
		victims []string
	}{
		{"no devices: never", 100, nil, Never, auto, nil},
		{"fits on an empty device: the hive places it", 100, []Device{{Index: 0, Budget: 50}, {Index: 1, Budget: 150}}, Fits, auto, nil},
		{"fits on one device while another is full: no eviction", 100, []Device{
			{Index: 0, Budget: 150, Holders: []Snapshot{idle("a", "a", 100, 1)}},
			{Index: 1, Budget: 150},
		}, Fits, auto, nil},
		{"evicts on the device where evicting helps, not the least recently used worker overall", 100, []Device{
			{Index: 0, Budget: 150, Holders: []Snapshot{idle("a", "a", 100, 20)}},
			{Index: 1, Budget: 80, Holders: []Snapshot{idle("c", "c", 60, 1)}},
		}, Evict, 0, []string{"a"}},
		{"fewest victims wins over least recent", 100, []Device{
			{Index: 0, Budget: 120, Holders: []Snapshot{idle("x", "x", 40, 1), idle("y", "y", 40, 2)}},
			{Index: 1, Budget: 150, Holders: []Snapshot{idle("z", "z", 100, 30)}},
		}, Evict, 1, []string{"z"}},
		{"equal counts: the least recently used victims", 100, []Device{
			{Index: 0, Budget: 150, Holders: []Snapshot{idle("new", "x", 100, 20)}},
			{Index: 1, Budget: 150, Holders: []Snapshot{idle("old", "y", 100, 10)}},
		}, Evict, 1, []string{"old"}},
		{"equal in everything: the first device", 100, []Device{
			{Index: 0, Budget: 150, Holders: []Snapshot{idle("p", "x", 100, 10)}},
			{Index: 1, Budget: 150, Holders: []Snapshot{idle("q", "y", 100, 10)}},
		}, Evict, 0, []string{"p"}},
		{"a busy worker is never evicted: wait", 100, []Device{
			{Index: 0, Budget: 150, Holders: []Snapshot{busy("a", "a", 100)}},
			{Index: 1, Budget: 80},
		}, Wait, auto, nil},
		{"busy on one device, idle on another where it fits: evict there", 100, []Device{
			{Index: 0, Budget: 150, Holders: []Snapshot{busy("a", "a", 100)}},
			{Index: 1, Budget: 120, Holders: []Snapshot{idle("c", "c", 60, 50)}},
		}, Evict, 1, []string{"c"}},
		{"pinned holders (min_workers, stopping, started by hand, unregistered spawns) stay", 100, []Device{
			{Index: 0, Budget: 150, Holders: []Snapshot{{ID: "hand", Memory: 100, Idle: true, Pinned: true}}},
		}, Wait, auto, nil},
		{"workers of the same model are not evicted for it", 100, []Device{
			{Index: 0, Budget: 150, Holders: []Snapshot{idle("m1", "m", 100, 1)}},
		}, Wait, auto, nil},
		{"larger than every device: never", 200, []Device{
			{Index: 0, Budget: 150, Holders: []Snapshot{idle("a", "a", 100, 1)}},
			{Index: 1, Budget: 199},
		}, Never, auto, nil},
		{"too large for one device, waits on the other", 200, []Device{
			{Index: 0, Budget: 150},
			{Index: 1, Budget: 250, Holders: []Snapshot{busy("a", "a", 100)}},
		}, Wait, auto, nil},
		{"as many victims as needed, oldest first", 150, []Device{
			{Index: 3, Budget: 250, Holders: []Snapshot{idle("c", "c", 100, 3), idle("a", "a", 50, 1), idle("b", "b", 50, 2)}},
		}, Evict, 3, []string{"a", "b"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := PlanGPU(c.need, "m", c.devs)
			if got.Verdict != c.verdict || got.Device != c.device || !slices.Equal(got.Victims, c.victims) {
				t.Fatalf("PlanGPU = %s device %d %v, want %s device %d %v", got.Verdict, got.Device, got.Victims, c.verdict, c.device, c.victims)
			}
		})
	}
}

func TestInsufficientVRAMNamesTheClosestDevice(t *testing.T) {
	e := insufficientVRAM("big", 9<<30, []GPU{
		{Index: 0, UUID: "GPU-a", Free: 2 << 30, Reserve: 512 << 20, Budget: 1536 << 20},
		{Index: 1, UUID: "GPU-b", Free: 6 << 30, Reserve: 512 << 20, Budget: 7680 << 20},
	})
	if e.Status != 507 || e.Code != "INSUFFICIENT_VRAM" {
		t.Fatalf("%d %s", e.Status, e.Code)
	}
	for _, want := range []string{"model big", "9663676416 bytes (9216.0 MiB)", "8053063680 bytes (7680.0 MiB) on GPU 1 (GPU-b)",
		"6144.0 MiB free", "less 512.0 MiB that must stay free", "plus 2048.0 MiB in use by the hive's workers"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
	}
}
