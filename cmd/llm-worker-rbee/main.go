// Command llm-worker-rbee is the reference rbee worker (SPEC §5); see package
// internal/refworker.
package main

import (
	"os"

	"github.com/rbee/rbee-hive/internal/refworker"
)

func main() { os.Exit(refworker.Main(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)) }
