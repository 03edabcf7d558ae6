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

// An in-process hive that spawns real workers and shuts down leaves no
// goroutine behind and no worker process alive. Under -race it also pins the
// bug where Start read the owner's firstStart field while the owner cleared
// it.
func TestShutdownLeavesNothingBehind(t *testing.T) {
	worker := buildbin.Build(t, "cmd/llm-worker-rbee")
	dir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.MemoryReserveBytes = -1
	cfg.ShutdownTimeout = config.Duration(10 * time.Second)
	p := cfg.Profiles["rbee"]
	p.Command = []string{worker}
	cfg.Profiles["rbee"] = p
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h, err := hive.New(cfg, hive.Options{Logger: log, HiveURL: "http://" + ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: api.New(api.Options{Hive: h, Logger: log})}}
	srv.Start()
	defer srv.Close()

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
	srv.Close()
}

// The first ready record of a start is written in the background, after
// its event (persistLater): it still reaches the store, and the hive's
// shutdown waits for it.
func TestFirstReadyRecordReachesTheStore(t *testing.T) {
	worker := buildbin.Build(t, "cmd/llm-worker-rbee")
	dir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.MemoryReserveBytes = -1
	p := cfg.Profiles["rbee"]
	p.Command = []string{worker}
	cfg.Profiles["rbee"] = p
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h, err := hive.New(cfg, hive.Options{Logger: log, HiveURL: "http://" + ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: api.New(api.Options{Hive: h, Logger: log})}}
	srv.Start()
	defer srv.Close()
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
