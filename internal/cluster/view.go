package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// View is a queen's in-memory picture of the cluster: one list of the
// prefix, then one watch from the revision after it (resumed from the last
// revision seen after a disconnect; a full list again when that revision was
// compacted). Workers of a hive whose key is gone are not in it.
type View struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger

	mu      sync.RWMutex
	hives   map[string]HiveRecord
	workers map[string]map[string]WorkerRecord // by node, then id
	rev     int64
	synced  bool
	changed chan struct{} // closed and replaced on every change
	// snap is Snapshot's answer until the next change: a queen routes
	// every request from it, and copying and sorting every hive's
	// workers per request (1000 records for 100 hives × 10) would cost
	// more than the relay.
	snap atomic.Pointer[[]Hive]

	cancel context.CancelFunc
	done   chan struct{}
}

// NewView starts watching prefix. Synced reports when the first list is in.
func NewView(cli *clientv3.Client, prefix string, log *slog.Logger) *View {
	ctx, cancel := context.WithCancel(context.Background())
	v := &View{
		cli: cli, prefix: prefix, log: discard(log),
		hives: map[string]HiveRecord{}, workers: map[string]map[string]WorkerRecord{},
		changed: make(chan struct{}), cancel: cancel, done: make(chan struct{}),
	}
	go v.run(ctx)
	return v
}

// Close stops the watch.
func (v *View) Close() {
	v.cancel()
	<-v.done
}

// Synced reports whether the first list has been read.
func (v *View) Synced() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.synced
}

// Changed returns a channel closed at the next change of the view.
func (v *View) Changed() <-chan struct{} {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.changed
}

// Revision is the etcd revision the view reflects.
func (v *View) Revision() int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.rev
}

// Hive is one hive with its workers, as the view sees it.
type Hive struct {
	HiveRecord
	Workers []WorkerRecord `json:"workers"`
}

// Snapshot returns every hive (by node name) with its workers (by id). It
// is built once per change of the view and shared: callers must not
// modify it.
func (v *View) Snapshot() []Hive {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if p := v.snap.Load(); p != nil {
		return *p
	}
	// No writer runs while the read lock is held: what is stored is the
	// view as it is, until notifyLocked drops it.
	s := snapshot(v.hives, v.workers)
	v.snap.Store(&s)
	return s
}

func (v *View) run(ctx context.Context) {
	defer close(v.done)
	logged := false
	for ctx.Err() == nil {
		if err := v.list(ctx); err != nil {
			if !logged && ctx.Err() == nil {
				v.log.Warn("Cannot list the cluster in etcd; retrying", "error", err)
				logged = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		if logged {
			v.log.Info("Cluster view listed again", "revision", v.Revision())
			logged = false
		}
		v.watch(ctx)
	}
}

// list replaces the view with the prefix's current contents.
func (v *View) list(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := v.cli.Get(lctx, v.prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	hives := map[string]HiveRecord{}
	workers := map[string]map[string]WorkerRecord{}
	for _, kv := range resp.Kvs {
		applyPut(v.prefix, hives, workers, kv)
	}
	v.mu.Lock()
	v.hives, v.workers, v.rev, v.synced = hives, workers, resp.Header.Revision, true
	v.notifyLocked()
	v.mu.Unlock()
	return nil
}

// watch follows changes from the revision after the view's until the
// watch ends: compaction (the caller lists again) or ctx. The client
// itself resumes the watch across disconnects; a new watch from the last
// revision seen is opened when its channel closes for any other reason.
func (v *View) watch(ctx context.Context) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		ch := v.cli.Watch(wctx, v.prefix, clientv3.WithPrefix(), clientv3.WithRev(v.Revision()+1))
		for resp := range ch {
			if resp.CompactRevision != 0 {
				v.log.Info("Watch revision compacted; listing the cluster again", "compact_revision", resp.CompactRevision)
				cancel()
				return
			}
			if err := resp.Err(); err != nil {
				v.log.Debug("Cluster watch ended", "error", err)
				break
			}
			v.apply(resp)
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (v *View) apply(resp clientv3.WatchResponse) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, ev := range resp.Events {
		switch ev.Type {
		case mvccpb.PUT:
			applyPut(v.prefix, v.hives, v.workers, ev.Kv)
		case mvccpb.DELETE:
			kind, node, id, ok := parseKey(v.prefix, string(ev.Kv.Key))
			if !ok {
				continue
			}
			if kind == "hives" {
				delete(v.hives, node)
			} else if ws := v.workers[node]; ws != nil {
				delete(ws, id)
				if len(ws) == 0 {
					delete(v.workers, node)
				}
			}
		}
	}
	// The view has seen up to its last event's revision, not the header's:
	// etcd catches a watch that is behind by more than 1000 revisions up in
	// batches, each with the header revision of the whole store, and a
	// watch restarted from that header would skip the batches not yet read.
	// A batch holds whole revisions, so a restart from the last event's
	// revision + 1 neither misses nor repeats one.
	if n := len(resp.Events); n > 0 && resp.Events[n-1].Kv.ModRevision > v.rev {
		v.rev = resp.Events[n-1].Kv.ModRevision
	}
	v.notifyLocked()
}

func (v *View) notifyLocked() {
	v.snap.Store(nil)
	close(v.changed)
	v.changed = make(chan struct{})
}

func applyPut(prefix string, hives map[string]HiveRecord, workers map[string]map[string]WorkerRecord, kv *mvccpb.KeyValue) {
	kind, node, id, ok := parseKey(prefix, string(kv.Key))
	if !ok {
		return
	}
	if kind == "hives" {
		var h HiveRecord
		if json.Unmarshal(kv.Value, &h) == nil {
			h.Node = node
			hives[node] = h
		}
		return
	}
	var w WorkerRecord
	if json.Unmarshal(kv.Value, &w) != nil {
		return
	}
	w.ID = id
	if workers[node] == nil {
		workers[node] = map[string]WorkerRecord{}
	}
	workers[node][id] = w
}
