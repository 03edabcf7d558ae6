package api

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The event stream's keep-alive comes at the ticks of the wall-clock grid
// the health probes use (10 s), not 15 s after the stream opened: an idle
// hive with a stream open then wakes up once for both. A real connection;
// the wait is bounded by one period.
func TestEventStreamKeepAliveFallsOnTheWallClockGrid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil)
	ts := httptest.NewServer(e.srv)
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), sseKeepAliveInterval+5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/v1/events", nil)
	opened := time.Now()
	resp, err := ts.Client().Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", err, resp)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("no keep-alive within %s: %v", time.Since(opened), err)
		}
		if strings.HasPrefix(line, ": keep-alive") {
			break
		}
	}
	at := time.Now()
	const slack = time.Second // scheduling, under -race and load
	if took := at.Sub(opened); took > sseKeepAliveInterval+slack {
		t.Errorf("first keep-alive %s after the stream opened, want at most %s", took, sseKeepAliveInterval)
	}
	if off := at.Sub(at.Truncate(sseKeepAliveInterval)); off > slack {
		t.Errorf("keep-alive at %s, %s past a multiple of %s on the wall clock", at.Format(time.StampMilli), off, sseKeepAliveInterval)
	}
}
