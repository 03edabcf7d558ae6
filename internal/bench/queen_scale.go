package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rbee/rbee-hive/internal/cluster"
	"github.com/rbee/rbee-hive/internal/testutil/daemonkit"
)

// The scale part of the queen section (issue 17, "100 registered hives with
// 10 workers each"): a load generator writes, into the same etcd, the keys
// of simulated hives — each under its own lease with a hive's default TTL,
// kept alive, its hive record rewritten once per capacity interval as a
// real hive's registrar does at steady state — and a real rbee-queen
// process (bin/rbee-queen) watches that prefix. It measures the queen's
// RSS, the time from an etcd Put of a worker change to GET /v1/cluster
// showing it, and the time a queen started after the hives takes to list
// them all.

const (
	simLeaseTTL      = 10 * time.Second // config.Cluster's default lease_ttl
	simCapacityEvery = 5 * time.Second  // the registrar's default CapacityEvery
	// simURL refuses connections: the simulated hives are never routed to.
	simURL = "http://127.0.0.1:1"
)

// simHive is one simulated hive: its lease and its records.
type simHive struct {
	node    string
	lease   clientv3.LeaseID
	rec     cluster.HiveRecord
	workers []cluster.WorkerRecord
}

// simFleet is the load generator.
type simFleet struct {
	cli    *clientv3.Client
	prefix string
	hives  []*simHive
	stop   chan struct{}
	wg     sync.WaitGroup
	cancel context.CancelFunc // the keepalives
}

// startFleet registers nh hives of nw workers each under prefix, copying the
// shape of the real hive record tmplHive and worker record tmplWorker.
func startFleet(cli *clientv3.Client, prefix string, nh, nw int, tmplHive cluster.HiveRecord, tmplWorker cluster.WorkerRecord) (*simFleet, error) {
	kctx, cancel := context.WithCancel(context.Background())
	f := &simFleet{cli: cli, prefix: prefix, stop: make(chan struct{}), cancel: cancel}
	for i := 0; i < nh; i++ {
		h := &simHive{node: fmt.Sprintf("sim-%03d", i)}
		h.rec = tmplHive
		h.rec.Node, h.rec.URL = h.node, simURL
		h.rec.StartedAt = time.Now().UTC()
		for j := 0; j < nw; j++ {
			w := tmplWorker
			w.ID = fmt.Sprintf("%s-w%02d", h.node, j)
			w.State, w.InFlight = "idle", 0
			h.workers = append(h.workers, w)
		}
		ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		g, err := cli.Grant(ctx, int64(simLeaseTTL/time.Second))
		c()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("grant: %w", err)
		}
		h.lease = g.ID
		ka, err := cli.KeepAlive(kctx, g.ID)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("keepalive: %w", err)
		}
		go func() {
			for range ka {
			}
		}()
		// One transaction, as a registering hive writes its whole state.
		ops := []clientv3.Op{f.hiveOp(h)}
		for _, w := range h.workers {
			b, _ := json.Marshal(w)
			ops = append(ops, clientv3.OpPut(cluster.WorkerKey(prefix, h.node, w.ID), string(b), clientv3.WithLease(h.lease)))
		}
		ctx, c = context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Txn(ctx).Then(ops...).Commit()
		c()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("register %s: %w", h.node, err)
		}
		f.hives = append(f.hives, h)
	}
	// The steady state: each hive rewrites its record once per capacity
	// interval (its memory_free moved), at its own phase.
	for _, h := range f.hives {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			phase := time.NewTimer(rand.N(simCapacityEvery))
			select {
			case <-phase.C:
			case <-f.stop:
				phase.Stop()
				return
			}
			t := time.NewTicker(simCapacityEvery)
			defer t.Stop()
			for {
				h.rec.Capacity.MemoryFree += rand.Int64N(1<<20) - 1<<19
				ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
				_, _ = cli.Txn(ctx).Then(f.hiveOp(h)).Commit()
				c()
				select {
				case <-t.C:
				case <-f.stop:
					return
				}
			}
		}()
	}
	return f, nil
}

func (f *simFleet) hiveOp(h *simHive) clientv3.Op {
	r := h.rec
	r.UpdatedAt = time.Now().UTC()
	b, _ := json.Marshal(r)
	return clientv3.OpPut(cluster.HiveKey(f.prefix, h.node), string(b), clientv3.WithLease(h.lease))
}

// setWorker writes one worker's record (under its hive's lease); it returns
// the record's JSON as the queen will show it.
func (f *simFleet) setWorker(h *simHive, j int, state string, inFlight int) ([]byte, error) {
	w := &h.workers[j]
	w.State, w.InFlight = state, inFlight
	b, _ := json.Marshal(*w)
	ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	_, err := f.cli.Put(ctx, cluster.WorkerKey(f.prefix, h.node, w.ID), string(b), clientv3.WithLease(h.lease))
	return b, err
}

// Close stops the writers and revokes every lease (the keys vanish).
func (f *simFleet) Close() {
	close(f.stop)
	f.wg.Wait()
	f.cancel()
	for _, h := range f.hives {
		ctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = f.cli.Revoke(ctx, h.lease)
		c()
	}
}

// queenProc is a real rbee-queen process.
type queenProc struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
	log  *bytes.Buffer
}

func startQueen(bin, dir, endpoint, prefix string, args ...string) (*queenProc, error) {
	port, err := daemonkit.FreeRange(1)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, fmt.Sprintf("queen-%d.yaml", port))
	y := fmt.Sprintf("listen: 127.0.0.1:%d\netcd: {endpoints: [%s]}\nprefix: %s\nlog_level: warn\n", port, endpoint, prefix)
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		return nil, err
	}
	q := &queenProc{url: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan struct{}), log: &bytes.Buffer{}}
	q.cmd = exec.Command(bin, append([]string{"--config", cfg}, args...)...)
	q.cmd.Stdout, q.cmd.Stderr = q.log, q.log
	if err := q.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = q.cmd.Wait(); close(q.done) }()
	return q, nil
}

// Close stops the queen (SIGTERM, then SIGKILL) and reaps it.
func (q *queenProc) Close() { _, _ = daemonkit.Stop(q.cmd.Process.Pid, q.done, 5*time.Second) }

// cluster fetches GET /v1/cluster.
func (q *queenProc) cluster(cl *http.Client) ([]byte, error) {
	resp, err := cl.Get(q.url + "/v1/cluster")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET /v1/cluster: %s", resp.Status)
	}
	return b, err
}

// waitListed polls GET /v1/cluster (every ms) until it shows nh hives with
// nw workers each; it returns when that was first seen.
func (q *queenProc) waitListed(cl *http.Client, nh, nw int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-q.done:
			return time.Time{}, fmt.Errorf("rbee-queen exited: %s", q.log.String())
		default:
		}
		b, err := q.cluster(cl)
		if err == nil {
			var st cluster.State
			if err := json.Unmarshal(b, &st); err != nil {
				return time.Time{}, fmt.Errorf("GET /v1/cluster: %w", err)
			}
			full := 0
			for _, h := range st.Hives {
				if len(h.Workers) == nw {
					full++
				}
			}
			if len(st.Hives) == nh && full == nh {
				return time.Now(), nil
			}
			last = fmt.Sprintf("%d hives, %d with %d workers", len(st.Hives), full, nw)
		} else {
			last = err.Error()
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("the queen did not list %d hives × %d workers within %s (last: %s)", nh, nw, timeout, last)
}

// queenScale runs the scale scenario against the etcd at endpoint.
func (b *Bench) queenScale(cli *clientv3.Client, endpoint, realPrefix, dir string) error {
	nh, nw, starts := 100, 10, 5
	if b.o.Smoke {
		nh, nw, starts = 5, 2, 2
	}
	bin := filepath.Join(filepath.Dir(b.o.Bins.Hive), "rbee-queen")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("rbee-queen beside rbee-hive: %w (build with make bench-bins)", err)
	}
	// The real hive's records are the templates.
	ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	hr, err := cli.Get(ctx, cluster.HiveKey(realPrefix, "bench"))
	c()
	if err != nil || len(hr.Kvs) == 0 {
		return fmt.Errorf("the real hive's record: %v", err)
	}
	var tmplHive cluster.HiveRecord
	if err := json.Unmarshal(hr.Kvs[0].Value, &tmplHive); err != nil {
		return err
	}
	ctx, c = context.WithTimeout(context.Background(), 5*time.Second)
	wr, err := cli.Get(ctx, cluster.WorkersPrefix(realPrefix, "bench"), clientv3.WithPrefix(), clientv3.WithLimit(1))
	c()
	if err != nil || len(wr.Kvs) == 0 {
		return fmt.Errorf("the real hive's worker record: %v", err)
	}
	var tmplWorker cluster.WorkerRecord
	if err := json.Unmarshal(wr.Kvs[0].Value, &tmplWorker); err != nil {
		return err
	}

	const prefix = "/scale/"
	b.logf("queen scale: %d simulated hives × %d workers", nh, nw)
	fleet, err := startFleet(cli, prefix, nh, nw, tmplHive, tmplWorker)
	if err != nil {
		return err
	}
	defer fleet.Close()
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	load := fmt.Sprintf("%d simulated hives × %d workers, each hive record rewritten once per %s (by construction)", nh, nw, simCapacityEvery)

	// A queen with nothing registered: the baseline of its memory.
	empty, err := startQueen(bin, dir, endpoint, "/empty/")
	if err != nil {
		return err
	}
	if _, err := empty.waitListed(hc, 0, nw, 20*time.Second); err != nil {
		empty.Close()
		return err
	}
	time.Sleep(b.o.Settle)
	var base []float64
	for i := 0; i < 5; i++ {
		r, err := rssBytes(empty.cmd.Process.Pid)
		if err != nil {
			empty.Close()
			return err
		}
		base = append(base, float64(r)/(1<<20))
		time.Sleep(200 * time.Millisecond)
	}
	empty.Close()

	// Queens started after the hives: start → GET /v1/cluster lists them all.
	var list []float64
	var q *queenProc
	for i := 0; i < starts; i++ {
		if q != nil {
			q.Close()
		}
		t0 := time.Now()
		q, err = startQueen(bin, dir, endpoint, prefix)
		if err != nil {
			return err
		}
		at, err := q.waitListed(hc, nh, nw, 30*time.Second)
		if err != nil {
			q.Close()
			return err
		}
		list = append(list, msf(at.Sub(t0)))
	}
	defer q.Close()
	hc.CloseIdleConnections()

	// View convergence: Put a worker's change, poll GET /v1/cluster until
	// the record shows. Each trial changes another worker (idle → busy, a
	// second visit busy → idle).
	var conv, poll []float64
	for i := 0; i < b.o.Trials; i++ {
		h := fleet.hives[i%nh]
		j := (i / nh) % nw
		state, inFlight := "busy", 1
		if h.workers[j].State == "busy" {
			state, inFlight = "idle", 0
		}
		t0 := time.Now()
		want, err := fleet.setWorker(h, j, state, inFlight)
		if err != nil {
			return fmt.Errorf("put: %w", err)
		}
		deadline := t0.Add(10 * time.Second)
		for {
			p0 := time.Now()
			body, err := q.cluster(hc)
			if err != nil {
				return err
			}
			now := time.Now()
			poll = append(poll, msf(now.Sub(p0)))
			if bytes.Contains(body, want) {
				conv = append(conv, msf(now.Sub(t0)))
				break
			}
			if now.After(deadline) {
				return fmt.Errorf("worker %s %s not in the queen's view within 10s", h.workers[j].ID, state)
			}
		}
	}

	time.Sleep(b.o.Settle)
	var rss []float64
	for i := 0; i < 5; i++ {
		r, err := rssBytes(q.cmd.Process.Pid)
		if err != nil {
			return err
		}
		rss = append(rss, float64(r)/(1<<20))
		time.Sleep(200 * time.Millisecond)
	}

	sec := Result{Section: "queen", N: nh * nw}
	b.add(with(sec, "MiB", 0), "rbee-queen RSS, nothing registered", base, nil,
		"VmRSS of the process, 5 reads after GET /v1/cluster answered and a settle")
	b.add(with(sec, "MiB", nh*nw), fmt.Sprintf("rbee-queen RSS, %d hives × %d workers", nh, nw), rss, nil,
		"VmRSS of the process after the convergence trials and a settle; "+load)
	b.add(with(sec, "ms", nh*nw), "etcd Put of a worker change → GET /v1/cluster shows it", conv, nil,
		fmt.Sprintf("the bench polls GET /v1/cluster back to back (one GET: median %s ms, p99 %s ms; the resolution); the same load",
			num(Summarize(poll).Median), num(Summarize(poll).P99)))
	b.add(with(sec, "ms", nh*nw), fmt.Sprintf("rbee-queen started → GET /v1/cluster lists all %d hives", nh), list, nil,
		"from exec to the first GET that shows every hive with all its workers (polled every ms); the same load")
	return nil
}

func with(r Result, unit string, n int) Result {
	r.Unit, r.N = unit, n
	return r
}
