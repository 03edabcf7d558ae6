package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/daemon"
	"github.com/rbee/rbee-hive/internal/version"
)

func init() {
	register(&command{
		name:    "daemon",
		summary: "run the hive on this machine (the other commands talk to it)",
		details: "Without --config the embedded defaults apply: 127.0.0.1:9200, dev mode (no token, loopback only),\n" +
			"state in /var/lib/rbee-hive as root or $XDG_STATE_HOME/rbee-hive (~/.local/state/rbee-hive) otherwise.\n" +
			"SIGINT or SIGTERM stops every worker and exits 0 (unless --keep-workers-on-exit).\n" +
			"Every config key: docs/configuration.md.",
		example: "daemon --config /etc/rbee-hive/hive.yaml",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			var o daemon.Options
			fs.StringVar(&o.Addr, "addr", "", "listen `ADDRESS` host:port (default from the config, 127.0.0.1:9200)")
			fs.StringVar(&o.ConfigPath, "config", "", "YAML config `FILE` (default: the embedded defaults)")
			fs.StringVar(&o.StateDir, "state-dir", "", "state `DIR` (default from the config, see above)")
			fs.StringVar(&o.LogFormat, "log-format", "", "log `FORMAT`: text or json (default text)")
			fs.StringVar(&o.LogLevel, "log-level", "", "log `LEVEL`: debug, info, warn or error (default info)")
			fs.BoolVar(&o.KeepWorkers, "keep-workers-on-exit", false, "leave workers running on exit, for the next hive to adopt (upgrades)")
			fs.StringVar(&o.PprofAddr, "pprof", "", "serve net/http/pprof on this loopback `ADDRESS` (debugging)")
			return func([]string) error {
				switch o.LogFormat {
				case "", "text", "json":
				default:
					return usageErr("--log-format must be text or json, not %q", o.LogFormat)
				}
				switch o.LogLevel {
				case "", "debug", "info", "warn", "error":
				default:
					return usageErr("--log-level must be debug, info, warn or error, not %q", o.LogLevel)
				}
				o.Stderr = c.env.Stderr
				return daemon.Run(context.Background(), o)
			}
		},
	})
	register(&command{
		name: "version", summary: "print the version of rbee-hive and of its API", example: "version",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			return func([]string) error {
				_, err := fmt.Fprintf(c.env.Stdout, "rbee-hive %s (API %s)\n", version.Version, apiv1.Version)
				return err
			}
		},
	})
	register(&command{
		name: "status", remote: true, summary: "show the hive: version, uptime, cgroups, workers by state, memory",
		example: "status --hive 10.0.0.5:9200 --token $RBEE_API_TOKEN",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			return func([]string) error { return c.status() }
		},
	})
	register(&command{
		name: "events", remote: true, summary: "print state changes of every worker as they happen (Ctrl-C to stop)",
		details: "With --output json each event is one JSON object per line: {worker_id, from, to, reason, pid, at}.",
		example: "events --output json",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			return func([]string) error { return c.events() }
		},
	})
	register(&command{
		name: "models", remote: true,
		summary: "list the models the hive serves by name (config `models:`), with workers, requests in flight and queued",
		example: "models",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			return func([]string) error { return c.servedModels() }
		},
	})
	register(&command{
		name: "run", remote: true,
		args: []arg{{name: "MODEL", help: "a model name from `rbee-hive models`"},
			{name: "PROMPT", help: "the prompt (quote it)"}},
		summary: "send one prompt to a model and stream the answer to the terminal",
		details: "The hive starts a worker for the model if none is running (the first answer may take a while).",
		example: `run stories "Once upon a time"`,
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			maxTokens := fs.Int("max-tokens", 0, "stop after `N` tokens (0: the worker's default)")
			return func(pos []string) error {
				if *maxTokens < 0 {
					return usageErr("--max-tokens must be 0 or more, not %d", *maxTokens)
				}
				if strings.TrimSpace(pos[0]) == "" {
					return usageErr("MODEL must not be empty")
				}
				return c.runPrompt(pos[0], pos[1], *maxTokens)
			}
		},
	})
	register(&command{
		name: "model add", remote: true,
		args: []arg{{name: "REF", help: "the name to give the model, provider:reference, e.g. hf:org/tiny"},
			{name: "PATH", help: "the model file on the hive's machine, inside a model root (relative paths are made absolute)"}},
		summary: "name a model file in the hive's catalog",
		example: "model add hf:org/tiny /srv/models/tiny.gguf",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			return func(pos []string) error { return c.modelAdd(pos[0], pos[1]) }
		},
	})
	register(&command{
		name: "model list", remote: true, summary: "list the catalog's models", example: "model list",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			return func([]string) error { return c.modelList() }
		},
	})
	register(&command{
		name: "model remove", remote: true, args: []arg{{name: "REF", help: "the catalog name to remove (the file stays)"}},
		summary: "remove a model from the catalog", example: "model remove hf:org/tiny",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			return func(pos []string) error { return c.modelRemove(pos[0]) }
		},
	})
}

func (c *call) status() error {
	ctx, cancel := signalContext()
	defer cancel()
	st, err := c.g.client().Status(ctx)
	if err != nil {
		return err
	}
	return c.print(st, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "version\t%s (API %s)\n", st.Version, st.APIVersion)
		fmt.Fprintf(tw, "address\t%s\n", st.Addr)
		fmt.Fprintf(tw, "uptime\t%s\n", (time.Duration(st.UptimeSeconds) * time.Second).String())
		fmt.Fprintf(tw, "state dir\t%s\n", st.StateDir)
		cg := st.CgroupMode
		if st.Cgroups != "" {
			// Cgroups is a sentence that usually starts with the mode.
			cg = st.Cgroups
			if !strings.HasPrefix(st.Cgroups, st.CgroupMode) {
				cg = st.CgroupMode + ": " + st.Cgroups
			}
		}
		fmt.Fprintf(tw, "cgroups\t%s\n", cg)
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
		fmt.Fprintf(tw, "memory\t%.1f MiB (all workers)\n", float64(st.Totals.RSSBytes)/(1<<20))
		fmt.Fprintf(tw, "cpu\t%.1f s (all workers)\n", st.Totals.CPUSeconds)
		printGPUs(tw, st)
	})
}

func (c *call) events() error {
	ctx, cancel := signalContext()
	defer cancel()
	enc := json.NewEncoder(c.env.Stdout)
	onOpen := func() {
		if c.g.output != "json" {
			fmt.Fprintf(c.env.Stderr, "Watching events at %s (Ctrl-C to stop)\n", c.g.hive)
		}
	}
	return c.g.client().Events(ctx, onOpen, func(ev apiv1.Event) error {
		if c.g.output == "json" {
			return enc.Encode(ev)
		}
		s := fmt.Sprintf("%s  %s  %s", ev.At.Local().Format("15:04:05.000"), ev.WorkerID, transition(ev.From, ev.To))
		if ev.Reason != "" {
			s += " (" + string(ev.Reason) + ")"
		}
		if ev.PID > 0 {
			s += fmt.Sprintf("  pid %d", ev.PID)
		}
		_, err := fmt.Fprintln(c.env.Stdout, s)
		return err
	})
}

func (c *call) servedModels() error {
	ctx, cancel := signalContext()
	defer cancel()
	ms, err := c.g.client().ServedModels(ctx)
	if err != nil {
		return err
	}
	if c.g.output == "json" {
		return c.print(apiv1.OpenAIModelList{Object: "list", Data: ms}, nil)
	}
	return c.print(nil, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "MODEL\tWORKERS\tIN FLIGHT\tQUEUED")
		for _, m := range ms {
			ws := "none"
			var parts []string
			keys := make([]string, 0, len(m.Rbee.Workers))
			for k, n := range m.Rbee.Workers {
				if n > 0 {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			for _, k := range keys {
				parts = append(parts, fmt.Sprintf("%s %d", k, m.Rbee.Workers[k]))
			}
			if len(parts) > 0 {
				ws = strings.Join(parts, ", ")
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", m.ID, ws, m.Rbee.InFlight, m.Rbee.Queued)
		}
	})
}

func (c *call) runPrompt(model, prompt string, maxTokens int) error {
	ctx, cancel := signalContext()
	defer cancel()
	var text strings.Builder
	err := c.g.client().Chat(ctx, model, prompt, maxTokens, func(s string) error {
		if c.g.output == "json" {
			text.WriteString(s)
			return nil
		}
		if !c.env.raw {
			s = escapeKeepNewlines(s)
		}
		_, err := fmt.Fprint(c.env.Stdout, s)
		return err
	})
	if c.g.output == "json" {
		if err != nil {
			return err
		}
		return c.print(map[string]string{"model": model, "text": text.String()}, nil)
	}
	fmt.Fprintln(c.env.Stdout)
	if interrupted(ctx) {
		return &exitError{code: exitInterrupt, err: fmt.Errorf("interrupted")}
	}
	return err
}

// escapeKeepNewlines escapes control characters in model output but keeps
// its line breaks.
func escapeKeepNewlines(s string) string {
	parts := strings.Split(s, "\n")
	for i, p := range parts {
		parts[i] = Escape(p)
	}
	return strings.Join(parts, "\n")
}

func (c *call) modelAdd(ref, path string) error {
	if _, _, err := resolveModel(ref); err != nil || !strings.Contains(ref, ":") {
		return usageErr("REF %q: want provider:reference, e.g. hf:org/tiny", ref)
	}
	_, abs, err := resolveModel(path)
	if err != nil {
		return err
	}
	if abs == "" {
		ref2, _, _ := resolveModel(path)
		abs = strings.TrimPrefix(ref2, "file:")
	}
	ctx, cancel := signalContext()
	defer cancel()
	e, err := c.g.client().AddModel(ctx, ref, abs)
	if err != nil {
		return err
	}
	return c.print(e, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "added %s → %s\n", e.Ref, e.Path) })
}

func (c *call) modelList() error {
	ctx, cancel := signalContext()
	defer cancel()
	ms, err := c.g.client().Models(ctx)
	if err != nil {
		return err
	}
	if ms == nil {
		ms = []apiv1.ModelEntry{}
	}
	return c.print(apiv1.ModelList{Models: ms}, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "REF\tPATH\tSIZE")
		for _, m := range ms {
			fmt.Fprintf(tw, "%s\t%s\t%.1f MiB\n", m.Ref, m.Path, float64(m.SizeBytes)/(1<<20))
		}
	})
}

func (c *call) modelRemove(ref string) error {
	if !strings.Contains(ref, ":") {
		return usageErr("REF %q: want provider:reference, e.g. hf:org/tiny", ref)
	}
	ctx, cancel := signalContext()
	defer cancel()
	if err := c.g.client().RemoveModel(ctx, ref); err != nil {
		return err
	}
	return c.print(apiv1.Message{Message: "removed " + ref}, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "removed %s\n", ref)
	})
}
