package metrics_test

import (
	"testing"

	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

func TestMain(m *testing.M) { hivetest.Main(m) }
