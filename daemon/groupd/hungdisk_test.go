package groupd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// diskHang is a log's disk that stops answering: while it hangs, an
// append waits (until the test lets it go) holding the log's write lock,
// and so does Close, which waits for that lock, as a disk log's does
// (store.DiskLog's wmu).
type diskHang struct {
	mu      sync.Mutex // the write lock
	hang    atomic.Pointer[chan struct{}]
	waiting atomic.Int32
	// outside makes an append wait before it takes the write lock, so
	// that the log's Close does not wait for it: its caller (raft's state
	// machine) is held outside the log, as raft held in its own log's
	// fsync, or on a machine too loaded to run it, is.
	outside atomic.Bool
}

// append runs a log's append under the write lock, once the disk answers.
func (h *diskHang) append(f func() error) error {
	if h.outside.Load() {
		h.wait()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.wait()
	return f()
}

// wait returns once the disk answers.
func (h *diskHang) wait() {
	if c := h.hang.Load(); c != nil {
		h.waiting.Add(1)
		<-*c
	}
}

// close runs a log's Close under the write lock.
func (h *diskHang) close(f func() error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return f()
}

// hangs makes appends wait until the function it returns is called.
func (h *diskHang) hangs() (release func()) {
	c := make(chan struct{})
	h.hang.Store(&c)
	var once sync.Once
	return func() {
		once.Do(func() {
			h.hang.Store(nil)
			close(c)
		})
	}
}

// hungLog is a cell's group log on a disk that can stop answering.
type hungLog struct {
	cellLog
	diskHang
}

func (l *hungLog) Append(batch []store.Entry) error {
	return l.append(func() error { return l.cellLog.Append(batch) })
}

func (l *hungLog) Close() error { return l.close(l.cellLog.Close) }

// hungLoneLog is the log of a group hosted alone on a disk that can stop
// answering.
type hungLoneLog struct {
	Log
	diskHang
	expiring atomic.Int32 // age-limit passes under way
	// expireHangs makes an age-limit pass hang in the disk itself (the
	// deletion of an old segment), as an append does, rather than wait
	// behind a hung append for the write lock.
	expireHangs bool
}

func (l *hungLoneLog) Append(batch []store.Entry) error {
	return l.append(func() error { return l.Log.Append(batch) })
}

func (l *hungLoneLog) Close() error { return l.close(l.Log.Close) }

// Expire waits for the write lock, as a disk log's does.
func (l *hungLoneLog) Expire(now time.Time) {
	l.expiring.Add(1)
	defer l.expiring.Add(-1)
	if l.expireHangs {
		l.append(func() error { l.Log.Expire(now); return nil })
		return
	}
	l.close(func() error { l.Log.Expire(now); return nil })
}

// stillLocked checks that a daemon started on cfg's state directory is
// refused (ErrStateDirInUse): what a daemon stopped on a hung disk left
// open there may still write.
func stillLocked(t *testing.T, cfg Config) {
	t.Helper()
	second, err := New(cfg)
	must(t, err)
	err = second.Listen()
	must(t, second.Close())
	if !errors.Is(err, ErrStateDirInUse) {
		t.Fatalf("a daemon on the state directory one stopped on a hung disk left: %v, want ErrStateDirInUse", err)
	}
}

// restartsOnceClosed waits for a daemon to start on cfg's state directory,
// which stays locked until what a daemon stopped on a hung disk left open
// there has returned and closed, once the disk answers.
func restartsOnceClosed(t *testing.T, cfg Config) {
	t.Helper()
	eventually(t, "a daemon started on the directory once the disk answered", func() bool {
		again, err := New(cfg)
		must(t, err)
		err = again.Listen()
		must(t, again.Close())
		if err != nil && !errors.Is(err, ErrStateDirInUse) {
			t.Fatalf("a daemon on the directory once the disk answered: %v", err)
		}
		return err == nil
	})
}

// TestCellCloseOnHungDisk: a leader whose group log's disk stops
// answering (an append that never returns) stops when closed, as SIGTERM
// does: its hand-over, raft's shutdown and the logs' Close each waited
// for that append, for ever, until session 19. The send in flight is not
// acknowledged (it was never stored here), and once the disk answers
// again the member restarts on the state left behind and holds the send,
// which the cell committed. A leader deposed before the send reached
// its state machine voids the try (hungAtLeader).
func TestCellCloseOnHungDisk(t *testing.T) {
	rerunOnNewCells(t, 3, "the leader was deposed before the send reached its state machine", cellCloseOnHungDisk)
}

func cellCloseOnHungDisk(t *testing.T) bool {
	members := planTestCell(t, 3)
	leader, g, term, h := startHungCell(t, members, nil, nil)
	release := h.hangs()
	t.Cleanup(release) // after the daemons' own: before them

	node := leader.d.node
	sent := make(chan error, 1)
	go func() {
		_, err := node.Send(context.Background(), g, []store.Entry{{ID: [16]byte{1}, From: store.Sender{Name: "ann"}, Body: []byte("on a hung disk")}}, nil)
		sent <- err
	}()
	if !hungAtLeader(t, members, leader, term, h, sent) {
		return false
	}
	if err := peertest.OnHungDisk(t, "the daemon's Close", leader.d.Close, release); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-sent; !errors.Is(err, cell.ErrUnavailable) && !errors.Is(err, cell.ErrClosed) {
		t.Errorf("the send on the hung disk: %v, want ErrUnavailable or ErrClosed (not acknowledged)", err)
	}

	// The disk answers again: what the stopped daemon left is closed in
	// the background, and the member starts on it.
	release()
	var d *Daemon
	eventually(t, "the member restarted on what it left", func() bool {
		var err error
		d, err = New(leader.cfg)
		must(t, err)
		return d.Listen() == nil // its state directory stays locked until its logs are closed
	})
	errc := make(chan error, 1)
	go func() { errc <- d.Serve(context.Background()) }()
	t.Cleanup(func() {
		must(t, d.Close())
		must(t, <-errc)
	})
	eventually(t, "the restarted member holding the committed send", func() bool {
		hg := d.host.group(g)
		if hg == nil {
			return false
		}
		seq, _ := hg.cell.log.Tail()
		return seq >= 1
	})
	return true
}

// TestCellCloseKeepsDirWhileRaftRuns: a leader whose raft does not stop
// (its state machine held, here before a group log's append takes the
// log's lock, so that the logs close at once) stops when closed, and
// releases its state directory only once raft has stopped: until session
// 23 it released it as soon as the group logs closed, while raft, held,
// could still write there (its own log closes, and syncs, as raft stops),
// and a daemon started on the directory meanwhile would have shared it.
// A leader deposed before the send reached its state machine voids the
// try (hungAtLeader).
func TestCellCloseKeepsDirWhileRaftRuns(t *testing.T) {
	rerunOnNewCells(t, 3, "the leader was deposed before the send reached its state machine", cellCloseKeepsDirWhileRaftRuns)
}

func cellCloseKeepsDirWhileRaftRuns(t *testing.T) bool {
	members := planTestCell(t, 3)
	leader, g, term, h := startHungCell(t, members, nil, nil)
	h.outside.Store(true)
	release := h.hangs()
	t.Cleanup(release) // after the daemons' own: before them

	d, node := leader.d, leader.d.node
	released := make(chan bool, 1) // whether raft had stopped then
	d.mu.Lock()
	d.leftReleased = func() {
		select {
		case <-node.Stopped():
			released <- true
		default:
			released <- false
		}
	}
	d.mu.Unlock()
	sent := make(chan error, 1)
	go func() {
		_, err := node.Send(context.Background(), g, []store.Entry{{ID: [16]byte{1}, From: store.Sender{Name: "ann"}, Body: []byte("raft held")}}, nil)
		sent <- err
	}()
	if !hungAtLeader(t, members, leader, term, h, sent) {
		return false
	}
	if err := peertest.OnHungDisk(t, "the daemon's Close", d.Close, release); err != nil {
		t.Errorf("Close: %v", err)
	}
	// Released too soon, the directory is released as soon as the server
	// and the loops have stopped and the logs closed, all at once here:
	// the bound gives that release its chance before raft is let go, and
	// fails nothing if none comes.
	select {
	case after := <-released:
		t.Fatalf("the state directory was released while raft was held (raft stopped then: %v)", after)
	case <-time.After(2 * time.Second):
	}
	stillLocked(t, leader.cfg)

	release()
	select {
	case after := <-released:
		if !after {
			t.Error("the state directory was released before raft stopped")
		}
	case <-time.After(testTimeout):
		t.Fatalf("the state directory was not released within %v of raft let go", testTimeout)
	}
	<-sent
	restartsOnceClosed(t, leader.cfg)
	return true
}

// TestCloseOnHungDiskAlone: a daemon hosting its group alone (no cell),
// whose log's disk stops answering (a send's append that never returns),
// stops when closed, as SIGTERM does: the server's shutdown waited for
// that send's handler, and the daemon's Close for the log's Close, for
// ever, until session 19 (server.Stuck, leaveLogsLocked). The send is
// never acknowledged: its client sees its connection close with 0x2, in
// doubt. The state directory stays locked while the log is left open;
// once the disk answers the log closes, and the daemon restarts on what
// it left, holding what the append stored.
func TestCloseOnHungDiskAlone(t *testing.T) {
	t.Run("send", func(t *testing.T) { testCloseOnHungDiskAlone(t, 0) })
	// An age-limit pass waits behind the hung append for the log's write
	// lock: the daemon's Close waited for the expire loop, for ever,
	// before it even stopped the server. (A pass every 12.5 ms.)
	t.Run("max-age", func(t *testing.T) { testCloseOnHungDiskAlone(t, 100*time.Millisecond) })
}

// TestCloseOnHungDiskExpiring: a daemon hosting its group alone whose
// age-limit pass hangs in the disk itself (the deletion of an old
// segment), no send in flight, stops when closed: Close waited for that
// pass before closing the logs, for ever, until session 20. The state
// directory stays locked until the pass returns and the log closes.
func TestCloseOnHungDiskExpiring(t *testing.T) {
	h := &hungLoneLog{expireHangs: true}
	release := h.hangs()
	d := serveOverLogWith(t, func(c *Config) {
		c.Server.ShutdownTimeout = 200 * time.Millisecond
		c.Retention.MaxAge = 100 * time.Millisecond // a pass every 12.5 ms
	}, func(inner Log) Log { h.Log = inner; return h })
	t.Cleanup(release) // after the daemon's own: before it
	eventually(t, "an age-limit pass hung in the disk", func() bool { return h.waiting.Load() > 0 })

	if err := peertest.OnHungDisk(t, "the daemon's Close, an age-limit pass hung,", d.Close, release); err != nil {
		t.Errorf("Close: %v", err)
	}
	stillLocked(t, d.cfg)

	release()
	restartsOnceClosed(t, d.cfg)
}

// sendUnanswered opens a send of msg to group g and reads its answer in
// the background, for a test that means the send never to be answered:
// the channel gets the error that ended its stream, or an error naming
// the frame that answered it.
func sendUnanswered(t *testing.T, p *peer, g wire.UUID, msg []wire.Outgoing) chan error {
	t.Helper()
	return requestUnanswered(t, p, wire.OpSend, wire.Send{Group: g, Messages: msg})
}

// requestUnanswered opens a request of op with args, as sendUnanswered
// does a send.
func requestUnanswered(t *testing.T, p *peer, op wire.Op, args any) chan error {
	t.Helper()
	str := p.open(request(t, op, args))
	answered := make(chan error, 1)
	go func() {
		f, err := readFrame(str)
		if err == nil {
			err = fmt.Errorf("answered with a frame of kind %v (%v)", f.kind, f.err)
		}
		answered <- err
	}()
	return answered
}

// startHungCell starts members as a cell (mutate as startOpeningCell's)
// whose every group log is a hungLog, calling opened (if not nil) with a
// member's index at each open, and returns the cell's leader, its group,
// the term it led in, and its group log once open (not yet hanging).
func startHungCell(t *testing.T, members []*testCellMember, mutate func(*Config), opened func(i int)) (*testCellMember, wire.UUID, uint64, *hungLog) {
	t.Helper()
	logs := make([]atomic.Pointer[hungLog], len(members))
	startOpeningCell(t, members, mutate, func(i int, _ *Daemon, l cellLog) Log {
		if opened != nil {
			opened(i)
		}
		h := &hungLog{cellLog: l}
		logs[i].Store(h)
		return h
	})
	leader, g := cellLeader(t, members)
	term := leader.d.node.Status().Term
	at := slices.Index(members, leader)
	eventually(t, "the leader's group log open", func() bool { return logs[at].Load() != nil })
	return leader, g, term, logs[at].Load()
}

// hungAtLeader waits for leader's state machine to hang in h's append
// with a send, whose end sent gets (true). A send that ends first, or
// that never reaches the append, after an election since term (leader
// leading in it when cellLeader found it) is logged and false returned,
// its end put back on sent, for the test to run again on a new cell
// (rerunOnNewCells): the leader deposed between cellLeader and the send
// (frequent under -race at load 30-50 on 2 cores) refuses it or drops
// it, which is not what these tests are of. With no election, either
// fails the test.
func hungAtLeader(t *testing.T, members []*testCellMember, leader *testCellMember, term uint64, h *hungLog, sent chan error) bool {
	t.Helper()
	for deadline := time.Now().Add(testTimeout); h.waiting.Load() == 0; {
		select {
		case err := <-sent:
			sent <- err
			if h.waiting.Load() > 0 {
				return true
			}
			if !electedSince(members, leader, term) {
				t.Fatalf("the send to the leader ended before its state machine took it, with no election: %v", err)
			}
			t.Logf("an election came since term %d; the send to the leader deposed ended before its state machine took it: %v", term, err)
			return false
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			if !electedSince(members, leader, term) {
				t.Fatal("timed out waiting for the leader's state machine to hang in an append")
			}
			t.Logf("an election came since term %d; the leader's state machine never took the send", term)
			return false
		}
	}
	return true
}

// inDoubt fails the test unless err (what ended a send's stream) is its
// connection closed with 0x2: the daemon stopped without answering, so
// the send is in doubt.
func inDoubt(t *testing.T, what string, err error) {
	t.Helper()
	var appErr *quic.ApplicationError
	if !errors.As(err, &appErr) || appErr.ErrorCode != wire.ConnShutdown {
		t.Errorf("%s: %v, want its connection closed with 0x2 (in doubt, not answered)", what, err)
	}
}

func testCloseOnHungDiskAlone(t *testing.T, maxAge time.Duration) {
	h := &hungLoneLog{}
	d := serveOverLogWith(t, func(c *Config) {
		c.Server.ShutdownTimeout = 200 * time.Millisecond
		c.Retention.MaxAge = maxAge
	}, func(inner Log) Log { h.Log = inner; return h })
	p := joined(t, d, "ann")
	g := gid(d)
	release := h.hangs()
	t.Cleanup(release) // after the daemon's own: before it

	msg := outgoing("on a hung disk")
	answered := sendUnanswered(t, p, g, msg)
	eventually(t, "the send hung in its log's append", func() bool { return h.waiting.Load() > 0 })
	if maxAge > 0 {
		eventually(t, "an age-limit pass waiting behind the append", func() bool { return h.expiring.Load() > 0 })
	}

	if err := peertest.OnHungDisk(t, "the daemon's Close", d.Close, release); err != nil {
		t.Errorf("Close: %v", err)
	}
	inDoubt(t, "the send on the hung disk", <-answered)

	// The log is left open (its append may still write): no daemon may
	// open it meanwhile.
	stillLocked(t, d.cfg)

	// The disk answers again: the append ends, the log closes in the
	// background, and a daemon starts on what it left.
	release()
	cfg := d.cfg
	cfg.Retention.MaxAge = 0 // keeps the message to look for
	restartsOnceClosed(t, cfg)
	again, err := New(cfg)
	must(t, err)
	must(t, again.Listen())
	errc := make(chan error, 1)
	go func() { errc <- again.Serve(context.Background()) }()
	t.Cleanup(func() {
		must(t, again.Close())
		must(t, <-errc)
	})
	q := joined(t, again, "bob")
	msgs, _, err := q.fetch(wire.Fetch{Group: g})
	must(t, err)
	if len(msgs) != 1 || msgs[0].ID != msg[0].ID {
		t.Fatalf("after the restart: %d messages %+v, want the one the hung append stored", len(msgs), msgs)
	}
}

// TestStartOnHungDisk: a daemon starting on a disk that does not answer
// (its group log's open never returns) stops when its context ends, as
// SIGTERM does: Serve, and Listen (ListenContext, which huddle serve calls
// first), waited in the open for ever, the context unwatched, until
// session 20. The state directory stays locked while the open is under
// way; once the disk answers, what it opened is closed (goleak checks the
// log's own goroutine ended) and a daemon starts on the directory.
func TestStartOnHungDisk(t *testing.T) {
	t.Run("serve", func(t *testing.T) { testStartOnHungDisk(t, true) })
	t.Run("listen", func(t *testing.T) { testStartOnHungDisk(t, false) })
}

func testStartOnHungDisk(t *testing.T, serve bool) {
	cfg := Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Groups: []Spec{{Name: "general"}}, Logger: testLogger(t)}
	d, err := New(cfg)
	must(t, err)
	opening := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(letGo)
	d.openLog = func(id wire.UUID, name string, retention store.Config, replicated bool) (Log, error) {
		close(opening)
		<-release // the disk answers
		return d.openStorageLog(id, name, retention, replicated)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	returned := make(chan error, 1)
	if serve {
		go func() { returned <- d.Serve(ctx) }()
	} else {
		go func() { returned <- d.ListenContext(ctx) }() // as huddle serve and huddle up call it
	}
	<-opening
	cancel() // SIGTERM
	err = peertest.OnHungDisk(t, "a daemon starting on a hung disk told to stop", func() error { return <-returned }, letGo)
	switch {
	case serve && err != nil:
		t.Errorf("Serve stopped while starting on a hung disk: %v, want nil", err)
	case !serve && !errors.Is(err, ErrClosed):
		t.Errorf("ListenContext stopped while starting on a hung disk: %v, want ErrClosed", err)
	}
	must(t, peertest.OnHungDisk(t, "Close after a start on a hung disk", d.Close, letGo))

	// The open may still write: no daemon may open the directory
	// meanwhile.
	stillLocked(t, cfg)

	letGo()
	restartsOnceClosed(t, cfg)
}

// TestCloseLeavesLoopsAndExpiring: a daemon whose own loops do not stop
// within lifecycle.Wait once told to (here its registration loop, held in
// its log after deregistering) while an age-limit pass hangs in the disk
// stops without both, and closes the log only once both have returned.
// Close read the pass the expire loop left (d.expiring) while that loop,
// which Close no longer waited for, had written it unsynchronized: a data
// race under -race (session 20).
func TestCloseLeavesLoopsAndExpiring(t *testing.T) {
	reg := startRegistry(t, registry.Config{LeaseTTL: time.Hour})
	h := &hungLoneLog{expireHangs: true}
	// Held as it deregisters, whether the registry answered in time or not.
	held := newHoldRecord(t, func(rec slog.Record) bool {
		return rec.Message == "group deregistered" || rec.Message == "deregister failed; the lease will lapse"
	})
	var letLoopGo sync.Once
	loopGoes := func() { letLoopGo.Do(func() { close(held.release) }) }
	d := serveOverLogWith(t, func(c *Config) {
		c.Server.ShutdownTimeout = 200 * time.Millisecond
		c.Retention.MaxAge = 100 * time.Millisecond // a pass every 12.5 ms
		c.Registries = []string{reg.Addr().String()}
		c.RegistryFingerprints = []wire.Fingerprint{reg.Fingerprint()}
		c.Logger = slog.New(held)
	}, func(inner Log) Log { h.Log = inner; return h })
	eventually(t, "the group registered", func() bool {
		s := d.Registrations()
		return len(s) == 1 && s[0].Listed == 1
	})
	release := h.hangs()
	t.Cleanup(release)  // after the daemon's own: before it
	t.Cleanup(loopGoes) // likewise
	eventually(t, "an age-limit pass hung in the disk", func() bool { return h.waiting.Load() > 0 })

	if err := peertest.OnHungDisk(t, "the daemon's Close, its loops and an age-limit pass stuck,", d.Close, func() { loopGoes(); release() }); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-held.reached:
	default:
		t.Fatal("the registration loop did not deregister as the daemon closed")
	}
	stillLocked(t, d.cfg)
	loopGoes()
	stillLocked(t, d.cfg) // the pass still hangs, and uses the log
	release()
	restartsOnceClosed(t, d.cfg)
}

// TestCellStartOnHungDisk: a cell member restarted on a disk that stops
// answering as raft restores its snapshot (the open of a group log the
// snapshot holds never returns) stops when its context ends, as SIGTERM
// does: Serve waited in the node's Start, and the node's Close for the
// lock that Start held, for ever, until session 20. Once the disk answers,
// what the start opened is closed (goleak) and a daemon starts on the
// directory.
func TestCellStartOnHungDisk(t *testing.T) {
	members := startTestCell(t, 3, func(cfg *Config) {
		cfg.Cell.SnapshotThreshold = 4
		cfg.Cell.SnapshotInterval = 50 * time.Millisecond
		cfg.Cell.TrailingLogs = 2
	})
	leader, g := cellLeader(t, members)
	m := members[0]
	if m == leader {
		m = members[1]
	}
	key := newKey(t)
	must(t, callLeader(t, members, key, wire.OpJoin, wire.Join{Group: g, Name: "ann"}, nil))
	eventually(t, "the member applies the join", func() bool {
		st := m.d.node.Status()
		return len(st.Groups) == 1
	})
	// A snapshot past the join holds the group: its restore at start
	// opens the group's log (one before could leave the open to raft's
	// goroutine, replaying the log).
	applied := m.d.node.Status().AppliedIndex
	snapshotted := func() bool {
		ents, _ := os.ReadDir(filepath.Join(m.dir, "cell", "snapshots"))
		for _, e := range ents {
			var term, index, ms uint64
			if n, _ := fmt.Sscanf(e.Name(), "%d-%d-%d", &term, &index, &ms); n == 3 && index >= applied {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(30 * time.Second); !snapshotted(); {
		if time.Now().After(deadline) {
			t.Fatal("the member never took a snapshot")
		}
		must(t, callLeader(t, members, key, wire.OpSend, wire.Send{Group: g, Messages: outgoing("hi")}, nil))
	}
	// Every member stops: no leader sends m a snapshot to install, so
	// the open hangs in its Start's restore (raft.NewRaft), not on
	// raft's state machine goroutine (TestCellCloseOnHungDisk's case).
	for _, o := range members {
		o.stop()
	}

	d, err := New(m.cfg)
	must(t, err)
	opening := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(letGo)
	d.openLog = func(id wire.UUID, name string, retention store.Config, replicated bool) (Log, error) {
		select {
		case opening <- struct{}{}:
		default:
		}
		<-release // the disk answers
		return d.openStorageLog(id, name, retention, replicated)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	select {
	case <-opening:
	case <-d.cellStarted:
		t.Fatal("the member started without reopening its group log (not from its snapshot)")
	case <-time.After(time.Minute):
		t.Fatal("the member never reopened its group log")
	}
	cancel() // SIGTERM
	if err := peertest.OnHungDisk(t, "a cell member starting on a hung disk told to stop", func() error { return <-served }, letGo); err != nil {
		t.Errorf("Serve stopped while starting on a hung disk: %v, want nil", err)
	}
	must(t, peertest.OnHungDisk(t, "Close after a start on a hung disk", d.Close, letGo))
	letGo()
	restartsOnceClosed(t, m.cfg)
}
