package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/rbee/rbee-hive/internal/config"
)

// command is one command of the table: what it takes, how it is explained
// and what it does. The same entry parses and renders --help.
type command struct {
	name     string   // full name, e.g. "worker spawn"
	args     []arg    // positional arguments, in order
	variadic bool     // the last argument may repeat
	summary  string   // one line
	details  string   // more, shown by --help
	example  string   // one example command line (without the leading "rbee-hive ")
	remote   bool     // talks to a hive: takes the global flags
	output   bool     // talks to no hive but takes --output
	settings bool     // takes --set: show the settings keys in --help
	exits    []string // exit codes beyond 0/1/2, for --help
	// flags registers the command's flags and returns what runs it with
	// the positional arguments once everything has been checked.
	flags func(fs *flag.FlagSet, c *call) func(pos []string) error
}

// arg is a positional argument.
type arg struct {
	name, help string
	optional   bool
}

// call is one run of a command.
type call struct {
	g   globals
	env Env
	cmd *command
}

// group is a command with subcommands.
type group struct {
	name, summary, example string
}

var groups = []group{
	{"worker", "start, watch and stop worker processes", "worker spawn ./models/tiny.gguf --wait"},
	{"model", "the hive's model catalog (names for model files)", "model add hf:org/tiny /srv/models/tiny.gguf"},
	{"cluster", "the hives and workers registered in etcd (many machines)", "cluster status --config /etc/rbee-hive/hive.yaml"},
}

var commands []*command // filled by init functions in the files that define them

func register(c *command) { commands = append(commands, c) }

func findCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func findGroup(name string) *group {
	for i := range groups {
		if groups[i].name == name {
			return &groups[i]
		}
	}
	return nil
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" || a == "help" }

// lookup finds the command args name. For a group with no (or a help)
// subcommand it prints the group's help and returns a nil command.
func lookup(args []string, env Env) (*command, []string, error) {
	name := args[0]
	if gr := findGroup(name); gr != nil {
		if len(args) < 2 || isHelp(args[1]) {
			if len(args) < 2 {
				return nil, nil, usageErr("%s needs a subcommand\n\n%s", name, groupHelp(gr))
			}
			return nil, nil, printHelp(env.Stdout, groupHelp(gr))
		}
		c := findCommand(name + " " + args[1])
		if c == nil {
			return nil, nil, usageErr("unknown %s subcommand %q%s; run `rbee-hive %s --help`",
				name, args[1], didYouMean(args[1], subNames(name)), name)
		}
		return c, args[2:], nil
	}
	c := findCommand(name)
	if c == nil {
		var top []string
		for _, c := range commands {
			if !strings.Contains(c.name, " ") {
				top = append(top, c.name)
			}
		}
		for _, gr := range groups {
			top = append(top, gr.name)
		}
		return nil, nil, usageErr("unknown command %q%s; run `rbee-hive --help`", name, didYouMean(name, top))
	}
	return c, args[1:], nil
}

// printHelp writes help text and ends the command with flag.ErrHelp (exit 0).
func printHelp(w io.Writer, text string) error {
	fmt.Fprint(w, text)
	return flag.ErrHelp
}

func helpFor(args []string, env Env) error {
	if len(args) == 0 {
		fmt.Fprint(env.Stdout, mainHelp())
		return nil
	}
	if len(args) == 1 {
		if gr := findGroup(args[0]); gr != nil {
			return printHelp(env.Stdout, groupHelp(gr))
		}
	}
	c := findCommand(strings.Join(args, " "))
	if c == nil {
		return usageErr("no help for %q; run `rbee-hive --help`", strings.Join(args, " "))
	}
	return printHelp(env.Stdout, c.help())
}

func subNames(groupName string) []string {
	var out []string
	for _, c := range commands {
		if g, sub, ok := strings.Cut(c.name, " "); ok && g == groupName {
			out = append(out, sub)
		}
	}
	return out
}

func didYouMean(got string, known []string) string {
	if s := config.Nearest(got, known); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

// newFlagSet returns a silent flag set: errors and help are rendered here.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseInterspersed parses flags anywhere among the positional arguments;
// after "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stops at the first non-flag, or after "--".
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// exec checks the command line and runs the command.
func (c *command) exec(args []string, g globals, env Env) error {
	cl := &call{g: g, env: env, cmd: c}
	fs := newFlagSet(c.name)
	runFn := c.flags(fs, cl)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return printHelp(env.Stdout, c.help())
	}
	if err != nil {
		hint := ""
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			known := []string{"hive", "token", "output", "raw"}
			fs.VisitAll(func(f *flag.Flag) { known = append(known, f.Name) })
			if s := config.Nearest(name, known); s != "" {
				hint = fmt.Sprintf(" (did you mean --%s?)", s)
			}
		}
		return usageErr("%s: %v%s\nRun `rbee-hive %s --help` for its flags.", c.name, err, hint, c.name)
	}
	for _, p := range pos {
		if isHelp(p) && p != "help" {
			return printHelp(env.Stdout, c.help())
		}
	}
	if !c.remote {
		var bad []string
		for _, f := range g.given {
			if !c.output || (f != "--output" && f != "--o") {
				bad = append(bad, f)
			}
		}
		if len(bad) > 0 {
			return usageErr("%s does not take %s (it does not talk to a hive)", c.name, strings.Join(bad, ", "))
		}
	}
	min, max := 0, len(c.args)
	for _, a := range c.args {
		if !a.optional {
			min++
		}
	}
	if c.variadic {
		max = -1
	}
	switch {
	case len(pos) < min:
		return usageErr("%s needs %s\nUsage: %s", c.name, c.args[len(pos)].name, c.usageLine())
	case max >= 0 && len(pos) > max:
		if max == 0 {
			return usageErr("%s takes no arguments, got %q\nUsage: %s", c.name, pos, c.usageLine())
		}
		return usageErr("%s takes at most %d argument(s), got %d: %q\nUsage: %s", c.name, max, len(pos), pos, c.usageLine())
	}
	return runFn(pos)
}

func (c *command) usageLine() string {
	var b strings.Builder
	b.WriteString("rbee-hive " + c.name)
	for i, a := range c.args {
		name := a.name
		if c.variadic && i == len(c.args)-1 {
			name += "..."
		}
		if a.optional {
			name = "[" + name + "]"
		}
		b.WriteString(" " + name)
	}
	b.WriteString(" [flags]")
	return b.String()
}

const globalHelp = `  --hive URL       the hive to talk to; host:port or a URL (env RBEE_HIVE_URL, default 127.0.0.1:9200)
  --token TOKEN    operator token (env RBEE_API_TOKEN; not needed in dev mode)
  --output FORMAT  table or json (default table); -o for short
  --raw            show worker output as it is (control characters are escaped otherwise)
`

// help renders the command's --help.
func (c *command) help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s\n\n%s.\n", c.usageLine(), capitalize(c.summary))
	if c.details != "" {
		fmt.Fprintf(&b, "\n%s\n", strings.TrimRight(c.details, "\n"))
	}
	if len(c.args) > 0 {
		b.WriteString("\nArguments:\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, a := range c.args {
			fmt.Fprintf(tw, "  %s\t%s\n", a.name, a.help)
		}
		tw.Flush()
	}
	fs := newFlagSet(c.name)
	c.flags(fs, &call{})
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		vname, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if len(f.Name) == 1 {
			left = "-" + f.Name
		}
		if vname != "" {
			left += " " + vname
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" && f.DefValue != "0s" {
			usage += " (default " + f.DefValue + ")"
		}
		lines = append(lines, "  "+left+"\t"+usage)
	})
	if len(lines) > 0 {
		b.WriteString("\nFlags:\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, l := range lines {
			fmt.Fprintln(tw, l)
		}
		tw.Flush()
	}
	if c.remote {
		b.WriteString("\nGlobal flags (before or after the command):\n" + globalHelp)
	} else if c.output {
		b.WriteString("\nGlobal flags (before or after the command):\n" + strings.SplitAfter(globalHelp, "\n")[2])
	}
	if c.settings {
		b.WriteString("\nSettings for --set KEY=VALUE (the hive's config file may change the defaults):\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  KEY\tKIND\tDEFAULT")
		for _, k := range config.SettingsKeys() {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", k.Path, k.Kind, k.Default)
		}
		tw.Flush()
		b.WriteString("  Durations are written 250ms, 30s, 5m; sizes 8GiB, 512MiB or bytes; 0 disables a timeout or limit.\n")
	}
	if len(c.exits) > 0 {
		b.WriteString("\nExit status: 0 done, 1 failed, 2 bad flag or argument (nothing was sent)")
		for _, e := range c.exits {
			b.WriteString(", " + e)
		}
		b.WriteString(".\n")
	}
	fmt.Fprintf(&b, "\nExample:\n  rbee-hive %s\n", c.example)
	return b.String()
}

func groupHelp(gr *group) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: rbee-hive %s COMMAND [flags]\n\n%s.\n\nCommands:\n", gr.name, capitalize(gr.summary))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, c := range sortedCommands() {
		if g, _, ok := strings.Cut(c.name, " "); ok && g == gr.name {
			fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimPrefix(c.usageLine(), "rbee-hive "+gr.name+" "), c.summary)
		}
	}
	tw.Flush()
	gh := globalHelp
	remote := false
	for _, c := range commands {
		if g, _, ok := strings.Cut(c.name, " "); ok && g == gr.name && c.remote {
			remote = true
		}
	}
	if !remote {
		gh = strings.SplitAfter(globalHelp, "\n")[2]
	}
	fmt.Fprintf(&b, "\nGlobal flags (before or after the command):\n%s", gh)
	fmt.Fprintf(&b, "\nRun `rbee-hive %s COMMAND --help` for a command's arguments and flags.\n\nExample:\n  rbee-hive %s\n", gr.name, gr.example)
	return b.String()
}

func mainHelp() string {
	var b strings.Builder
	b.WriteString("rbee-hive owns the life of LLM inference worker processes on this machine.\n\nUsage: rbee-hive COMMAND [flags]\n\nCommands:\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, c := range sortedCommands() {
		if !strings.Contains(c.name, " ") {
			fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
		}
	}
	for _, gr := range groups {
		fmt.Fprintf(tw, "  %s\t%s (%s)\n", gr.name, gr.summary, strings.Join(subNames(gr.name), ", "))
	}
	tw.Flush()
	b.WriteString("\nGlobal flags (before or after the command):\n" + globalHelp)
	b.WriteString("\nRun `rbee-hive COMMAND --help` (or `rbee-hive help COMMAND`) for more.\n")
	b.WriteString("\nExample:\n  rbee-hive daemon &\n  rbee-hive worker spawn ./models/tiny.gguf --wait\n")
	return b.String()
}

func sortedCommands() []*command {
	out := append([]*command(nil), commands...)
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// multi is a repeatable flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
