package queen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/cluster"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/testutil/etcdtest"
)

// relayFixture is a queen in front of one fake hive (an httptest server
// registered in a real etcd as node "a").
func relayFixture(t *testing.T, hive http.Handler) (queenURL string) {
	t.Helper()
	hs := httptest.NewServer(hive)
	t.Cleanup(hs.Close)
	e := etcdtest.Start(t)
	cli, err := cluster.NewClient(e.Endpoints, config.ClusterTLS{}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	p := e.Prefix("relay")
	rec, _ := json.Marshal(cluster.HiveRecord{Node: "a", URL: hs.URL, Models: []string{"m"}})
	if _, err := cli.Put(context.Background(), p+"hives/a", string(rec)); err != nil {
		t.Fatal(err)
	}
	v := cluster.NewView(cli, p, nil)
	t.Cleanup(v.Close)
	q := New(Config{InferenceTokens: []string{"client-tok"}, HiveToken: "hive-tok", MaxBodyBytes: 1 << 20}, v, nil, false)
	t.Cleanup(q.Close)
	order := func() string {
		if len(q.Route("m")) > 0 {
			return "a"
		}
		return ""
	}
	if waitOrder(v, order, "a") != "a" {
		t.Fatal("the queen's view never had hive a")
	}
	qs := httptest.NewServer(q.Handler())
	t.Cleanup(qs.Close)
	return qs.URL
}

func chat(t *testing.T, queenURL, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", queenURL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer client-tok")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", "r-1")
	req.Header.Set("X-Private", "not for the hive")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// The queen relays an event stream chunk by chunk (the client reads the
// first event before the hive writes the second), with the hive's
// headers and its own X-Rbee-Hive; the hive gets the queen's token, not
// the client's, and only the headers the queen relays.
func TestQueenRelaysAStreamChunkByChunkWithTheHiveToken(t *testing.T) {
	second := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(second) }) }
	t.Cleanup(release)
	var mu sync.Mutex
	var got http.Header
	url := relayFixture(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Hive-Says", "hi")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-second:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: 2\n\ndata: [DONE]\n\n")
	}))
	type first struct {
		resp *http.Response
		rd   *bufio.Reader
		line string
		err  error
	}
	ch := make(chan first, 1)
	go func() {
		resp := chat(t, url, `{"model":"m","stream":true}`)
		rd := bufio.NewReader(resp.Body)
		l, err := rd.ReadString('\n')
		ch <- first{resp, rd, l, err}
	}()
	var f first
	select {
	case f = <-ch:
	case <-time.After(10 * time.Second):
		release()
		t.Fatal("the first event did not reach the client before the hive wrote the second")
	}
	defer f.resp.Body.Close()
	if f.err != nil || f.line != "data: 1\n" {
		t.Fatalf("first line %q, %v", f.line, f.err)
	}
	release()
	rest, err := io.ReadAll(f.rd)
	if err != nil || string(rest) != "\ndata: 2\n\ndata: [DONE]\n\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
	if f.resp.Header.Get(HiveHeader) != "a" || f.resp.Header.Get("X-Hive-Says") != "hi" || f.resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("answer headers %v", f.resp.Header)
	}
	mu.Lock()
	defer mu.Unlock()
	if got.Get("Authorization") != "Bearer hive-tok" || got.Get("X-Request-Id") != "r-1" || got.Get("Content-Type") != "application/json" || got.Get("X-Private") != "" {
		t.Fatalf("the hive got headers %v", got)
	}
}

// Regression: a hive answer that broke off mid-stream ended the client's
// chunked answer as if it were complete (the queen's handler returned
// normally); the client must see the stream cut.
func TestQueenCutsTheClientWhenTheHiveAnswerBreaksOff(t *testing.T) {
	url := relayFixture(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the hive's connection cut mid-answer
	}))
	resp := chat(t, url, `{"model":"m","stream":true}`)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(b), "data: 1\n") {
		t.Fatalf("body %q", b)
	}
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("the client read the broken answer to a clean end (%q, err %v): want it cut", b, err)
	}
}

// The retry after a hive failed before answering went to the second hive
// of the ranking made before the first try, however long that try took (a
// cold start, minutes): a hive whose key went meanwhile (it left the
// cluster) still got the request.
func TestQueenRetryGoesToNoHiveWhoseKeyWentDuringTheFirstTry(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hiveA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(arrived) })
		<-release
		panic(http.ErrAbortHandler) // fails before any byte of an answer
	}))
	defer hiveA.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	var mu sync.Mutex
	hits := map[string]int{}
	answer := func(node string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hits[node]++
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"hive":"`+node+`"}`)
		}))
	}
	hiveB, hiveC := answer("b"), answer("c")
	defer hiveB.Close()
	defer hiveC.Close()

	e := etcdtest.Start(t)
	cli, err := cluster.NewClient(e.Endpoints, config.ClusterTLS{}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	p := e.Prefix("retry")
	put := func(k string, v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if _, err := cli.Put(ctx, k, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	// a and b have a free worker (a fewer in flight), c would cold-start.
	put(p+"hives/a", cluster.HiveRecord{Node: "a", URL: hiveA.URL, Models: []string{"m"}})
	put(p+"hives/b", cluster.HiveRecord{Node: "b", URL: hiveB.URL, Models: []string{"m"}})
	put(p+"hives/c", cluster.HiveRecord{Node: "c", URL: hiveC.URL, Models: []string{"m"}})
	put(p+"workers/a/w1", cluster.WorkerRecord{Model: "m", State: "idle", MaxConcurrency: 4})
	put(p+"workers/b/w2", cluster.WorkerRecord{Model: "m", State: "busy", InFlight: 1, MaxConcurrency: 4})
	v := cluster.NewView(cli, p, nil)
	defer v.Close()
	q := New(Config{MaxBodyBytes: 1 << 20}, v, nil, true)
	defer q.Close()
	order := func() string {
		var n []string
		for _, c := range q.Route("m") {
			n = append(n, c.node)
		}
		return strings.Join(n, ",")
	}
	if got := waitOrder(v, order, "a,b,c"); got != "a,b,c" {
		t.Fatalf("route order %q, want a,b,c", got)
	}
	qs := httptest.NewServer(q.Handler())
	defer qs.Close()

	type result struct {
		code int
		node string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Post(qs.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m"}`))
		if err != nil {
			done <- result{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- result{code: resp.StatusCode, node: resp.Header.Get(HiveHeader)}
	}()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach hive a")
	}
	// b leaves the cluster while a holds the request.
	if _, err := cli.Delete(ctx, p+"hives/b"); err != nil {
		t.Fatal(err)
	}
	if got := waitOrder(v, order, "a,c"); got != "a,c" {
		t.Fatalf("route order %q after b's key went, want a,c", got)
	}
	close(release)
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("no answer after hive a failed")
	}
	if r.err != nil || r.code != 200 || r.node != "c" {
		t.Errorf("answer %d from %q (%v), want 200 from c", r.code, r.node, r.err)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits["b"] != 0 {
		t.Errorf("hive b got %d request(s) after its key went", hits["b"])
	}
}
