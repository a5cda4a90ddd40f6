package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/daemon/groupd"
)

// cellFlags make huddle serve a member of a cell that replicates its
// groups (README, "A three-host cell").
type cellFlags struct {
	peers     []string
	join      bool
	dir       string
	heartbeat time.Duration
	lease     time.Duration
}

func (f *cellFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.peers, "cell-peer", nil, "replicate the groups over a cell of 3 or 5 daemons: FINGERPRINT@HOST:PORT of each member, this daemon included (repeatable; every member gets the same list)")
	fs.BoolVar(&f.join, "cell-join", false, "join a running cell as a new member (then run 'huddle cell add' on a member); --cell-peer lists the cell's members and this daemon")
	fs.StringVar(&f.dir, "cell-dir", "", "where the cell's raft state is kept (default: STATE_DIR/cell)")
	fs.Var(newDuration(&f.heartbeat, cell.DefaultHeartbeatTimeout, 10*time.Millisecond, false), "cell-heartbeat", "how long a member waits without hearing from the leader before it stands for election")
	fs.Var(newDuration(&f.lease, 0, 10*time.Millisecond, true), "cell-lease", "how long a leader goes on leading without hearing from a majority, at most --cell-heartbeat (default: --cell-heartbeat)")
}

// apply fills cfg.Cell if any cell flag was given.
func (f *cellFlags) apply(cfg *groupd.Config) error {
	if len(f.peers) == 0 {
		if f.join || f.dir != "" {
			return fmt.Errorf("--cell-join and --cell-dir need the cell's members: --cell-peer FINGERPRINT@HOST:PORT")
		}
		return nil
	}
	if f.lease > f.heartbeat {
		return fmt.Errorf("--cell-lease %v is longer than --cell-heartbeat %v: a leader must step down before the others stand for election", f.lease, f.heartbeat)
	}
	cc := &groupd.CellConfig{Join: f.join, Dir: f.dir, HeartbeatTimeout: f.heartbeat, ElectionTimeout: f.heartbeat, LeaderLeaseTimeout: f.lease}
	for _, s := range f.peers {
		p, err := cell.ParsePeer(s)
		if err != nil {
			return fmt.Errorf("--cell-peer %q: want FINGERPRINT@HOST:PORT, the fingerprint as 'HUDDLE_HOME=STATE_DIR huddle id' prints a daemon's", s)
		}
		cc.Peers = append(cc.Peers, p)
	}
	cfg.Cell = cc
	return nil
}

// announceCell says where a member of a cell listens, then, once the cell
// has created the groups (its first leader does, once a majority runs),
// the groups, as announceGroups does; the wait ends with ctx, or when the
// function it returns is called, which waits for it: the caller calls it
// as it returns, whether the daemon served or failed to start.
// A daemon that joins (--cell-join) waits to be added instead, and says how:
// joinAs is its FINGERPRINT@HOST:PORT then, else empty. Another says it
// waits only if it does: a restarted member whose state holds the groups
// serves them once a majority of the cell's members list it (a round trip).
func announceCell(ctx context.Context, df *daemonFlags, d *groupd.Daemon, joinAs string) (stop func()) {
	df.say(fmt.Sprintf("huddle group daemon listening on %s, fingerprint %s", d.Addr(), d.Fingerprint()),
		"group daemon listening", "addr", d.Addr().String(), "fingerprint", d.Fingerprint().String())
	if joinAs != "" {
		df.say("  waiting to be added to the cell: on a member's host, HUDDLE_HOME=ITS_STATE_DIR huddle cell add --server MEMBER "+joinAs,
			"waiting to be added to the cell", "peer", joinAs)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-d.CellGroups():
		case <-d.CellWaiting():
			switch {
			case joinAs != "":
			case d.CellRestarted():
				df.say("  waiting for a leader of the cell: this member serves its groups once it has applied the cell's log up to them and a majority of the cell's members list it",
					"waiting for a leader of the cell", "restarted", true)
			default:
				df.say("  waiting for the cell to elect a leader and create the groups", "waiting for the cell")
			}
			select {
			case <-d.CellGroups():
			case <-ctx.Done():
				return
			}
		case <-ctx.Done():
			return
		}
		sayGroups(df, d)
	}()
	return func() {
		cancel()
		<-done
	}
}
