package refworker

import "testing"

// Loading heartbeats coalesce with each other, but the first idle one does
// not replace the last loading one: a hive slow to take them (a loaded
// machine) still hears the progress reach the total
// (TestSlowLoadAnswersWhileLoadingAndReportsProgress failed that way).
func TestIdleHeartbeatDoesNotReplaceTheLastLoadingOne(t *testing.T) {
	h := &hiveClient{workerID: "w", kick: make(chan struct{}, 1)}
	h.loading(10, 100)
	h.loading(100, 100)
	h.ready(false, 1, 1, false)
	h.ready(false, 1, 0, false)
	first, _ := h.pop()
	second, _ := h.pop()
	if _, more := h.pop(); more || first.State != "loading" || first.Progress == nil || first.Progress.Done != 100 ||
		second.State != "idle" || *second.SlotsAvailable != 0 {
		t.Fatalf("queued %+v then %+v (more: %v)", first, second, more)
	}
}
