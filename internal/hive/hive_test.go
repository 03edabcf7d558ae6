package hive_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rbee/rbee-hive/internal/api"
	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/hive"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/testutil/buildbin"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startHive makes an in-process hive on the state directory dir whose rbee
// profile runs the reference worker (built for the test), with edit applied
// to its config, and serves its API on loopback for the workers' calls
// until the test's end. Shutting the hive down is the caller's.
func startHive(t *testing.T, dir string, edit func(*config.Config)) *hive.Hive {
	t.Helper()
	worker := buildbin.Build(t, "cmd/llm-worker-rbee")
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.MemoryReserveBytes = -1
	p := cfg.Profiles["rbee"]
	p.Command = []string{worker}
	cfg.Profiles["rbee"] = p
	if edit != nil {
		edit(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h, err := hive.New(cfg, hive.Options{Logger: log, HiveURL: "http://" + ln.Addr().String()})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: api.New(api.Options{Hive: h, Logger: log})}}
	srv.Start()
	t.Cleanup(srv.Close)
	return h
}

// An in-process hive that spawns real workers and shuts down leaves no
// goroutine behind and no worker process alive. Under -race it also pins the
// bug where Start read the owner's firstStart field while the owner cleared
// it.
func TestShutdownLeavesNothingBehind(t *testing.T) {
	dir := t.TempDir()
	h := startHive(t, dir, func(c *config.Config) {
		c.ShutdownTimeout = config.Duration(10 * time.Second)
	})

	model, err := builtinmodel.WriteTo(filepath.Join(dir, "models"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for range 3 {
		w, err := h.Spawn(context.Background(), &apiv1.SpawnRequest{ModelRef: "file:" + model})
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, w.Info().PID)
		deadline := time.Now().Add(20 * time.Second)
		for w.Info().State != state.Idle {
			if time.Now().After(deadline) {
				t.Fatalf("worker %s: %s", w.ID(), w.Info().State)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	h.Shutdown(ctx)
	for _, info := range h.List(true) {
		if info.State != state.Terminated || info.Reason != state.HiveShutdown {
			t.Errorf("%s ended %s/%s", info.ID, info.State, info.Reason)
		}
	}
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			t.Errorf("worker %d still exists", pid)
		}
	}
}

// The first ready record of a start is written in the background, after
// its event (persistLater): it still reaches the store, and the hive's
// shutdown waits for it.
func TestFirstReadyRecordReachesTheStore(t *testing.T) {
	dir := t.TempDir()
	h := startHive(t, dir, nil)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	}()
	model, err := builtinmodel.WriteTo(filepath.Join(dir, "models"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := h.Spawn(context.Background(), &apiv1.SpawnRequest{ModelRef: "file:" + model})
	if err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(dir, "workers", w.ID()+".json")
	deadline := time.Now().Add(20 * time.Second)
	for {
		var r struct {
			Info apiv1.WorkerInfo `json:"info"`
		}
		b, err := os.ReadFile(rec)
		if err == nil && json.Unmarshal(b, &r) == nil && r.Info.State == state.Idle && r.Info.ReadyAt != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("record of %s after 20s: %s (worker %s)", w.ID(), b, w.Info().State)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// spareFiles lists the spare's files: hidden log files in the log
// directory, and temporary files in the store that belong to no record.
func spareFiles(dir string) []string {
	var out []string
	logs, _ := os.ReadDir(filepath.Join(dir, "logs"))
	for _, e := range logs {
		if strings.HasPrefix(e.Name(), ".") {
			out = append(out, "logs/"+e.Name())
		}
	}
	recs, _ := os.ReadDir(filepath.Join(dir, "workers"))
	have := map[string]bool{}
	for _, e := range recs {
		have[e.Name()] = true
	}
	for _, e := range recs {
		n := e.Name()
		if id, _, ok := strings.Cut(strings.TrimPrefix(n, "."), ".json.tmp-"); ok && !have[id+".json"] {
			out = append(out, "workers/"+n)
		}
	}
	return out
}

// The next worker's log file and record files are made ahead of need (the
// spare, with its cgroup where there are cgroups): the next spawn gets
// that id and uses them, a new spare follows, and the hive's shutdown
// removes the unused one.
func TestSpareFilesAreTheNextWorkersAndGoAtShutdown(t *testing.T) {
	dir := t.TempDir()
	h := startHive(t, dir, nil)
	shut := false
	defer func() {
		if !shut {
			h.Shutdown(context.Background())
		}
	}()
	if _, err := h.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitSpare := func(not string) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			fs := spareFiles(dir)
			if len(fs) == 3 && (not == "" || !strings.Contains(fs[0], not)) {
				id := strings.TrimSuffix(strings.TrimPrefix(fs[0], "logs/."), ".log.spare")
				for _, f := range fs[1:] {
					if !strings.Contains(f, id) {
						t.Fatalf("spare files of two ids: %v", fs)
					}
				}
				return id
			}
			if time.Now().After(deadline) {
				t.Fatalf("spare files %v, want a log file and two record files of one new id", fs)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	spare := waitSpare("")
	model, err := builtinmodel.WriteTo(filepath.Join(dir, "models"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := h.Spawn(context.Background(), &apiv1.SpawnRequest{ModelRef: "file:" + model})
	if err != nil {
		t.Fatal(err)
	}
	if w.ID() != spare {
		t.Fatalf("spawned %s, want the spare's id %s", w.ID(), spare)
	}
	if _, err := os.Stat(filepath.Join(dir, "logs", spare+".log")); err != nil {
		t.Fatalf("the worker's log: %v", err)
	}
	waitSpare(spare)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	h.Shutdown(ctx)
	shut = true
	if fs := spareFiles(dir); len(fs) != 0 {
		t.Fatalf("spare files left after the shutdown: %v", fs)
	}
}
