// Package cli is the rbee-hive command line: `rbee-hive daemon` and the
// operator commands that talk to a running hive (SPEC §8).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/client"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/daemon"
	"github.com/rbee/rbee-hive/internal/hive"
	"github.com/rbee/rbee-hive/internal/state"
)

// Env is what a command may touch of the outside world.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

// Main runs the command line and returns the process exit code.
func Main(args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	err := run(args, env)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(env.Stderr, "rbee-hive:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

const usage = `rbee-hive — owns the life of LLM inference worker processes on this machine.

Usage:
  rbee-hive daemon [--addr A] [--config FILE] [--state-dir DIR] [--log-format text|json]
                   [--log-level L] [--keep-workers-on-exit]
  rbee-hive worker spawn MODEL_REF [--backend B] [--device N] [--profile P] [--model-path F]
                   [--set key=value]... [--env K=V]... [--label k=v]... [--wait]
  rbee-hive worker list [--all] | get ID | stop ID | kill ID | restart ID | logs ID [-f] [--tail N]
  rbee-hive model add REF PATH | list | remove REF
  rbee-hive events
  rbee-hive status
  rbee-hive version

Global flags (anywhere): --hive URL (env RBEE_HIVE_URL, default http://127.0.0.1:9200),
  --token T (env RBEE_API_TOKEN), --output table|json
`

// globals are the flags every operator command takes.
type globals struct {
	hive, token, output string
}

func (g *globals) register(fs *flag.FlagSet, env Env) {
	def := env.Getenv("RBEE_HIVE_URL")
	if def == "" {
		def = "http://127.0.0.1:9200"
	}
	fs.StringVar(&g.hive, "hive", def, "hive URL")
	fs.StringVar(&g.token, "token", env.Getenv("RBEE_API_TOKEN"), "operator token")
	fs.StringVar(&g.output, "output", "table", "table or json")
}

func (g *globals) client() *client.Client { return client.New(g.hive, g.token) }

// parse parses flags interspersed with positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func newFlags(name string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

func run(args []string, env Env) error {
	if len(args) == 0 {
		fmt.Fprint(env.Stdout, usage)
		return nil
	}
	switch args[0] {
	case "daemon":
		return runDaemon(args[1:], env)
	case "worker":
		return runWorker(args[1:], env)
	case "model":
		return runModel(args[1:], env)
	case "events":
		return runEvents(args[1:], env)
	case "status":
		return runStatus(args[1:], env)
	case "version", "--version":
		fmt.Fprintf(env.Stdout, "rbee-hive %s (API %s)\n", hive.Version, apiv1.Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(env.Stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n\n%s", args[0], usage)
}

func runDaemon(args []string, env Env) error {
	fs := newFlags("daemon", env)
	var o daemon.Options
	fs.StringVar(&o.Addr, "addr", "", "listen address (default 127.0.0.1:9200)")
	fs.StringVar(&o.ConfigPath, "config", "", "YAML config file (default: embedded defaults)")
	fs.StringVar(&o.StateDir, "state-dir", "", "state directory")
	fs.StringVar(&o.LogFormat, "log-format", "", "text or json")
	fs.StringVar(&o.LogLevel, "log-level", "", "debug, info, warn, error")
	fs.BoolVar(&o.KeepWorkers, "keep-workers-on-exit", false, "leave workers running on exit for the next hive to adopt")
	fs.StringVar(&o.PprofAddr, "pprof", "", "serve net/http/pprof on this loopback address (debugging)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("daemon takes no arguments, got %q", pos)
	}
	o.Stderr = env.Stderr
	return daemon.Run(context.Background(), o)
}

func ctx() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

func (g *globals) print(w io.Writer, v any, table func(*tabwriter.Writer)) error {
	switch g.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table", "":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	return fmt.Errorf("--output must be table or json, not %q", g.output)
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// settingsJSON turns key=value pairs (dotted keys) into a settings object.
// A value that is a JSON number or boolean is sent as one; anything else is a
// string (durations such as 30s).
func settingsJSON(pairs []string) (json.RawMessage, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	root := map[string]any{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--set wants key=value, got %q", p)
		}
		parts := strings.Split(k, ".")
		m := root
		for _, part := range parts[:len(parts)-1] {
			sub, ok := m[part].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[part] = sub
			}
			m = sub
		}
		var val any = v
		var js any
		if err := json.Unmarshal([]byte(v), &js); err == nil {
			switch js.(type) {
			case float64, bool:
				val = json.RawMessage(v)
			}
		}
		m[parts[len(parts)-1]] = val
	}
	return json.Marshal(root)
}

func kv(pairs []string, what string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s wants key=value, got %q", what, p)
		}
		out[k] = v
	}
	return out, nil
}

func runWorker(args []string, env Env) error {
	if len(args) == 0 {
		return errors.New("worker needs a subcommand: spawn, list, get, stop, kill, restart, logs")
	}
	sub, args := args[0], args[1:]
	fs := newFlags("worker "+sub, env)
	var g globals
	g.register(fs, env)
	switch sub {
	case "spawn":
		var req apiv1.SpawnRequest
		var sets, envs, labels multi
		var wait bool
		fs.StringVar(&req.Backend, "backend", "cpu", "backend")
		fs.IntVar(&req.Device, "device", 0, "device index")
		fs.StringVar(&req.Profile, "profile", "", "worker profile")
		fs.StringVar(&req.ModelPath, "model-path", "", "model file (inside a model root)")
		fs.Var(&sets, "set", "setting key=value (dotted keys, e.g. health.interval=5s)")
		fs.Var(&envs, "env", "worker env K=V")
		fs.Var(&labels, "label", "label k=v")
		fs.BoolVar(&wait, "wait", false, "wait until the worker is ready, showing load progress")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return errors.New("worker spawn takes exactly one MODEL_REF")
		}
		req.ModelRef = pos[0]
		if req.Settings, err = settingsJSON(sets); err != nil {
			return err
		}
		if req.Env, err = kv(envs, "env"); err != nil {
			return err
		}
		if req.Labels, err = kv(labels, "label"); err != nil {
			return err
		}
		c, cancel := ctx()
		defer cancel()
		resp, err := g.client().Spawn(c, &req)
		if err != nil {
			return err
		}
		if !wait {
			return g.print(env.Stdout, resp, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "WORKER\tSTATE\tPID\tPORT\tURL")
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", resp.WorkerID, resp.State, resp.PID, resp.Port, resp.URL)
			})
		}
		return waitReady(c, g, env, resp)
	case "list":
		var all bool
		fs.BoolVar(&all, "all", false, "include ended workers")
		if _, err := parse(fs, args); err != nil {
			return err
		}
		c, cancel := ctx()
		defer cancel()
		ws, err := g.client().List(c, all)
		if err != nil {
			return err
		}
		return g.print(env.Stdout, apiv1.WorkerList{Workers: ws}, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ID\tMODEL\tSTATE\tPID\tPORT\tUPTIME\tRESTARTS\tMEMORY")
			for _, w := range ws {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n", w.ID, w.ModelRef, stateText(w), w.PID, w.Port,
					uptime(w), w.RestartCount, memory(w.Stats))
			}
		})
	case "get", "stop", "kill", "restart":
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("worker %s takes exactly one worker ID", sub)
		}
		c, cancel := ctx()
		defer cancel()
		cl := g.client()
		if sub == "get" {
			w, err := cl.Get(c, pos[0])
			if err != nil {
				return err
			}
			return g.print(env.Stdout, w, func(tw *tabwriter.Writer) { printWorker(tw, w) })
		}
		var r *apiv1.StateResponse
		switch sub {
		case "stop":
			r, err = cl.Stop(c, pos[0])
		case "kill":
			r, err = cl.Kill(c, pos[0])
		default:
			r, err = cl.Restart(c, pos[0])
		}
		if err != nil {
			return err
		}
		return g.print(env.Stdout, r, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "%s\t%s\n", r.WorkerID, r.State)
		})
	case "logs":
		var follow bool
		var tail int
		fs.BoolVar(&follow, "f", false, "follow until the worker ends")
		fs.BoolVar(&follow, "follow", false, "follow until the worker ends")
		fs.IntVar(&tail, "tail", 100, "lines of history")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return errors.New("worker logs takes exactly one worker ID")
		}
		c, cancel := ctx()
		defer cancel()
		return g.client().Logs(c, pos[0], tail, follow, env.Stdout)
	}
	return fmt.Errorf("unknown worker subcommand %q", sub)
}

// waitReady follows a spawned worker until it is ready (exit 0) or ends
// (non-zero, with the reason), showing a progress bar while it loads.
func waitReady(c context.Context, g globals, env Env, resp *apiv1.SpawnResponse) error {
	cl := g.client()
	var bar *progressbar.ProgressBar
	if g.output != "json" {
		bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(env.Stderr),
			progressbar.OptionSetDescription("loading "+resp.WorkerID), progressbar.OptionShowBytes(true),
			progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
	}
	for {
		w, err := cl.Get(c, resp.WorkerID)
		if err != nil {
			return err
		}
		if bar != nil && w.Progress != nil && w.Progress.Total > 0 {
			bar.ChangeMax64(w.Progress.Total)
			_ = bar.Set64(w.Progress.Done)
		}
		switch {
		case w.State.Ready():
			if bar != nil {
				_ = bar.Finish()
			}
			return g.print(env.Stdout, w, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "%s is %s at %s (pid %d)\n", w.ID, w.State, w.URL, w.PID)
			})
		case w.State.Ended() || w.State == state.Backoff:
			if bar != nil {
				_ = bar.Exit()
			}
			_ = g.print(env.Stdout, w, func(tw *tabwriter.Writer) { printWorker(tw, w) })
			return &exitError{code: 1, err: fmt.Errorf("worker %s %s: %s %s", w.ID, w.State, w.Reason, w.Detail)}
		}
		select {
		case <-c.Done():
			return c.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func stateText(w *apiv1.WorkerInfo) string {
	if w.Reason != "" && (w.State.Ended() || w.State == state.Stopping || w.State == state.Backoff) {
		return string(w.State) + "/" + string(w.Reason)
	}
	return string(w.State)
}

func uptime(w *apiv1.WorkerInfo) string {
	if w.StartedAt == nil || w.State.Ended() {
		return "-"
	}
	return time.Since(*w.StartedAt).Round(time.Second).String()
}

func memory(s *apiv1.Stats) string {
	if s == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(s.RSSBytes)/(1<<20))
}

func tm(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339Nano)
}

// limitsText renders the worker's resource limits, "none" when unset.
func limitsText(l config.Limits) string {
	var ps []string
	if l.MemoryMaxBytes > 0 {
		ps = append(ps, fmt.Sprintf("memory %.1f MiB", float64(l.MemoryMaxBytes)/(1<<20)))
	}
	if l.CPUMax > 0 {
		ps = append(ps, "cpu "+strconv.FormatFloat(l.CPUMax, 'g', -1, 64)+" cores")
	}
	if l.PidsMax > 0 {
		ps = append(ps, "pids "+strconv.FormatInt(l.PidsMax, 10))
	}
	if l.Nofile > 0 {
		ps = append(ps, "nofile "+strconv.FormatUint(l.Nofile, 10))
	}
	if len(ps) == 0 {
		return "none"
	}
	return strings.Join(ps, ", ")
}

func printWorker(tw *tabwriter.Writer, w *apiv1.WorkerInfo) {
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("id", w.ID)
	row("state", stateText(w))
	if w.Detail != "" {
		row("detail", w.Detail)
	}
	row("model", w.ModelRef+" ("+w.ModelPath+")")
	row("profile", w.Profile)
	row("backend/device", w.Backend+"/"+strconv.Itoa(w.Device))
	row("pid", strconv.Itoa(w.PID))
	row("url", w.URL)
	row("started", tm(w.StartedAt))
	row("ready", tm(w.ReadyAt))
	row("last activity", tm(w.LastActivity))
	row("last heartbeat", tm(w.LastHeartbeat))
	row("restarts", strconv.Itoa(w.RestartCount)+" (last "+tm(w.LastRestart)+")")
	row("limits", limitsText(w.Limits))
	row("slots", fmt.Sprintf("%d/%d available", w.SlotsAvailable, w.SlotsTotal))
	row("memory", memory(w.Stats))
	if w.Exit != nil {
		code := "-"
		if w.Exit.Code != nil {
			code = strconv.Itoa(*w.Exit.Code)
		}
		row("exit", fmt.Sprintf("code %s, signal %d, oom_killed %v", code, w.Exit.Signal, w.Exit.OOMKilled))
	}
	if len(w.LastLines) > 0 {
		row("last output", "")
		for _, l := range w.LastLines {
			row("", l)
		}
	}
}

func runModel(args []string, env Env) error {
	if len(args) == 0 {
		return errors.New("model needs a subcommand: add, list, remove")
	}
	sub, args := args[0], args[1:]
	fs := newFlags("model "+sub, env)
	var g globals
	g.register(fs, env)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	c, cancel := ctx()
	defer cancel()
	cl := g.client()
	switch sub {
	case "add":
		if len(pos) != 2 {
			return errors.New("model add takes REF PATH")
		}
		e, err := cl.AddModel(c, pos[0], pos[1])
		if err != nil {
			return err
		}
		return g.print(env.Stdout, e, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "added %s → %s\n", e.Ref, e.Path) })
	case "list":
		ms, err := cl.Models(c)
		if err != nil {
			return err
		}
		return g.print(env.Stdout, apiv1.ModelList{Models: ms}, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "REF\tPATH\tSIZE")
			for _, m := range ms {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", m.Ref, m.Path, m.SizeBytes)
			}
		})
	case "remove":
		if len(pos) != 1 {
			return errors.New("model remove takes REF")
		}
		if err := cl.RemoveModel(c, pos[0]); err != nil {
			return err
		}
		return g.print(env.Stdout, apiv1.Message{Message: "removed " + pos[0]}, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "removed %s\n", pos[0])
		})
	}
	return fmt.Errorf("unknown model subcommand %q", sub)
}

func runEvents(args []string, env Env) error {
	fs := newFlags("events", env)
	var g globals
	g.register(fs, env)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	c, cancel := ctx()
	defer cancel()
	enc := json.NewEncoder(env.Stdout)
	onOpen := func() {
		if g.output != "json" {
			fmt.Fprintf(env.Stderr, "Watching events at %s (Ctrl-C to stop)\n", g.hive)
		}
	}
	return g.client().Events(c, onOpen, func(ev apiv1.Event) error {
		if g.output == "json" {
			return enc.Encode(ev)
		}
		reason := ""
		if ev.Reason != "" {
			reason = " (" + string(ev.Reason) + ")"
		}
		_, err := fmt.Fprintf(env.Stdout, "%s  %s  %s → %s%s  pid %d\n", ev.At.Format("15:04:05.000"),
			ev.WorkerID, ev.From, ev.To, reason, ev.PID)
		return err
	})
}

func runStatus(args []string, env Env) error {
	fs := newFlags("status", env)
	var g globals
	g.register(fs, env)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	c, cancel := ctx()
	defer cancel()
	st, err := g.client().Status(c)
	if err != nil {
		return err
	}
	return g.print(env.Stdout, st, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "version\t%s (API %s)\n", st.Version, st.APIVersion)
		fmt.Fprintf(tw, "uptime\t%s\n", (time.Duration(st.UptimeSeconds) * time.Second).String())
		fmt.Fprintf(tw, "state dir\t%s\n", st.StateDir)
		fmt.Fprintf(tw, "cgroups\t%s\t%s\n", st.CgroupMode, st.Cgroups)
		keys := make([]string, 0, len(st.Workers))
		for k := range st.Workers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			if st.Workers[k] > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k, st.Workers[k]))
			}
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		fmt.Fprintf(tw, "workers\t%s\n", strings.Join(parts, ", "))
		fmt.Fprintf(tw, "memory\t%.1f MiB\n", float64(st.Totals.RSSBytes)/(1<<20))
		fmt.Fprintf(tw, "cpu\t%.1f s\n", st.Totals.CPUSeconds)
		printGPUs(tw, st)
	})
}
