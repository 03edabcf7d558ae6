// Package cli is the rbee-hive command line: `rbee-hive daemon` and the
// operator commands that talk to a running hive (SPEC §8).
//
// Parsing is the standard library's flag package under a small command
// table (commands.go): each command declares its arguments, flags, an
// example and its run function, and the same table renders `--help`. Every
// flag and argument is checked before anything is sent to the hive. The
// global flags (--hive, --token, --output, --raw) are taken out of the
// argument list first, wherever they stand.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rbee/rbee-hive/internal/client"
)

// Env is what a command may touch of the outside world.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Terminal reports whether Stdout is a terminal (progress bars and
	// redrawn lines); nil: checked on Stdout when it is an *os.File.
	Terminal func() bool

	raw bool // --raw: worker output as is
}

func (e Env) terminal() bool {
	if e.Terminal != nil {
		return e.Terminal()
	}
	f, ok := e.Stdout.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Exit codes.
const (
	exitFailure   = 1   // the command ran and something failed
	exitUsage     = 2   // a bad flag or argument; nothing was sent
	exitTimeout   = 124 // --timeout passed before the wait was over
	exitInterrupt = 130 // Ctrl-C (SIGINT) or SIGTERM while waiting
)

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr is a bad flag or argument: exit 2, nothing was sent.
func usageErr(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// errInterrupted is the cause of a context cancelled by SIGINT or SIGTERM.
var errInterrupted = errors.New("interrupted")

// Main runs the command line and returns the process exit code.
func Main(args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	err := run(args, &env)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	msg := err.Error()
	var ae *client.APIError
	if errors.As(err, &ae) && !env.raw {
		// A SPAWN_FAILED message carries the worker's own output.
		msg = Escape(msg)
	}
	fmt.Fprintln(env.Stderr, "rbee-hive:", msg)
	return code
}

// globals are the flags every command that talks to a hive takes.
type globals struct {
	hive, token, output string
	raw                 bool
	given               []string // the global flags the command line named
}

var globalFlags = map[string]bool{"hive": true, "token": true, "output": true, "o": true, "raw": false}

// takeGlobals removes the global flags from args, wherever they stand
// (up to a "--"), and checks their values.
func takeGlobals(args []string, env Env) (globals, []string, error) {
	g := globals{hive: env.Getenv("RBEE_HIVE_URL"), token: env.Getenv("RBEE_API_TOKEN"), output: "table"}
	if g.hive == "" {
		g.hive = "http://127.0.0.1:9200"
	}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		if !strings.HasPrefix(a, "-") {
			rest = append(rest, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takesValue, ok := globalFlags[name]
		if !ok || strings.HasPrefix(a, "---") {
			rest = append(rest, a)
			continue
		}
		if takesValue && !hasVal {
			if i+1 >= len(args) {
				return g, nil, usageErr("flag %s needs a value", a)
			}
			i++
			val = args[i]
		}
		g.given = append(g.given, "--"+name)
		switch name {
		case "hive":
			g.hive = val
		case "token":
			g.token = val
		case "output", "o":
			g.output = val
		case "raw":
			if hasVal && val != "true" && val != "false" {
				return g, nil, usageErr("--raw is true or false, not %q", val)
			}
			g.raw = !hasVal || val == "true"
		}
	}
	if g.output != "table" && g.output != "json" {
		return g, nil, usageErr("--output must be table or json, not %q", g.output)
	}
	h, err := normalizeHive(g.hive)
	if err != nil {
		return g, nil, usageErr("%v", err)
	}
	g.hive = h
	return g, rest, nil
}

// normalizeHive accepts a URL or a bare host:port (http is assumed).
func normalizeHive(s string) (string, error) {
	in := s
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("--hive %q: want the hive's address, such as 127.0.0.1:9200 or http://127.0.0.1:9200", in)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func (g *globals) client() *client.Client { return client.New(g.hive, g.token) }

// signalContext is cancelled, with cause errInterrupted, on SIGINT or
// SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			cancel(errInterrupted)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(context.Canceled)
	}
}

// interrupted reports whether ctx ended by a signal.
func interrupted(ctx context.Context) bool { return errors.Is(context.Cause(ctx), errInterrupted) }

func run(args []string, envp *Env) error {
	g, args, err := takeGlobals(args, *envp)
	if err != nil {
		return err
	}
	envp.raw = g.raw
	env := *envp
	if len(args) == 0 {
		fmt.Fprint(env.Stdout, mainHelp())
		return nil
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return helpFor(args[1:], env)
	case "--version", "-version":
		args[0] = "version"
	}
	cmd, rest, err := lookup(args, env)
	if err != nil {
		return err
	}
	if cmd == nil { // a group: its help
		return nil
	}
	return cmd.exec(rest, g, env)
}
