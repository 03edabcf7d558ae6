package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// printGPUs adds the GPU lines of `rbee-hive status` (SPEC §11): the
// inventory's source, then one line per GPU with its memory, utilisation
// and the workers placed on it.
func printGPUs(tw *tabwriter.Writer, st *apiv1.Status) {
	src := st.GPUInventory
	if st.GPUError != "" {
		src += " (last read failed: " + st.GPUError + ")"
	}
	if len(st.GPUs) == 0 {
		fmt.Fprintf(tw, "gpus\tnone\t%s\n", src)
		return
	}
	fmt.Fprintf(tw, "gpus\t%d\t%s\n", len(st.GPUs), src)
	gib := func(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<30)) }
	for _, g := range st.GPUs {
		util := "n/a"
		if g.UtilizationPercent >= 0 {
			util = fmt.Sprintf("%d%%", g.UtilizationPercent)
		}
		workers := "no workers"
		if len(g.Workers) > 0 {
			workers = strings.Join(g.Workers, ", ")
		}
		fmt.Fprintf(tw, "  gpu %d\t%s\t%s\t%s/%s GiB used, %s free, %s reserved\tutil %s\t%s\n",
			g.Index, g.Name, g.UUID, gib(g.MemoryUsedBytes), gib(g.MemoryTotalBytes), gib(g.MemoryFreeBytes),
			gib(g.ReservedBytes), util, workers)
	}
}
