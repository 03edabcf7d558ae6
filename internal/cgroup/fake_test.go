package cgroup

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeFS mimics cgroupfs on a plain directory tree: Mkdir populates the
// interface files the kernel would, Rmdir refuses populated or non-leaf
// directories, writes to cgroup.subtree_control and cgroup.procs follow the
// kernel's rules closely enough for the package's logic.
type fakeFS struct{ root string }

var v1Names = []string{"memory", "cpu", "cpuacct", "pids"}

func (f fakeFS) hierarchy(dir string) (first string, isV2 bool) {
	rel, _ := filepath.Rel(f.root, dir)
	first = strings.Split(rel, string(filepath.Separator))[0]
	if first == "unified" {
		return first, true
	}
	if slices.Contains(v1Names, first) {
		return first, false
	}
	return "", true
}

func (f fakeFS) Mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	files := map[string]string{"cgroup.procs": "", "cgroup.events": "populated 0\nfrozen 0\n"}
	first, isV2 := f.hierarchy(dir)
	if isV2 {
		ctrls, _ := readFields(filepath.Join(filepath.Dir(dir), "cgroup.subtree_control"))
		files["cgroup.controllers"] = strings.Join(ctrls, " ")
		files["cgroup.subtree_control"] = ""
		files["cgroup.kill"] = ""
		files["cpu.stat"] = "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"
		for _, c := range ctrls {
			switch c {
			case "memory":
				ev := "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"
				files["memory.max"], files["memory.swap.max"], files["memory.current"] = "max", "max", "0"
				files["memory.events"], files["memory.events.local"] = ev, ev
			case "cpu":
				files["cpu.max"] = "max 100000"
			case "pids":
				files["pids.max"], files["pids.current"] = "max", "0"
			}
		}
	} else {
		delete(files, "cgroup.events")
		switch first {
		case "memory":
			files["memory.limit_in_bytes"] = "9223372036854771712"
			files["memory.memsw.limit_in_bytes"] = "9223372036854771712"
			files["memory.usage_in_bytes"] = "0"
			files["memory.oom_control"] = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"
		case "cpu":
			files["cpu.cfs_period_us"], files["cpu.cfs_quota_us"] = "100000", "-1"
		case "cpuacct":
			files["cpuacct.usage"] = "0"
		case "pids":
			files["pids.max"] = "max"
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (f fakeFS) Rmdir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			return &os.PathError{Op: "rmdir", Path: dir, Err: unix.ENOTEMPTY}
		}
	}
	if pids, _ := readProcs(dir); len(pids) > 0 {
		return &os.PathError{Op: "rmdir", Path: dir, Err: unix.EBUSY}
	}
	return os.RemoveAll(dir)
}

func (f fakeFS) WriteFile(file, data string) error {
	if _, err := os.Stat(file); err != nil {
		return err // the kernel never creates files
	}
	dir := filepath.Dir(file)
	switch filepath.Base(file) {
	case "cgroup.subtree_control":
		if pids, _ := readProcs(dir); len(pids) > 0 && dir != f.root {
			return &os.PathError{Op: "write", Path: file, Err: unix.EBUSY}
		}
		have, _ := readFields(file)
		for _, w := range strings.Fields(data) {
			c := w[1:]
			if w[0] == '+' && !slices.Contains(have, c) {
				have = append(have, c)
			}
		}
		slices.Sort(have)
		return os.WriteFile(file, []byte(strings.Join(have, " ")), 0o644)
	case "cgroup.procs":
		pid, err := strconv.Atoi(strings.TrimSpace(data))
		if err != nil {
			return &os.PathError{Op: "write", Path: file, Err: unix.EINVAL}
		}
		first, _ := f.hierarchy(dir)
		_ = filepath.WalkDir(filepath.Join(f.root, first), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "cgroup.procs" && p != file {
				ps, _ := readProcs(filepath.Dir(p))
				ps = slices.DeleteFunc(ps, func(x int) bool { return x == pid })
				writeProcs(p, ps)
			}
			return nil
		})
		ps, _ := readProcs(dir)
		writeProcs(file, append(ps, pid))
		return nil
	}
	return os.WriteFile(file, []byte(data), 0o644)
}

func writeProcs(file string, pids []int) {
	var b strings.Builder
	for _, p := range pids {
		b.WriteString(strconv.Itoa(p) + "\n")
	}
	_ = os.WriteFile(file, []byte(b.String()), 0o644)
}

// put writes a file in the fake tree, creating parents.
func put(t *testing.T, file, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
