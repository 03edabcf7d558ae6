package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rbee/rbee-hive/internal/cluster"
	"github.com/rbee/rbee-hive/internal/config"
)

// `rbee-hive cluster status` reads etcd itself (one range read of the
// prefix) rather than asking a hive or a queen: it shows what etcd holds,
// needs no queen and no new route, and works when the local hive is down —
// when one most wants to see who else is registered.
func init() {
	register(&command{
		name: "cluster status", output: true,
		summary: "show the hives and workers registered in etcd (SPEC §12), read from etcd itself",
		details: "Where etcd is comes from the hive's config (its cluster: block: etcd endpoints, tls, username,\n" +
			"password, prefix) or from --etcd. It reads etcd directly (one read of the prefix): no hive or queen\n" +
			"need be running. The JSON (--output json) has the shape of a queen's GET /v1/cluster.",
		example: "cluster status --config /etc/rbee-hive/hive.yaml",
		flags: func(fs *flag.FlagSet, c *call) func([]string) error {
			path := fs.String("config", "", "the hive's config `FILE`; its cluster: block names etcd")
			etcd := fs.String("etcd", "", "etcd `ENDPOINTS`, comma-separated (instead of, or over, the config's)")
			prefix := fs.String("prefix", "", "the cluster's key `PREFIX` (default the config's, or /rbee/)")
			timeout := fs.Duration("timeout", 5*time.Second, "give up reaching etcd after `DURATION`")
			return func([]string) error {
				var cc config.Cluster
				if *path != "" {
					data, err := os.ReadFile(*path)
					if err != nil {
						return err
					}
					// Only the cluster block: the rest of the config (token
					// files, profile commands) is the daemon's business.
					var doc struct {
						Cluster config.Cluster `yaml:"cluster"`
					}
					if err := yaml.Unmarshal(data, &doc); err != nil {
						return fmt.Errorf("%s: %w", *path, err)
					}
					cc = doc.Cluster
				}
				if *etcd != "" {
					cc.Etcd = nil
					for _, e := range strings.Split(*etcd, ",") {
						if e = strings.TrimSpace(e); e != "" {
							cc.Etcd = append(cc.Etcd, e)
						}
					}
				}
				if *prefix != "" {
					cc.Prefix = *prefix
				}
				if len(cc.Etcd) == 0 {
					if *path != "" {
						return usageErr("%s has no cluster.etcd endpoints; give --etcd", *path)
					}
					return usageErr("cluster status needs --config FILE (a hive config with a cluster: block) or --etcd ENDPOINTS")
				}
				if *timeout <= 0 {
					return usageErr("--timeout must be positive, not %s", *timeout)
				}
				return c.clusterStatus(cc.WithDefaults(""), *timeout)
			}
		},
	})
}

func (c *call) clusterStatus(cc config.Cluster, timeout time.Duration) error {
	cli, err := cluster.NewClient(cc.Etcd, cc.TLS, cc.Username, cc.Password)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := signalContext()
	defer cancel()
	ctx, stop := context.WithTimeout(ctx, timeout)
	defer stop()
	st, err := cluster.List(ctx, cli, cc.Prefix)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", timeout)
		}
		return fmt.Errorf("reading %s from etcd at %s: %w", cc.Prefix, strings.Join(cc.Etcd, ","), err)
	}
	return c.print(st, func(tw *tabwriter.Writer) { printCluster(tw, cc.Prefix, st) })
}

func printCluster(tw *tabwriter.Writer, prefix string, st cluster.State) {
	if len(st.Hives) == 0 {
		fmt.Fprintf(tw, "no hive registered under %s (etcd revision %d)\n", prefix, st.Revision)
		return
	}
	gib := func(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<30)) }
	fmt.Fprintln(tw, "HIVE\tURL\tVERSION\tCPUS\tMEMORY FREE\tGPUS (VRAM FREE)\tMODELS\tWORKERS\tUPDATED")
	for _, h := range st.Hives {
		gpus := "-"
		if len(h.Capacity.GPUs) > 0 {
			var g []string
			for _, d := range h.Capacity.GPUs {
				g = append(g, fmt.Sprintf("%d:%s", d.Index, gib(d.MemoryFree)))
			}
			gpus = strings.Join(g, " ") + " GiB"
		}
		models := "-"
		if len(h.Models) > 0 {
			models = strings.Join(h.Models, ",")
		}
		updated := "-"
		if !h.UpdatedAt.IsZero() {
			updated = time.Since(h.UpdatedAt).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s/%s GiB\t%s\t%s\t%d\t%s\n", Escape(h.Node), Escape(h.URL), Escape(h.Version),
			h.Capacity.CPUs, gib(h.Capacity.MemoryFree), gib(h.Capacity.MemoryTotal), gpus, Escape(models), len(h.Workers), updated)
	}
	n := 0
	for _, h := range st.Hives {
		n += len(h.Workers)
	}
	if n == 0 {
		fmt.Fprintf(tw, "\nno workers (etcd revision %d)\n", st.Revision)
		return
	}
	fmt.Fprintln(tw, "\nHIVE\tWORKER\tMODEL\tSTATE\tIN FLIGHT")
	for _, h := range st.Hives {
		for _, w := range h.Workers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\n", Escape(h.Node), Escape(w.ID), Escape(w.Model), Escape(w.State),
				w.InFlight, max(w.MaxConcurrency, 1))
		}
	}
}
