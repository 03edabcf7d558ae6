// Package queen is rbee-queen (SPEC §12): a stateless router that watches
// the hives registered in etcd and serves the front-door routes (§10) and
// GET /v1/cluster across them.
package queen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/rbee/rbee-hive/internal/config"
)

// Config is queen.yaml.
type Config struct {
	Listen string `yaml:"listen"` // default 127.0.0.1:9300
	Etcd   struct {
		Endpoints []string          `yaml:"endpoints"`
		TLS       config.ClusterTLS `yaml:"tls"`
		Username  string            `yaml:"username"`
		Password  string            `yaml:"password"`
	} `yaml:"etcd"`
	Prefix string `yaml:"prefix"` // default /rbee/
	// InferenceTokens are what clients present (Bearer). Empty on a
	// loopback listen address: open (dev mode).
	InferenceTokens     []string `yaml:"inference_tokens"`
	InferenceTokensFile string   `yaml:"inference_tokens_file"` // one token a line
	// HiveToken is the token the queen presents to every hive (a cluster
	// operator or inference token); HiveTokens overrides it per node.
	HiveToken  string            `yaml:"hive_token"`
	HiveTokens map[string]string `yaml:"hive_tokens"`
	// MaxBodyBytes bounds an inference body; default 16 MiB.
	MaxBodyBytes int64  `yaml:"max_body_bytes"`
	LogFormat    string `yaml:"log_format"` // text or json
	LogLevel     string `yaml:"log_level"`
}

// LoadConfig reads path (unknown keys are errors) and fills defaults.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("queen config: %w", err)
	}
	return ParseConfig(data)
}

// ParseConfig parses queen.yaml.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("queen config: %w", err)
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9300"
	}
	if c.Prefix == "" {
		c.Prefix = "/rbee/"
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 16 << 20
	}
	if len(c.InferenceTokens) > 0 && c.InferenceTokensFile != "" {
		return Config{}, errors.New("queen config: inference_tokens and inference_tokens_file are both set; use one")
	}
	if c.InferenceTokensFile != "" {
		b, err := os.ReadFile(c.InferenceTokensFile)
		if err != nil {
			return Config{}, fmt.Errorf("queen config: inference_tokens_file: %w", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				c.InferenceTokens = append(c.InferenceTokens, l)
			}
		}
	}
	for i, t := range c.InferenceTokens {
		if !config.ValidToken(t) {
			return Config{}, fmt.Errorf("queen config: inference token %d is empty or contains spaces or control characters", i+1)
		}
	}
	if len(c.Etcd.Endpoints) == 0 {
		return Config{}, errors.New("queen config: etcd.endpoints is required")
	}
	if env := os.Getenv("RBEE_QUEEN_HIVE_TOKEN"); env != "" && c.HiveToken == "" {
		c.HiveToken = env
	}
	return c, nil
}

// tokenFor is the token the queen presents to node.
func (c Config) tokenFor(node string) string {
	if t, ok := c.HiveTokens[node]; ok {
		return t
	}
	return c.HiveToken
}
