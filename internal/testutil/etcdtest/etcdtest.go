// Package etcdtest runs a real etcd server in the test process (the
// server's embed package) on random loopback ports and a temp dir. Tests
// stop and restart it on the same dir and ports.
package etcdtest

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Etcd is one embedded etcd member.
type Etcd struct {
	t        testing.TB
	Dir      string
	Endpoint string // http://127.0.0.1:<client port>
	client   int
	peer     int
	e        *embed.Etcd
}

// Start runs a fresh etcd; t.Cleanup stops it. RBEE_TEST_ETCD is not used
// here: tests that restart etcd need their own.
func Start(t testing.TB) *Etcd {
	t.Helper()
	d := &Etcd{t: t, Dir: filepath.Join(t.TempDir(), "etcd"), client: freePort(t), peer: freePort(t)}
	d.Endpoint = "http://127.0.0.1:" + strconv.Itoa(d.client)
	d.start()
	t.Cleanup(d.Stop)
	return d
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (d *Etcd) start() {
	d.t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = d.Dir
	cfg.Name = "test"
	cu, _ := url.Parse(d.Endpoint)
	pu, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(d.peer))
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = "test=" + pu.String()
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	cfg.LogOutputs = []string{filepath.Join(filepath.Dir(d.Dir), "etcd.log")}
	if err := os.MkdirAll(filepath.Dir(d.Dir), 0o700); err != nil {
		d.t.Fatal(err)
	}
	var e *embed.Etcd
	var err error
	// The ports were free a moment ago; after a stop, the kernel may
	// need a moment to let them go.
	for i := 0; i < 50; i++ {
		e, err = embed.StartEtcd(cfg)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		d.t.Fatalf("etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		d.t.Fatal("etcd not ready after 20s")
	}
	d.e = e
}

// Stop stops the server (idempotent).
func (d *Etcd) Stop() {
	if d.e != nil {
		d.e.Close()
		d.e = nil
	}
}

// Restart stops the server if running and starts a new one on the same
// data dir and ports.
func (d *Etcd) Restart() {
	d.t.Helper()
	d.Stop()
	d.start()
}

// Server is the running embed server (nil while stopped).
func (d *Etcd) Server() *embed.Etcd { return d.e }
