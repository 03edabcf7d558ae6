// Package daemonkit is what the two harnesses that run a real rbee-hive
// daemon share — hivetest (integration tests) and bench (the benchmarks):
// a free port range, the state directory with the built-in model, the
// config file, waiting for /health, and a bounded SIGTERM stop. It does not
// depend on package testing (the benchmark is a program).
package daemonkit

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/refworker"
)

var portMu sync.Mutex

// FreeRange finds n consecutive ports that can be bound now, at random in
// 10000–31999: below Linux's ephemeral range (32768–60999), so that no
// outgoing connection's local port takes a daemon's port while it
// restarts, and spread so that parallel daemons rarely meet.
func FreeRange(n int) (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	const lo, hi = 10000, 32000
	for range 200 {
		base := lo + rand.IntN(hi-lo-n)
		ok := true
		for p := base; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no free range of %d ports in %d-%d", n, lo, hi-1)
}

// PrepareStateDir makes dir (0700) hold models/ with the built-in model
// (written unless already there) and returns the models directory and the
// model's path.
func PrepareStateDir(dir string) (models, model string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", "", err
	}
	models = filepath.Join(dir, "models")
	if err := os.MkdirAll(models, 0o700); err != nil {
		return "", "", err
	}
	model = filepath.Join(models, builtinmodel.FileName)
	if _, err := os.Stat(model); err != nil {
		if err := os.WriteFile(model, builtinmodel.Bytes(), 0o600); err != nil {
			return "", "", err
		}
	}
	return models, model, nil
}

// Config is a test or benchmark daemon's config file.
type Config struct {
	Addr          string // host:port of the API
	StateDir      string
	PortMin       int // the workers' port range
	PortMax       int
	MemoryReserve int64  // memory_reserve_bytes; -1 turns the preflight off
	Settings      string // YAML lines under defaults:, indented
	Extra         string // more top-level YAML
}

// YAML returns the config file's text, with the reference worker's test
// mode on.
func (c Config) YAML() string {
	cfg := fmt.Sprintf("addr: %s\nstate_dir: %s\nports: {min: %d, max: %d}\nmemory_reserve_bytes: %d\n",
		c.Addr, c.StateDir, c.PortMin, c.PortMax, c.MemoryReserve)
	if c.Settings != "" {
		cfg += "defaults:\n" + c.Settings
	}
	return refworker.WithTestMode(cfg + c.Extra)
}

// ErrExited is returned by WaitHealthy when the daemon exited first.
var ErrExited = errors.New("daemon exited at start")

// WaitHealthy polls url/health until it answers 200, the daemon exits
// (exited is closed: ErrExited), or timeout passes.
func WaitHealthy(url string, exited <-chan struct{}, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return ErrExited
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("daemon not healthy after %s", timeout)
		}
	}
}

// Stop sends SIGTERM to the daemon pid and waits up to timeout for it to
// exit (exited closed); past that it SIGKILLs it, waits, and returns an
// error. took is from the signal to the exit.
func Stop(pid int, exited <-chan struct{}, timeout time.Duration) (took time.Duration, err error) {
	t0 := time.Now()
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-exited:
		return time.Since(t0), nil
	case <-time.After(timeout):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-exited
		return time.Since(t0), fmt.Errorf("daemon did not exit within %s", timeout)
	}
}
