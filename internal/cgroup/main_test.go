package cgroup

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// helperEnv selects a helper program when the test binary is re-executed.
const helperEnv = "RBEE_CGROUP_TEST_HELPER"

// helpers are small programs the real tests run inside a cgroup. Each waits
// for a line on stdin first, so the test can join it to the v1 hierarchies
// before it does anything that the limits should see.
var helpers = map[string]func(){
	// alloc maps and touches 256 MiB, then reports that it survived.
	"alloc": func() {
		waitGo()
		// mmap, not the Go heap, so the race detector's shadow memory
		// does not add to the footprint.
		b, err := unix.Mmap(-1, 0, 256<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		fmt.Println("allocated", len(b)>>20, "MiB")
		os.Exit(0)
	},
	// forkmany starts 200 sleep children, counts the forks that fail,
	// prints the counts and waits for stdin to close.
	"forkmany": func() {
		waitGo()
		started, failed := 0, 0
		for range 200 {
			_, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "1000"}, &syscall.ProcAttr{})
			if err != nil {
				failed++
			} else {
				started++
			}
		}
		fmt.Printf("started %d failed %d\n", started, failed)
		waitGo()
		os.Exit(0)
	},
	// spin burns CPU on two threads until killed.
	"spin": func() {
		waitGo()
		for range 2 {
			go func() {
				for {
				}
			}()
		}
		select {}
	},
}

func waitGo() { _, _ = bufio.NewReader(os.Stdin).ReadString('\n') }

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		h, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		runtime.GOMAXPROCS(2)
		h()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func closeFD(fd int) { _ = unix.Close(fd) }

// eventually polls cond every 5 ms until it is true or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
