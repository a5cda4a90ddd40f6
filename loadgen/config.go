package loadgen

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// Scenario names a load shape (see the package comment).
type Scenario string

// Scenarios.
const (
	Send        Scenario = "send"
	SendBatched Scenario = "send-batched"
	Fetch       Scenario = "fetch"
	Fanout      Scenario = "fanout"
	Idle        Scenario = "idle"
	Recovery    Scenario = "recovery"
)

// Replicas a fetch may read from (Config.Replica).
const (
	ReplicaLeader   = "leader"
	ReplicaFollower = "follower"
)

// Scenarios lists every scenario, in the order the help shows them.
var Scenarios = []Scenario{Send, SendBatched, Fetch, Fanout, Idle, Recovery}

// ErrInvalidConfig is wrapped by Validate's errors.
var ErrInvalidConfig = errors.New("loadgen: invalid config")

// Config configures one run. The zero value of each field but Scenario and
// Registry means its default.
type Config struct {
	// Scenario is the load to apply. Required.
	Scenario Scenario
	// Registry is the address of the registry listing the group. Required:
	// the load generator never looks for one over mDNS.
	Registry string
	// RegistryFingerprint, if not zero, pins the registry's key; if zero,
	// the key it presents is accepted.
	RegistryFingerprint wire.Fingerprint
	// Group is the name of the group to load. Default "bench".
	Group string
	// Conns is the number of clients, each its own QUIC connection and key.
	// Default: 16 for send and send-batched, 1 for fetch, 100 watchers for
	// fanout, 1000 for idle.
	Conns int
	// InFlight is the number of goroutines per client with an operation in
	// flight. Default 16 for send and send-batched, else 1.
	InFlight int
	// Duration is the measured window. Default 5 s. It lasts until an
	// operation ended in it, if that is later: a window that counted
	// nothing measured nothing.
	Duration time.Duration
	// Warmup runs the load before the window, unmeasured. Default 500 ms,
	// and until an operation ended.
	Warmup time.Duration
	// Size is the body of each message, in bytes. Default 256; at least 8
	// for fanout, whose bodies carry their send time.
	Size int
	// Messages is how many messages the group holds before a fetch run; the
	// fetch selects the last 1% of them. Missing ones are sent first,
	// max_batch at a time. Default 1,000,000.
	Messages int
	// Rate is the sender's messages per second in fanout. Default 1000.
	Rate int
	// Replica, for a group replicated by a cell, chooses which member
	// serves fetch's reads: ReplicaLeader (the default: the member the
	// registry's entry points to, which for a cell is its leader) or
	// ReplicaFollower (the first member that does not lead). Sends, joins
	// and the fill always go to the leader. A follower of a group that is
	// not replicated is an error of the run.
	Replica string
	// ServerPID is the daemon's process ID, to read its CPU time and memory
	// from /proc. Zero: not measured (StartDaemon's daemon sets it).
	ServerPID int
	// Window, if not nil, is told as the measured window opens and closes,
	// e.g. a Profiler, so that what it records covers the window and
	// neither the warm-up nor the filling of the log. Default: none.
	Window WindowObserver
	// Logger receives progress (setup, filling the log). Default: discard.
	Logger *slog.Logger
	// Daemon is the daemon under load when the run started it (StartDaemon);
	// recovery kills and restarts it, and needs it.
	Daemon *Daemon
}

// Validate reports whether c is usable. Its errors wrap ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Scenario == "":
		return bad("no scenario")
	case c.Registry == "":
		return bad("no registry address")
	case c.Conns < 0, c.InFlight < 0, c.Size < 0, c.Messages < 0, c.Rate < 0, c.ServerPID < 0:
		return bad("negative count")
	case c.Duration < 0, c.Warmup < 0:
		return bad("negative duration")
	case c.Size > 1<<20:
		return bad("message size %d: at most 1 MiB", c.Size)
	case c.Scenario == Fanout && c.Size != 0 && c.Size < 8:
		return bad("fanout messages carry their send time: size at least 8")
	case c.Replica != "" && c.Replica != ReplicaLeader && c.Replica != ReplicaFollower:
		return bad("replica %q: want %s or %s", c.Replica, ReplicaLeader, ReplicaFollower)
	case c.Replica == ReplicaFollower && c.Scenario != Fetch:
		return bad("a follower serves reads: --replica follower goes with fetch")
	case c.Scenario == Recovery && c.Daemon == nil:
		return bad("recovery kills and restarts the daemon: it needs one of its own (no --registry)")
	}
	for _, s := range Scenarios {
		if s == c.Scenario {
			return nil
		}
	}
	return bad("unknown scenario %q", c.Scenario)
}

func (c Config) withDefaults() Config {
	or := func(v, d int) int {
		if v == 0 {
			return d
		}
		return v
	}
	if c.Group == "" {
		c.Group = "bench"
	}
	switch c.Scenario {
	case Send, SendBatched:
		c.Conns, c.InFlight = or(c.Conns, 16), or(c.InFlight, 16)
	case Fanout:
		c.Conns, c.InFlight = or(c.Conns, 100), 1
	case Idle:
		c.Conns, c.InFlight = or(c.Conns, 1000), 1
	default:
		c.Conns, c.InFlight = or(c.Conns, 1), or(c.InFlight, 1)
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 500 * time.Millisecond
	}
	c.Size = or(c.Size, 256)
	c.Messages = or(c.Messages, 1_000_000)
	c.Rate = or(c.Rate, 1000)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
