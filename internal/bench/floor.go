package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// FloorServerArg, as hivebench's only argument, makes it the floor server:
// a bare net/http server that answers POST /v1/heartbeat as the hive does
// and does nothing else. It prints its address, then serves until its
// standard input closes.
const FloorServerArg = "__heartbeat-floor-server"

// FloorServer runs the floor server (see FloorServerArg).
func FloorServer() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	answer, _ := json.Marshal(apiv1.Message{Message: "Heartbeat received"})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// heartbeatFloor measures the floor under the idle-CPU figure: the CPU a
// bare net/http server (its own process) uses to answer n clients that
// each send one heartbeat every interval on a kept-alive connection,
// staggered as the hive's workers are, over window. It is what any HTTP
// heartbeat costs on this machine before the hive does anything with it.
func (b *Bench) heartbeatFloor(n int, interval, window time.Duration) (float64, error) {
	addr, pid, stop, err := startSelf(FloorServerArg)
	if err != nil {
		return 0, fmt.Errorf("floor server: %w", err)
	}
	defer stop()
	url := "http://" + addr + "/v1/heartbeat"

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer c.CloseIdleConnections()
			body, _ := json.Marshal(apiv1.HeartbeatRequest{WorkerID: fmt.Sprintf("worker-%08d-floor", i),
				Timestamp: time.Now().UTC().Format(time.RFC3339Nano), HealthStatus: "healthy", State: "idle"})
			next := time.Now().Add(time.Duration(i) * interval / time.Duration(n))
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(next)):
				}
				next = next.Add(interval)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	// One interval and a second for every connection to be open, then
	// the window.
	time.Sleep(interval + time.Second)
	cpu, _, err := cpuPercent(pid, nil, window)
	if err != nil {
		return 0, err
	}
	select {
	case err := <-errs:
		return 0, fmt.Errorf("floor heartbeat: %w", err)
	default:
	}
	return cpu, nil
}

// startSelf runs hivebench itself with args as a helper process (the floor
// server, the relay floor), which prints its address on its first line and
// serves until its standard input closes. stop closes it and waits for the
// helper's exit (killing it after 5 s).
func startSelf(args ...string) (addr string, pid int, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(self, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", 0, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop = func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr = strings.TrimSpace(line)
	if _, _, aerr := net.SplitHostPort(addr); err != nil || aerr != nil {
		stop()
		return "", 0, nil, fmt.Errorf("no address from %s (%v)", args[0], err)
	}
	return addr, cmd.Process.Pid, stop, nil
}
