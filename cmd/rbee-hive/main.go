// Command rbee-hive is the hive daemon (`rbee-hive daemon`) and the operator
// CLI that talks to it.
package main

import (
	"os"

	"github.com/rbee/rbee-hive/internal/cli"
	"github.com/rbee/rbee-hive/internal/process"
)

func main() {
	process.LauncherMain() // the spawn shim (cgroup v1 join, rlimits); returns unless asked for
	os.Exit(cli.Main(os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr}))
}
