package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// RegistrarOptions configure a Registrar.
type RegistrarOptions struct {
	Client   *clientv3.Client
	Prefix   string // ends in "/"
	Node     string
	LeaseTTL time.Duration
	Logger   *slog.Logger
	// Hive returns the hive's record (UpdatedAt is set at write time).
	// It is called every CapacityEvery and on Trigger.
	Hive func() HiveRecord
	// Workers returns the live workers' records. It is called often
	// (every PollEvery): it must be cheap and must not block.
	Workers func() []WorkerRecord
	// PollEvery bounds how late a change that sent no Trigger is written;
	// default 100ms.
	PollEvery time.Duration
	// CapacityEvery is how often the hive record is rebuilt; default 5s.
	CapacityEvery time.Duration
	// Batch is the shortest time between two writes; changes within it
	// go out in one transaction. Default 20ms.
	Batch time.Duration
}

// Registrar keeps a hive's keys in etcd under one lease (SPEC §12). Losing
// etcd never stops anything: it logs once, keeps trying, and registers
// again under a new lease, with the state of that moment, once etcd is back.
type Registrar struct {
	o   RegistrarOptions
	log *slog.Logger

	trigger chan struct{}
	stop    chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	lease   clientv3.LeaseID
	written map[string][]byte // what etcd holds under lease, by key
	hive    HiveRecord        // last built, UpdatedAt zero
	lost    <-chan struct{}   // closed when the lease's keepalive ends
	kaStop  context.CancelFunc
	// dropped is the lease given up after a failed write or a lost
	// keepalive, until a registration moves its keys: it may still hold
	// them in etcd, so Close revokes it.
	dropped clientv3.LeaseID

	writes   atomic.Int64 // transactions committed
	register atomic.Int64 // registrations (leases granted)
}

// NewRegistrar returns a registrar; Start runs it.
func NewRegistrar(o RegistrarOptions) *Registrar {
	if o.PollEvery <= 0 {
		o.PollEvery = 100 * time.Millisecond
	}
	if o.CapacityEvery <= 0 {
		o.CapacityEvery = 5 * time.Second
	}
	if o.Batch <= 0 {
		o.Batch = 20 * time.Millisecond
	}
	if o.LeaseTTL < time.Second {
		o.LeaseTTL = 10 * time.Second
	}
	return &Registrar{
		o: o, log: discard(o.Logger), trigger: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// Start runs the registration loop in the background.
func (r *Registrar) Start() { go r.loop() }

// Trigger asks for a write soon (within Batch): a worker changed state.
func (r *Registrar) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Writes is the number of transactions committed (registrations included).
func (r *Registrar) Writes() int64 { return r.writes.Load() }

// Registrations is the number of leases granted.
func (r *Registrar) Registrations() int64 { return r.register.Load() }

// Lease is the current lease (0: not registered).
func (r *Registrar) Lease() clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// Close stops the loop and revokes the lease (the hive's keys vanish at
// once) within ctx.
func (r *Registrar) Close(ctx context.Context) {
	close(r.stop)
	<-r.done
	r.mu.Lock()
	lease := r.lease
	if lease == 0 {
		lease = r.dropped
	}
	r.lease, r.dropped = 0, 0
	if r.kaStop != nil {
		r.kaStop()
	}
	r.mu.Unlock()
	if lease != 0 {
		_, err := r.o.Client.Revoke(ctx, lease)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			err = nil // expired already (a dropped lease): its keys are gone
		}
		if err != nil {
			r.log.Warn("Revoking the cluster lease failed; the keys vanish when it expires", "error", err)
		} else {
			r.log.Info("Left the cluster", "node", r.o.Node)
		}
	}
}

func (r *Registrar) loop() {
	defer close(r.done)
	r.hive = r.buildHive()
	poll := time.NewTicker(r.o.PollEvery)
	defer poll.Stop()
	capacity := time.NewTicker(r.o.CapacityEvery)
	defer capacity.Stop()
	var last time.Time
	down := false        // etcd unreachable, logged once
	retry := time.Time{} // next registration try
	for {
		var lost <-chan struct{}
		r.mu.Lock()
		lost = r.lost
		registered := r.lease != 0
		r.mu.Unlock()
		select {
		case <-r.stop:
			return
		case <-lost:
			r.dropLease()
			if !down {
				r.log.Warn("Lost the cluster lease (etcd unreachable or the lease expired); serving locally, registering again when etcd is back", "node", r.o.Node)
				down = true
			}
			retry = time.Time{}
			continue
		case <-r.trigger:
			if wait := r.o.Batch - time.Since(last); wait > 0 {
				select {
				case <-time.After(wait):
				case <-r.stop:
					return
				}
			}
		case <-poll.C:
		case <-capacity.C:
			r.hive = r.buildHive()
		}
		if !registered {
			if time.Now().Before(retry) {
				continue
			}
			if err := r.registerNow(); err != nil {
				if !down {
					r.log.Warn("Cannot register in etcd; serving locally, retrying", "node", r.o.Node, "error", err)
					down = true
				}
				retry = time.Now().Add(500 * time.Millisecond)
				continue
			}
			if down {
				r.log.Info("Registered in etcd again under a new lease", "node", r.o.Node, "lease", int64(r.Lease()))
			} else {
				r.log.Info("Registered in etcd", "node", r.o.Node, "lease", int64(r.Lease()), "ttl", r.o.LeaseTTL.String())
			}
			down = false
			last = time.Now()
			continue
		}
		// The batch counts from the start of a write, not its end: a
		// change that came during a slow commit (fsync under load) goes
		// out as soon as that commit is done and Batch has passed since
		// it began, one write at a time.
		began := time.Now()
		wrote, err := r.sync()
		if err != nil {
			// A write that fails means the lease or etcd is gone: start over.
			r.dropLease()
			if !down {
				r.log.Warn("Writing to etcd failed; serving locally, registering again when etcd is back", "node", r.o.Node, "error", err)
				down = true
			}
			retry = time.Now().Add(500 * time.Millisecond)
			continue
		}
		if wrote {
			last = began
		}
	}
}

func (r *Registrar) buildHive() HiveRecord {
	h := r.o.Hive()
	h.Node = r.o.Node
	h.UpdatedAt = time.Time{}
	sort.Strings(h.Models)
	sort.Strings(h.GPUModels)
	return h
}

// desired is every key the hive should hold now, with its value. The hive
// record's updated_at is left out so that an unchanged hive compares equal.
func (r *Registrar) desired() map[string][]byte {
	ws := r.o.Workers()
	out := make(map[string][]byte, len(ws)+1)
	b, _ := json.Marshal(r.hive)
	out[HiveKey(r.o.Prefix, r.o.Node)] = b
	for _, w := range ws {
		b, _ := json.Marshal(w)
		out[WorkerKey(r.o.Prefix, r.o.Node, w.ID)] = b
	}
	return out
}

// value is what is written for key: the hive record gets its updated_at.
func (r *Registrar) value(key string, v []byte) string {
	if key != HiveKey(r.o.Prefix, r.o.Node) {
		return string(v)
	}
	h := r.hive
	h.UpdatedAt = time.Now().UTC()
	b, _ := json.Marshal(h)
	return string(b)
}

func (r *Registrar) dropLease() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kaStop != nil {
		r.kaStop()
		r.kaStop = nil
	}
	if r.lease != 0 {
		r.dropped = r.lease
	}
	r.lease = 0
	r.lost = nil
	r.written = nil
}

// registerNow grants a lease and writes the whole current state under it,
// deleting worker keys of this node that are no longer live (left by an
// earlier run of the hive).
func (r *Registrar) registerNow() error {
	ttl := int64((r.o.LeaseTTL + time.Second - 1) / time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	g, err := r.o.Client.Grant(ctx, ttl)
	if err != nil {
		return err
	}
	kctx, kstop := context.WithCancel(context.Background())
	ka, err := r.o.Client.KeepAlive(kctx, g.ID)
	if err != nil {
		kstop()
		return err
	}
	lost := make(chan struct{})
	go func() {
		for range ka {
		}
		close(lost)
	}()
	r.hive = r.buildHive()
	want := r.desired()
	old, err := r.o.Client.Get(ctx, WorkersPrefix(r.o.Prefix, r.o.Node), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		kstop()
		return err
	}
	var ops []clientv3.Op
	for _, kv := range old.Kvs {
		if _, ok := want[string(kv.Key)]; !ok {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	for k, v := range want {
		ops = append(ops, clientv3.OpPut(k, r.value(k, v), clientv3.WithLease(g.ID)))
	}
	if err := r.commit(ctx, ops); err != nil {
		kstop()
		// Bounded: with etcd gone the loop (and Close) must not wait
		// for it; an unrevoked lease expires on its own.
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = r.o.Client.Revoke(rctx, g.ID)
		rcancel()
		return err
	}
	r.register.Add(1)
	r.mu.Lock()
	// The dropped lease's keys are this one's now: it holds nothing.
	r.lease, r.lost, r.kaStop, r.written, r.dropped = g.ID, lost, kstop, want, 0
	r.mu.Unlock()
	return nil
}

// sync writes what changed since the last write, in one transaction, and
// reports whether there was anything to write.
func (r *Registrar) sync() (bool, error) {
	want := r.desired()
	r.mu.Lock()
	lease, written := r.lease, r.written
	r.mu.Unlock()
	var ops []clientv3.Op
	for k, v := range want {
		if old, ok := written[k]; !ok || !bytes.Equal(old, v) {
			ops = append(ops, clientv3.OpPut(k, r.value(k, v), clientv3.WithLease(lease)))
		}
	}
	for k := range written {
		if _, ok := want[k]; !ok {
			ops = append(ops, clientv3.OpDelete(k))
		}
	}
	if len(ops) == 0 {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.commit(ctx, ops); err != nil {
		return false, err
	}
	r.mu.Lock()
	if r.lease == lease {
		r.written = maps.Clone(want)
	}
	r.mu.Unlock()
	return true, nil
}

// maxOps stays under etcd's default --max-txn-ops (128).
const maxOps = 100

// commit runs ops in transactions of at most maxOps (one in practice).
func (r *Registrar) commit(ctx context.Context, ops []clientv3.Op) error {
	for len(ops) > 0 {
		n := min(len(ops), maxOps)
		if _, err := r.o.Client.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			return err
		}
		r.writes.Add(1)
		ops = ops[n:]
	}
	return nil
}
