package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/models"
	"github.com/rbee/rbee-hive/internal/state"
	"github.com/rbee/rbee-hive/internal/validate"
)

func init() {
	register(&command{
		name: "worker spawn", remote: true, settings: true,
		args: []arg{{name: "MODEL", help: "the model: a file path (./m.gguf, /srv/models/m.gguf, file:/srv/models/m.gguf) " +
			"inside one of the hive's model roots, or a catalog name such as hf:org/model (see `rbee-hive model list`)"}},
		summary: "start a worker for a model",
		details: "A relative path is resolved against the current directory, so the CLI must run on the hive's machine for it.\n" +
			"With --wait the worker's id is printed at once, then each state change (a progress bar while the model\n" +
			"loads when the output is a terminal, plain lines otherwise) until it is ready or has failed.\n" +
			"Ctrl-C stops the waiting, not the worker.",
		example: "worker spawn ./models/tiny.gguf --wait --set idle_timeout=30m --set limits.memory_max_bytes=8GiB",
		exits:   []string{"124 --timeout passed (the worker keeps loading)", "130 interrupted (the worker keeps loading)"},
		flags:   spawnFlags,
	})
	register(&command{
		name: "worker list", remote: true,
		summary: "list the workers",
		example: "worker list --all",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			all := fs.Bool("all", false, "include ended workers (kept for the retention window)")
			return func([]string) error { return c.list(*all) }
		},
	})
	register(&command{
		name: "worker get", remote: true, args: []arg{{name: "ID", help: "a worker id, or any unique prefix of it (with or without \"worker-\")"}},
		summary: "show everything the hive knows about one worker",
		example: "worker get 3f2a",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			return func(pos []string) error { return c.get(pos[0]) }
		},
	})
	for _, v := range []struct{ verb, summary, waits, example string }{
		{"stop", "stop a worker gracefully (its stop request or signal, then SIGKILL after stop_timeout)", "until it has ended", "worker stop 3f2a --wait"},
		{"kill", "kill a worker's whole process tree at once (SIGKILL)", "until it has ended", "worker kill 3f2a --wait"},
		{"restart", "stop a worker and start it again with the same id and settings", "until it is ready again", "worker restart 3f2a --wait --timeout 5m"},
	} {
		verb := v.verb
		register(&command{
			name: "worker " + verb, remote: true,
			args:    []arg{{name: "ID", help: "a worker id, or any unique prefix of it"}},
			summary: v.summary,
			details: "Without --wait the command returns once the hive has accepted the request.",
			example: v.example,
			exits:   []string{"124 --timeout passed", "130 interrupted"},
			flags: func(fs *flag.FlagSet, c *call) func([]string) error {
				w := fs.Bool("wait", false, "wait "+v.waits+", printing each state change")
				timeout := fs.Duration("timeout", 0, "with --wait: give up waiting after `D`, e.g. 30s (0: no limit)")
				return func(pos []string) error {
					if *timeout < 0 {
						return usageErr("--timeout must not be negative")
					}
					if *timeout > 0 && !*w {
						return usageErr("--timeout needs --wait")
					}
					return c.action(verb, pos[0], *w, *timeout)
				}
			},
		})
	}
	register(&command{
		name: "worker logs", remote: true, args: []arg{{name: "ID", help: "a worker id, or any unique prefix of it"}},
		summary: "print a worker's output (stdout and stderr)",
		details: "Control characters in the output are escaped (\\x1b…) unless --raw is given.\n" +
			"With --output json each line is one JSON object {\"worker_id\",\"line\"}.",
		example: "worker logs 3f2a -f --tail 20",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			var follow bool
			fs.BoolVar(&follow, "f", false, "follow: keep printing new output until the worker ends (same as --follow)")
			fs.BoolVar(&follow, "follow", false, "follow: keep printing new output until the worker ends")
			tail := fs.Int("tail", 100, "`N` lines of history to start with")
			return func(pos []string) error {
				if *tail < 0 {
					return usageErr("--tail must be 0 or more, not %d", *tail)
				}
				return c.logs(pos[0], *tail, follow)
			}
		},
	})
}

type spawnOpts struct {
	req                apiv1.SpawnRequest
	sets, envs, labels multi
	wait               bool
	timeout            time.Duration
	device             string
}

func spawnFlags(fs *flag.FlagSet, c *call) func([]string) error {
	var o spawnOpts
	fs.StringVar(&o.req.Backend, "backend", "cpu", "`NAME` of the backend the worker uses ([A-Za-z0-9_-])")
	fs.StringVar(&o.device, "device", "", "GPU `INDEX` (0..1023) or auto (default: auto for a GPU worker, 0 otherwise)")
	fs.StringVar(&o.req.Profile, "profile", "", "worker `PROFILE` from the hive's config (default: the config's defaults.profile, rbee)")
	fs.StringVar(&o.req.ModelPath, "model-path", "", "model `FILE` to load, when MODEL is only a label (it must lie in a model root)")
	fs.Var(&o.sets, "set", "override one setting for this worker, `KEY=VALUE` (repeatable; keys below)")
	fs.Var(&o.envs, "env", "environment variable for the worker, `NAME=VALUE` (repeatable; the profile's allow_env decides which)")
	fs.Var(&o.labels, "label", "label `KEY=VALUE` kept with the worker (repeatable)")
	fs.BoolVar(&o.wait, "wait", false, "wait until the worker is ready, printing each state change")
	fs.DurationVar(&o.timeout, "timeout", 0, "with --wait: give up waiting after `D`, e.g. 5m (0: no limit)")
	return func(pos []string) error {
		req, err := c.checkSpawn(&o, pos[0])
		if err != nil {
			return err
		}
		return c.spawn(req, o.wait, o.timeout)
	}
}

// checkSpawn checks every flag and argument of a spawn and builds the
// request; nothing is sent.
func (c *call) checkSpawn(o *spawnOpts, model string) (*apiv1.SpawnRequest, error) {
	req := o.req
	if o.timeout < 0 {
		return nil, usageErr("--timeout must not be negative")
	}
	if o.timeout > 0 && !o.wait {
		return nil, usageErr("--timeout needs --wait")
	}
	if e := validate.Backend(req.Backend); e != nil {
		return nil, usageErr("--backend %q: %s", req.Backend, e.Message)
	}
	switch o.device {
	case "":
	case "auto":
		req.Device, req.DeviceGiven = apiv1.DeviceAuto, true
	default:
		d, err := strconv.Atoi(o.device)
		if err != nil {
			return nil, usageErr("--device %q: want a GPU index such as 0, or auto", o.device)
		}
		if e := validate.Device(d); e != nil {
			return nil, usageErr("--device %d: %s", d, e.Message)
		}
		req.Device, req.DeviceGiven = d, true
	}
	if req.Profile != "" {
		if e := validate.WorkerID(req.Profile); e != nil {
			return nil, usageErr("--profile %q: a profile name is [A-Za-z0-9_-]", req.Profile)
		}
	}
	if req.ModelPath != "" {
		abs, err := filepath.Abs(req.ModelPath)
		if err != nil {
			return nil, usageErr("--model-path %q: %v", req.ModelPath, err)
		}
		req.ModelPath = abs
	}
	ref, path, err := resolveModel(model)
	if err != nil {
		return nil, err
	}
	if path != "" {
		if req.ModelPath != "" {
			return nil, usageErr("MODEL %q and --model-path both name a file; give one", model)
		}
		req.ModelPath = path
	}
	req.ModelRef = ref
	if req.Settings, err = settingsJSON(o.sets, c.g.hive, c.env); err != nil {
		return nil, err
	}
	if req.Env, err = kv(o.envs, "env"); err != nil {
		return nil, err
	}
	if e := validate.Env(req.Env, slices.Collect(maps.Keys(req.Env))); e != nil {
		return nil, usageErr("--env: %s", e.Message)
	}
	if req.Labels, err = kv(o.labels, "label"); err != nil {
		return nil, err
	}
	if e := validate.Labels(req.Labels); e != nil {
		return nil, usageErr("--label: %s", e.Message)
	}
	return &req, nil
}

// resolveModel turns the MODEL argument into a model_ref, and a model_path
// when the file's name cannot be a reference (a space, say). Local paths
// (./m.gguf, m.gguf, file:m.gguf) become absolute.
func resolveModel(m string) (ref, path string, err error) {
	p, isFile := strings.CutPrefix(m, "file:")
	if !isFile {
		// No provider: a path. A provider is [a-z0-9_-] before the first colon.
		prov, _, hasColon := strings.Cut(m, ":")
		if hasColon && prov != "" && !strings.ContainsAny(prov, "/. ") {
			if _, _, err := models.ParseRef(m); err != nil {
				return "", "", usageErr("MODEL %s", strings.TrimPrefix(err.Error(), "model_ref: "))
			}
			return m, "", nil
		}
		p = m
	}
	if p == "" {
		return "", "", usageErr("MODEL %q names no file (want a path such as ./tiny.gguf or file:/srv/models/tiny.gguf)", m)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", "", usageErr("MODEL %q: %v", m, err)
	}
	ref = "file:" + abs
	if _, _, err := models.ParseRef(ref); err != nil {
		// The name has characters a reference cannot carry: send the path
		// as model_path and a readable label as the reference.
		label := []byte(abs)
		for i, b := range label {
			if !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || strings.IndexByte("_./:-", b) >= 0) {
				label[i] = '_'
			}
		}
		ref = "file:" + strings.ReplaceAll(string(label), "..", "__")
		if _, _, err := models.ParseRef(ref); err != nil {
			return "", "", usageErr("MODEL %q cannot be sent: %v", m, err)
		}
		return ref, abs, nil
	}
	return ref, "", nil
}

// settingsJSON turns --set key=value pairs (dotted keys) into a settings
// object, each value checked and typed by its key.
func settingsJSON(pairs []string, hive string, env Env) (json.RawMessage, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	root := map[string]any{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usageErr("--set wants KEY=VALUE, got %q (keys: `rbee-hive worker spawn --help`)", p)
		}
		val, err := config.SettingValue(k, v)
		if err != nil {
			return nil, usageErr("--set %s: %v", p, err)
		}
		if k == "limits.cpu_max" && isLoopback(hive) {
			if f, _ := val.(float64); f > float64(runtime.NumCPU()) {
				fmt.Fprintf(env.Stderr, "rbee-hive: warning: limits.cpu_max=%s is more than this machine's %d cores; the limit will not bind\n", v, runtime.NumCPU())
			}
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
		m[parts[len(parts)-1]] = val
	}
	return json.Marshal(root)
}

func isLoopback(hive string) bool {
	u, err := url.Parse(hive)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func kv(pairs []string, what string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usageErr("--%s wants KEY=VALUE, got %q", what, p)
		}
		out[k] = v
	}
	return out, nil
}

// resolveID finds the one worker whose id starts with prefix (with or
// without "worker-"), as docker does.
func (c *call) resolveID(ctx context.Context, prefix string) (string, error) {
	if e := validate.WorkerID(prefix); e != nil {
		return "", usageErr("ID %q: %s", prefix, e.Message)
	}
	ws, err := c.g.client().List(ctx, true)
	if err != nil {
		return "", err
	}
	var hits []string
	for _, w := range ws {
		if w.ID == prefix {
			return w.ID, nil
		}
		if strings.HasPrefix(w.ID, prefix) || strings.HasPrefix(w.ID, "worker-"+prefix) {
			hits = append(hits, w.ID)
		}
	}
	switch len(hits) {
	case 0:
		return "", fmt.Errorf("no worker matches %q; run `rbee-hive worker list --all`", prefix)
	case 1:
		return hits[0], nil
	}
	slices.Sort(hits)
	return "", fmt.Errorf("%q matches %d workers (%s); give more of the id", prefix, len(hits), strings.Join(hits, ", "))
}

func (c *call) list(all bool) error {
	ctx, cancel := signalContext()
	defer cancel()
	ws, err := c.g.client().List(ctx, all)
	if err != nil {
		return err
	}
	if ws == nil {
		ws = []*apiv1.WorkerInfo{}
	}
	return c.print(apiv1.WorkerList{Workers: ws}, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "ID\tMODEL\tSTATE\tPID\tPORT\tUPTIME\tRESTARTS\tMEMORY")
		for _, w := range ws {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", w.ID, w.ModelRef, stateText(w), pidText(w.PID), w.Port,
				uptime(w), w.RestartCount, memory(w.Stats))
		}
	})
}

func (c *call) get(prefix string) error {
	ctx, cancel := signalContext()
	defer cancel()
	id, err := c.resolveID(ctx, prefix)
	if err != nil {
		return err
	}
	w, err := c.g.client().Get(ctx, id)
	if err != nil {
		return err
	}
	return c.printWorker(w)
}

func (c *call) printWorker(w *apiv1.WorkerInfo) error {
	return c.print(w, func(tw *tabwriter.Writer) { printWorker(tw, w, c.env.raw) })
}

// action runs stop, kill or restart, and with wait follows the worker until
// it has ended (stop, kill) or is ready again (restart).
func (c *call) action(verb, prefix string, wait bool, timeout time.Duration) error {
	ctx, cancel := signalContext()
	defer cancel()
	id, err := c.resolveID(ctx, prefix)
	if err != nil {
		return err
	}
	cl := c.g.client()
	before, err := cl.Get(ctx, id)
	if err != nil {
		return err
	}
	var f *follower
	if wait {
		f = c.newFollower(ctx, cl, id)
		defer f.close()
	}
	switch verb {
	case "stop":
		_, err = cl.Stop(ctx, id)
	case "kill":
		_, err = cl.Kill(ctx, id)
	default:
		_, err = cl.Restart(ctx, id)
	}
	if err != nil {
		return err
	}
	if !wait {
		w, err := cl.Get(ctx, id)
		if err != nil {
			return err
		}
		if c.g.output == "json" {
			return c.printWorker(w)
		}
		what := map[string]string{"stop": "is stopping", "kill": "is being killed", "restart": "is restarting"}[verb]
		if w.State.Ended() && before.State.Ended() {
			what = "had already ended"
		}
		fmt.Fprintf(c.env.Stdout, "%s %s (now %s); `rbee-hive worker get %s` shows how it ends\n", id, what, stateText(w), short(id))
		return nil
	}
	var goal func(*apiv1.WorkerInfo) (bool, error)
	if verb == "restart" {
		goal = func(w *apiv1.WorkerInfo) (bool, error) {
			if w.State.Ready() && (before.ReadyAt == nil || (w.ReadyAt != nil && w.ReadyAt.After(*before.ReadyAt))) {
				return true, nil
			}
			if w.State.Ended() {
				return true, failedErr(w)
			}
			return false, nil
		}
	} else {
		goal = func(w *apiv1.WorkerInfo) (bool, error) { return w.State.Ended(), nil }
	}
	w, err := f.until(timeout, goal)
	if err != nil {
		return c.waitErr(ctx, err, id, verb)
	}
	if c.g.output == "json" {
		return c.printWorker(w)
	}
	switch {
	case verb == "restart":
		fmt.Fprintf(c.env.Stdout, "%s is %s again at %s (pid %d, restart %d)\n", id, w.State, w.URL, w.PID, w.RestartCount)
	default:
		fmt.Fprintf(c.env.Stdout, "%s %s\n", id, endText(w))
	}
	return nil
}

// endText says how an ended worker ended.
func endText(w *apiv1.WorkerInfo) string {
	s := string(w.State)
	if w.Reason != "" {
		s += " (" + string(w.Reason) + ")"
	}
	if w.Exit != nil {
		switch {
		case w.Exit.OOMKilled:
			s += ", killed for memory (OOM)"
		case w.Exit.Signal != 0:
			s += ", process killed by signal " + strconv.Itoa(w.Exit.Signal)
		case w.Exit.Code != nil:
			s += ", process exited with code " + strconv.Itoa(*w.Exit.Code)
		}
	}
	return s
}

func failedErr(w *apiv1.WorkerInfo) error {
	msg := fmt.Sprintf("worker %s %s", w.ID, endText(w))
	if w.Detail != "" {
		msg += ": " + w.Detail
	}
	return &exitError{code: exitFailure, err: errors.New(msg)}
}

// short is the id as the user may type it back.
func short(id string) string {
	s := strings.TrimPrefix(id, "worker-")
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

func (c *call) logs(prefix string, tail int, follow bool) error {
	ctx, cancel := signalContext()
	defer cancel()
	id, err := c.resolveID(ctx, prefix)
	if err != nil {
		return err
	}
	lw := &lineWriter{emit: func(line string) error {
		if c.g.output == "json" {
			b, _ := json.Marshal(struct {
				WorkerID string `json:"worker_id"`
				Line     string `json:"line"`
			}{id, line})
			_, err := fmt.Fprintf(c.env.Stdout, "%s\n", b)
			return err
		}
		if !c.env.raw {
			line = Escape(line)
		}
		_, err := fmt.Fprintln(c.env.Stdout, line)
		return err
	}}
	err = c.g.client().Logs(ctx, id, tail, follow, lw)
	if ferr := lw.flush(); err == nil {
		err = ferr
	}
	if interrupted(ctx) {
		return nil
	}
	return err
}

// lineWriter splits a byte stream into lines for emit.
type lineWriter struct {
	buf  []byte
	emit func(string) error
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := slices.Index(l.buf, '\n')
		if i < 0 {
			break
		}
		line := string(l.buf[:i])
		l.buf = l.buf[i+1:]
		if err := l.emit(line); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (l *lineWriter) flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	line := string(l.buf)
	l.buf = nil
	return l.emit(line)
}

// print writes v as JSON, or the table.
func (c *call) print(v any, table func(*tabwriter.Writer)) error {
	if c.g.output == "json" {
		enc := json.NewEncoder(c.env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func pidText(pid int) string {
	if pid <= 0 {
		return "-"
	}
	return strconv.Itoa(pid)
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
func limitsText(l apiv1.Limits) string {
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

func printWorker(tw *tabwriter.Writer, w *apiv1.WorkerInfo, raw bool) {
	esc := Escape
	if raw {
		esc = func(s string) string { return s }
	}
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("id", w.ID)
	row("state", stateText(w))
	if w.Detail != "" {
		row("detail", esc(w.Detail))
	}
	row("model", w.ModelRef+" ("+w.ModelPath+")")
	row("profile", w.Profile)
	row("backend/device", w.Backend+"/"+strconv.Itoa(w.Device))
	row("pid", pidText(w.PID))
	row("url", w.URL)
	row("started", tm(w.StartedAt))
	row("ready", tm(w.ReadyAt))
	row("last activity", tm(w.LastActivity))
	row("last heartbeat", tm(w.LastHeartbeat))
	row("restarts", strconv.Itoa(w.RestartCount)+" (last "+tm(w.LastRestart)+")")
	row("limits", limitsText(w.Limits))
	row("slots", fmt.Sprintf("%d/%d available", w.SlotsAvailable, w.SlotsTotal))
	row("memory", memory(w.Stats))
	if len(w.Labels) > 0 {
		var ls []string
		for _, k := range slices.Sorted(maps.Keys(w.Labels)) {
			ls = append(ls, k+"="+esc(w.Labels[k]))
		}
		row("labels", strings.Join(ls, ", "))
	}
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
			row("", esc(l))
		}
	}
}
