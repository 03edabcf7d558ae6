package frontdoor

import (
	"slices"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	cases := []struct {
		name    string
		need    int64
		budget  int64
		live    []Snapshot
		verdict Verdict
		victims []string
	}{
		{"empty hive fits", 100, 250, nil, Fits, nil},
		{"model bigger than the budget never fits", 300, 250, nil, Never, nil},
		{"room left fits", 100, 250, []Snapshot{{ID: "a", Model: "a", Memory: 100, Idle: true}}, Fits, nil},
		{"least recently used idle worker goes first", 100, 250, []Snapshot{
			{ID: "new", Model: "x", Memory: 100, Idle: true, LastUsed: at(20)},
			{ID: "old", Model: "y", Memory: 100, Idle: true, LastUsed: at(10)},
		}, Evict, []string{"old"}},
		{"busy workers are never evicted", 100, 250, []Snapshot{
			{ID: "busy-old", Model: "x", Memory: 100, Idle: false, LastUsed: at(1)},
			{ID: "idle-new", Model: "y", Memory: 100, Idle: true, LastUsed: at(50)},
		}, Evict, []string{"idle-new"}},
		{"only busy workers in the way: wait", 100, 250, []Snapshot{
			{ID: "b1", Model: "x", Memory: 100}, {ID: "b2", Model: "y", Memory: 100},
		}, Wait, nil},
		{"workers of the same model are not evicted for it", 100, 250, []Snapshot{
			{ID: "same", Model: "m", Memory: 100, Idle: true, LastUsed: at(1)},
			{ID: "other", Model: "x", Memory: 100, Idle: true, LastUsed: at(2)},
		}, Evict, []string{"other"}},
		{"pinned workers stay", 100, 250, []Snapshot{
			{ID: "pinned", Model: "x", Memory: 100, Idle: true, Pinned: true, LastUsed: at(1)},
			{ID: "busy", Model: "y", Memory: 100},
		}, Wait, nil},
		{"as many as needed, oldest first", 150, 250, []Snapshot{
			{ID: "c", Model: "c", Memory: 100, Idle: true, LastUsed: at(3)},
			{ID: "a", Model: "a", Memory: 50, Idle: true, LastUsed: at(1)},
			{ID: "b", Model: "b", Memory: 50, Idle: true, LastUsed: at(2)},
		}, Evict, []string{"a", "b"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, victims := Plan(c.need, c.budget, "m", c.live)
			if v != c.verdict || !slices.Equal(victims, c.victims) {
				t.Fatalf("Plan = %s %v, want %s %v", v, victims, c.verdict, c.victims)
			}
		})
	}
}
