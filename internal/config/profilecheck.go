package config

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Placeholders are the names an argv template may use as {name} (SPEC §6).
var Placeholders = []string{"port", "model", "model_ref", "worker_id", "backend", "device", "gpu_uuid", "ctx", "hive_url"}

var placeholderRe = regexp.MustCompile(`\{[^{}\s]*\}`)

// prefixErrs puts prefix before each joined error's line.
func prefixErrs(prefix string, err error) error {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			errs = append(errs, fmt.Errorf("%s%w", prefix, e))
		}
		return errors.Join(errs...)
	}
	return fmt.Errorf("%s%w", prefix, err)
}

// lineOf returns the line of the value at path (mapping keys) under root, or
// 0 when the path is not in the document.
func lineOf(root *yaml.Node, path ...string) int {
	n := root
	if n == nil {
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, p := range path {
		if n.Kind != yaml.MappingNode {
			return 0
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == p {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return 0
		}
		n = next
	}
	return n.Line
}

func lineText(l int) string {
	if l == 0 {
		return ""
	}
	return fmt.Sprintf("line %d: ", l)
}

func sortedProfiles(ps map[string]Profile) []string {
	names := make([]string, 0, len(ps))
	for n := range ps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// checkPlaceholders refuses any {name} in a profile's command that is not a
// known placeholder (a typo would otherwise reach the worker literally).
func checkPlaceholders(ps map[string]Profile, root *yaml.Node) error {
	var errs []error
	known := make([]string, len(Placeholders))
	for i, p := range Placeholders {
		known[i] = "{" + p + "}"
	}
	for _, name := range sortedProfiles(ps) {
		for _, tok := range ps[name].Command {
			for _, ph := range placeholderRe.FindAllString(tok, -1) {
				if Nearest(ph, known) == ph {
					continue
				}
				hint := ""
				if s := Nearest(ph, known); s != "" {
					hint = fmt.Sprintf(" (did you mean %s?)", s)
				}
				errs = append(errs, fmt.Errorf("config: %sprofiles.%s.command: unknown placeholder %s%s; known: %s",
					lineText(lineOf(root, "profiles", name, "command")), name, ph, hint, strings.Join(known, " ")))
			}
		}
	}
	return errors.Join(errs...)
}

// FindCommand resolves a profile's program as the hive runs it: an absolute
// path as is, a relative path against the working directory, a bare name
// beside the rbee-hive binary first, then on PATH.
func FindCommand(name string) (string, error) {
	switch {
	case filepath.IsAbs(name):
		return name, executable(name)
	case strings.Contains(name, "/"):
		abs, err := filepath.Abs(name)
		if err != nil {
			return "", err
		}
		return abs, executable(abs)
	}
	if exe, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(exe), name)
		if executable(beside) == nil {
			return beside, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		where := "beside rbee-hive or on PATH"
		if exe, err := os.Executable(); err == nil {
			where = "beside " + exe + " or on PATH (" + os.Getenv("PATH") + ")"
		}
		return "", fmt.Errorf("%q not found %s", name, where)
	}
	return filepath.Abs(p)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return fmt.Errorf("%s does not exist", p)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", p)
	case fi.Mode()&0o111 == 0:
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

// checkCommands checks that every profile the file configures names a
// program that can be found. The built-in rbee profile, when the file does
// not configure it, is left to spawn time.
func checkCommands(ps map[string]Profile, root *yaml.Node) error {
	var errs []error
	for _, name := range sortedProfiles(ps) {
		l := lineOf(root, "profiles", name, "command")
		if l == 0 {
			continue
		}
		if _, err := FindCommand(ps[name].Command[0]); err != nil {
			errs = append(errs, fmt.Errorf("config: line %d: profiles.%s.command: %w", l, name, err))
		}
	}
	return errors.Join(errs...)
}

// Warnings returns what in c is allowed but probably not meant, as
// sentences for the log: a cpu_max above the machine's cores, a profile
// whose command cannot be found (only the built-in rbee profile can get
// here: Load refuses the ones a file configures). It looks at the file
// system and is meant for the daemon's start.
func (c *Config) Warnings() []string {
	var out []string
	for _, name := range sortedProfiles(c.Profiles) {
		if p := c.Profiles[name]; len(p.Command) > 0 {
			if _, err := FindCommand(p.Command[0]); err != nil {
				out = append(out, fmt.Sprintf("profile %s: command %v; spawning with this profile will fail", name, err))
			}
		}
	}
	if n := runtime.NumCPU(); c.Defaults.Limits.CPUMax > float64(n) {
		out = append(out, fmt.Sprintf("defaults.limits.cpu_max is %g cores but this machine has %d; the limit cannot bind",
			c.Defaults.Limits.CPUMax, n))
	}
	return out
}
