package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/huddle-chat/huddle/loadgen"
	"github.com/huddle-chat/huddle/wire"
)

func runBench(ctx context.Context, env Env, args []string) int {
	var cfg loadgen.Config
	var registryPin, profileDir string
	var asJSON bool
	var storage storageFlags
	names := make([]string, len(loadgen.Scenarios))
	for i, s := range loadgen.Scenarios {
		names[i] = string(s)
	}
	fs := newFlags(env, "bench", strings.Join(names, "|")+" [--conns C] [--inflight P] [--duration D]\n                    [--size BYTES] [--registry ADDR] [--profile DIR] [--json]",
		`Load a group daemon the way users would and report ops/s, latency (p50, p99, p99.9), the daemon's CPU
per operation and its memory. Each connection is a client of its own (its own key and QUIC connection).

  send          C connections x P in flight, one message per send operation (batching off)
  send-batched  the same with client batching: each client gathers its concurrent sends
  fetch         fill the group to --messages, then fetch the last 1% by time, over and over
  fanout        C watchers; one sender at --rate msgs/s; latency is send to receipt
  idle          C connections open and idle; the daemon's memory per connection
  recovery      fill the group to --messages, kill the daemon (SIGKILL), start it again on the same state
                directory, and time the restart until the first fetch of the last 1% is answered

Without --registry, bench starts its own daemons in a separate process (huddle up on 127.0.0.1, mDNS off,
a temporary state directory, --storage, --fsync and --fsync-interval as given), so the daemon's CPU and
memory are measured apart from the load's. With
--registry it loads that registry's group (--group, default "bench") under that daemon's limits (its
per-member send rate and per-address connection limit show as errors): its members gain one entry per
connection (they leave at the end), and fetch first fills the group to --messages. bench never looks for a
registry over mDNS, nor uses HUDDLE_REGISTRY: it loads only a daemon you name. --server-pid lets it read
a local daemon's CPU and memory from /proc. A group a cell replicates is loaded through its leader (clients
follow it); --replica follower makes fetch read from one of the cell's followers instead.

--profile DIR writes pprof profiles of exactly the measured window into DIR: the load's CPU (load.cpu.pprof)
and, for its own daemon, the daemon's CPU (daemon.cpu.pprof, taken in whole seconds, so --duration is rounded
up) and its heap at the window's end (daemon.heap.pprof); with --registry, only the load's. Read them with
go tool pprof -top huddle DIR/daemon.cpu.pprof. Sampling adds a little CPU to both processes: quote figures
from runs without it.`,
		"  huddle bench send --conns 16 --inflight 16 --duration 10s\n  huddle bench send --profile /tmp/prof && go tool pprof -top $(which huddle) /tmp/prof/daemon.cpu.pprof\n  huddle bench fetch --json\n  huddle bench fanout --registry 127.0.0.1:7373 --group bench --server-pid $(pgrep -f 'huddle up')")
	fs.IntVar(&cfg.Conns, "conns", 0, "connections (clients); default 16 for send, 1 for fetch, 100 for fanout, 1000 for idle")
	fs.IntVar(&cfg.InFlight, "inflight", 0, "operations in flight per connection; default 16 for send, else 1")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured window")
	fs.DurationVar(&cfg.Warmup, "warmup", 500*time.Millisecond, "load before the window, not measured")
	fs.IntVar(&cfg.Size, "size", 256, "message body in bytes")
	fs.IntVar(&cfg.Messages, "messages", 1_000_000, "fetch: messages the group holds; the last 1% are fetched")
	fs.IntVar(&cfg.Rate, "rate", 1000, "fanout: the sender's messages per second")
	fs.StringVar(&cfg.Registry, "registry", "", "load the group of the registry at HOST[:PORT] (default: start daemons of its own)")
	fs.StringVar(&registryPin, "registry-fingerprint", "", "with --registry: the registry's fingerprint, to pin it")
	fs.StringVar(&cfg.Group, "group", "bench", "the group to load")
	fs.StringVar(&cfg.Replica, "replica", "", "with --registry, for a group a cell replicates: fetch from the cell's leader (default) or from a follower")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "with --registry: the daemon's process ID on this machine, to measure its CPU and memory")
	fs.StringVar(&profileDir, "profile", "", "write CPU profiles of the window (the daemon's and the load's) and the daemon's heap into DIR")
	fs.BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	storage.register(fs)
	fs.Lookup("data-dir").Hidden = true // its own daemon keeps everything in a temporary directory
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		return usageErr(env, "bench", "want one scenario (%s), got %d arguments", strings.Join(names, ", "), fs.NArg())
	}
	if !slices.Contains(names, fs.Arg(0)) {
		return usageErr(env, "bench", "no scenario %q: want one of %s", fs.Arg(0), strings.Join(names, ", "))
	}
	cfg.Scenario = loadgen.Scenario(fs.Arg(0))
	if registryPin != "" {
		fp, err := wire.ParseFingerprint(registryPin)
		if err != nil {
			return usageErr(env, "bench", "--registry-fingerprint: %v", err)
		}
		cfg.RegistryFingerprint = fp
	}
	if cfg.Registry != "" {
		if err := checkRegistryAddr(cfg.Registry); err != nil {
			return usageErr(env, "bench", "--registry %q: %v", cfg.Registry, err)
		}
	}
	if cfg.Registry == "" && cfg.ServerPID != 0 {
		return usageErr(env, "bench", "--server-pid goes with --registry; without it bench measures its own daemon")
	}
	if cfg.Registry != "" && (fs.Changed("storage") || fs.Changed("fsync") || fs.Changed("fsync-interval")) {
		return usageErr(env, "bench", "--storage, --fsync and --fsync-interval choose how bench's own daemon stores messages; with --registry, the daemon named decides (huddle info shows it)")
	}
	if cfg.Scenario == loadgen.Recovery && cfg.Registry != "" {
		return usageErr(env, "bench", "recovery kills and restarts the daemon: it runs only on a daemon of its own (no --registry)")
	}
	if cfg.Scenario == loadgen.Recovery && profileDir != "" {
		return usageErr(env, "bench", "--profile does not apply to recovery (the daemon is killed)")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	check := cfg
	if check.Registry == "" {
		check.Registry = "self-contained" // filled in once the daemon listens
		check.Daemon = &loadgen.Daemon{}
	}
	if err := check.Validate(); err != nil {
		return usageErr(env, "bench", "%v", err)
	}

	var prof *loadgen.Profiler
	if profileDir != "" {
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			return fail(env, "bench", fmt.Errorf("--profile: %w", err))
		}
		prof = &loadgen.Profiler{Dir: profileDir}
		cfg.Window = prof
	}
	if cfg.Registry == "" {
		exe, err := os.Executable()
		if err != nil {
			return fail(env, "bench", fmt.Errorf("find the huddle binary to start daemons: %w", err))
		}
		d, err := loadgen.StartDaemon(exe, cfg.Group, env.Stderr, prof != nil, storage.args()...)
		if err != nil {
			return fail(env, "bench", err)
		}
		defer d.Stop()
		cfg.Registry, cfg.RegistryFingerprint, cfg.ServerPID, cfg.Daemon = d.Registry, d.Fingerprint, d.PID, d
		if prof != nil {
			prof.Daemon = d.Pprof
			// The daemon's CPU profile is taken in whole seconds: a window
			// as long ends with it.
			cfg.Duration = (cfg.Duration + time.Second - 1).Truncate(time.Second)
		}
	}
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return fail(env, "bench", err)
	}
	if asJSON {
		if err := printJSON(env.Stdout, res); err != nil {
			return fail(env, "bench", err)
		}
	} else {
		printResult(env, res)
	}
	if prof != nil {
		// On stderr, so that with --json stdout holds the one object.
		for _, path := range prof.Written() {
			fmt.Fprintf(env.Stderr, "profile written: %s\n", path)
		}
		if err := prof.Err(); err != nil {
			return fail(env, "bench", err)
		}
	}
	return ExitOK
}

// printResult prints a result for people.
func printResult(env Env, r loadgen.Result) {
	w := env.Stdout
	fmt.Fprintf(w, "%s: %d conns x %d in flight, %d-byte messages, %.1f s window\n", r.Scenario, r.Conns, r.InFlight, r.Size, r.Seconds)
	switch r.Scenario {
	case string(loadgen.Idle):
		fmt.Fprintf(w, "  connections   %d\n", r.Ops)
		fmt.Fprintf(w, "  connect p50   %.0f us   p99 %.0f us\n", r.P50us, r.P99us)
	case string(loadgen.Recovery):
		fmt.Fprintf(w, "  first fetch   %.0f ms after the restart (%.0f msgs/s of history)\n", r.P50us/1e3, r.MsgsPerSec)
	case string(loadgen.Fetch):
		fmt.Fprintf(w, "  fetches/s     %.1f   (%.0f msgs/s, %d messages each)\n", r.OpsPerSec, r.MsgsPerSec, r.Messages)
		fmt.Fprintf(w, "  latency       p50 %.2f ms   p99 %.2f ms   p99.9 %.2f ms\n", r.P50us/1e3, r.P99us/1e3, r.P999us/1e3)
	case string(loadgen.Fanout):
		fmt.Fprintf(w, "  sent          %.0f msgs/s;  delivered %.0f msgs/s\n", r.MsgsPerSec, r.OpsPerSec)
		fmt.Fprintf(w, "  delivery      p50 %.0f us   p99 %.0f us   p99.9 %.0f us\n", r.P50us, r.P99us, r.P999us)
	default:
		fmt.Fprintf(w, "  msgs/s        %.0f\n", r.OpsPerSec)
		fmt.Fprintf(w, "  latency       p50 %.0f us   p99 %.0f us   p99.9 %.0f us\n", r.P50us, r.P99us, r.P999us)
	}
	if r.ServerMeasured {
		if r.Scenario == string(loadgen.Idle) {
			fmt.Fprintf(w, "  daemon        %.2f cores, RSS %.1f MiB, %.1f KiB per connection\n",
				r.ServerCPUCores, float64(r.ServerRSSBytes)/(1<<20), float64(r.ServerBytesPerConn)/1024)
		} else {
			fmt.Fprintf(w, "  daemon        %.2f cores, %.1f us CPU per op, RSS %.1f MiB\n",
				r.ServerCPUCores, r.ServerCPUusPerOp, float64(r.ServerRSSBytes)/(1<<20))
		}
	} else {
		fmt.Fprintf(w, "  daemon        not measured (give --server-pid for a daemon on this machine)\n")
	}
	fmt.Fprintf(w, "  load          %.2f cores\n", r.ClientCPUCores)
	if r.Errors > 0 {
		fmt.Fprintf(w, "  errors        %d (first: %s)\n", r.Errors, r.FirstError)
	}
	if r.Note != "" {
		fmt.Fprintf(w, "  note          %s\n", r.Note)
	}
}
