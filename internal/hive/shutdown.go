package hive

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/supervisor"
)

// Shutdown stops every live worker in parallel within ctx (the shutdown
// budget); what is still alive when ctx ends is killed. It then releases the
// hive's services. It logs the progress lines of SPEC §3.
//
//  1. Under h.mu, refuse every later spawn (ErrShuttingDown).
//  2. Wait for the spawns admitted before that to register their worker.
//  3. Snapshot the workers under h.mu: none can be added after it.
//  4. Stop the live ones and wait on their endings (no polling); at the
//     budget, kill what is left and wait (bounded) for those endings too.
//     Only workers that ended are counted as stopped.
func (h *Hive) Shutdown(ctx context.Context) {
	h.beginClosing(ctx)
	h.mu.Lock()
	var live, ending []*supervisor.Worker
	for _, w := range h.workers {
		if info := w.Info(); info != nil && !info.State.Ended() {
			live = append(live, w)
		} else {
			ending = append(ending, w) // its owner may still be cleaning up its tree
		}
	}
	h.mu.Unlock()
	n := len(live)
	h.log.Info(fmt.Sprintf("Shutting down %d workers...", n), "workers", n)
	start := time.Now()
	ended := make(chan *supervisor.Worker, n) // buffered: a waiter never blocks
	remaining := make(map[*supervisor.Worker]bool, n)
	for _, w := range live {
		remaining[w] = true
		go func() {
			_ = w.Stop(context.Background(), state.HiveShutdown)
			<-w.Done()
			ended <- w
		}()
	}
	stopped := 0
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	budget := ctx.Done()
	var killWait <-chan time.Time
wait:
	for len(remaining) > 0 {
		select {
		case w := <-ended:
			delete(remaining, w)
			stopped++
		case <-tick.C:
			h.log.Info(fmt.Sprintf("%d/%d workers stopped", stopped, n))
		case <-budget:
			budget = nil
			h.log.Warn(fmt.Sprintf("Shutdown budget spent, killing %d workers", len(remaining)))
			for w := range remaining {
				go func() { _ = w.Kill(context.Background(), state.HiveShutdown) }()
			}
			killWait = time.After(10 * time.Second)
		case <-killWait:
			for w := range remaining {
				h.log.Error("Worker did not end after kill", "worker_id", w.ID())
			}
			break wait
		}
	}
	h.log.Info(fmt.Sprintf("%d/%d workers stopped", stopped, n), "after", time.Since(start).String())
	if stopped == n {
		h.log.Info("All workers stopped, exiting")
	} else {
		h.log.Error(fmt.Sprintf("%d workers did not end, exiting", n-stopped))
	}
	// Workers that had just ended may still be removing their trees and
	// cgroups; let them finish (bounded) before the scope goes.
	for _, w := range ending {
		select {
		case <-w.Done():
		case <-time.After(10 * time.Second):
			h.log.Error("Ended worker's owner did not finish", "worker_id", w.ID())
		}
	}
	// Every worker's cgroup is gone with it, and the spare goes; the
	// hive's (now empty) scope goes too, so a clean exit leaves nothing
	// under the cgroup roots.
	h.closeSpare()
	if h.cgroups != nil {
		if err := h.cgroups.RemoveScope(); err != nil {
			h.log.Warn("Removing the hive's cgroup scope failed", "scope", h.cgroups.Scope(), "error", err)
		}
	}
	h.close()
}

// beginClosing refuses every later spawn (under h.mu, where admission is
// decided) and waits, within ctx, for the spawns already admitted to
// register their worker.
func (h *Hive) beginClosing(ctx context.Context) {
	h.mu.Lock()
	h.shuttingDown = true
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.admitting.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		h.log.Error("Spawns admitted before the shutdown did not register in time")
	}
}

// StopAdmitting makes every later spawn fail with ErrShuttingDown; the
// daemon calls it first when a shutdown begins, before it stops serving.
func (h *Hive) StopAdmitting() {
	h.mu.Lock()
	h.shuttingDown = true
	h.mu.Unlock()
}

// Detach lets every live worker keep running (for --keep-workers-on-exit)
// and releases the hive's services.
func (h *Hive) Detach(ctx context.Context) {
	h.beginClosing(ctx)
	h.mu.Lock()
	ws := make([]*supervisor.Worker, 0, len(h.workers))
	for _, w := range h.workers {
		ws = append(ws, w)
	}
	h.mu.Unlock()
	h.log.Info(fmt.Sprintf("Leaving %d workers running for the next hive", len(ws)))
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Detach(ctx) }()
	}
	wg.Wait()
	h.closeSpare()
	h.close()
}

func (h *Hive) close() {
	h.writes.Wait() // records still being written in the background
	close(h.stopPrune)
	<-h.pruneDone
	h.lstats.close()
	h.gpu.inv.Close()
	h.logs.Close()
	h.client.CloseIdleConnections()
}
