package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Target is what a figure must stay under: Stat ("p99", "median" or "max")
// of the figure's distribution below Limit. The zero Target means none.
type Target struct {
	Stat  string  `json:"stat,omitempty"`
	Limit float64 `json:"limit,omitempty"`
	Text  string  `json:"text,omitempty"` // shown in the table, e.g. "p99 < 5 ms"
}

// Result is one measured figure.
type Result struct {
	Section string  `json:"section"`          // "supervision", "scale", "supervisord", "frontdoor"
	Name    string  `json:"name"`             // what was measured
	System  string  `json:"system"`           // "rbee-hive" or "supervisord"
	N       int     `json:"n,omitempty"`      // workers under the supervisor; 0: not applicable
	Unit    string  `json:"unit"`             // "ms", "s", "MiB", "% of one core", "workers/s"
	Trials  int     `json:"trials"`           // samples behind the figure
	Median  float64 `json:"median"`           // for a single value: the value
	P99     float64 `json:"p99"`              // nearest-rank
	Max     float64 `json:"max"`              //
	Target  *Target `json:"target,omitempty"` // nil: no target
	Pass    *bool   `json:"pass,omitempty"`   // nil: no target
	Note    string  `json:"note,omitempty"`
	// Load is the 1-minute load average when the figure was taken: this
	// machine is shared, and a high load widens the tails.
	Load float64 `json:"load1"`
}

// Comparison is one row of the rbee-hive vs supervisord table.
type Comparison struct {
	Name        string  `json:"name"`
	N           int     `json:"n,omitempty"`
	Unit        string  `json:"unit"`
	Hive        float64 `json:"rbee_hive"`
	Supervisord float64 `json:"supervisord"`
	Ratio       float64 `json:"ratio"` // rbee-hive / supervisord
	Stat        string  `json:"stat"`  // which statistic is compared
	Note        string  `json:"note,omitempty"`
}

// Feature is one row of the feature table.
type Feature struct {
	Feature     string `json:"feature"`
	Hive        string `json:"rbee_hive"`
	Supervisord string `json:"supervisord"`
}

// Machine describes where the figures were taken.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	MemoryGiB string `json:"memory_gib"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	PidMax    string `json:"pid_max,omitempty"`
	Date      string `json:"date"`
}

// Report is everything one run measured.
type Report struct {
	Machine     Machine      `json:"machine"`
	Command     string       `json:"command"`
	Smoke       bool         `json:"smoke,omitempty"`
	Duration    string       `json:"duration"`
	Results     []Result     `json:"results"`
	Comparisons []Comparison `json:"comparisons,omitempty"`
	Features    []Feature    `json:"features,omitempty"`
	Notes       []string     `json:"notes,omitempty"`
}

// Add records a figure from samples, judging it against t (which may be
// nil).
func (r *Report) Add(res Result, samples []float64, t *Target) {
	d := Summarize(samples)
	res.Trials, res.Median, res.P99, res.Max = d.Trials, d.Median, d.P99, d.Max
	res.Target = t
	if t != nil && d.Trials > 0 {
		v := d.P99
		switch t.Stat {
		case "median":
			v = d.Median
		case "max":
			v = d.Max
		}
		pass := v < t.Limit
		res.Pass = &pass
	}
	if res.System == "" {
		res.System = "rbee-hive"
	}
	res.Load = loadavg()
	r.Results = append(r.Results, res)
}

// Find returns the first result with section, system, name and n.
func (r *Report) Find(section, system, name string, n int) (Result, bool) {
	for _, x := range r.Results {
		if x.Section == section && x.System == system && x.Name == name && x.N == n {
			return x, true
		}
	}
	return Result{}, false
}

// CurrentMachine reads the machine's description from the running system.
func CurrentMachine(now time.Time) Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Date: now.UTC().Format(time.RFC3339)}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m.Kernel = cstr(u.Sysname[:]) + " " + cstr(u.Release[:]) + " " + cstr(u.Machine[:])
	}
	if kb := meminfo("MemTotal"); kb > 0 {
		m.MemoryGiB = strconv.FormatFloat(float64(kb)/(1<<20), 'f', 1, 64)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		m.PidMax = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}

func cstr(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// meminfo returns a /proc/meminfo field in KiB (0 if absent).
func meminfo(key string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// JSON renders the report as indented JSON.
func (r *Report) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// num formats a figure with a precision that suits its size.
func num(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func passText(p *bool) string {
	switch {
	case p == nil:
		return ""
	case *p:
		return "pass"
	}
	return "**FAIL**"
}

func nText(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// Markdown renders the report as the tables the README shows.
func (r *Report) Markdown() []byte {
	var b bytes.Buffer
	m := r.Machine
	fmt.Fprintf(&b, "# rbee-hive benchmark results\n\n")
	if r.Smoke {
		fmt.Fprintf(&b, "**Smoke run** (tiny N, few trials): these numbers only show that the tool works.\n\n")
	}
	fmt.Fprintf(&b, "| machine | |\n| --- | --- |\n")
	fmt.Fprintf(&b, "| CPUs (nproc) | %d (%s) |\n| memory | %s GiB |\n| kernel | %s |\n| pid_max | %s |\n| Go | %s |\n| date | %s |\n| command | `%s` |\n| run time | %s |\n\n",
		m.CPUs, m.CPUModel, m.MemoryGiB, m.Kernel, m.PidMax, m.GoVersion, m.Date, r.Command, r.Duration)

	sections := []struct{ key, title string }{
		{"supervision", "Supervision latencies (issue 3)"},
		{"scale", "Scale: idle reference workers under one hive (issue 8)"},
		{"supervisord", "supervisord, same worker binary (issue 8.2)"},
		{"model", "The reference worker's model: stories260K on the CPU (issue 15)"},
		{"frontdoor", "Front door: OpenAI routes through the hive vs straight to the worker (issue 14)"},
		{"python", "Side by side on a silent Python worker (issue 19)"},
		{"queen", "Cluster: rbee-queen in front of a hive registered in etcd (issue 17)"},
	}
	for _, s := range sections {
		var rows []Result
		for _, x := range r.Results {
			if x.Section == s.key {
				rows = append(rows, x)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "## %s\n\n", s.title)
		fmt.Fprintf(&b, "| figure | N | unit | trials | median | p99 | max | target | result | load | note |\n")
		fmt.Fprintf(&b, "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |\n")
		for _, x := range rows {
			t := ""
			if x.Target != nil {
				t = x.Target.Text
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %d | %s | %s | %s | %s | %s | %.1f | %s |\n", x.Name, nText(x.N), x.Unit,
				x.Trials, num(x.Median), num(x.P99), num(x.Max), t, passText(x.Pass), x.Load, x.Note)
		}
		b.WriteString("\n")
		if s.key == "scale" {
			r.growth(&b, rows)
		}
	}
	if len(r.Comparisons) > 0 {
		fmt.Fprintf(&b, "## rbee-hive vs supervisord, side by side\n\n")
		fmt.Fprintf(&b, "| figure | N | unit | stat | rbee-hive | supervisord | rbee-hive / supervisord | note |\n")
		fmt.Fprintf(&b, "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |\n")
		for _, c := range r.Comparisons {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", c.Name, nText(c.N), c.Unit, c.Stat,
				num(c.Hive), num(c.Supervisord), num(c.Ratio), c.Note)
		}
		b.WriteString("\n")
	}
	if len(r.Features) > 0 {
		fmt.Fprintf(&b, "## What supervisord does not do\n\n| feature | rbee-hive | supervisord |\n| --- | --- | --- |\n")
		for _, f := range r.Features {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", f.Feature, f.Hive, f.Supervisord)
		}
		b.WriteString("\n")
	}
	if len(r.Notes) > 0 {
		fmt.Fprintf(&b, "## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}

// growth writes, for each scale figure measured at several N, its median by
// N and the ratio of the largest N to the smallest.
func (r *Report) growth(b *bytes.Buffer, rows []Result) {
	byName := map[string]map[int]Result{}
	var names []string
	ns := map[int]bool{}
	for _, x := range rows {
		if x.N == 0 {
			continue
		}
		if byName[x.Name] == nil {
			byName[x.Name] = map[int]Result{}
			names = append(names, x.Name)
		}
		byName[x.Name][x.N] = x
		ns[x.N] = true
	}
	if len(ns) < 2 {
		return
	}
	var nl []int
	for n := range ns {
		nl = append(nl, n)
	}
	sort.Ints(nl)
	lo, hi := nl[0], nl[len(nl)-1]
	fmt.Fprintf(b, "How the figures grow with N (medians; ratio N=%d / N=%d):\n\n| figure | unit |", hi, lo)
	for _, n := range nl {
		fmt.Fprintf(b, " N=%d |", n)
	}
	fmt.Fprintf(b, " ratio %d/%d |\n| --- | --- |%s ---: |\n", hi, lo, strings.Repeat(" ---: |", len(nl)))
	for _, name := range names {
		m := byName[name]
		var unit string
		for _, x := range m {
			unit = x.Unit
		}
		fmt.Fprintf(b, "| %s | %s |", name, unit)
		for _, n := range nl {
			if x, ok := m[n]; ok {
				fmt.Fprintf(b, " %s |", num(x.Median))
			} else {
				b.WriteString(" |")
			}
		}
		a, okA := m[lo]
		z, okZ := m[hi]
		if okA && okZ && a.Median != 0 {
			fmt.Fprintf(b, " %s |\n", num(z.Median/a.Median))
		} else {
			b.WriteString(" |\n")
		}
	}
	b.WriteString("\n")
}

// loadavg returns the 1-minute load average (0 if unknown).
func loadavg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
