package groupd

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// The daemon's Close, when something it waits for does not return, says
// what: the cell's raft (in a group log's write, or not), or a request
// (in the disk). Until session 22 it said "a disk that does not answer?"
// of each.

// TestCloseNamesRaftInALogWrite: a cell member whose raft does not stop
// because its state machine is in a group log's append that does not
// return says so, naming the group log's write. The send waiting on it
// (a client's, whose handler waits for raft's answer) is answered
// unavailable within the cell's bound, and not named as a request left.
// A leader deposed before the send reached its state machine voids the
// try (hungAtLeader).
func TestCloseNamesRaftInALogWrite(t *testing.T) {
	rerunOnNewCells(t, 3, "the leader was deposed before the send reached its state machine", closeNamesRaftInALogWrite)
}

func closeNamesRaftInALogWrite(t *testing.T) bool {
	members := planTestCell(t, 3)
	log, recs := recordLogs(t)
	leader, g, term, h := startHungCell(t, members, func(cfg *Config) {
		cfg.Logger = log
		cfg.Server.ShutdownTimeout = 200 * time.Millisecond
	}, nil)

	p, joined := annAtLeader(t, members, leader, g, term)
	if !joined {
		return false
	}
	release := h.hangs()
	t.Cleanup(release) // after the daemons' own: before them
	answered := sendUnanswered(t, p, g, outgoing("waits on raft"))
	if !hungAtLeader(t, members, leader, term, h, answered) {
		return false
	}

	must(t, peertest.OnHungDisk(t, "the daemon's Close", leader.d.Close, release))
	<-answered
	if got := recs.matching("ERROR", "the cell's raft did not stop: its state machine is in a group log's write that has not returned"); len(got) != 1 {
		t.Errorf("Close, raft stuck in a group log's append, logged %q, want it named", recs.matching("ERROR"))
	}
	if got := recs.matching("a request did not return"); len(got) != 0 {
		t.Errorf("a send waiting on raft was named as a request left: %q", got)
	}
	return true
}

// TestCloseNamesRaftElsewhere: a cell member whose raft does not stop,
// its state machine held in no group log's write (here in the daemon's
// OpenGroup, before the log's open, by a test hook), does not blame a
// group log's disk.
func TestCloseNamesRaftElsewhere(t *testing.T) {
	members := planTestCell(t, 3)
	startOpeningCell(t, members[1:], nil, func(_ int, _ *Daemon, l cellLog) Log { return l })
	m := members[0]
	log, recs := recordLogs(t)
	m.cfg.Logger = log
	d, err := New(m.cfg)
	must(t, err)
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	letGo := func() { once.Do(func() { close(release) }) }
	t.Cleanup(letGo) // after the daemon's own: before it
	must(t, d.Listen())
	var first sync.Once
	d.host.checked = func(cell.GroupSpec) { // before Serve starts the node
		first.Do(func() {
			close(held)
			<-release
		})
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(context.Background()) }()
	t.Cleanup(func() {
		must(t, d.Close())
		must(t, <-served)
	})
	select {
	case <-held:
	case <-time.After(time.Minute):
		t.Fatal("the member's state machine never opened the cell's group")
	}

	must(t, peertest.OnHungDisk(t, "the daemon's Close", d.Close, letGo))
	if got := recs.matching("ERROR", "the cell's raft did not stop, in no group log's write"); len(got) != 1 {
		t.Errorf("Close, raft held outside any group log, logged %q, want it named", recs.matching("ERROR"))
	}
	if got := recs.matching("group log's write that has not returned"); len(got) != 0 {
		t.Errorf("Close, raft held outside any group log, blamed one: %q", got)
	}
}

// TestCloseNamesARequestInACellMember: a cell member whose fetch hangs in
// its group log's read says, as it closes, that a request did not return,
// not waiting on the cell's raft (which answers within its bounds) but in
// a group log's read; it does not blame raft, which stopped. A leader
// deposed before the join voids the try.
func TestCloseNamesARequestInACellMember(t *testing.T) {
	rerunOnNewCells(t, 3, "the leader was deposed before ann's join", closeNamesARequestInACellMember)
}

func closeNamesARequestInACellMember(t *testing.T) bool {
	members := planTestCell(t, 3)
	log, recs := recordLogs(t)
	logs := make([]atomic.Pointer[readHungLog], len(members))
	startOpeningCell(t, members, func(cfg *Config) {
		cfg.Logger = log
		cfg.Server.ShutdownTimeout = 200 * time.Millisecond
	}, func(i int, _ *Daemon, l cellLog) Log {
		h := &readHungLog{cellLog: l}
		logs[i].Store(h)
		return h
	})
	leader, g := cellLeader(t, members)
	term := leader.d.node.Status().Term
	at := slices.Index(members, leader)
	eventually(t, "the leader's group log open", func() bool { return logs[at].Load() != nil })
	h := logs[at].Load()

	p, joined := annAtLeader(t, members, leader, g, term)
	if !joined {
		return false
	}
	release := h.hangs()
	t.Cleanup(release) // after the daemons' own: before them
	answered := requestUnanswered(t, p, wire.OpFetch, wire.Fetch{Group: g})
	eventually(t, "the fetch hung in its log's read", func() bool { return h.waiting.Load() > 0 })

	must(t, peertest.OnHungDisk(t, "the daemon's Close", leader.d.Close, release))
	<-answered
	if got := recs.matching("ERROR", "a request did not return (not waiting on the cell's raft, which answers within its bounds: in a group log's read"); len(got) != 1 {
		t.Errorf("Close, a fetch hung in its log's read, logged %q, want the request named", recs.matching("ERROR"))
	}
	if got := recs.matching("the cell's raft did not stop"); len(got) != 0 {
		t.Errorf("Close, raft stopped, blamed it: %q", got)
	}
	return true
}

// annAtLeader dials the cell's leader, elected in term, as a new user and
// joins g as ann: false (the try void, logged) if an election since
// deposed the leader under the join.
func annAtLeader(t *testing.T, members []*testCellMember, leader *testCellMember, g wire.UUID, term uint64) (*peer, bool) {
	p := dial(t, leader.d.Addr(), leader.fp, newKey(t))
	if err := p.call(wire.OpJoin, wire.Join{Group: g, Name: "ann"}, nil); err != nil {
		if !electedSince(members, leader, term) {
			t.Fatalf("ann's join at the leader: %v", err)
		}
		t.Logf("an election came since term %d; ann's join at the leader deposed: %v", term, err)
		return nil, false
	}
	return p, true
}

// readHungLog is a cell's group log whose reads (After, Since) wait, once
// hangs is called, until let go: a disk that stops answering a fetch.
type readHungLog struct {
	cellLog
	diskHang
}

func (l *readHungLog) After(seq uint64, limit int, dst []store.Message) ([]store.Message, store.Cursor, error) {
	l.wait()
	return l.cellLog.After(seq, limit, dst)
}

func (l *readHungLog) Since(ts int64, limit int, dst []store.Message) ([]store.Message, store.Cursor, error) {
	l.wait()
	return l.cellLog.Since(ts, limit, dst)
}

// TestCloseRequestInTheDisk: a daemon hosting its group alone whose
// send hangs in its log's append says a request did not return, in a
// group's log: its handlers wait on nothing else.
func TestCloseRequestInTheDisk(t *testing.T) {
	h := &hungLoneLog{}
	log, recs := recordLogs(t)
	d := serveOverLogWith(t, func(c *Config) {
		c.Server.ShutdownTimeout = 200 * time.Millisecond
		c.Logger = log
	}, func(inner Log) Log { h.Log = inner; return h })
	p := joined(t, d, "ann")
	release := h.hangs()
	t.Cleanup(release) // after the daemon's own: before it
	answered := sendUnanswered(t, p, gid(d), outgoing("on a hung disk"))
	eventually(t, "the send hung in its log's append", func() bool { return h.waiting.Load() > 0 })

	must(t, peertest.OnHungDisk(t, "the daemon's Close", d.Close, release))
	<-answered
	if got := recs.matching("ERROR", "a request did not return (in a group's log or its members file"); len(got) != 1 {
		t.Errorf("Close, a send hung in its log's append, logged %q, want it named", recs.matching("ERROR"))
	}
}
