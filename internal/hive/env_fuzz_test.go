package hive

import (
	"strings"
	"testing"
)

// FuzzBuildEnv checks the worker environment builder against SPEC §14 on
// arbitrary layers: each name once, no RBEE_ name from any layer, no NUL,
// and later layers win (request over profile over base).
func FuzzBuildEnv(f *testing.F) {
	f.Add("HOME", "/root", "HOME", "/profile", "HOME", "/request")
	f.Add("PATH", "/bin", "RBEE_WORKER_TOKEN", "x", "RBEE_API_TOKEN", "y")
	f.Add("A", "1", "A=B", "2", "", "3")
	f.Add("LANG", "C\x00", "LLMW_FAKE_X", "1", "LLMW_FAKE_X", "2")
	f.Fuzz(func(t *testing.T, bk, bv, pk, pv, rk, rv string) {
		base := BaseEnv("/home/w", func(k string) string { return map[string]string{"LANG": bv}[k] })
		base[bk] = bv
		prof := map[string]string{pk: pv}
		req := map[string]string{rk: rv}
		env := BuildEnv(base, prof, req)
		seen := map[string]string{}
		for _, kv := range env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				t.Fatalf("malformed entry %q", kv)
			}
			if _, dup := seen[k]; dup {
				t.Fatalf("%s twice: %q", k, env)
			}
			if strings.HasPrefix(k, "RBEE_") || strings.ContainsRune(kv, 0) {
				t.Fatalf("entry %q must not be there", kv)
			}
			seen[k] = v
		}
		valid := func(k, v string) bool {
			return k != "" && !strings.HasPrefix(k, "RBEE_") && !strings.ContainsAny(k, "=\x00") && !strings.ContainsRune(v, 0)
		}
		switch {
		case valid(rk, rv):
			if seen[rk] != rv {
				t.Fatalf("request %s=%q lost: %q", rk, rv, env)
			}
		case valid(pk, pv) && pk != rk:
			if seen[pk] != pv {
				t.Fatalf("profile %s=%q lost: %q", pk, pv, env)
			}
		}
		if _, ok := seen["PATH"]; !ok && bk != "PATH" && pk != "PATH" && rk != "PATH" {
			t.Fatalf("no PATH: %q", env)
		}
	})
}
