package cluster

import (
	"bufio"
	"context"

	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/frontdoor"
	"github.com/rbee/rbee-hive/internal/hive"
	"github.com/rbee/rbee-hive/internal/version"
)

// Member is a hive's membership in the cluster: its registrar, fed by the
// hive's event hub and its front door's loads.
type Member struct {
	reg   *Registrar
	stop  chan struct{}
	done  chan struct{}
	close func() error
}

// Join registers h in the etcd cluster cfg.Cluster names and keeps it
// registered until Leave. It does not wait for etcd.
func Join(cfg config.Config, h *hive.Hive, fd *frontdoor.FrontDoor, log *slog.Logger) (*Member, error) {
	cc := cfg.Cluster.WithDefaults(cfg.Addr)
	cli, err := NewClient(cc.Etcd, cc.TLS, cc.Username, cc.Password)
	if err != nil {
		return nil, err
	}
	started := time.Now().UTC()
	models, gpuModels, aliases := servedModels(cfg)
	reg := NewRegistrar(RegistrarOptions{
		Client: cli, Prefix: cc.Prefix, Node: cc.Node, LeaseTTL: cc.LeaseTTL.D(), Logger: log,
		Hive: func() HiveRecord {
			return HiveRecord{URL: cc.Advertise, Version: version.Version, StartedAt: started,
				Capacity: localCapacity(h), Models: append([]string(nil), models...),
				GPUModels: append([]string(nil), gpuModels...), Aliases: aliases}
		},
		Workers: func() []WorkerRecord { return workersOf(h, fd) },
	})
	m := &Member{reg: reg, stop: make(chan struct{}), done: make(chan struct{}), close: cli.Close}
	go m.follow(h)
	reg.Start()
	log.Info("Joining the cluster", "node", cc.Node, "advertise", cc.Advertise, "etcd", strings.Join(cc.Etcd, ","),
		"prefix", cc.Prefix, "lease_ttl", cc.LeaseTTL.String())
	return m, nil
}

// servedModels are the models of cfg with their aliases, those (and their
// aliases) whose profile runs GPU workers, and the model each alias names.
func servedModels(cfg config.Config) (models, gpuModels []string, aliases map[string]string) {
	names := map[string]bool{}
	for name, m := range cfg.Models {
		names[name] = true
		for _, a := range m.Aliases {
			names[a] = true
			if aliases == nil {
				aliases = map[string]string{}
			}
			aliases[a] = name
		}
	}
	models = make([]string, 0, len(names))
	for n := range names {
		models = append(models, n)
	}
	gpuModels = []string{}
	for name, m := range cfg.Models {
		if p, ok := cfg.Profiles[m.Profile]; ok && p.GPU {
			gpuModels = append(gpuModels, name)
			gpuModels = append(gpuModels, m.Aliases...)
		}
	}
	return models, gpuModels, aliases
}

// Registrar is the member's registrar.
func (m *Member) Registrar() *Registrar { return m.reg }

// Leave revokes the lease (the hive's keys vanish at once) and closes the
// etcd client.
func (m *Member) Leave(ctx context.Context) {
	close(m.stop)
	<-m.done
	m.reg.Close(ctx)
	_ = m.close()
}

// follow triggers a write on every worker event.
func (m *Member) follow(h *hive.Hive) {
	defer close(m.done)
	for {
		sub := h.Events().Subscribe(256)
		for open := true; open; {
			select {
			case <-m.stop:
				sub.Close()
				return
			case _, ok := <-sub.C:
				open = ok
				m.reg.Trigger()
			}
		}
		// Fell behind: the poll catches up; subscribe again.
	}
}

// workersOf merges the hive's live workers with the front door's loads.
func workersOf(h *hive.Hive, fd *frontdoor.FrontDoor) []WorkerRecord {
	loads := map[string]frontdoor.WorkerLoad{}
	if fd != nil {
		for _, l := range fd.Loads() {
			loads[l.ID] = l
		}
	}
	ws := h.LiveWorkers()
	out := make([]WorkerRecord, 0, len(ws))
	for _, w := range ws {
		info := w.Info()
		if info == nil || info.State.Ended() {
			continue
		}
		rec := WorkerRecord{ID: info.ID, State: string(info.State), Model: info.Labels[frontdoor.ModelLabel],
			MaxConcurrency: max(info.SlotsTotal, 1)}
		if l, ok := loads[info.ID]; ok {
			rec.Model, rec.InFlight, rec.MaxConcurrency = l.Model, l.InFlight, l.MaxConcurrency
		}
		if rec.Model == "" {
			rec.Model = info.ModelRef
		}
		out = append(out, rec)
	}
	return out
}

// memStep rounds free memory so that noise does not cause writes.
const memStep = 64 << 20

// localCapacity is the hive's CPUs, memory and GPUs. A GPU's memory_free
// is what a new worker may take there: the device's free memory less the
// hive's vram_reserve_bytes and the reservations of workers still loading
// (the spawn placement's own figure, SPEC §11), rounded down like memory.
func localCapacity(h *hive.Hive) Capacity {
	c := Capacity{CPUs: runtime.NumCPU(), GPUs: []GPU{}}
	if h != nil {
		for _, a := range h.GPUAccounts() {
			c.GPUs = append(c.GPUs, GPU{Index: a.Index, UUID: a.UUID, Name: a.Name, MemoryTotal: a.MemoryTotal,
				MemoryFree: max(a.Available, 0) / memStep * memStep})
		}
	}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return c
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "MemTotal":
			c.MemoryTotal = n << 10
		case "MemAvailable":
			c.MemoryFree = (n << 10) / memStep * memStep
		}
	}
	return c
}
