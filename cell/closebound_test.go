package cell

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// wedgeLeader holds the state machine of l, leading (holdLeaderFSM), as
// behind a disk whose appends never return, until raft's main loop blocks
// handing it the next committed batch (fsmQueue batches wait), and then
// fills raft's apply queue (BatchApplyCh: MaxAppendEntries requests) with
// barriers raft will never take: from then on raft.Apply (and Barrier)
// without an enqueue timeout waits for as long as the disk hangs, or until
// raft shuts down. It returns what lets the state machine go on; the test
// registers it for cleanup. led is false if l stopped leading first
// (deposedHeld).
func wedgeLeader(t *testing.T, l *testMember) (release func(), led bool) {
	t.Helper()
	lead := watchLead(t, l)
	if release, led = holdLeaderFSM(lead); !led {
		return release, false
	}
	for l.node.raft.Stats()["fsm_pending"] != strconv.Itoa(fsmQueue) {
		if !commitBarrier(lead) {
			return release, false
		}
	}
	if !commitBarrier(lead) { // raft's main loop blocks handing this one over
		return release, false
	}
	for queued := 0; ; queued++ {
		f := l.node.raft.Barrier(20 * time.Millisecond)
		// Raft answers a barrier it could not queue at once, with an
		// errorFuture (unexported); one it queued is answered once
		// applied, never here.
		if fmt.Sprintf("%T", f) == "raft.errorFuture" {
			if err := f.Error(); !errors.Is(err, raft.ErrEnqueueTimeout) {
				t.Fatalf("a barrier refused as raft's apply queue fills: %v, want %v", err, raft.ErrEnqueueTimeout)
			}
			t.Logf("raft's apply queue full after %d barriers", queued)
			return release, true
		}
		if queued > 4*DefaultMaxAppendEntries {
			t.Fatalf("raft took %d barriers without its main loop taking any: it is not blocked", queued)
		}
	}
}

// sendHanded sends a message through l's node, leading, and returns once
// the node has handed it to raft (apply counted it), with its outcome to
// come.
func sendHanded(t *testing.T, l *testMember) <-chan error {
	t.Helper()
	n, g := l.node, l.group("lobby")
	sent := make(chan error, 1)
	go func() {
		_, err := n.Send(context.Background(), g.ID, []store.Entry{{ID: newID(1), From: alice, Body: []byte("queued")}}, nil)
		sent <- err
	}()
	waitUntil(t, "the send handed to raft", func() bool { return n.futures.Load() > 0 })
	return sent
}

// TestCloseWhileSendWaitsForRaftQueue: a member closing while a send it
// leads waits for raft to take it (raft's main loop blocked behind its
// state machine, as behind a disk that hangs, and its apply queue full)
// shuts raft down within settleWait. The send was handed to raft.Apply
// under the gate Close closes (apply), and Close waited for the gate for
// as long as raft's loop stayed blocked: for ever on a disk that hangs,
// since only raft's shutdown, which Close was to do next, ends that wait.
func TestCloseWhileSendWaitsForRaftQueue(t *testing.T) {
	rerunOnNewCells(t, 3, deposedHeld, func(t *testing.T) bool {
		c := newTestCell(t, 3, false, func(cfg *Config) {
			steadyLeader(cfg)
			cfg.settleWait = 100 * time.Millisecond
			cfg.CommitWait = time.Hour // the send waits for raft (its enqueue too), or Close
		})
		l := c.leader()
		release, led := wedgeLeader(t, l)
		if !led {
			return false
		}
		n := l.node
		sent := sendHanded(t, l)
		closeReleasingWhen(t, l, release, "Close to shut raft down", func() bool { return n.raft.State() == raft.Shutdown })
		select {
		case err := <-sent:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("the send raft never took, as its member closed: %v, want ErrClosed", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("the send still waits %v after its member closed", waitTimeout)
		}
		return true
	})
}

// TestSendBoundedWhileRaftQueueFull: a send to a leader whose raft does
// not take requests (its main loop blocked behind a state machine that
// hangs, its apply queue full) is answered ErrUnavailable within about
// CommitWait, as Config.CommitWait promises, and so is a join: both
// waited in raft.Apply, which had no enqueue timeout, for as long as the
// disk hung, and the daemon's shutdown waited for their handlers.
func TestSendBoundedWhileRaftQueueFull(t *testing.T) {
	rerunOnNewCells(t, 3, deposedHeld, func(t *testing.T) bool {
		const commitWait = 300 * time.Millisecond
		c := newTestCell(t, 3, false, func(cfg *Config) {
			steadyLeader(cfg)
			cfg.CommitWait = commitWait
		})
		l := c.leader()
		g := l.group("lobby")
		if _, led := wedgeLeader(t, l); !led {
			return false
		}
		n := l.node
		sent := sendHanded(t, l)
		joined := make(chan error, 1)
		go func() {
			_, err := n.Join(context.Background(), g.ID, wire.Fingerprint{9}, "bob")
			joined <- err
		}()
		for what, answered := range map[string]<-chan error{"the send": sent, "the join": joined} {
			select {
			case err := <-answered:
				if !errors.Is(err, ErrUnavailable) {
					t.Errorf("%s raft could not take: %v, want ErrUnavailable", what, err)
				}
				t.Logf("%s raft could not take: %v", what, err)
			case <-time.After(waitTimeout):
				t.Fatalf("%s still waits %v for raft to take it (CommitWait %v)", what, waitTimeout, commitWait)
			}
		}
		return true
	})
}

// TestHandoverBoundedOnWedgedLeader: a leader whose raft takes no request
// (its main loop blocked behind a state machine that hangs) returns from
// Handover once its ctx ends, with an error: raft queues the transfer but
// its loop never runs it, and Handover waited for raft's answer alone, so
// the daemon's shutdown, which hands over first, never went on.
func TestHandoverBoundedOnWedgedLeader(t *testing.T) {
	rerunOnNewCells(t, 3, deposedHeld, func(t *testing.T) bool {
		c := newTestCell(t, 3, false, steadyLeader)
		l := c.leader()
		if _, led := wedgeLeader(t, l); !led {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		handed := make(chan error, 1)
		go func() { handed <- l.node.Handover(ctx) }()
		select {
		case err := <-handed:
			if err == nil {
				t.Errorf("Handover of a leader whose raft takes nothing: nil, want an error")
			}
			t.Logf("Handover: %v", err)
		case <-time.After(waitTimeout):
			t.Fatalf("Handover still waits %v after its ctx ended", waitTimeout)
		}
		return true
	})
}

// TestCloseOnHungDisk: a member whose state machine hangs in an append
// (a disk that never answers), and stays hung, closes: its settle gives up
// once raft has neither answered nor applied anything for settleStall
// (not after the whole settleWait, an hour here), and it stops waiting
// for raft's shutdown after shutdownWait (raft's shutdown waits for its
// state machine's goroutine, for ever on such a disk, and Close waited
// with it). Close says raft did not stop (ErrStuck), and the send raft
// never took is answered ErrClosed; what raft leaves behind stops once
// the append returns (the test lets it go, and goleak checks).
func TestCloseOnHungDisk(t *testing.T) {
	rerunOnNewCells(t, 3, deposedHeld, func(t *testing.T) bool {
		c := newTestCell(t, 3, false, func(cfg *Config) {
			steadyLeader(cfg)
			cfg.CommitWait = time.Hour // the send waits for raft, or Close
			cfg.settleWait = time.Hour
			cfg.settleStall = 200 * time.Millisecond
			cfg.shutdownWait = 200 * time.Millisecond
		})
		l := c.leader()
		release, led := wedgeLeader(t, l)
		if !led {
			return false
		}
		sent := sendHanded(t, l)
		closeStuck(t, l, release, "a state machine that hangs")
		if err := <-sent; !errors.Is(err, ErrClosed) {
			t.Errorf("the send raft never took, as its member closed: %v, want ErrClosed", err)
		}
		release()
		return true
	})
}

// TestCloseWhileRaftLogSyncHangs: a member whose fsync of raft's log
// never returns (a disk that takes writes into the page cache but does not
// answer a flush: raft itself goes on, its appends written to the
// operating system) closes within shutdownWait, saying so (ErrStuck).
// The fsync is syncLoop's, one of the goroutines Close waited for
// without a bound until session 19: for ever on such a disk.
func TestCloseWhileRaftLogSyncHangs(t *testing.T) {
	hang := make(chan struct{})
	var hung atomic.Int32
	c := newTestCell(t, 3, false, func(cfg *Config) {
		cfg.Fsync.Interval = 10 * time.Millisecond
		cfg.shutdownWait = 200 * time.Millisecond
	})
	f := c.follower()
	hook := func() {
		hung.Add(1)
		<-hang
	}
	f.node.syncHook.Store(&hook)
	released := false
	release := func() {
		if !released {
			released = true
			close(hang)
		}
	}
	t.Cleanup(release)
	waitUntil(t, "raft's log fsync hung", func() bool { return hung.Load() > 0 })
	closeStuck(t, f, release, "an fsync that hangs")
	release()
}

// closeStuck closes m's node, which what (a disk that does not answer)
// holds, and fails the test unless Close returns ErrStuck within
// waitTimeout; release lets the disk go on.
func closeStuck(t *testing.T, m *testMember, release func(), what string) {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- m.node.Close() }()
	select {
	case err := <-closed:
		if !errors.Is(err, ErrStuck) {
			t.Errorf("Close of a member held by %s: %v, want ErrStuck", what, err)
		}
		t.Logf("Close: %v", err)
	case <-time.After(waitTimeout):
		m.node = nil // its cleanup would wait on the same Close
		release()
		t.Fatalf("Close still waits %v for %s", waitTimeout, what)
	}
}
