package supervisor

import (
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
)

func TestWireLimitsCopiesEveryLimit(t *testing.T) {
	got := wireLimits(config.Limits{MemoryMaxBytes: 1 << 29, CPUMax: 1.5, PidsMax: 64, Nofile: 1024})
	if want := (apiv1.Limits{MemoryMaxBytes: 1 << 29, CPUMax: 1.5, PidsMax: 64, Nofile: 1024}); got != want {
		t.Errorf("wireLimits = %+v, want %+v", got, want)
	}
}
