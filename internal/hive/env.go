package hive

import (
	"fmt"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/rbee/rbee-hive/internal/config"
)

// basePath is the PATH every worker starts with (SPEC §14): the system's
// directories only, never the hive's (or a request's) PATH.
const basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// WorkerUser is who a worker runs as: nil Credential means the hive's own
// user.
type WorkerUser struct {
	Name       string
	Home       string
	Credential *syscall.Credential // nil: the hive's user; Groups empty: supplementary groups cleared
}

// BaseEnv is the minimal base of a worker's environment: PATH, the worker
// user's HOME, and the hive's LANG and TZ (when set).
func BaseEnv(home string, hiveEnv func(string) string) map[string]string {
	m := map[string]string{"PATH": basePath, "HOME": home}
	if home == "" {
		m["HOME"] = "/"
	}
	for _, k := range []string{"LANG", "TZ"} {
		if v := hiveEnv(k); v != "" && !strings.ContainsRune(v, 0) {
			m[k] = v
		}
	}
	if m["LANG"] == "" {
		m["LANG"] = "C.UTF-8"
	}
	return m
}

// BuildEnv is a worker's environment without the per-start RBEE_* entries
// the supervisor adds last (SPEC §14): one map, each name once, later
// layers winning — base, then the profile's env, then the request's
// (already checked against allow_env). No layer may carry an RBEE_ name:
// those are the hive's alone, so any found here is dropped. Sorted, so the
// same inputs give the same environment.
func BuildEnv(base, profile, request map[string]string) []string {
	m := make(map[string]string, len(base)+len(profile)+len(request))
	for _, layer := range []map[string]string{base, profile, request} {
		for k, v := range layer {
			if k == "" || strings.HasPrefix(k, "RBEE_") || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
				continue
			}
			m[k] = v
		}
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// resolveRunAs finds the user (and group) workers of a profile run as:
// the profile's run_as, else the config's, else — for a root hive — the
// user "rbee" where it exists, else the hive's own user. warnNoUser is
// called (by the caller, once) when a root hive runs workers as root for
// want of a "rbee" user.
func resolveRunAs(r config.RunAs) (WorkerUser, bool, error) {
	name := r.User
	rootDefault := false
	if name == "" && os.Geteuid() == 0 {
		if _, err := user.Lookup("rbee"); err == nil {
			name = "rbee"
		} else {
			rootDefault = true
		}
	}
	if name == "" {
		home := ""
		if u, err := user.Current(); err == nil {
			home = u.HomeDir
		}
		wu := WorkerUser{Name: "", Home: home}
		if r.Group != "" {
			// The hive's own user, in the group the config names.
			gid, err := lookupGID(r.Group)
			if err != nil {
				return WorkerUser{}, false, err
			}
			if int(gid) != os.Getegid() {
				wu.Credential = &syscall.Credential{Uid: uint32(os.Geteuid()), Gid: gid, Groups: []uint32{}}
			}
		}
		return wu, rootDefault, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return WorkerUser{}, false, fmt.Errorf("run_as: user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return WorkerUser{}, false, fmt.Errorf("run_as: user %q: uid %q", name, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return WorkerUser{}, false, fmt.Errorf("run_as: user %q: gid %q", name, u.Gid)
	}
	if r.Group != "" {
		g, err := lookupGID(r.Group)
		if err != nil {
			return WorkerUser{}, false, err
		}
		gid = uint64(g)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	if int(uid) == os.Geteuid() && int(gid) == os.Getegid() {
		cred = nil // already that user; nothing to change
	}
	return WorkerUser{Name: u.Username, Home: u.HomeDir, Credential: cred}, false, nil
}

// lookupGID returns the id of the group run_as names.
func lookupGID(name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("run_as: group %q: %w", name, err)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("run_as: group %q: gid %q", name, g.Gid)
	}
	return uint32(gid), nil
}
