package config

import (
	"strings"
	"testing"
	"time"
)

func TestClusterBlockParsesAndDefaults(t *testing.T) {
	cfg, err := Parse([]byte("cluster: {etcd: [http://127.0.0.1:2379], node: a, lease_ttl: 2s, prefix: /x}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster.WithDefaults("127.0.0.1:9200")
	if !c.Enabled() || c.Node != "a" || c.LeaseTTL.D() != 2*time.Second || c.Prefix != "/x/" || c.Advertise != "http://127.0.0.1:9200" {
		t.Fatalf("got %+v", c)
	}
	if !c.AdvertisesLoopback() {
		t.Error("127.0.0.1 is loopback")
	}
	if (Cluster{Etcd: []string{"x"}, Advertise: "http://10.0.0.2:9200"}).AdvertisesLoopback() {
		t.Error("10.0.0.2 is not loopback")
	}
	if cfg, err := Parse(nil); err != nil || cfg.Cluster.Enabled() {
		t.Fatalf("no cluster block: %+v %v", cfg.Cluster, err)
	}
}

func TestClusterBlockRejectsBadValues(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"cluster: {node: a}", "etcd endpoints are required"},
		{"cluster: {etcd: [x], lease_ttl: 500ms}", "lease_ttl"},
		{"cluster: {etcd: [x], node: a/b}", "cluster.node"},
		{"cluster: {etcd: [x], advertise: 'ftp://h'}", "cluster.advertise"},
		{"cluster: {etcd: [x], tls: {cert: c}}", "cert and key"},
		{"cluster: {etcd: [x], bogus: 1}", "bogus"},
	} {
		_, err := Parse([]byte(tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.yaml, err, tc.want)
		}
	}
}

// Regression: a hive listening on every address (addr 0.0.0.0:9200) with
// a cluster block and no advertise registered http://0.0.0.0:9200 in
// etcd, a URL on which every queen dials its own machine; the config was
// accepted. It is refused, naming cluster.advertise.
func TestClusterAdvertiseOfAnUnspecifiedAddrWasAccepted(t *testing.T) {
	for _, c := range []string{
		"addr: 0.0.0.0:9200\ncluster: {etcd: [http://10.0.0.10:2379]}\n",
		"addr: '[::]:9200'\ncluster: {etcd: [http://10.0.0.10:2379]}\n",
		"addr: ':9200'\ncluster: {etcd: [http://10.0.0.10:2379]}\n",
		"cluster: {etcd: [http://10.0.0.10:2379], advertise: 'http://0.0.0.0:9200'}\n",
	} {
		_, err := Parse([]byte(c))
		if err == nil || !strings.Contains(err.Error(), "cluster.advertise") {
			t.Errorf("%q: want an error naming cluster.advertise, got %v", c, err)
		}
	}
	for _, c := range []string{
		"addr: 0.0.0.0:9200\ncluster: {etcd: [http://10.0.0.10:2379], advertise: 'http://10.0.0.21:9200'}\n",
		"addr: 127.0.0.1:9200\ncluster: {etcd: [http://127.0.0.1:2379]}\n",
		"addr: 0.0.0.0:9200\n",
	} {
		if _, err := Parse([]byte(c)); err != nil {
			t.Errorf("%q: %v", c, err)
		}
	}
}
