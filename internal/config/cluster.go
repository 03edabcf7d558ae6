package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// Cluster is the hive's `cluster:` block (SPEC §12): where it registers
// itself and its workers. Empty Etcd: single machine, nothing registered.
type Cluster struct {
	Etcd      []string   `yaml:"etcd" json:"etcd"`           // etcd endpoints, e.g. https://10.0.0.5:2379
	Node      string     `yaml:"node" json:"node"`           // this hive's name; default the hostname
	Advertise string     `yaml:"advertise" json:"advertise"` // the front door URL others use; default http://<addr>
	LeaseTTL  Duration   `yaml:"lease_ttl" json:"lease_ttl"` // default 10s; at least 1s
	Prefix    string     `yaml:"prefix" json:"prefix"`       // default /rbee/
	TLS       ClusterTLS `yaml:"tls" json:"tls"`
	// Username and Password are etcd's own auth (optional).
	Username string `yaml:"username" json:"username"`
	Password string `yaml:"password" json:"-"`
}

// ClusterTLS is the etcd client's TLS: a CA to verify the servers, and a
// client certificate and key when etcd asks for one.
type ClusterTLS struct {
	CA   string `yaml:"ca" json:"ca"`
	Cert string `yaml:"cert" json:"cert"`
	Key  string `yaml:"key" json:"key"`
}

// Enabled reports whether the hive registers in etcd.
func (c Cluster) Enabled() bool { return len(c.Etcd) > 0 }

// WithDefaults fills the defaults in: node (hostname), lease_ttl, prefix
// (always ending in "/") and advertise (http://addr).
func (c Cluster) WithDefaults(addr string) Cluster {
	if c.Node == "" {
		c.Node, _ = os.Hostname()
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = Duration(10 * time.Second)
	}
	if c.Prefix == "" {
		c.Prefix = "/rbee/"
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.Advertise == "" && addr != "" {
		c.Advertise = "http://" + addr
	}
	c.Advertise = strings.TrimSuffix(c.Advertise, "/")
	return c
}

// Validate checks the block; an empty block is valid.
func (c Cluster) Validate() error {
	if !c.Enabled() {
		if c.Node != "" || c.Advertise != "" || c.Prefix != "" {
			return errors.New("config: cluster: etcd endpoints are required")
		}
		return nil
	}
	var errs []error
	for _, e := range c.Etcd {
		if e == "" {
			errs = append(errs, errors.New("config: cluster.etcd: empty endpoint"))
		}
	}
	if c.LeaseTTL != 0 && c.LeaseTTL.D() < time.Second {
		errs = append(errs, fmt.Errorf("config: cluster.lease_ttl %s is under 1s (etcd leases count in seconds)", c.LeaseTTL))
	}
	if c.Node != "" && (strings.Contains(c.Node, "/") || len(c.Node) > 253) {
		errs = append(errs, fmt.Errorf("config: cluster.node %q must not contain '/' and be at most 253 characters", c.Node))
	}
	if c.Advertise != "" {
		u, err := url.Parse(c.Advertise)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("config: cluster.advertise %q is not an http(s) URL", c.Advertise))
		}
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		errs = append(errs, errors.New("config: cluster.tls: cert and key go together"))
	}
	return errors.Join(errs...)
}

// AdvertisesLoopback reports whether the advertised URL names a loopback
// host (a hive advertising anything else needs an API token, SPEC §12).
func (c Cluster) AdvertisesLoopback() bool {
	u, err := url.Parse(c.Advertise)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	return strings.HasPrefix(h, "127.") || h == "::1"
}
