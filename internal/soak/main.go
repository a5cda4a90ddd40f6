// Command soak is huddle's bounded load run (make soak): an in-process
// registry and group daemon on 127.0.0.1, and many users joining, sending,
// fetching, watching and leaving for a few minutes, with new keys all the
// time. It samples the process's goroutines and heap (after a GC) as it
// goes, prints them with the throughput, and fails unless both are flat
// after warm-up and come back down once the daemons have stopped (the
// heap to within 4 MiB of where it was before they started).
//
// Everything stays on loopback: the daemons' mDNS is off and the users
// dial the registry's address.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 2*time.Minute, "how long the load runs")
	flag.DurationVar(&cfg.sample, "sample", 10*time.Second, "how often memory and goroutines are sampled")
	flag.IntVar(&cfg.users, "users", 64, "users working at once (each cycles through new keys)")
	flag.IntVar(&cfg.watchers, "watchers", 16, "long-lived watches, beside the users' short ones")
	flag.IntVar(&cfg.groups, "groups", 4, "groups hosted")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}
