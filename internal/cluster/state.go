package cluster

import (
	"context"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// State is the cluster as a whole: the body of a queen's GET /v1/cluster
// and of `rbee-hive cluster status --output json`.
type State struct {
	Revision int64       `json:"revision"`
	Hives    []Hive      `json:"hives"`
	Models   []ModelView `json:"models"`
}

// ModelView is one model across the cluster.
type ModelView struct {
	Name     string         `json:"name"`
	Hives    []string       `json:"hives"`
	Workers  map[string]int `json:"workers"` // by state
	InFlight int            `json:"in_flight"`
}

// Summarize builds the cluster's state from its hives (sorted by node, as
// Snapshot and List return them).
func Summarize(rev int64, hives []Hive) State {
	byName := map[string]*ModelView{}
	get := func(n string) *ModelView {
		m := byName[n]
		if m == nil {
			m = &ModelView{Name: n, Hives: []string{}, Workers: map[string]int{}}
			byName[n] = m
		}
		return m
	}
	for _, h := range hives {
		for _, n := range h.Models {
			m := get(n)
			m.Hives = append(m.Hives, h.Node)
		}
		for _, w := range h.Workers {
			m := get(w.Model)
			m.Workers[w.State]++
			m.InFlight += w.InFlight
		}
	}
	out := State{Revision: rev, Hives: hives, Models: make([]ModelView, 0, len(byName))}
	if out.Hives == nil {
		out.Hives = []Hive{}
	}
	for _, m := range byName {
		out.Models = append(out.Models, *m)
	}
	sort.Slice(out.Models, func(i, j int) bool { return out.Models[i].Name < out.Models[j].Name })
	return out
}

// List reads the prefix once (one range read) and returns what etcd holds
// now, as a queen's view would show it: workers whose hive key is gone are
// left out.
func List(ctx context.Context, cli *clientv3.Client, prefix string) (State, error) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.Get(lctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return State{}, err
	}
	hives := map[string]HiveRecord{}
	workers := map[string]map[string]WorkerRecord{}
	for _, kv := range resp.Kvs {
		applyPut(prefix, hives, workers, kv)
	}
	return Summarize(resp.Header.Revision, snapshot(hives, workers)), nil
}

// snapshot sorts hives by node and each hive's workers by id.
func snapshot(hives map[string]HiveRecord, workers map[string]map[string]WorkerRecord) []Hive {
	out := make([]Hive, 0, len(hives))
	for node, h := range hives {
		ws := make([]WorkerRecord, 0, len(workers[node]))
		for _, w := range workers[node] {
			ws = append(ws, w)
		}
		sort.Slice(ws, func(i, j int) bool { return ws[i].ID < ws[j].ID })
		out = append(out, Hive{HiveRecord: h, Workers: ws})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}
