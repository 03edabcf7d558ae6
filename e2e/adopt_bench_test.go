package e2e

import (
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

var tookRe = regexp.MustCompile(`msg="Recovered (\d+) workers".* took=([0-9.]+[µmn]?s)`)

// BenchmarkAdopt100 measures re-adoption of 100 idle reference workers by a
// hive restarted after a SIGKILL. Each iteration SIGKILLs the hive and
// starts a new one on the same state dir. It reports the median of
//
//   - recover-ms: Hive.Recover (load records, verify 100 processes and
//     cgroups, orphan sweep, resume supervision), from the hive's log;
//   - restart-ms: from exec of the new daemon to its first 200 on /health
//     with all 100 workers listed (what an operator waits for).
//
// Run: go test ./e2e -run '^$' -bench BenchmarkAdopt100 -benchtime 7x
func BenchmarkAdopt100(b *testing.B) {
	const n = 100
	o := hivetest.Options{Ports: n + 20, Settings: "  idle_timeout: 0s\n"}
	h := hivetest.Start(b, o)
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := h.Spawn(apiv1.SpawnRequest{})
			if err != nil {
				b.Error(err)
				return
			}
			ids[i] = r.WorkerID
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	for _, id := range ids {
		h.WaitState(id, 2*time.Minute, "idle")
	}
	var recov, restart []time.Duration
	b.ResetTimer()
	for range b.N {
		h.Kill9()
		waitBindable(b, h.Addr)
		start := time.Now()
		h.Restart(o)
		l, err := h.Client.List(b.Context(), false)
		restart = append(restart, time.Since(start))
		if err != nil || len(l) != n {
			b.Fatalf("after restart: %d workers, %v", len(l), err)
		}
		for _, w := range l {
			if w.State != "idle" {
				b.Fatalf("worker %s is %s after adoption", w.ID, w.State)
			}
		}
		m := tookRe.FindStringSubmatch(h.Log())
		if m == nil {
			b.Fatalf("no recovery line in the log:\n%s", h.Log())
		}
		d, err := time.ParseDuration(m[2])
		if err != nil {
			b.Fatal(err)
		}
		recov = append(recov, d)
	}
	b.StopTimer()
	b.ReportMetric(ms(median(recov)), "recover-ms")
	b.ReportMetric(ms(median(restart)), "restart-ms")
	b.Logf("adopting %d workers: median Recover %s, median restart-to-listed %s (%d runs)",
		n, median(recov), median(restart), len(recov))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
