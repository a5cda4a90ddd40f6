package cell

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// testHost is a Host whose replicas keep their logs in memory, or on disk
// under dir, and their members in a map: what the group daemon does, less
// the serving.
type testHost struct {
	dir    string       // "" for memory logs
	limits store.Config // the logs' retention (MaxMessages, MaxBytes); zero for the defaults

	mu     sync.Mutex
	groups map[wire.UUID]*testReplica
	// hold, while not nil, holds the state machine's appends until it is
	// closed; held counts the appends it holds.
	hold chan struct{}
	held int
	// failOpens is how many more OpenGroup calls fail.
	failOpens int
	// refuse makes the appends to h's logs fail, as on a full disk;
	// refused counts those refused.
	refuse  bool
	refused int
}

// errTestDiskFull is what a test host's logs answer an append while they
// refuse them (refuseAppends): a disk log's error on a full disk.
var errTestDiskFull = fmt.Errorf("%w: write /state/logs/lobby/0001.seg: %w", store.ErrNotWritable, syscall.ENOSPC)

// refuseAppends makes the appends to h's logs fail, as on a full disk,
// until the function it returns is called (once or more).
func (h *testHost) refuseAppends() (room func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refuse = true
	return func() {
		h.mu.Lock()
		h.refuse = false
		h.mu.Unlock()
	}
}

// refusedAppends returns how many appends h refused.
func (h *testHost) refusedAppends() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused
}

// holdAppends holds the state machine's appends to h's logs until the
// function it returns is called (once or more).
func (h *testHost) holdAppends() (release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := make(chan struct{})
	h.hold = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			h.hold = nil
			h.mu.Unlock()
			close(ch)
		})
	}
}

// heldAppends returns how many appends h holds.
func (h *testHost) heldAppends() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// heldLog is a replica's log as the state machine sees it: its appends
// wait while the host holds them.
type heldLog struct {
	Log
	h *testHost
}

func (l heldLog) Append(batch []store.Entry) error {
	l.h.mu.Lock()
	ch, refuse := l.h.hold, l.h.refuse
	if ch != nil {
		l.h.held++
	}
	if refuse {
		l.h.refused++
	}
	l.h.mu.Unlock()
	if refuse {
		return errTestDiskFull
	}
	if ch != nil {
		<-ch
	}
	return l.Log.Append(batch)
}

func newTestHost(dir string) *testHost {
	return &testHost{dir: dir, groups: make(map[wire.UUID]*testReplica)}
}

func (h *testHost) OpenGroup(spec GroupSpec) (Replica, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failOpens > 0 {
		h.failOpens--
		return nil, errors.New("test host: this open fails")
	}
	if r := h.groups[spec.ID]; r != nil {
		return r, nil
	}
	cfg := store.Config{Epoch: spec.Epoch, DedupWindow: spec.DedupWindow, MaxMessages: h.limits.MaxMessages, MaxBytes: h.limits.MaxBytes}
	var l Log
	if h.dir == "" {
		m, err := store.New(cfg)
		if err != nil {
			return nil, err
		}
		l = m
	} else {
		// As a daemon opens a cell's group log (groupd), but for the
		// interval: records stay pending until a snapshot, WriteBehind
		// bytes or Close, so that a member's crash loses them (see
		// testMember.crashLosing) and raft must replay them.
		d, _, err := store.Open(store.DiskConfig{Config: cfg, Dir: filepath.Join(h.dir, spec.ID.String()),
			WriteBehind: 256 << 10, Fsync: store.FsyncPolicy{Interval: time.Hour}})
		if err != nil {
			return nil, err
		}
		l = d
	}
	r := &testReplica{log: l, h: h, members: make(map[wire.Fingerprint]Member)}
	h.groups[spec.ID] = r
	return r, nil
}

func (h *testHost) replica(id wire.UUID) *testReplica {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.groups[id]
}

func (h *testHost) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.groups {
		if c, ok := r.log.(interface{ Close() error }); ok {
			c.Close()
		}
	}
}

type testReplica struct {
	log     Log
	h       *testHost
	mu      sync.Mutex
	members map[wire.Fingerprint]Member
}

func (r *testReplica) Log() Log { return heldLog{r.log, r.h} }
func (r *testReplica) Joined(m Member) {
	r.mu.Lock()
	r.members[m.Fingerprint] = m
	r.mu.Unlock()
}
func (r *testReplica) Left(fp wire.Fingerprint) {
	r.mu.Lock()
	delete(r.members, fp)
	r.mu.Unlock()
}
func (r *testReplica) SetMembers(ms []Member) {
	r.mu.Lock()
	clear(r.members)
	for _, m := range ms {
		r.members[m.Fingerprint] = m
	}
	r.mu.Unlock()
}
func (r *testReplica) memberCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.members)
}

// testMember is one daemon of a test cell: its key, its UDP socket and
// QUIC listener on 127.0.0.1, and its node.
type testMember struct {
	t    testing.TB
	id   *identity.Identity
	addr string
	dir  string
	host *testHost

	udp   *net.UDPConn
	qt    *quic.Transport
	reset quic.StatelessResetKey // the same across restarts, as a daemon's
	ln    *quic.Listener
	node  *Node
	done  chan struct{} // closed when the accept loop ends
}

// testCell is a cell of members on 127.0.0.1.
type testCell struct {
	t       testing.TB
	members []*testMember
	peers   []Peer
	groups  []GroupConfig
	mutate  func(*Config)
	// led is the member leader last returned: follower and followers
	// pass it over as well as the member that leads now, so that a test
	// holding a leader that was deposed meanwhile is not handed it as a
	// follower.
	led *testMember
}

// newTestCell makes n members (keys, sockets and directories) and starts
// them; each member's logs are on disk when disk is set.
func newTestCell(t testing.TB, n int, disk bool, mutate func(*Config)) *testCell {
	t.Helper()
	c := &testCell{t: t, groups: []GroupConfig{{ID: uuid.New(), Name: "lobby"}}, mutate: mutate}
	for range n {
		c.members = append(c.members, c.newMember(disk))
	}
	for _, m := range c.members {
		c.peers = append(c.peers, Peer{Addr: m.addr, Fingerprint: m.id.Fingerprint()})
	}
	for _, m := range c.members {
		c.start(m, false)
	}
	return c
}

func (c *testCell) newMember(disk bool) *testMember {
	t := c.t
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	m := &testMember{t: t, id: id, addr: testport.Cell(t), dir: t.TempDir()} // bound by start
	rand.Read(m.reset[:])
	if disk {
		m.host = newTestHost(filepath.Join(m.dir, "logs"))
	} else {
		m.host = newTestHost("")
	}
	return m
}

// start binds m's socket and starts its node; join starts it to join a
// running cell. A Start that has not returned within startTimeout fails
// the test, naming what it waits for: it waits for nothing but its disk
// unless its group logs are behind its raft snapshot, and then for a
// running peer that can catch them up, which a test that starts its
// members one by one may never bring (TestWaitingMemberVotes hung the
// package for 9m51s, session 20).
func (c *testCell) start(m *testMember, join bool) {
	c.t.Helper()
	node, err := c.prepare(m, join)
	if err != nil {
		c.t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- node.Start() }()
	select {
	case err := <-started:
		if err != nil {
			c.t.Fatal(err)
		}
	case <-time.After(startTimeout):
		c.t.Fatalf("%s did not start within %v: %s", m.addr, startTimeout, startWaits(node))
	}
}

// startTimeout bounds a member's Start in start: a deadline, not an
// assertion about speed.
const startTimeout = 2 * waitTimeout

// startWaits says what node's Start waits for: the group logs its restore
// at start catches up from a peer, where each stands and where the
// snapshot has it.
func startWaits(node *Node) string {
	d := node.fsm.atStart.Load()
	if d == nil {
		return "no restore at start left to finish (raft's start, or the disk)"
	}
	var b strings.Builder
	b.WriteString("its group logs catching up from a peer to what its raft snapshot covers:")
	for _, sg := range d.behind {
		last, _ := d.groups[sg.spec.ID].log.Tail()
		fmt.Fprintf(&b, " %s at %d, the snapshot at %d;", sg.spec.Name, last, sg.seq)
	}
	return b.String()
}

// tryStart starts m as start does, and returns what failed; it sets m.node
// before it starts the node, and calls nothing of c.t but Cleanup, so that
// a test may run it in a goroutine of its own.
func (c *testCell) tryStart(m *testMember, join bool) error {
	node, err := c.prepare(m, join)
	if err != nil {
		return err
	}
	return node.Start()
}

// prepare binds m's socket and makes its node, for start or tryStart to
// start; it sets m.node, and calls nothing of c.t but Cleanup (m.stop).
func (c *testCell) prepare(m *testMember, join bool) (*Node, error) {
	ua, _ := net.ResolveUDPAddr("udp", m.addr)
	var err error
	for deadline := time.Now().Add(waitTimeout); ; {
		if m.udp, err = net.ListenUDP("udp", ua); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the port of a member just closed
	}
	if err != nil {
		return nil, err
	}
	m.qt = &quic.Transport{Conn: m.udp, StatelessResetKey: &m.reset}
	cfg := Config{
		Identity:  m.id,
		QUIC:      m.qt,
		Advertise: m.addr,
		Peers:     c.peers,
		Join:      join,
		Dir:       filepath.Join(m.dir, "raft"),
		Host:      m.host,
		Groups:    c.groups,
		Logger:    testLogger(c.t, m.addr),
	}
	if c.mutate != nil {
		c.mutate(&cfg)
	}
	node, err := New(cfg)
	if err != nil {
		m.qt.Close()
		m.udp.Close()
		return nil, err
	}
	m.ln, err = m.qt.Listen(node.Transport().ServerTLS(), &quic.Config{MaxIncomingStreams: 1000, MaxIdleTimeout: 15 * time.Second, Tracer: qlog.DefaultConnectionTracer})
	if err != nil {
		m.qt.Close()
		m.udp.Close()
		return nil, err
	}
	m.done = make(chan struct{})
	go func(ln *quic.Listener, tr *Transport, done chan struct{}) {
		defer close(done)
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			tr.Handle(conn)
		}
	}(m.ln, node.Transport(), m.done)
	m.node = node
	c.t.Cleanup(m.stop)
	return node, nil
}

// stop closes m's node and socket, as a daemon's shutdown (or, for raft's
// peers, its crash: nothing is said to them) would.
func (m *testMember) stop() {
	if m.node == nil {
		return
	}
	m.node.Close()
	m.ln.Close()
	<-m.done
	m.qt.Close()
	m.udp.Close()
	m.host.close()
	m.node = nil
}

// crash stops m as a SIGKILL would: its socket closes first, so its peers
// are told nothing and find its connections dead only when the restarted
// member answers them with a stateless reset.
func (m *testMember) crash() {
	m.udp.Close()
	m.stop()
}

// crashLosing stops m as a SIGKILL would, and leaves its group logs' files
// as they were before it stopped: the records their logs held pending
// (not written yet, as WriteBehind lets them) are lost. The logs must be
// quiet meanwhile (no append): the files are copied one by one.
func (m *testMember) crashLosing() {
	m.t.Helper()
	if m.host.dir == "" {
		m.t.Fatal("crashLosing: the member's logs are in memory")
	}
	files := m.t.TempDir()
	copyTree(m.t, m.host.dir, files)
	m.crash() // closes the logs: pending records are written
	if err := os.RemoveAll(m.host.dir); err != nil {
		m.t.Fatal(err)
	}
	copyTree(m.t, files, m.host.dir)
}

// heldOnDisk returns the last message the files of a stopped member's
// log of group hold.
func (m *testMember) heldOnDisk(group wire.UUID) uint64 {
	m.t.Helper()
	d, _, err := store.Open(store.DiskConfig{Dir: filepath.Join(m.host.dir, group.String())})
	if err != nil {
		m.t.Fatal(err)
	}
	defer d.Close()
	seq, _ := d.Tail()
	return seq
}

// snapshotCovers returns where the newest raft snapshot of stopped member
// m has group's log (0 without one): what m's restore at start catches
// the log up to from a peer, if the log is behind it.
func (m *testMember) snapshotCovers(group wire.UUID) uint64 {
	m.t.Helper()
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(m.dir, "raft"), 2, io.Discard)
	if err != nil {
		m.t.Fatal(err)
	}
	metas, err := snaps.List()
	if err != nil {
		m.t.Fatal(err)
	}
	if len(metas) == 0 {
		return 0
	}
	_, rc, err := snaps.Open(metas[0].ID)
	if err != nil {
		m.t.Fatal(err)
	}
	defer rc.Close()
	groups, err := readSnapshot(rc)
	if err != nil {
		m.t.Fatal(err)
	}
	for _, g := range groups {
		if g.spec.ID == group {
			return g.seq
		}
	}
	return 0
}

// snapshotIndex returns the index of m's latest raft snapshot.
func (m *testMember) snapshotIndex() uint64 {
	s, _ := strconv.ParseUint(m.node.raft.Stats()["last_snapshot_index"], 10, 64)
	return s
}

// follower waits for a leader and returns another running member, not
// the one leader returned before either (c.led).
func (c *testCell) follower() *testMember {
	c.t.Helper()
	return c.followers(1)[0]
}

// copyTree copies the directory tree from into to.
func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// restart stops m and starts it again with the same key, address and
// directories.
func (c *testCell) restart(m *testMember) {
	m.stop()
	if m.host.dir != "" {
		m.host = newTestHost(m.host.dir)
	} else {
		m.host = newTestHost("")
	}
	c.start(m, false)
}

// leader waits for a member that leads, ready to stamp, in the highest
// term any running member knows, and returns it. A leader of an older term
// is passed over: it was deposed (a member stood for election, as members
// starved of CPU do on a loaded machine) and has not heard yet, and what a
// test asks of it fails, or is answered by the member that leads now.
func (c *testCell) leader() *testMember {
	c.t.Helper()
	deadline := time.Now().Add(electionWait)
	for time.Now().Before(deadline) {
		term := c.term()
		for _, m := range c.members {
			if m.node == nil {
				continue
			}
			if ready, err := m.node.leading(); err == nil && ready >= term {
				c.led = m
				return m
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no leader within the deadline")
	return nil
}

// term returns the highest raft term among c's running members: it
// changes when any of them stands for election.
func (c *testCell) term() uint64 {
	var term uint64
	for _, m := range c.members {
		if m.node != nil {
			term = max(term, m.node.raft.CurrentTerm())
		}
	}
	return term
}

// oneLeader runs scenario on a new cell of n members (newTestCell's
// mutate) with the member that leads it, until the scenario has run
// with no election: a scenario that asks one leader for several things
// fails if that member is deposed meanwhile, as when members starved of
// CPU on a loaded machine stand for election. The scenario returns what
// it found wrong instead of failing the test. Found with the cell's term
// unchanged and the member still leading, that fails the test; found
// after an election, the scenario runs again on a new cell, tries times
// at most, and the last try's fault fails the test. The scenario's own
// holds must be released (defer) before it returns: the cell stops then.
func oneLeader(t *testing.T, tries, n int, mutate func(*Config), scenario func(c *testCell, l *testMember) error) {
	t.Helper()
	for try := 1; ; try++ {
		c := newTestCell(t, n, false, mutate)
		l := c.leader()
		term := c.term()
		err := scenario(c, l)
		deposed := l.node == nil || l.node.raft.State() != raft.Leader || c.term() != term
		for _, m := range c.members {
			m.stop()
		}
		switch {
		case err == nil:
			return
		case !deposed:
			t.Fatal(err)
		case try == tries:
			t.Fatalf("an election came during each of %d tries on new cells; the last: %v", tries, err)
		}
		t.Logf("try %d: an election came during the scenario (%v); again on a new cell", try, err)
	}
}

// rerunOnNewCells runs scenario, which builds a cell of its own, until it
// reports that its precondition held (true), at most tries times: unmet
// says what failed to hold, which a loaded machine can cause. A scenario
// whose precondition held and whose outcome was wrong fails t itself.
// Each try is a subtest: what it started (its cell, stopped by Cleanup)
// ends with it. A try run on t left its cell running beside the next
// try's: at 1/10 of a CPU the members of one whose leader had crashed went
// on electing, and the next cell found no leader within 30 s.
func rerunOnNewCells(t *testing.T, tries int, unmet string, scenario func(t *testing.T) bool) {
	t.Helper()
	for try := 1; try <= tries; try++ {
		met := false
		if !t.Run(fmt.Sprintf("try%d", try), func(t *testing.T) { met = scenario(t) }) || met {
			return // failed (the subtest failed t), or met
		}
		t.Logf("try %d: %s; again", try, unmet)
	}
	t.Fatalf("in %d tries on new cells, each time %s", tries, unmet)
}

// group waits until m's node has the cell's group named name, and returns
// its spec.
func (m *testMember) group(name string) GroupSpec {
	m.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		for _, g := range m.node.Groups() {
			if g.Name == name {
				return g
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.t.Fatalf("%s has no group %q", m.addr, name)
	return GroupSpec{}
}

// waitLast waits until m's replica of group holds messages up to seq.
func (m *testMember) waitLast(group wire.UUID, seq uint64) {
	m.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if r := m.host.replica(group); r != nil {
			if last, _ := r.log.Tail(); last >= seq {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.t.Fatalf("%s: group log never reached %d", m.addr, seq)
}

// sendVia sends bodies to group through whichever member leads, retrying
// as a client would (same IDs) until acknowledged.
func (c *testCell) send(group wire.UUID, from store.Sender, ids [][16]byte, bodies []string) []store.Ack {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		m := c.leader()
		entries := make([]store.Entry, len(ids))
		for i := range ids {
			entries[i] = store.Entry{ID: ids[i], From: from, Body: []byte(bodies[i])}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		acks, err := m.node.Send(ctx, group, entries, nil)
		cancel()
		if err == nil {
			return acks
		}
		var nl *NotLeaderError
		if !errors.As(err, &nl) && !errors.Is(err, ErrUnavailable) {
			c.t.Fatalf("send: %v", err)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("send: still failing at the deadline: %v", err)
		}
	}
}

// change asks m, then whichever member leads, for a change of the cell
// (op calls one of Node's methods), as the client does with cell_add,
// cell_remove, join and leave: a leader deposed before the change is
// committed answers NotLeaderError or ErrUnavailable, and the change is
// asked again of the new leader until the deadline. It returns how many
// times the change was asked: after a retry, a change may already have
// been made by the attempt that failed. Any other error fails the test.
func (c *testCell) change(what string, m *testMember, op func(n *Node) error) (asked int) {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		if m == nil || m.node == nil {
			m = c.leader()
		}
		err := op(m.node)
		asked++
		if err == nil {
			return asked
		}
		var nl *NotLeaderError
		if !errors.As(err, &nl) && !errors.Is(err, ErrUnavailable) {
			c.t.Fatalf("%s: %v", what, err)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: still failing at the deadline: %v", what, err)
		}
		c.t.Logf("%s: asked again after: %v", what, err)
		m = nil
		time.Sleep(20 * time.Millisecond) // an election under way
	}
}

// messages returns what m's replica of group holds.
func (m *testMember) messages(group wire.UUID) []store.Message {
	r := m.host.replica(group)
	if r == nil {
		return nil
	}
	msgs, _, _ := r.log.After(0, 1<<30, nil)
	return msgs
}

func newID(i int) [16]byte {
	var id [16]byte
	copy(id[:], fmt.Sprintf("msg-%012d", i))
	return id
}
