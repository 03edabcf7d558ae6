package supervisor

import (
	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/config"
)

// wireLimits is the API's view of a worker's configured limits
// (apiv1.WorkerInfo.Limits).
func wireLimits(l config.Limits) apiv1.Limits {
	return apiv1.Limits{MemoryMaxBytes: l.MemoryMaxBytes, CPUMax: l.CPUMax, PidsMax: l.PidsMax, Nofile: l.Nofile}
}
