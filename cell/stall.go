package cell

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// A stalled leader: a member whose state machine cannot apply what the
// cell commits (a group log refuses the append of a committed send: its
// disk is full, or failing) retries the append until it succeeds
// (fsm.append), and applies nothing meanwhile. As leader it could answer
// no send, join or change of the cell (each waits for this member to apply
// it). Worse, raft (v1.7.2) hands each commit to the state machine's
// goroutine through a queue of 128, on its own main goroutine: once 128
// commits wait behind the stalled append, that goroutine blocks, and with
// it everything raft does but replicate, heartbeats included. The
// followers, still hearing the leader, never elect another, and a
// leadership transfer (huddle cell remove of the leader, the operator's
// way out) waits for the main goroutine for ever: the cell was wedged
// until the disk had room again or the member was restarted (session 14).
//
// So a leader whose state machine stalls refuses new proposals at once
// (leading: errStalled), which keeps the queue short, and hands the
// leadership to a voter whose state machine applies (stallLoop): the cell
// goes on without it, and the operator can remove it (or free its disk)
// from the new leader. A voter can take over if it answers (a progress
// stream) that its state machine is not stalled and has applied the batch
// this member stalled on (its own applied index, not raft's, which counts
// the entries raft handed the state machine's goroutine before it reached
// them): one that has not got that far yet may stall on the same entry (every disk full), and leadership moved to
// a member that cannot apply either would only be handed back, an
// election each time. If no voter can, it keeps leading, refusing, and
// asks again every HeartbeatTimeout (the followers apply what the leader
// committed a heartbeat later).
//
// A stalled cell heartbeats as any other: raft's heartbeats go on their
// own goroutines and connections, past the state machine and raft's main
// loop, and huddle's heartbeat path (raftNet, a heartbeat handed to
// raft's handler on the connection's goroutine) waits on neither.
// Measured (session 17, two cells of three side by side at load ~13, 30 s,
// the followers' heartbeat arrival gaps): every member stalled, p50 47 ms,
// p99 101 ms, max 207 ms, no election; the same cell not stalled, p50 47
// ms, p99 108 ms, max 655 ms, one election. So the followers of a
// stalled cell timing out every few seconds at load ~20 under -race
// (session 16, daemon/groupd's TestCellStallShown, now on 1 s timings)
// were starved of CPU, as any cell's there.

// errStalled is the refusal of a leader whose state machine stalled: a
// *StalledError is it (errors.Is), and says why.
var errStalled = errors.New("cell: stalled")

// Stall is why a member's state machine stopped applying what the cell
// commits, while it lasts (Status.Stall): an operator must see which
// member, since when and why, not only that it lags.
type Stall struct {
	// Since is when the first append was refused; Index is the raft index
	// of the last entry of the batch it stalled on.
	Since time.Time
	Index uint64
	// Group is the group whose log refuses the append.
	Group string
	// Cause is the log's error in brief ("disk full (no space left on
	// device)"); the daemon's log has the whole error, which names files.
	Cause string
}

// StalledError is the refusal of a leader whose state machine stalled
// (leading): nothing of what it refused was proposed. It wraps
// ErrUnavailable; Stall says why (a full disk...).
type StalledError struct{ Stall Stall }

func (e *StalledError) Error() string {
	return fmt.Sprintf("%v: this member leads, but cannot apply what the cell commits: the log of group %s on it refuses appends (%s); it hands the leadership to a member that can",
		ErrUnavailable, e.Stall.Group, e.Stall.Cause)
}

func (e *StalledError) Unwrap() error { return ErrUnavailable }

// Is makes a StalledError errStalled.
func (e *StalledError) Is(target error) bool { return target == errStalled }

// stalledError returns the refusal of this member while its state machine
// is stalled.
func (n *Node) stalledError() error {
	if s := n.fsm.stall.Load(); s != nil {
		return &StalledError{Stall: *s}
	}
	// Between the stall's index and its details being set or cleared.
	return &StalledError{Stall: Stall{Group: "?", Cause: "a full or failing disk"}}
}

// stallCause is a group log's refusal of an append, err, in brief, for
// cell_status and a stalled leader's refusals: what an operator acts on,
// without the file names the error carries (anyone may ask cell_status).
func stallCause(err error) string {
	var errno syscall.Errno
	switch {
	case errors.Is(err, store.ErrFailed):
		return "the log failed (a write could not be undone, or an fsync failed): it takes appends again once the daemon restarts"
	case errors.Is(err, syscall.ENOSPC):
		return "disk full (" + syscall.ENOSPC.Error() + ")"
	case errors.Is(err, syscall.EDQUOT):
		return "disk quota exceeded (the daemon's user or project quota, not the disk: df shows room)"
	case errors.Is(err, syscall.EROFS):
		return "read-only file system"
	case errors.Is(err, syscall.EIO):
		return "I/O error (" + syscall.EIO.Error() + ")"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return "permission denied"
	case errors.As(err, &errno):
		return errno.Error()
	}
	return "the log refuses appends (the daemon's log says why)"
}

// stallLoop hands the leadership over, on a leader whose state machine
// stalled, to a voter whose state machine applies, as the stall begins
// (fsm.onStall) and every HeartbeatTimeout while it lasts, until the node
// closes.
func (n *Node) stallLoop() {
	failed := 0 // rounds in a row no voter could take over
	n.everyOrWoken(n.cfg.HeartbeatTimeout, n.stallWake, func() {
		at := n.fsm.stalledAt.Load()
		if at == 0 || n.raft.State() != raft.Leader {
			failed = 0
			return
		}
		to, err := n.handOverStalled(at)
		if err == nil {
			next := "not known yet"
			if to != (Peer{}) {
				next = to.String()
			}
			n.cfg.Logger.Warn(handedOverMessage, "to", next)
			failed = 0
			return
		}
		// Said once a stall has outlasted the followers' applying what
		// was committed (the first rounds may come before they did).
		if failed++; failed == stallRoundsQuiet {
			n.cfg.Logger.Error("cell: this member leads but cannot apply what the cell commits (a group log refuses appends), and could not hand the leadership over: sends and changes of the cell are refused until its disk takes appends again or another member can take over",
				"err", err)
		}
	})
}

// handedOverMessage is what a stalled leader logs once it handed the
// leadership over (internal/jepsen matches it).
const handedOverMessage = "cell: this member cannot apply what the cell commits (a group log refuses appends): handed the leadership to a member that can"

// stallRoundsQuiet is how many rounds in a row a stalled leader finds no
// voter to take over before it says so.
const stallRoundsQuiet = 3

// handOverStalled asks every other voter at once whether its state
// machine applies (a progress stream), and transfers the leadership to the
// one that applied most of those that do and have applied past at, the
// raft index this member stalled at. It returns the member it handed over
// to (none if it stepped down, the next leader not known yet), or why it
// did not.
func (n *Node) handOverStalled(at uint64) (Peer, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return Peer{}, err
	}
	type voter struct {
		s       raft.Server
		p       Peer
		applied uint64 // by its state machine, or raft's where it does not say
		stalled bool
		err     error
	}
	var vs []voter
	for _, s := range f.Configuration().Servers {
		fp, err := wire.ParseFingerprint(string(s.ID))
		if err != nil || s.Suffrage != raft.Voter || fp == n.self.Fingerprint {
			continue
		}
		vs = append(vs, voter{s: s, p: Peer{Addr: string(s.Address), Fingerprint: fp}})
	}
	var wg sync.WaitGroup
	for i := range vs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), progressTimeout)
			defer cancel()
			var raftApplied uint64
			raftApplied, vs[i].applied, vs[i].stalled, vs[i].err = n.progress(ctx, vs[i].p.Addr)
			if vs[i].applied == 0 {
				vs[i].applied = raftApplied
			}
		})
	}
	wg.Wait()
	var to *voter
	for i := range vs {
		v := &vs[i]
		if v.err == nil && !v.stalled && v.applied >= at && (to == nil || v.applied > to.applied) {
			to = v
		}
	}
	if to == nil {
		// Each voter's answer, for the log line that says so.
		answers := make([]string, len(vs))
		for i, v := range vs {
			switch {
			case v.err != nil:
				answers[i] = fmt.Sprintf("%s: %v", v.p.Fingerprint.Short(), v.err)
			case v.stalled:
				answers[i] = fmt.Sprintf("%s: applied %d, stalled too", v.p.Fingerprint.Short(), v.applied)
			default:
				answers[i] = fmt.Sprintf("%s: applied %d", v.p.Fingerprint.Short(), v.applied)
			}
		}
		return Peer{}, fmt.Errorf("none of the %d other voters answered that it applied past raft index %d, where this member stalled (%s)",
			len(vs), at, strings.Join(answers, "; "))
	}
	if err := n.transfer(&to.s); err != nil {
		// Raft gives up at an ElectionTimeout if this member still leads
		// then, though the member it told to stand may yet be elected, as
		// on a loaded host; Handover waits for it too. Until session 16
		// that was taken for a failed hand-over, said as none, and tried
		// again while raft's transfer was still in progress.
		if strings.Contains(err.Error(), raftTransferTimeout) {
			ctx, cancel := context.WithTimeout(context.Background(), progressTimeout)
			leader, ok := n.nextLeader(ctx)
			cancel()
			if ok {
				return leader, nil
			}
			if n.raft.State() != raft.Leader {
				// This member stepped down since: another stood (the
				// one told to, most often) and the cell moved on, its
				// leader not known here yet (Handover does the same).
				// It was said to be a failed hand-over.
				return Peer{}, nil
			}
		}
		return Peer{}, fmt.Errorf("hand the leadership to %s: %w", to.p, err)
	}
	return to.p, nil
}
