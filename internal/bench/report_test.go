package bench

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestReportTargetsAndTables(t *testing.T) {
	var r Report
	r.Add(Result{Section: "supervision", Name: "crash", N: 1, Unit: "ms"}, []float64{1, 2, 3}, target("p99", 5, "p99 < 5 ms"))
	r.Add(Result{Section: "supervision", Name: "slow", N: 1, Unit: "ms"}, []float64{10}, target("max", 5, "max < 5 ms"))
	r.Add(Result{Section: "scale", Name: "rss", N: 100, Unit: "MiB"}, []float64{30}, nil)
	r.Add(Result{Section: "scale", Name: "rss", N: 1000, Unit: "MiB"}, []float64{120}, target("median", 150, "< 150"))
	if p := r.Results[0].Pass; p == nil || !*p {
		t.Fatal("p99 3 < 5 must pass")
	}
	if p := r.Results[1].Pass; p == nil || *p {
		t.Fatal("max 10 < 5 must fail")
	}
	if r.Results[2].Pass != nil || r.Results[2].System != "rbee-hive" {
		t.Fatalf("no target: %+v", r.Results[2])
	}
	md := string(r.Markdown())
	for _, want := range []string{"| crash | 1 | ms | 3 | 2.00 | 3.00 | 3.00 | p99 < 5 ms | pass |", "**FAIL**", "ratio 1000/100", "| rss | MiB | 30.0 | 120 | 4.00 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	js, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil || len(back.Results) != 4 {
		t.Fatalf("json round trip: %v, %d results", err, len(back.Results))
	}
}
