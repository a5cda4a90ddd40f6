package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func runInfo(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	fs := newFlags(env, "info", "GROUP", "Describe GROUP: its log, its daemon and the limits it enforces.",
		"  huddle info lobby")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	ref, code, ok := oneGroup(env, "info", fs.Args())
	if !ok {
		return code
	}
	return withGroup(ctx, env, "info", &cf, ref, func(ctx context.Context, s *session, g *client.Group, e wire.GroupEntry) error {
		in, err := g.Info(ctx)
		if err != nil {
			return err
		}
		l := in.Limits
		if cf.json {
			j := infoJSON{
				UUID: in.Group.String(), Name: in.Name, Fingerprint: in.Daemon.String(), Addrs: e.Addrs,
				Epoch: in.Epoch, FirstSeq: in.First, LastSeq: in.Last, Members: in.Members, Member: in.Member, Private: in.Private,
				Storage: in.Storage, Fsync: in.Fsync, FsyncIntervalMS: in.FsyncInterval.Milliseconds(),
				Limits: limitsJSON{
					MaxMessageBytes: l.MaxMessageBytes, MaxBatch: l.MaxBatch,
					MaxMessages: l.MaxMessages, MaxBytes: l.MaxBytes, MaxAgeMS: l.MaxAge.Milliseconds(),
					FetchPage: l.FetchPage, MaxMembers: l.MaxMembers,
					SendRatePerS: l.SendRate, SendBurst: l.SendBurst,
					HeartbeatMS: l.Heartbeat.Milliseconds(), MaxFrameBytes: l.MaxFrameBytes,
					MaxStreams: l.MaxStreams, MaxConnsPerAddr: l.MaxConnsPerAddr,
					RequestTimeoutMS: l.RequestTimeout.Milliseconds(), IdleTimeoutMS: l.IdleTimeout.Milliseconds(),
				},
			}
			// A cell's group: its members, as huddle groups --json lists them.
			for _, r := range in.Replicas {
				j.Replicas = append(j.Replicas, replicaJSON{Addr: r.Addr, Fingerprint: r.Fingerprint.String(), Leader: r.Leader})
			}
			return printJSON(env.Stdout, j)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%s\n", k, shown(fmt.Sprint(v))) } // names, addresses, storage: the daemon's text
		row("name", in.Name)
		row("uuid", in.Group)
		row("daemon", fmt.Sprintf("%s at %s", in.Daemon, strings.Join(e.Addrs, ", ")))
		if len(in.Replicas) > 0 {
			row("replicated by", replicas(in.Replicas))
		}
		row("private", yesNo(in.Private))
		row("you are a member", yesNo(in.Member))
		row("members", in.Members)
		row("messages held", held(in))
		row("storage", storage(in))
		row("max message", size(l.MaxMessageBytes))
		row("max per send", l.MaxBatch)
		row("retention", retention(l))
		row("fetch page", l.FetchPage)
		row("max members", unlimited(l.MaxMembers, fmt.Sprint(l.MaxMembers)))
		row("send rate", unlimited(l.SendRate, fmt.Sprintf("%g msgs/s per member, burst %d", l.SendRate, l.SendBurst)))
		row("heartbeat", l.Heartbeat)
		// Connection limits: reported by daemons since they were added to
		// info (absent: not reported).
		row("max request frame", reported(l.MaxFrameBytes, size(l.MaxFrameBytes)))
		row("max streams per connection", reported(l.MaxStreams, fmt.Sprint(l.MaxStreams)))
		row("max connections per address", reported(l.MaxConnsPerAddr, fmt.Sprint(l.MaxConnsPerAddr)))
		row("request timeout", reported(l.RequestTimeout, l.RequestTimeout.String()))
		row("idle timeout", reported(l.IdleTimeout, l.IdleTimeout.String()))
		return tw.Flush()
	})
}

// infoJSON is info --json's object, its keys in the order README.md lists
// them: a struct's fields keep their order in JSON, where a map's keys
// came out sorted (until session 22), and scripts read the README.
type infoJSON struct {
	UUID            string     `json:"uuid"`
	Name            string     `json:"name"`
	Fingerprint     string     `json:"fingerprint"`
	Addrs           []string   `json:"addrs"`
	Epoch           uint64     `json:"epoch"`
	FirstSeq        uint64     `json:"first_seq"`
	LastSeq         uint64     `json:"last_seq"`
	Members         uint64     `json:"members"`
	Member          bool       `json:"member"`
	Private         bool       `json:"private"`
	Storage         string     `json:"storage"`
	Fsync           string     `json:"fsync"`
	FsyncIntervalMS int64      `json:"fsync_interval_ms"`
	Limits          limitsJSON `json:"limits"`
	// Replicas: a cell's group's members (absent for a group of one daemon).
	Replicas []replicaJSON `json:"replicas,omitempty"`
}

// limitsJSON is info --json's limits, in the order huddle info shows them.
type limitsJSON struct {
	MaxMessageBytes  uint64  `json:"max_message_bytes"`
	MaxBatch         uint64  `json:"max_batch"`
	MaxMessages      uint64  `json:"max_messages"`
	MaxBytes         uint64  `json:"max_bytes"`
	MaxAgeMS         int64   `json:"max_age_ms"`
	FetchPage        uint64  `json:"fetch_page"`
	MaxMembers       uint64  `json:"max_members"`
	SendRatePerS     float64 `json:"send_rate_per_s"`
	SendBurst        uint64  `json:"send_burst"`
	HeartbeatMS      int64   `json:"heartbeat_ms"`
	MaxFrameBytes    uint64  `json:"max_frame_bytes"`
	MaxStreams       uint64  `json:"max_streams"`
	MaxConnsPerAddr  uint64  `json:"max_conns_per_addr"`
	RequestTimeoutMS int64   `json:"request_timeout_ms"`
	IdleTimeoutMS    int64   `json:"idle_timeout_ms"`
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func reported[N uint64 | time.Duration](v N, s string) string {
	if v == 0 {
		return "not reported"
	}
	return s
}

func unlimited[N uint64 | float64](v N, s string) string {
	if v == 0 {
		return "unlimited"
	}
	return s
}

func retention(l client.Limits) string {
	var parts []string
	if l.MaxMessages > 0 {
		parts = append(parts, fmt.Sprintf("%d messages", l.MaxMessages))
	}
	if l.MaxBytes > 0 {
		parts = append(parts, size(l.MaxBytes))
	}
	if l.MaxAge > 0 {
		parts = append(parts, l.MaxAge.String())
	}
	if len(parts) == 0 {
		return "unlimited (memory permitting)"
	}
	return "the newest " + strings.Join(parts, ", at most ")
}

// size formats a byte count for people.
func size(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// held describes the range of messages a group holds.
func held(in client.Info) string {
	switch {
	case in.Last == 0:
		return fmt.Sprintf("none yet (epoch %d)", in.Epoch)
	case in.First == 0 || in.First > in.Last:
		return fmt.Sprintf("none (retention dropped #1..#%d; epoch %d)", in.Last, in.Epoch)
	}
	return fmt.Sprintf("#%d..#%d (epoch %d)", in.First, in.Last, in.Epoch)
}

// storage says where the daemon keeps the group's messages and what an
// acknowledged one survives.
// replicas describes a cell's members for huddle info, the leader marked.
func replicas(rs []client.Replica) string {
	var parts []string
	for _, r := range rs {
		p := fmt.Sprintf("%s at %s", r.Fingerprint.Short(), r.Addr)
		if r.Leader {
			p += " (leader)"
		}
		parts = append(parts, p)
	}
	return fmt.Sprintf("a cell of %d members: %s", len(rs), strings.Join(parts, ", "))
}

func storage(in client.Info) string {
	if len(in.Replicas) > 0 && in.Storage == client.StorageDisk {
		// A cell's acknowledgment is a majority's (README, "A three-host
		// cell"), not one daemon's.
		switch in.Fsync {
		case client.FsyncAlways:
			return "disk on each member, fsync always (an acknowledged message is held by a majority of the cell, on their disks: it survives power loss)"
		case client.FsyncInterval:
			d := in.FsyncInterval
			return fmt.Sprintf("disk on each member, fsync every %v (an acknowledged message is held by a majority of the cell: it survives a crash of any member; only a power cut of a majority within %v could lose it)", d, d)
		}
	}
	switch {
	case in.Storage == client.StorageMemory:
		return "memory (a daemon restart loses every message)"
	case in.Storage == client.StorageDisk && in.Fsync == client.FsyncAlways:
		return "disk, fsync always (an acknowledged message survives power loss)"
	case in.Storage == client.StorageDisk && in.Fsync == client.FsyncInterval:
		d := in.FsyncInterval
		return fmt.Sprintf("disk, fsync every %v (an acknowledged message survives a daemon crash; an OS crash or power cut loses at most the last %v)", d, d)
	case in.Storage == "":
		return "not reported (an older daemon)"
	}
	return strings.TrimSpace(in.Storage + " " + in.Fsync)
}
