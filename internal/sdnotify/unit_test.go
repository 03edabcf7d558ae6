package sdnotify_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

const unitPath = "../../deploy/systemd/rbee-hive.service"

// unitSettings parses the [Service] section of the unit file (the last
// value of a key wins, as in systemd).
func unitSettings(t *testing.T) (map[string]string, string) {
	t.Helper()
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && section == "[Service]" {
			out[k] = v
		}
	}
	return out, string(b)
}

// TestUnitFileKeepsWorkersUnderTheHive pins the choices the unit file
// explains: notify with a watchdog, a delegated cgroup subtree, and a kill
// mode that never lets systemd kill workers behind the hive's back (so
// adoption after a crash and --keep-workers-on-exit upgrades work), with a
// stop timeout longer than the hive's own shutdown budget.
func TestUnitFileKeepsWorkersUnderTheHive(t *testing.T) {
	s, _ := unitSettings(t)
	want := map[string]string{"Type": "notify", "NotifyAccess": "main", "Delegate": "yes",
		"KillMode": "process", "Restart": "on-failure", "TasksMax": "infinity"}
	for k, v := range want {
		if s[k] != v {
			t.Errorf("%s=%q, want %q", k, s[k], v)
		}
	}
	if !strings.Contains(s["ExecStart"], "rbee-hive daemon") {
		t.Errorf("ExecStart=%q does not run the daemon", s["ExecStart"])
	}
	stop, err := time.ParseDuration(s["TimeoutStopSec"])
	if err != nil {
		t.Fatal(err)
	}
	if def := config.Default().ShutdownTimeout.D(); stop <= def {
		t.Errorf("TimeoutStopSec=%v is not longer than the default shutdown_timeout %v", stop, def)
	}
	if _, err := time.ParseDuration(s["WatchdogSec"]); err != nil {
		t.Errorf("WatchdogSec=%q: %v", s["WatchdogSec"], err)
	}
	if s["ProtectControlGroups"] == "yes" {
		t.Error("ProtectControlGroups=yes makes the delegated cgroups read-only")
	}
}

// TestUnitFileVerifies runs systemd-analyze verify on the unit, pointed at
// the real binary.
func TestUnitFileVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is needed to verify the unit file: %v", err)
	}
	bin := hivetest.Binaries(t)
	_, text := unitSettings(t)
	dir := t.TempDir()
	unit := filepath.Join(dir, "rbee-hive.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(text, "/usr/local/bin/rbee-hive", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
