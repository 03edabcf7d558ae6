package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// This file turns YAML (the config file) and JSON (a spawn's settings, which
// is YAML too) into readable errors before they reach the decoder: an
// unknown key names the key, its line and the nearest known key; a wrong
// value names the key, what was given and what is wanted. Sizes such as
// "8GiB" are accepted for every key whose name ends in _bytes.

var durationType = reflect.TypeFor[Duration]()

// Key is one configuration key, as the docs and the CLI's help show it.
type Key struct {
	Path    string // dotted, e.g. "restart.max_failures"
	Kind    string // what a value looks like: duration, size, integer, number, boolean, string, list, map
	Default string // the embedded default, as YAML would write it
}

// SettingsKeys lists every per-worker setting (the keys of `defaults`, and
// of a spawn's `settings`) with its embedded default, sorted by path.
func SettingsKeys() []Key { return slices.Clone(settingsKeys()) }

// settingsKeys is SettingsKeys computed once, shared and never changed: it
// writes every default as YAML (about a third of a millisecond), and
// Override, which checks each spawn's settings against it, runs up to three
// times on the path of a cold start.
var settingsKeys = sync.OnceValue(func() []Key { return keysOf(reflect.ValueOf(DefaultSettings()), "") })

// ConfigKeys lists every key of the configuration file with its embedded
// default, sorted by path. Map-valued keys (profiles) are listed once, with
// the keys of one entry under "<name>".
func ConfigKeys() []Key { return keysOf(reflect.ValueOf(Default()), "") }

func keysOf(v reflect.Value, prefix string) []Key {
	var out []Key
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if isInline(f) && f.Type.Kind() == reflect.Struct {
			out = append(out, keysOf(v.Field(i), prefix)...)
			continue
		}
		name := yamlName(f)
		if name == "" {
			continue // unexported, "-", or an inline map (free-form keys)
		}
		path := prefix + name
		fv := v.Field(i)
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct && ft != durationType:
			out = append(out, keysOf(fv, path+".")...)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			out = append(out, Key{Path: path, Kind: "map", Default: defaultText(fv)})
			elem := reflect.New(ft.Elem()).Elem()
			if _, ok := elem.Interface().(Profile); ok {
				elem = reflect.ValueOf(Profile{}.withDefaults("<name>"))
			}
			out = append(out, keysOf(elem, path+".<name>.")...)
		default:
			out = append(out, Key{Path: path, Kind: kindOf(ft, name), Default: defaultText(fv)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func defaultText(v reflect.Value) string {
	if d, ok := v.Interface().(Duration); ok {
		return CompactDuration(d)
	}
	if v.Kind() == reflect.Map && v.Type().Elem().Kind() == reflect.Struct {
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		return "{" + strings.Join(keys, ", ") + "}"
	}
	b, err := yaml.Marshal(v.Interface())
	if err != nil {
		return "?"
	}
	s := strings.TrimSpace(string(b))
	if strings.Contains(s, "\n") { // a list or map in block style
		var any interface{}
		_ = yaml.Unmarshal(b, &any)
		n := &yaml.Node{}
		_ = n.Encode(any)
		n.Style = yaml.FlowStyle
		fb, _ := yaml.Marshal(n)
		s = strings.TrimSpace(string(fb))
	}
	return s
}

// yamlName is the YAML key of a struct field, "" when it has none (also
// for ",inline" fields, whose keys are the parent's: see inlineOf).
func yamlName(f reflect.StructField) string {
	if !f.IsExported() || isInline(f) {
		return ""
	}
	tag := f.Tag.Get("yaml")
	name, _, _ := strings.Cut(tag, ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

func isInline(f reflect.StructField) bool {
	_, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	for _, o := range strings.Split(opts, ",") {
		if o == "inline" {
			return true
		}
	}
	return false
}

// structFields returns the YAML keys of struct type t (inline structs
// flattened) and whether an inline map takes any other key.
func structFields(t reflect.Type) (map[string]reflect.StructField, bool) {
	fields := map[string]reflect.StructField{}
	open := false
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if isInline(f) {
			switch f.Type.Kind() {
			case reflect.Struct:
				sub, o := structFields(f.Type)
				for k, v := range sub {
					fields[k] = v
				}
				open = open || o
			case reflect.Map:
				open = true
			}
			continue
		}
		if nm := yamlName(f); nm != "" {
			fields[nm] = f
		}
	}
	return fields, open
}

func isSizeKey(name string, t reflect.Type) bool {
	return strings.HasSuffix(name, "_bytes") && (t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64)
}

func kindOf(t reflect.Type, name string) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		return "duration"
	case isSizeKey(name, t):
		return "size"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	case reflect.String:
		return "string"
	case reflect.Slice, reflect.Array:
		return "list"
	case reflect.Map:
		return "map"
	}
	return t.Kind().String()
}

// want says what a value of kind looks like.
func want(kind string) string {
	switch kind {
	case "duration":
		return `a duration with a unit, such as "250ms", "30s" or "5m" (or 0)`
	case "size":
		return `a size in bytes, such as 4294967296, "8GiB" or "512MiB"`
	case "integer":
		return "a whole number such as 5"
	case "number":
		return "a number such as 1.5"
	case "boolean":
		return "true or false"
	case "string":
		return "a string"
	case "list":
		return "a list such as [a, b]"
	case "map":
		return "a mapping of keys to values"
	case "struct":
		return "a mapping of keys to values"
	}
	return "a " + kind
}

// ParseSize reads a size in bytes: a whole number, or a number with a unit
// B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000),
// e.g. "8GiB", "512MiB", "1.5GiB". Spaces between number and unit are
// allowed; units are case-insensitive.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
		"g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}[unit]
	if mult == 0 || num == "" {
		return 0, fmt.Errorf("%q is not a size (want bytes, or a number with a unit such as 8GiB or 512MiB)", s)
	}
	if unit == "" || unit == "b" {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a whole number of bytes", s)
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsInf(f*mult, 0) || f*mult > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is not a size (want a number with a unit such as 8GiB or 512MiB)", s)
	}
	return int64(f * mult), nil
}

// keyError is one problem with one key.
type keyError struct {
	line int    // 0: no line (settings)
	path string // dotted
	msg  string
}

func (e *keyError) Error() string {
	var b strings.Builder
	if e.line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.line)
	}
	if e.path != "" {
		b.WriteString(e.path + ": ")
	}
	b.WriteString(e.msg)
	return b.String()
}

// checker walks a YAML node tree against a Go type.
type checker struct {
	lines bool  // report line numbers (a file; not a spawn's JSON settings)
	all   []Key // every key of the root, for "did you mean" across levels
	errs  []error
}

func (c *checker) bad(n *yaml.Node, path, format string, a ...any) {
	e := &keyError{path: path, msg: fmt.Sprintf(format, a...)}
	if c.lines {
		e.line = n.Line
	}
	c.errs = append(c.errs, e)
}

// given renders what a node holds, for an error message.
func given(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!str" {
			return strconv.Quote(n.Value)
		}
		return n.Value
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "an alias"
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (c *checker) walk(n *yaml.Node, t reflect.Type, path, name string) {
	if n.Kind == yaml.DocumentNode {
		for _, ch := range n.Content {
			c.walk(ch, t, path, name)
		}
		return
	}
	if n.Kind == 0 || n.Kind == yaml.AliasNode || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return // aliases are left to the decoder (it bounds alias expansion); null is the zero value
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && t != durationType:
		if n.Kind != yaml.MappingNode {
			c.bad(n, path, "got %s, want a mapping of keys (%s)", given(n), strings.Join(fieldNames(t), ", "))
			return
		}
		fields, open := structFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" {
				continue
			}
			f, ok := fields[k.Value]
			if !ok && open {
				continue // an inline map takes it; its owner's Validate checks it
			}
			if !ok {
				c.bad(k, "", "unknown key %q%s%s", k.Value, where(path), c.suggest(path, k.Value, fieldNames(t)))
				continue
			}
			c.walk(v, f.Type, join(path, k.Value), k.Value)
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.bad(n, path, "got %s, want %s", given(n), want("map"))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), n.Content[i].Value)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.bad(n, path, "got %s, want %s", given(n), want("list"))
			return
		}
		for _, e := range n.Content {
			c.walk(e, t.Elem(), path, name)
		}
	default:
		kind := kindOf(t, name)
		if n.Kind != yaml.ScalarNode {
			c.bad(n, path, "got %s, want %s", given(n), want(kind))
			return
		}
		if kind == "size" && n.Tag == "!!str" {
			v, err := ParseSize(n.Value)
			if err != nil {
				c.bad(n, path, "got %q, want %s", n.Value, want(kind))
				return
			}
			n.Value, n.Tag, n.Style = strconv.FormatInt(v, 10), "!!int", 0
		}
		if kind == "duration" && n.Tag != "!!str" && n.Value != "0" {
			c.bad(n, path, "got %s, want %s", n.Value, want(kind))
			return
		}
		if kind == "string" && n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float" && n.Tag != "!!bool" {
			c.bad(n, path, "got %s, want %s", given(n), want(kind))
			return
		}
		if kind != "string" && kind != "duration" && n.Tag == "!!str" && n.Style != 0 {
			// "5" quoted for a number: say a string was given.
			c.bad(n, path, "got the string %q, want %s", n.Value, want(kind))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			c.bad(n, path, "got %s, want %s", given(n), want(kind))
		}
	}
}

func where(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

func fieldNames(t reflect.Type) []string {
	fields, _ := structFields(t)
	out := make([]string, 0, len(fields))
	for i := 0; i < t.NumField(); i++ { // declaration order where possible
		if nm := yamlName(t.Field(i)); nm != "" {
			out = append(out, nm)
		}
	}
	for nm := range fields {
		if !slices.Contains(out, nm) {
			out = append(out, nm)
		}
	}
	return out
}

// suggest returns ` (did you mean "x"?)` for the known key nearest to got,
// first among its siblings, then anywhere in the document.
func (c *checker) suggest(path, got string, siblings []string) string {
	if s := Nearest(got, siblings); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	var full []string
	for _, k := range c.all {
		if last := k.Path[strings.LastIndexByte(k.Path, '.')+1:]; last == got {
			full = append(full, k.Path)
		}
	}
	if len(full) > 0 {
		return fmt.Sprintf(" (did you mean %q?)", full[0])
	}
	if len(siblings) > 0 {
		return " (known keys: " + strings.Join(siblings, ", ") + ")"
	}
	return ""
}

// Nearest returns the candidate closest to s by edit distance, or "" when
// none is close (at most 2 edits, or a third of s's length).
func Nearest(s string, candidates []string) string {
	best, bestD := "", math.MaxInt
	limit := max(2, len(s)/3)
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD && d <= limit {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkNode checks n against the type of root and rewrites sizes in place.
func checkNode(n *yaml.Node, root any, lines bool, all []Key) error {
	c := &checker{lines: lines, all: all}
	c.walk(n, reflect.TypeOf(root), "", "")
	return errors.Join(c.errs...)
}

// SettingValue parses one per-worker setting given as text (the CLI's
// `--set key=value`) into the JSON value a spawn's settings carry: a
// duration stays a string, a size becomes a number of bytes, integers,
// numbers and booleans become JSON numbers and booleans. Errors say which
// key, what was given and what is wanted; an unknown key names the nearest
// known one.
func SettingValue(key, value string) (any, error) {
	keys := SettingsKeys()
	var k *Key
	paths := make([]string, len(keys))
	for i := range keys {
		paths[i] = keys[i].Path
		if keys[i].Path == key {
			k = &keys[i]
		}
	}
	if k == nil {
		var under []string
		for _, p := range paths {
			if strings.HasPrefix(p, key+".") {
				under = append(under, p)
			}
		}
		if len(under) > 0 {
			return nil, fmt.Errorf("%s is a group of settings; set one of them: %s", key, strings.Join(under, ", "))
		}
		if s := Nearest(key, paths); s != "" {
			return nil, fmt.Errorf("unknown setting %q (did you mean %q?)", key, s)
		}
		return nil, fmt.Errorf("unknown setting %q (run `rbee-hive worker spawn --help` for the list)", key)
	}
	fail := func() (any, error) {
		return nil, fmt.Errorf("%s: got %q, want %s", key, value, want(k.Kind))
	}
	switch k.Kind {
	case "duration":
		if _, err := parseDuration(value); err != nil {
			return fail()
		}
		return value, nil
	case "size":
		v, err := ParseSize(value)
		if err != nil {
			return fail()
		}
		return v, nil
	case "integer":
		v, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return fail()
		}
		return v, nil
	case "number":
		v, err := strconv.ParseFloat(value, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return fail()
		}
		return v, nil
	case "boolean":
		v, err := strconv.ParseBool(value)
		if err != nil {
			return fail()
		}
		return v, nil
	case "string":
		return value, nil
	}
	return nil, fmt.Errorf("%s cannot be set with --set (it is a %s); use a config file", key, k.Kind)
}

// CompactDuration writes d as 5m or 1h30m rather than 5m0s or 1h30m0s.
func CompactDuration(d Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
