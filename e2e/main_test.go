// Package e2e drives real rbee-hive daemons and real worker processes
// through the real HTTP API and CLI.
package e2e

import (
	"testing"

	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

func TestMain(m *testing.M) { hivetest.Main(m) }
