package cluster

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rbee/rbee-hive/internal/config"
)

// viewOf is a View fed by hand (no etcd): apply is what its watch calls.
func viewOf(t testing.TB) *View {
	t.Helper()
	return &View{prefix: "/t/", hives: map[string]HiveRecord{}, workers: map[string]map[string]WorkerRecord{}, changed: make(chan struct{})}
}

func put(t testing.TB, v *View, key string, rec any) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	v.apply(clientv3.WatchResponse{Header: &etcdserverpb.ResponseHeader{}, Events: []*clientv3.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: b}}}})
}

// The snapshot a queen routes from is built once per change and shared,
// and every change (a put, a delete) is in the next one.
func TestViewSnapshotSharedUntilTheNextChange(t *testing.T) {
	v := viewOf(t)
	put(t, v, "/t/hives/a", HiveRecord{Node: "a", URL: "http://a"})
	put(t, v, "/t/workers/a/w1", WorkerRecord{ID: "w1", Model: "m", State: "idle"})
	s1 := v.Snapshot()
	if len(s1) != 1 || len(s1[0].Workers) != 1 || s1[0].Workers[0].State != "idle" {
		t.Fatalf("snapshot %+v", s1)
	}
	if s2 := v.Snapshot(); &s2[0] != &s1[0] {
		t.Fatal("an unchanged view built its snapshot again")
	}
	put(t, v, "/t/workers/a/w1", WorkerRecord{ID: "w1", Model: "m", State: "busy", InFlight: 1})
	if s := v.Snapshot(); s[0].Workers[0].State != "busy" || s[0].Workers[0].InFlight != 1 {
		t.Fatalf("after a put: %+v", s)
	}
	v.apply(clientv3.WatchResponse{Header: &etcdserverpb.ResponseHeader{}, Events: []*clientv3.Event{{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/t/hives/a")}}}})
	if s := v.Snapshot(); len(s) != 0 {
		t.Fatalf("after the hive's key went: %+v", s)
	}
}

// A queen's per-request read of a 100 hives × 10 workers view.
func BenchmarkViewSnapshot100x10(b *testing.B) {
	v := viewOf(b)
	for h := 0; h < 100; h++ {
		node := fmt.Sprintf("h%03d", h)
		put(b, v, "/t/hives/"+node, HiveRecord{Node: node, URL: "http://" + node, Models: []string{"m"}})
		for w := 0; w < 10; w++ {
			id := fmt.Sprintf("w%d", w)
			put(b, v, "/t/workers/"+node+"/"+id, WorkerRecord{ID: id, Model: "m", State: "idle"})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = v.Snapshot()
	}
}

// A hive's record says which model each alias names, so that a queen
// takes a ready worker of the model for a request naming an alias.
func TestHiveRecordNamesTheModelOfEachAlias(t *testing.T) {
	cfg := config.Config{Models: map[string]config.Model{
		"llama": {Aliases: []string{"l", "ll"}},
		"qwen":  {},
	}}
	models, _, aliases := servedModels(cfg)
	sort.Strings(models)
	if got := fmt.Sprint(models); got != "[l ll llama qwen]" {
		t.Errorf("models %s", got)
	}
	if got := fmt.Sprint(aliases); got != "map[l:llama ll:llama]" {
		t.Errorf("aliases %s", got)
	}
	b, _ := json.Marshal(HiveRecord{Aliases: aliases})
	if !strings.Contains(string(b), `"aliases":{"l":"llama","ll":"llama"}`) {
		t.Errorf("record %s", b)
	}
}
