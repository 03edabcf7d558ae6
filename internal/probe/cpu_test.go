package probe

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// closingServer is a Python HTTP/1.0 server in its own process (so its CPU
// is not ours) that answers /health 200 and closes every connection, like
// many inference servers; it returns its address.
func closingServer(tb testing.TB) string {
	tb.Helper()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			tb.Fatalf("python3 is needed (apt-get install python3): %v", err)
		}
	}
	const src = `
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        b = b'{"status":"ok"}'
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
s = HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
`
	cmd := exec.Command(py, "-c", src)
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	port, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		tb.Fatal(err)
	}
	return "127.0.0.1:" + strings.TrimSpace(port)
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkProbeClosingServer reports the hive-side CPU of one probe of a
// server that closes the connection after answering (a new TCP connection
// every probe): cpu-µs/probe.
func BenchmarkProbeClosingServer(b *testing.B) {
	addr := closingServer(b)
	p := New(addr)
	defer p.Close()
	if err := p.Get("/health", 200, 5*time.Second); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	c0 := cpuNow()
	for b.Loop() {
		if err := p.Get("/health", 200, 5*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuNow()-c0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/probe")
}

// BenchmarkProbeIdleClosingServer is the same with the process idle
// between probes (as in a hive): the CPU per probe then includes waking up
// from idle.
func BenchmarkProbeIdleClosingServer(b *testing.B) {
	addr := closingServer(b)
	p := New(addr)
	defer p.Close()
	if err := p.Get("/health", 200, 5*time.Second); err != nil {
		b.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	c0 := cpuNow()
	for b.Loop() {
		if err := p.Get("/health", 200, 5*time.Second); err != nil {
			b.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Everything the process spent, sleeps included: waking up, the
	// runtime's spinning after a wake-up, the probe.
	b.ReportMetric(float64(cpuNow()-c0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/probe")
}
