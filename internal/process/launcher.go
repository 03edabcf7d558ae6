package process

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// launchArg is os.Args[1] of a launcher shim.
const launchArg = "__rbee_launch"

// launchExitCode is the shim's exit status when it fails before exec'ing
// the target (the shell's "command not found/not executable" convention).
const launchExitCode = 127

// launchOptions travel, JSON-encoded, as the shim's os.Args[2].
type launchOptions struct {
	Path      string      `json:"path"`                 // target program
	JoinProcs []string    `json:"join_procs,omitempty"` // cgroup v1 cgroup.procs files
	Nofile    uint64      `json:"nofile,omitempty"`     // RLIMIT_NOFILE soft=hard; 0: leave
	StatusFD  int         `json:"status_fd,omitempty"`  // failure report pipe; 0: none
	Cred      *launchCred `json:"cred,omitempty"`       // user to become before exec; nil: stay
}

// launchCred is Spec.Credential for the shim.
type launchCred struct {
	Uid, Gid uint32
	Groups   []uint32
}

func encodeLaunch(o launchOptions) (string, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return "", fmt.Errorf("launcher: encode options: %w", err)
	}
	return string(b), nil
}

// LauncherMain runs the launcher shim when this process is one, and returns
// immediately otherwise (os.Args[1] is not the shim marker).
//
// Call it first thing in main of every binary that uses Start with
// Spec.JoinProcs or Spec.Nofile (cmd/rbee-hive), and in TestMain of every
// test binary that does. As a shim it never returns: it
//
//  1. writes its own PID into each Spec.JoinProcs file (joining those
//     cgroup v1 cgroups),
//  2. sets RLIMIT_NOFILE soft and hard to Spec.Nofile,
//  3. execs the target program with the target argv and its own
//     environment (the one Spec.Env gave it) — same PID, so the pidfd and
//     the start time Start recorded stay valid.
//
// On any failure it prints one line "rbee-launch: <step>: <error>" to stderr,
// reports the error to Start over the status pipe, and exits with 127.
func LauncherMain() {
	if len(os.Args) < 2 || os.Args[1] != launchArg {
		return
	}
	err := launch(os.Args[2:])
	// launch returns only on failure.
	fmt.Fprintf(os.Stderr, "rbee-launch: %v\n", err)
	os.Exit(launchExitCode)
}

// launch does the shim's work; it returns only on failure, after reporting
// the failure on the status pipe.
func launch(args []string) error {
	if len(args) < 3 || args[1] != "--" {
		return &launchError{Step: "usage", Err: errors.New(launchArg + " <options> -- argv0 [args...]")}
	}
	var o launchOptions
	if err := json.Unmarshal([]byte(args[0]), &o); err != nil {
		return &launchError{Step: "decode options", Err: err}
	}
	argv := args[2:]
	err := launchSteps(o, argv)
	if err == nil { // unreachable: a successful exec does not return
		return nil
	}
	if o.StatusFD > 0 {
		reportLaunch(o.StatusFD, err)
	}
	return err
}

// launchSteps joins the cgroups, sets the limit and execs; it returns only
// on failure.
func launchSteps(o launchOptions, argv []string) *launchError {
	if o.StatusFD > 0 {
		syscall.CloseOnExec(o.StatusFD)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	for _, procs := range o.JoinProcs {
		if err := writeProcs(procs, pid); err != nil {
			return &launchError{Step: "join cgroup " + procs, Err: err}
		}
	}
	if o.Nofile > 0 {
		lim := syscall.Rlimit{Cur: o.Nofile, Max: o.Nofile}
		// syscall.Setrlimit also stops Exec from restoring Go's saved
		// soft limit over ours.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return &launchError{Step: "set RLIMIT_NOFILE to " + strconv.FormatUint(o.Nofile, 10), Err: err}
		}
	}
	if c := o.Cred; c != nil {
		groups := make([]int, len(c.Groups))
		for i, g := range c.Groups {
			groups[i] = int(g)
		}
		if err := syscall.Setgroups(groups); err != nil {
			return &launchError{Step: "set supplementary groups", Err: err}
		}
		if err := syscall.Setgid(int(c.Gid)); err != nil {
			return &launchError{Step: "setgid " + strconv.Itoa(int(c.Gid)), Err: err}
		}
		if err := syscall.Setuid(int(c.Uid)); err != nil {
			return &launchError{Step: "setuid " + strconv.Itoa(int(c.Uid)), Err: err}
		}
	}
	err := syscall.Exec(o.Path, argv, os.Environ())
	return &launchError{Step: "exec " + o.Path, Err: err}
}

// launchError is a failed shim step.
type launchError struct {
	Step string
	Err  error
}

func (e *launchError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *launchError) Unwrap() error { return e.Err }

// writeProcs writes pid into a cgroup.procs file (one write(2)).
func writeProcs(path string, pid []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write(pid)
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

// reportLaunch writes "errno\nstep\nerror text" to the status pipe
// (errno 0 when the error is not an errno).
func reportLaunch(fd int, err *launchError) {
	if err == nil {
		return
	}
	var errno syscall.Errno
	n := 0
	if errors.As(err.Err, &errno) {
		n = int(errno)
	}
	msg := strconv.Itoa(n) + "\n" + err.Step + "\n" + err.Err.Error()
	_, _ = syscall.Write(fd, []byte(msg))
}

// parseLaunchStatus turns what reportLaunch wrote back into an error.
func parseLaunchStatus(b []byte) error {
	num, rest, _ := strings.Cut(string(b), "\n")
	step, text, _ := strings.Cut(rest, "\n")
	if n, err := strconv.Atoi(num); err == nil && n > 0 {
		return fmt.Errorf("launcher: %s: %w", step, syscall.Errno(n))
	}
	return fmt.Errorf("launcher: %s: %s", step, text)
}
