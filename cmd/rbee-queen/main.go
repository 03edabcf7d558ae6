// Command rbee-queen routes inference across the hives registered in etcd
// (SPEC §12). It holds no state: run as many as you like.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rbee/rbee-hive/internal/daemon"
	"github.com/rbee/rbee-hive/internal/queen"
	"github.com/rbee/rbee-hive/internal/version"
)

func main() {
	path := flag.String("config", "/etc/rbee/queen.yaml", "queen config file")
	showVersion := flag.Bool("version", false, "print the version and exit")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this loopback `ADDRESS` (debugging)")
	flag.Parse()
	if *showVersion {
		fmt.Println("rbee-queen", version.Version)
		return
	}
	cfg, err := queen.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rbee-queen:", err)
		os.Exit(2)
	}
	log := daemon.NewLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel)
	if *pprofAddr != "" {
		stopPprof, err := daemon.ServePprof(*pprofAddr, log)
		if err != nil {
			fmt.Fprintln(os.Stderr, "rbee-queen:", err)
			os.Exit(2)
		}
		defer stopPprof()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := queen.Run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "rbee-queen:", err)
		os.Exit(1)
	}
}
