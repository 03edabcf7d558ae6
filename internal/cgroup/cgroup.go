// Package cgroup gives each worker its own Linux control group: it detects the
// host's cgroup layout (pure v2, hybrid v1+cgroup2, pure v1 or none), creates a
// per-worker cgroup under a scope, writes the resource limits, and later kills
// every process in it, waits for it to empty, reports OOM kills and usage, and
// removes it.
//
// The package talks to the kernel only through files under a root directory
// (default /sys/fs/cgroup), so tests can point it at a fake tree in a temporary
// directory. Directory creation, removal and file writes go through a small
// seam (cgroupFS) so a fake tree can mimic what the kernel does on mkdir.
//
// Placement:
//
//   - v2: <root>/<hive's own cgroup>/<scope>/<id>. The hive's own cgroup is read
//     from /proc/self/cgroup ("0::/path"), so a hive running in a delegated
//     systemd unit (Delegate=yes) keeps its workers inside its delegation.
//   - hybrid: the v1 controllers at <root>/<controller>/<scope>/<id> (memory,
//     cpu, cpuacct, pids; created at the hierarchy root, which needs root) and
//     the cgroup2 directory <root>/unified/<scope>/<id>, which has no controllers
//     but gives CLONE_INTO_CGROUP, cgroup.kill and cgroup.events.
//   - v1: the v1 controllers only; kill signals each process and emptiness is
//     found by polling.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/rbee/rbee-hive/internal/config"
)

// Mode is the cgroup layout found on the host.
type Mode string

const (
	// ModeV2 is a pure cgroup v2 (unified) host: one hierarchy with controllers.
	ModeV2 Mode = "v2"
	// ModeHybrid is v1 controller hierarchies plus a cgroup2 hierarchy at
	// <root>/unified that carries no controllers (used for kill and events).
	ModeHybrid Mode = "hybrid"
	// ModeV1 is v1 controller hierarchies only.
	ModeV1 Mode = "v1"
	// ModeNone means no usable cgroup hierarchy was found.
	ModeNone Mode = "none"
)

// String returns the mode's name.
func (m Mode) String() string { return string(m) }

// Controllers this package uses. cpuacct exists only on v1, where it is its
// own hierarchy (or shares one with cpu).
const (
	ctrlMemory  = "memory"
	ctrlCPU     = "cpu"
	ctrlCPUAcct = "cpuacct"
	ctrlPids    = "pids"
)

var v1Controllers = []string{ctrlMemory, ctrlCPU, ctrlCPUAcct, ctrlPids}
var v2Controllers = []string{ctrlMemory, ctrlCPU, ctrlPids}

// cpuPeriodUsec is the CFS period written with every CPU limit.
const cpuPeriodUsec = 100000

// hiveLeaf is the leaf a v2 hive moves itself into when its own cgroup must
// enable controllers for its children (the no-internal-processes rule).
const hiveLeaf = "hive"

var (
	// ErrLimitsUnsupported is wrapped by *UnsupportedError: limits were asked
	// for that this host (or this process's privileges) cannot enforce.
	ErrLimitsUnsupported = errors.New("limits unsupported")
	// ErrNoCgroups is returned by Create and Open on a Manager whose Mode is
	// ModeNone.
	ErrNoCgroups = errors.New("no usable cgroup hierarchy")
	// ErrNotFound is returned by Open when the worker's cgroup does not exist
	// in any hierarchy.
	ErrNotFound = errors.New("cgroup not found")
	// ErrExists is returned by Create when the worker's cgroup already exists.
	ErrExists = errors.New("cgroup already exists")
	// ErrInvalidID is returned for an id or scope that is not a safe path
	// component.
	ErrInvalidID = errors.New("invalid cgroup id")
)

// UnsupportedError says exactly which asked-for limits cannot be enforced and
// why. It unwraps to ErrLimitsUnsupported.
type UnsupportedError struct {
	// Problems holds one human sentence per missing piece, e.g.
	// "memory_max_bytes needs the memory controller: not available (...)".
	Problems []string
}

func (e *UnsupportedError) Error() string {
	return "limits unsupported: " + strings.Join(e.Problems, "; ")
}

// Unwrap returns ErrLimitsUnsupported.
func (e *UnsupportedError) Unwrap() error { return ErrLimitsUnsupported }

// Options configure a Manager. The zero value is usable and means: the host's
// /sys/fs/cgroup, scope "rbee-hive", the process's own /proc/self/cgroup, and
// slog.Default() for logging.
type Options struct {
	// Root is the directory the cgroup hierarchies are mounted under.
	// Empty means /sys/fs/cgroup. Detection only looks at files under it
	// (cgroup.controllers at the root for v2, unified/cgroup.procs for a
	// hybrid cgroup2 mount, <controller>/cgroup.procs for v1), so a fake tree
	// in a temporary directory works.
	Root string
	// Scope is the relative path all worker cgroups live under, e.g.
	// "rbee-hive/<instance>". Empty means "rbee-hive". It must be a clean
	// relative path without "..".
	Scope string
	// SelfCgroup is the file to read the hive's own cgroup from, in
	// /proc/<pid>/cgroup format. Empty means /proc/self/cgroup. Only the
	// "0::/path" line is used (v2 placement).
	SelfCgroup string
	// Logger receives one line per notable action (detection, moving the
	// hive into its leaf, enabling controllers). Nil means slog.Default().
	Logger *slog.Logger

	// fs is the seam to the cgroup filesystem; nil means the real one.
	fs cgroupFS
}

// hierarchy is one mounted cgroup hierarchy.
type hierarchy struct {
	mount string // where it is mounted, e.g. /sys/fs/cgroup/memory
	base  string // the directory the scope lives under
	v2    bool
	// controllers: v1: the controllers this hierarchy carries (a cpu,cpuacct
	// co-mount carries both); v2: the usable ones in base's cgroup.controllers.
	controllers []string
}

// Manager creates and finds worker cgroups under one scope. Its methods are
// safe for concurrent use. It holds no open files; there is nothing to close.
type Manager struct {
	mode  Mode
	root  string
	scope string
	log   *slog.Logger
	fs    cgroupFS

	unified *hierarchy            // nil when there is no cgroup2 hierarchy
	v1      map[string]*hierarchy // controller → hierarchy (cpu and cpuacct may share)

	mu       sync.Mutex
	prepared bool            // v2: controllers enabled down to the scope
	reserved map[string]bool // ids whose directories Reserve made and Create has not taken
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,256}$`)

func validID(id string) bool { return idRe.MatchString(id) && id != "." && id != ".." }

// New detects the cgroup layout under opts.Root and returns a Manager for it.
// It only reads files; it creates nothing. A host without any usable
// hierarchy is not an error: the Manager's Mode is then ModeNone. New fails
// only on an invalid Scope or an unreadable SelfCgroup on a v2 host.
func New(opts Options) (*Manager, error) {
	m := &Manager{
		root:  opts.Root,
		scope: opts.Scope,
		log:   opts.Logger,
		fs:    opts.fs,
		v1:    map[string]*hierarchy{},
	}
	if m.root == "" {
		m.root = "/sys/fs/cgroup"
	}
	if m.scope == "" {
		m.scope = "rbee-hive"
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.fs == nil {
		m.fs = osFS{}
	}
	for _, c := range strings.Split(m.scope, "/") {
		if !validID(c) {
			return nil, fmt.Errorf("cgroup: scope %q: %w", m.scope, ErrInvalidID)
		}
	}
	selfFile := opts.SelfCgroup
	if selfFile == "" {
		selfFile = "/proc/self/cgroup"
	}

	if exists(filepath.Join(m.root, "cgroup.controllers")) {
		own, err := ownV2Path(selfFile)
		if err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		h := &hierarchy{mount: m.root, base: filepath.Join(m.root, own), v2: true}
		avail, _ := readFields(filepath.Join(h.base, "cgroup.controllers"))
		for _, c := range v2Controllers {
			if slices.Contains(avail, c) {
				h.controllers = append(h.controllers, c)
			}
		}
		m.unified = h
		m.mode = ModeV2
	} else {
		u := filepath.Join(m.root, "unified")
		if exists(filepath.Join(u, "cgroup.procs")) {
			m.unified = &hierarchy{mount: u, base: u, v2: true}
		}
		byDir := map[string]*hierarchy{}
		for _, c := range v1Controllers {
			dir := filepath.Join(m.root, c)
			if !exists(filepath.Join(dir, "cgroup.procs")) {
				continue
			}
			real, err := filepath.EvalSymlinks(dir)
			if err != nil {
				continue
			}
			h := byDir[real]
			if h == nil {
				h = &hierarchy{mount: dir, base: dir}
				byDir[real] = h
			}
			h.controllers = append(h.controllers, c)
			m.v1[c] = h
		}
		switch {
		case m.unified != nil:
			m.mode = ModeHybrid
		case len(m.v1) > 0:
			m.mode = ModeV1
		default:
			m.mode = ModeNone
		}
	}
	m.log.Info("cgroup layout detected", "mode", string(m.mode), "layout", m.Describe())
	return m, nil
}

// ownV2Path returns the "0::" path from a /proc/<pid>/cgroup file, "/" if
// there is none.
func ownV2Path(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			p = path.Clean("/" + p)
			// A cgroup of a process that has exited reads " (deleted)".
			p = strings.TrimSuffix(p, " (deleted)")
			return p, nil
		}
	}
	return "/", nil
}

// Mode returns the detected layout.
func (m *Manager) Mode() Mode { return m.mode }

// Scope returns the scope all worker cgroups live under.
func (m *Manager) Scope() string { return m.scope }

// Describe returns one line describing the layout, for logs and status, e.g.
// "hybrid: v1 memory,cpu,cpuacct,pids + cgroup2 (kill, events) at /sys/fs/cgroup/unified".
func (m *Manager) Describe() string {
	switch m.mode {
	case ModeV2:
		c := strings.Join(m.unified.controllers, ",")
		if c == "" {
			c = "no controllers"
		}
		return fmt.Sprintf("v2: cgroup2 at %s, workers under %s, controllers %s", m.root, m.unified.base, c)
	case ModeHybrid:
		c := strings.Join(m.v1Names(), ",")
		if c == "" {
			c = "no controllers"
		}
		return fmt.Sprintf("hybrid: v1 %s + cgroup2 (kill, events) at %s", c, m.unified.mount)
	case ModeV1:
		return fmt.Sprintf("v1: %s under %s (no cgroup2: kill by signalling each process, emptiness by polling)", strings.Join(m.v1Names(), ","), m.root)
	default:
		return fmt.Sprintf("none: no cgroup hierarchy under %s", m.root)
	}
}

func (m *Manager) v1Names() []string {
	var out []string
	for _, c := range v1Controllers {
		if m.v1[c] != nil {
			out = append(out, c)
		}
	}
	return out
}

// controllerDir returns the hierarchy that carries controller c, and whether
// c can be used there.
func (m *Manager) controllerDir(c string) (*hierarchy, bool) {
	if m.mode == ModeV2 {
		return m.unified, slices.Contains(m.unified.controllers, c)
	}
	h := m.v1[c]
	return h, h != nil
}

// Supports reports whether limits l can be enforced here: nil, or an
// *UnsupportedError (errors.Is ErrLimitsUnsupported) naming each missing
// controller or permission. Nofile is an rlimit and always supported; a
// Limits without cgroup limits is always supported. It only reads files.
func (m *Manager) Supports(l config.Limits) error {
	type need struct{ limit, ctrl string }
	var needs []need
	if l.MemoryMaxBytes > 0 {
		needs = append(needs, need{"memory_max_bytes", ctrlMemory})
	}
	if l.CPUMax > 0 {
		needs = append(needs, need{"cpu_max", ctrlCPU})
	}
	if l.PidsMax > 0 {
		needs = append(needs, need{"pids_max", ctrlPids})
	}
	if len(needs) == 0 {
		return nil
	}
	var problems []string
	checked := map[string]bool{}
	for _, n := range needs {
		h, ok := m.controllerDir(n.ctrl)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s needs the %s controller: not available (%s)", n.limit, n.ctrl, m.whyMissing(n.ctrl)))
			continue
		}
		if checked[h.base] {
			continue
		}
		checked[h.base] = true
		if err := unix.Access(h.base, unix.W_OK); err != nil {
			problems = append(problems, fmt.Sprintf("no write access to %s (%v): run as root or delegate a subtree (systemd Delegate=yes)", h.base, err))
		}
	}
	if problems == nil {
		return nil
	}
	return &UnsupportedError{Problems: problems}
}

func (m *Manager) whyMissing(c string) string {
	switch m.mode {
	case ModeV2:
		return fmt.Sprintf("cgroup v2 at %s without %s in cgroup.controllers: enable it in the parent's cgroup.subtree_control or delegate it", m.unified.base, c)
	case ModeHybrid:
		return fmt.Sprintf("no v1 %s hierarchy at %s, and the cgroup2 hierarchy at %s has no controllers", c, filepath.Join(m.root, c), m.unified.mount)
	case ModeV1:
		return fmt.Sprintf("no v1 %s hierarchy at %s", c, filepath.Join(m.root, c))
	default:
		return fmt.Sprintf("no cgroup hierarchy under %s", m.root)
	}
}

// dirsFor returns, per hierarchy the worker uses, the directory for the
// relative path rel under the scope ("" is the scope itself). Keys are
// "unified" or the v1 controller names; a co-mounted cpu,cpuacct appears once
// under its first controller.
func (m *Manager) dirsFor(rel string) (unified string, v1 map[string]string) {
	if m.unified != nil {
		unified = filepath.Join(m.unified.base, m.scope, rel)
	}
	if m.mode == ModeV2 {
		return unified, nil
	}
	v1 = map[string]string{}
	seen := map[*hierarchy]bool{}
	for _, c := range v1Controllers {
		h := m.v1[c]
		if h == nil {
			continue
		}
		d := filepath.Join(h.base, m.scope, rel)
		v1[c] = d
		seen[h] = true
	}
	return unified, v1
}

// Create makes the worker's cgroup in every hierarchy in use and writes the
// limits in l (a zero limit is left at the kernel's "max"); a cgroup
// Reserve made for id is taken as it is, and only the limits are written.
// It fails with an *UnsupportedError when Supports(l) does, with ErrExists
// when the cgroup is already there (and not reserved), and with
// ErrNoCgroups on ModeNone. On any error it removes what it created (or
// took). On v2 the first Create enables the memory, cpu and pids
// controllers from the hive's own cgroup down to the scope, first moving the
// hive into the leaf "<own>/hive" when its own cgroup holds processes (the
// no-internal-processes rule). Blocks only on file system calls.
func (m *Manager) Create(id string, l config.Limits) (*Group, error) {
	if !validID(id) {
		return nil, fmt.Errorf("cgroup create %q: %w", id, ErrInvalidID)
	}
	if err := m.Supports(l); err != nil {
		return nil, err
	}
	if m.mode == ModeNone {
		return nil, fmt.Errorf("cgroup create %q: %w", id, ErrNoCgroups)
	}
	if err := m.prepare(); err != nil {
		return nil, fmt.Errorf("cgroup create %q: %w", id, err)
	}
	g := m.group(id)
	var made []string
	fail := func(err error) (*Group, error) {
		for _, d := range slices.Backward(made) {
			_ = m.fs.Rmdir(d)
		}
		return nil, fmt.Errorf("cgroup create %q: %w", id, err)
	}
	taken := m.take(id)
	for _, d := range g.Paths() {
		if taken {
			// Made ahead by Reserve: ours. (Removed by someone else since,
			// the limits cannot be written or the start cannot open it,
			// and the start fails.)
			made = append(made, d)
			continue
		}
		err := m.mkdirAll(filepath.Dir(d))
		if err == nil {
			err = m.fs.Mkdir(d)
		}
		if errors.Is(err, fs.ErrNotExist) {
			// Another hive's RemoveScope removed the shared parent
			// ("rbee-hive") between our mkdirAll and Mkdir: once more.
			if err = m.mkdirAll(filepath.Dir(d)); err == nil {
				err = m.fs.Mkdir(d)
			}
		}
		if err != nil {
			if errors.Is(err, fs.ErrExist) {
				err = fmt.Errorf("%s: %w", d, ErrExists)
			}
			return fail(err)
		}
		made = append(made, d)
	}
	if err := g.writeLimits(l); err != nil {
		return fail(err)
	}
	m.log.Debug("cgroup created", "worker_id", id, "paths", g.Paths(), "limits", l)
	return g, nil
}

// Reserve makes the directories of worker id's cgroup ahead of its Create,
// without limits, so that Create(id) then only writes the limits: the
// hive makes the next worker's cgroup while nothing waits for it (mkdir of
// a cgroup costs a few hundred microseconds, the memory controller's
// most). Until Create takes it, the group holds no process and is only a
// directory per hierarchy; Unreserve removes it. A hive that dies with one
// reserved leaves it to the next hive's orphan cleanup (List shows it). It
// fails as Create does.
func (m *Manager) Reserve(id string) error {
	if _, err := m.Create(id, config.Limits{}); err != nil {
		return err
	}
	m.mu.Lock()
	if m.reserved == nil {
		m.reserved = map[string]bool{}
	}
	m.reserved[id] = true
	m.mu.Unlock()
	return nil
}

// Unreserve removes worker id's reserved cgroup unless Create has taken
// it (then it is the worker's, and nothing happens).
func (m *Manager) Unreserve(id string) error {
	if !m.take(id) {
		return nil
	}
	return m.group(id).Remove()
}

// take reports whether id was reserved, and makes it no longer so.
func (m *Manager) take(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.reserved[id] {
		return false
	}
	delete(m.reserved, id)
	return true
}

// mkdirAll creates dir and its missing parents with the seam's Mkdir.
func (m *Manager) mkdirAll(dir string) error {
	if exists(dir) {
		return nil
	}
	if err := m.mkdirAll(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := m.fs.Mkdir(dir); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// prepare enables, on v2, the available controllers from the hive's own
// cgroup down to the scope directory. It runs once per Manager (retried after
// a failure).
//
//  1. If the own cgroup's cgroup.subtree_control lacks a controller, write
//     "+memory +cpu +pids" (the available ones) to it.
//  2. If that fails with EBUSY (processes in a non-root cgroup), move this
//     process into the leaf <own>/hive and write again.
//  3. Create each scope directory and enable the same controllers in it.
func (m *Manager) prepare() error {
	if m.mode != ModeV2 || len(m.unified.controllers) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.prepared {
		return nil
	}
	ctrls := m.unified.controllers
	base := m.unified.base
	if err := m.enable(base, ctrls); err != nil {
		if !errors.Is(err, unix.EBUSY) || base == m.unified.mount {
			return err
		}
		leaf := filepath.Join(base, hiveLeaf)
		if err := m.fs.Mkdir(leaf); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("make hive leaf: %w", err)
		}
		pid := fmt.Sprint(os.Getpid())
		if err := m.fs.WriteFile(filepath.Join(leaf, "cgroup.procs"), pid); err != nil {
			return fmt.Errorf("move hive into %s: %w", leaf, err)
		}
		m.log.Info("moved the hive into a leaf cgroup so its own cgroup can enable controllers", "leaf", leaf, "pid", pid)
		if err := m.enable(base, ctrls); err != nil {
			return fmt.Errorf("%w (other processes left in %s?)", err, base)
		}
	}
	dir := base
	for _, c := range strings.Split(m.scope, "/") {
		dir = filepath.Join(dir, c)
		if err := m.fs.Mkdir(dir); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("make scope: %w", err)
		}
		if err := m.enable(dir, ctrls); err != nil {
			return err
		}
	}
	m.prepared = true
	return nil
}

// enable writes "+c" for each controller of ctrls missing from dir's
// cgroup.subtree_control.
func (m *Manager) enable(dir string, ctrls []string) error {
	file := filepath.Join(dir, "cgroup.subtree_control")
	have, err := readFields(file)
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	var add []string
	for _, c := range ctrls {
		if !slices.Contains(have, c) && !slices.Contains(have, "+"+c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := m.fs.WriteFile(file, strings.Join(add, " ")); err != nil {
		return fmt.Errorf("enable %s in %s: %w", strings.Join(add, " "), file, err)
	}
	return nil
}

// group returns the Group value for id (no file system access).
func (m *Manager) group(id string) *Group {
	g := &Group{id: id, fs: m.fs, log: m.log}
	g.unified, g.v1 = m.dirsFor(id)
	g.v2 = m.mode == ModeV2
	return g
}

// Open returns the existing cgroup of worker id, for re-adoption after a hive
// restart. Only the directories that exist are part of the Group. It fails
// with ErrNotFound when none exists and ErrNoCgroups on ModeNone. It only
// reads.
func (m *Manager) Open(id string) (*Group, error) {
	if !validID(id) {
		return nil, fmt.Errorf("cgroup open %q: %w", id, ErrInvalidID)
	}
	if m.mode == ModeNone {
		return nil, fmt.Errorf("cgroup open %q: %w", id, ErrNoCgroups)
	}
	g := m.group(id)
	found := false
	if g.unified != "" {
		if exists(g.unified) {
			found = true
		} else {
			g.unified = ""
		}
	}
	for c, d := range g.v1 {
		if exists(d) {
			found = true
		} else {
			delete(g.v1, c)
		}
	}
	if !found {
		return nil, fmt.Errorf("cgroup open %q: %w", id, ErrNotFound)
	}
	return g, nil
}

// List returns the sorted ids of the worker cgroups under the scope, in any
// hierarchy (for orphan cleanup). An absent scope gives an empty list.
func (m *Manager) List() ([]string, error) {
	if m.mode == ModeNone {
		return nil, nil
	}
	u, v1 := m.dirsFor("")
	dirs := []string{}
	if u != "" {
		dirs = append(dirs, u)
	}
	for _, d := range v1 {
		dirs = append(dirs, d)
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cgroup list: %w", err)
		}
		for _, e := range ents {
			if e.IsDir() && validID(e.Name()) {
				seen[e.Name()] = true
			}
		}
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// RemoveScope removes the scope directories in every hierarchy, deepest
// first, stopping at the first level that is still in use (not empty, or
// busy). It never removes the hive's own cgroup or anything above it.
// Missing directories are fine. Use it at clean shutdown and in tests.
func (m *Manager) RemoveScope() error {
	if m.mode == ModeNone {
		return nil
	}
	var bases []string
	if m.unified != nil {
		bases = append(bases, m.unified.base)
	}
	seen := map[*hierarchy]bool{}
	for _, c := range v1Controllers {
		if h := m.v1[c]; h != nil && !seen[h] {
			seen[h] = true
			bases = append(bases, h.base)
		}
	}
	var errs []error
	parts := strings.Split(m.scope, "/")
	for _, b := range bases {
		for i := len(parts); i > 0; i-- {
			d := filepath.Join(b, filepath.Join(parts[:i]...))
			err := m.fs.Rmdir(d)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EBUSY) || errors.Is(err, fs.ErrExist) {
				break
			}
			if i < len(parts) && errors.Is(err, fs.ErrPermission) {
				break // a shared parent this process may not remove: not ours
			}
			errs = append(errs, err)
			break
		}
	}
	return errors.Join(errs...)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// readFields returns the whitespace-separated words of a file.
func readFields(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}
