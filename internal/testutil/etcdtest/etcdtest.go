// Package etcdtest gives tests a real etcd (SPEC §12): the server's embed
// package in the test process, on random loopback ports and a temp dir, or
// an external one named by RBEE_TEST_ETCD (endpoints, comma-separated).
//
// Tests that stop or restart etcd take their own embedded server
// (StartEmbedded) whatever RBEE_TEST_ETCD says. On a shared external etcd
// every test keeps to its own key prefixes (Prefix), which are deleted
// when the test ends.
package etcdtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EnvVar names an external etcd for the tests: endpoints, comma-separated.
const EnvVar = "RBEE_TEST_ETCD"

// Etcd is one etcd for a test: an embedded member, or an external cluster.
type Etcd struct {
	t testing.TB
	// Endpoints are the client URLs; Endpoint is the same, comma-separated
	// (as a YAML flow list body or a --etcd value takes it).
	Endpoints []string
	Endpoint  string
	// External is true when the etcd is RBEE_TEST_ETCD's.
	External bool
	Dir      string // embedded: the data dir
	client   int
	peer     int
	e        *embed.Etcd
	prefixes []string
}

// Start returns the etcd named by RBEE_TEST_ETCD, or runs a fresh embedded
// one; t.Cleanup stops it (or deletes the test's prefixes).
func Start(t testing.TB) *Etcd {
	t.Helper()
	env := strings.TrimSpace(os.Getenv(EnvVar))
	if env == "" {
		return StartEmbedded(t)
	}
	d := &Etcd{t: t, External: true}
	for _, e := range strings.Split(env, ",") {
		if e = strings.TrimSpace(e); e != "" {
			d.Endpoints = append(d.Endpoints, e)
		}
	}
	d.Endpoint = strings.Join(d.Endpoints, ",")
	cli := d.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, "/rbee-test-ping"); err != nil {
		t.Fatalf("%s=%s: etcd not reachable: %v", EnvVar, env, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, p := range d.prefixes {
			if _, err := cli.Delete(ctx, p, clientv3.WithPrefix()); err != nil {
				t.Errorf("etcdtest: deleting %s: %v", p, err)
			}
		}
	})
	return d
}

// StartEmbedded runs a fresh embedded etcd whatever RBEE_TEST_ETCD says:
// for tests that stop or restart it. t.Cleanup stops it.
func StartEmbedded(t testing.TB) *Etcd {
	t.Helper()
	d := &Etcd{t: t, Dir: filepath.Join(t.TempDir(), "etcd"), client: freePort(t), peer: freePort(t)}
	d.Endpoint = "http://127.0.0.1:" + strconv.Itoa(d.client)
	d.Endpoints = []string{d.Endpoint}
	d.start()
	t.Cleanup(d.Stop)
	return d
}

// Prefix returns a key prefix of the test's own, "/<name>-<random>/"
// (deleted at the end of the test on an external etcd).
func (d *Etcd) Prefix(name string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	p := "/" + name + "-" + hex.EncodeToString(b[:]) + "/"
	d.prefixes = append(d.prefixes, p)
	return p
}

// Client returns a client of the etcd, closed at the end of the test.
func (d *Etcd) Client() *clientv3.Client {
	d.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: d.Endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { _ = cli.Close() })
	return cli
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

// Stop stops an embedded server (idempotent). An external etcd cannot be
// stopped: the test should have used StartEmbedded.
func (d *Etcd) Stop() {
	if d.External {
		d.t.Fatal("etcdtest: cannot stop an external etcd (RBEE_TEST_ETCD); use StartEmbedded")
	}
	if d.e != nil {
		d.e.Close()
		d.e = nil
	}
}

// Restart stops the server if running and starts a new one on the same
// data dir and ports (embedded only).
func (d *Etcd) Restart() {
	d.t.Helper()
	d.Stop()
	d.start()
}

// Server is the running embed server (nil while stopped or external).
func (d *Etcd) Server() *embed.Etcd { return d.e }
