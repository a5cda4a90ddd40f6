package cell

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/cell/raftlog"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// Defaults of Config's zero fields. The timeouts suit a LAN or one data
// centre: a follower that hears nothing from the leader for
// HeartbeatTimeout stands for election when its timer next fires (raft
// draws each period between HeartbeatTimeout and twice it). A follower
// that still hears from a leader refuses others its vote (and pre-vote),
// so after a leader dies a cell of three elects once both followers'
// timers have fired: between one and three HeartbeatTimeouts. With 300
// ms, a killed leader was replaced in 0.4-1.5 s (p50 0.7 s) in
// internal/jepsen under load 18; with 500 ms it took 0.65-1.9 s (p50
// 1.1 s), and sends came back after it, the tail of issue 20's target 3.
// The leader sends heartbeats every tenth of HeartbeatTimeout.
//
// The leader's lease (LeaderLeaseTimeout) defaults to HeartbeatTimeout: a
// leader that has heard from no majority for that long steps down. On a
// saturated host nearly every election nobody asked for began with such a
// step-down; with the lease fixed at 250 ms, a longer heartbeat did little
// (4-9 terms in 10 minutes per cell at 500 ms and 1 s), while with the
// lease following it, 500 ms and 1 s gave 0-1 (BENCHMARKS.md, "Elections
// nobody asked for"). A leader cut off from the majority still steps down
// within HeartbeatTimeout.
const (
	DefaultHeartbeatTimeout   = 300 * time.Millisecond
	DefaultElectionTimeout    = 300 * time.Millisecond
	DefaultLeaderLeaseTimeout = DefaultHeartbeatTimeout
	DefaultCommitTimeout      = 5 * time.Millisecond
	DefaultCommitWait         = 2 * time.Second
	DefaultMaxAppendEntries   = 256
	DefaultSnapshotThreshold  = 4096
	DefaultSnapshotInterval   = 30 * time.Second
	DefaultTrailingLogs       = 4096
	DefaultRPCTimeout         = 5 * time.Second
	DefaultDedupWindow        = store.DefaultDedupWindow
	DefaultMaxMembers         = wire.MaxArrayItems
)

// Errors of a Node's operations.
var (
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("cell: closed")
	// ErrUnavailable: the cell cannot decide now (no leader, no majority,
	// or the leadership changed while an operation was in flight: its
	// outcome is unknown, and a retry with the same IDs is safe).
	ErrUnavailable = errors.New("cell: unavailable")
	// ErrNoGroup: the cell has no such group.
	ErrNoGroup = errors.New("cell: no such group")
	// ErrFull: the group has its most members.
	ErrFull = errors.New("cell: group full")
	// ErrStuck: Close's error when raft did not shut down within
	// shutdownWait (its state machine, its log, or the fsync of its log
	// waits on a disk that does not answer): Close returned without it, and what it holds is
	// left as a crash leaves it, recovered at the next start (the group
	// logs from raft's log); raft's stores close once it stops, if ever.
	ErrStuck = errors.New("cell: raft did not shut down in time (a disk that does not answer?)")
	// ErrUnchanged marks the error of a join, a leave (Join, Leave) or a
	// change of the cell (AddMember, RemoveMember) that carried out
	// nothing, nor will later: refused before anything was proposed (this
	// member does not lead, is closing, or raft never took the entry), or
	// applied as a refusal (ErrFull). It comes with the error's own
	// sentinel (ErrUnavailable, ErrClosed, a *NotLeaderError...), which
	// errors.Is and errors.As find as well; the daemon tells the client
	// so (PROTOCOL.md §9, key 7, unchanged). An error without it may
	// follow an entry raft took, which the cell may yet commit (the
	// leadership changed under it, the caller's context ended): the
	// operation may have been carried out.
	ErrUnchanged = errors.New("cell: nothing was changed")
)

// unchangedError is an error marked ErrUnchanged (unchanged).
type unchangedError struct{ err error }

func (e *unchangedError) Error() string   { return e.err.Error() }
func (e *unchangedError) Unwrap() []error { return []error{e.err, ErrUnchanged} }

// unchanged marks err, of an operation that carried out nothing, nor
// will later, with ErrUnchanged; nil stays nil.
func unchanged(err error) error {
	if err == nil || errors.Is(err, ErrUnchanged) {
		return err
	}
	return &unchangedError{err}
}

// untaken reports whether err, raft's answer to a request handed to it,
// says raft never took the request, so it appended nothing: it was not
// the leader, or was handing the leadership over, or its queue stayed
// full for the request's timeout (raft v1.7.2: runFollower,
// runCandidate and leaderLoop answer so before they append), or the
// change's condition did not hold (raftChanged: nextConfiguration refuses
// it before it is appended). Not ErrLeadershipLost or ErrRaftShutdown:
// raft answers those of entries it appended too, which a next leader may
// commit.
func untaken(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress) ||
		errors.Is(err, raft.ErrEnqueueTimeout) || (err != nil && strings.Contains(err.Error(), raftChanged))
}

// NotLeaderError is the error of an operation only the leader runs, asked
// of another member. Leader is the member this one follows, if it knows of
// one (zero otherwise: an election is under way).
type NotLeaderError struct {
	Leader Peer
}

func (e *NotLeaderError) Error() string {
	if e.Leader.Addr == "" {
		return "cell: not the leader, and no leader is known (an election is under way)"
	}
	return "cell: not the leader; the leader is " + e.Leader.String()
}

// GroupConfig is a group the daemon is configured to host in its cell. The
// cell creates it, the first time a leader configured with it leads, under
// the leader's ID for it; every replica then hosts the cell's.
type GroupConfig struct {
	// ID is the UUID the group gets if this daemon creates it.
	ID wire.UUID
	// Name is its name; the cell hosts one group per name.
	Name string
	// Secret, if not empty, makes it private: the cell keeps its SHA-256.
	Secret []byte
}

// Config configures a Node. The zero value of each field but Identity,
// QUIC, Advertise, Peers, Host and Dir means its default.
type Config struct {
	// Identity is the daemon's key; the cell knows the daemon by its
	// fingerprint.
	Identity *identity.Identity
	// QUIC is the daemon's QUIC transport: the cell dials its peers from it.
	QUIC *quic.Transport
	// Advertise is this daemon's address in Peers.
	Advertise string
	// Peers are the cell's members, this daemon among them: 3 or 5 to
	// start a cell (every member is started with the same list), any to
	// join one (Join).
	Peers []Peer
	// Join starts a daemon that joins a running cell instead of starting
	// one: it waits for the leader to add it (AddMember), and never
	// bootstraps a configuration of its own.
	Join bool
	// Dir holds raft's state: raftlog/ (its log and votes, package
	// raftlog; a raft.db of an older daemon is imported once) and
	// snapshots/. Required.
	Dir string
	// Fsync is how raft's log and votes reach the device, as the groups'
	// logs do (store.FsyncPolicy): with Always, a member fsyncs each
	// append before it acknowledges it, so an ack (a majority's) survives
	// power loss on a majority; otherwise each append is written to the
	// operating system before it is acknowledged (it survives the
	// daemon's kill -9) and raft's state is fsynced every Interval
	// (default 1 s).
	Fsync store.FsyncPolicy
	// Host opens the groups the cell creates. Required.
	Host Host
	// Groups are the groups this daemon is configured to host; a leader
	// creates in the cell those it lacks.
	Groups []GroupConfig
	// DedupWindow is the dedup window of the groups this daemon creates.
	// Default store's (65536).
	DedupWindow int
	// MaxMembers is the member limit joins are held to. Default 8192.
	MaxMembers int

	// Raft's timing. See the constants for the defaults.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// RPCTimeout bounds each raft RPC's I/O. Default 5 s.
	RPCTimeout time.Duration
	// CommitWait bounds how long a send, join or leave waits for the
	// cell to commit it (and this member to apply it) before it is
	// answered ErrUnavailable, its outcome unknown (a retry with the same
	// IDs is safe). A leader cut off from its majority steps down within
	// its lease, and its operations in flight end then; but a leader
	// whose followers answer it without storing what it sends (their
	// disks full), or whose own group logs refuse the appends it applies,
	// keeps leading, and without this bound its operations would wait for
	// as long as that lasts. Default 2 s: a commit takes milliseconds,
	// and a few hundred under a saturated host.
	CommitWait time.Duration
	// SnapshotThreshold is how many raft entries since the last snapshot
	// make the next; SnapshotInterval how often raft checks.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is how many raft entries a snapshot leaves in the log,
	// so that a follower that lagged less catches up from the log. An
	// entry gathers the sends to a group while others are in flight (up to
	// 1024 messages, 256 KiB): 4096 entries of a loaded cell hold about as
	// many messages as 16384 of one send each.
	TrailingLogs uint64
	// MaxAppendEntries is the most entries in one raft batch (one fsync of
	// the raft log, one AppendEntries RPC). Default 256.
	MaxAppendEntries int

	// LeaderChanged, if set, is called each time the leader this member
	// knows of changes: with the new leader, or ok false while none is
	// known (an election); and once more, with the same leader, when the
	// member comes to serve the cell's groups (Node.Serving). It is
	// called from one goroutine of the node, in order, and must not
	// block: the daemon re-registers its groups from it, so that
	// registries name a new leader within a round trip of its election
	// rather than at the next lease renewal.
	LeaderChanged func(leader Peer, ok bool)
	// MembersChanged, if set, is called with the cell's members each time
	// raft commits a new configuration (a member added or removed), from
	// raft's apply goroutine, as a snapshot from the leader is installed,
	// from the goroutine of its connection, and when this member, knowing
	// no leader, finds itself removed (or made a voter) in raft's latest
	// configuration, which it may never learn was committed: it must not
	// block.
	MembersChanged func(members []Peer)

	// Logger receives the cell's events. Default: discard.
	Logger *slog.Logger
	// Now stamps messages and joins on the leader. Default time.Now.
	Now func() time.Time

	// askedProgress, if set (by tests), is called with the key of each
	// member that asks this one how far it got (serveProgress).
	askedProgress func(by wire.Fingerprint)
	// promoteAnswered, if set (by tests), is called on the leader with
	// each answer of a member catching up to promote's question: how far
	// it got, the leader's commit index read before the question, and
	// whether this round makes it a voter; or the question's error.
	promoteAnswered func(member wire.Fingerprint, applied, commit uint64, chosen bool, err error)
	// promoted, if set (by tests), is called on the leader once promote
	// made member a voter.
	promoted func(member wire.Fingerprint)
	// promoteEvery, if set (by tests), is promoteLoop's tick in place of
	// HeartbeatTimeout: a test sets it long to see the rounds that do not
	// wait for it.
	promoteEvery time.Duration
	// received, if set (by tests), is called with each raft RPC this
	// member receives, before raft has it: a test holds one there.
	received func(req any)
	// rtt, if set (by tests), replaces the round trip to the other
	// members the kernel measures (timing.go).
	rtt func() (time.Duration, bool)
	// transferFault, if set (by tests), is called before each leadership
	// transfer this member asks for; its error fails the transfer.
	transferFault func() error
	// timingEvery, if set (by tests), replaces how often a member
	// measures the round trip and sets its election timeout (timing.go).
	timingEvery time.Duration
	// voteWindow, if set (by tests), replaces how long a round of votes
	// answered late raises the election timeout (timing.go).
	voteWindow time.Duration
	// learnEvery, if set (by tests), replaces how often a member that
	// has not heard from the cell asks the members (learn.go).
	learnEvery time.Duration
	// keyCheckEvery, if set (by tests), replaces how often a member
	// checks the members' keys (keycheck.go).
	keyCheckEvery time.Duration
	// keyCheckAsked, if set (by tests), is called before each question
	// of a key check (keycheck.go) with the member's address; its error
	// is the question's.
	keyCheckAsked func(addr string) error
	// catchUpWait, if set (by tests), replaces the wait before the
	// second round of a catch-up at start, as if it had backed off that
	// far (catchUp).
	catchUpWait time.Duration
	// catchUpPace, if set (by tests), replaces catchUpTimeout in a
	// catch-up's least pace (catchUpStream.copy).
	catchUpPace time.Duration
	// catchUpWindow, if set (by tests), replaces catchUpWindow: how
	// often a catch-up's copy is measured against the other members'.
	catchUpWindow time.Duration
	// catchUpFromBatch, if set (by tests), has a catch-up's copy
	// measure no window before its member's first batch: a member whose
	// first batch came after the first window (a loaded machine: reading
	// and sending it took longer) is otherwise measured at 0 messages a
	// second, and the copy leaves it before it sent any.
	catchUpFromBatch bool
	// settleWait, if set (by tests), replaces how long Close waits for
	// raft to answer what it was handed (settle).
	settleWait time.Duration
	// settleStall, if set (by tests), replaces how long Close's settle
	// waits without progress (settleStall).
	settleStall time.Duration
	// shutdownWait, if set (by tests), replaces how long Close waits for
	// raft to shut down (shutdownWait).
	shutdownWait time.Duration
}

// Validate reports whether c is usable. Its errors wrap ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Identity == nil:
		return bad("no identity")
	case c.QUIC == nil:
		return bad("no QUIC transport")
	case c.Host == nil:
		return bad("no host")
	case c.Dir == "":
		return bad("no directory for raft's state")
	case !c.Join && len(c.Peers) != 3 && len(c.Peers) != 5:
		return bad("a cell starts with 3 or 5 members, not %d", len(c.Peers))
	case c.DedupWindow < 0 || c.DedupWindow > store.MaxDedupWindow:
		return bad("dedup window %d: want 0..%d", c.DedupWindow, store.MaxDedupWindow)
	case c.MaxMembers < 0:
		return bad("max members %d is negative", c.MaxMembers)
	case c.HeartbeatTimeout < 0 || c.ElectionTimeout < 0 || c.LeaderLeaseTimeout < 0 || c.CommitTimeout < 0 ||
		c.RPCTimeout < 0 || c.CommitWait < 0 || c.SnapshotInterval < 0:
		return bad("negative timeout")
	case c.MaxAppendEntries < 0 || c.MaxAppendEntries > maxFrameEntries:
		return bad("MaxAppendEntries %d: want 0..%d", c.MaxAppendEntries, maxFrameEntries)
	}
	if err := checkPeers(c.Peers); err != nil {
		return err
	}
	self := false
	for _, p := range c.Peers {
		if p.Fingerprint == c.Identity.Fingerprint() {
			if p.Addr != c.Advertise {
				return bad("this daemon's key is listed at %s, but it advertises %s", p.Addr, c.Advertise)
			}
			self = true
		}
	}
	if !self && !c.Join {
		return bad("this daemon (%s) is not among the cell's peers", c.Identity.Fingerprint().Short())
	}
	names := make(map[string]bool)
	for _, g := range c.Groups {
		if err := wire.CheckName(g.Name); err != nil {
			return bad("group name %q: %v", g.Name, err)
		}
		if names[g.Name] {
			return bad("group %q listed twice", g.Name)
		}
		names[g.Name] = true
	}
	return nil
}

func (c Config) withDefaults() Config {
	c.HeartbeatTimeout = or(c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	c.ElectionTimeout = or(c.ElectionTimeout, DefaultElectionTimeout)
	c.LeaderLeaseTimeout = or(c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	c.CommitTimeout = or(c.CommitTimeout, DefaultCommitTimeout)
	c.RPCTimeout = or(c.RPCTimeout, DefaultRPCTimeout)
	c.CommitWait = or(c.CommitWait, DefaultCommitWait)
	c.SnapshotThreshold = or(c.SnapshotThreshold, DefaultSnapshotThreshold)
	c.SnapshotInterval = or(c.SnapshotInterval, DefaultSnapshotInterval)
	c.TrailingLogs = or(c.TrailingLogs, DefaultTrailingLogs)
	c.MaxAppendEntries = or(c.MaxAppendEntries, DefaultMaxAppendEntries)
	c.DedupWindow = or(c.DedupWindow, DefaultDedupWindow)
	c.MaxMembers = or(c.MaxMembers, DefaultMaxMembers)
	c.Logger = logger(c.Logger)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Node is this daemon's membership of a cell: a raft server whose state
// machine is the cell's groups. It proposes the sends, joins and leaves
// the daemon receives while it leads, and tells the daemon who leads
// otherwise.
type Node struct {
	cfg  Config
	tr   *Transport
	fsm  *fsm
	self Peer

	raft  *raft.Raft
	net   *raftNet
	log   *raftlog.Store
	snaps raft.SnapshotStore

	closing   chan struct{}
	closeOnce sync.Once      // closes closing
	wg        sync.WaitGroup // await goroutines and the leader loop
	timers    timers         // the proposals' CommitWait timers

	// gate keeps requests (entries, changes of the cell, leadership
	// transfers) from being handed to raft once Close began (gated), and
	// futures counts those handed over and not answered yet. Raft (v1.7.2)
	// never answers some it holds when it shuts down: requests still in a
	// buffered channel (BatchApplyCh's entries, a leadership transfer),
	// and committed entries (configuration changes and barriers too) still
	// queued for the state machine, which runFSM leaves as it returns on
	// shutdownCh. Close waits for the count to drop to zero (raft answers
	// every request it took while it runs) before it shuts raft down.
	// futures is allocated apart from the node: the goroutine answer
	// leaves waiting for a request raft dropped holds it (and the
	// request), never the closed node.
	gate    sync.RWMutex
	gated   bool
	futures *atomic.Int64
	// down is closed once raft has shut down, or Close gave up waiting
	// for it (ErrStuck): nothing waits for its answers any more.
	down chan struct{}
	// stopped is closed once raft has shut down and its stores are
	// closed, after Close (Stopped).
	stopped chan struct{}
	// synced is closed once syncLoop has returned; nil if it never ran.
	// It is not one of wg's: an fsync that never returns (a disk that
	// does not answer) holds it, and Close waits for it as for raft's
	// shutdown, at most shutdownWait (stopRaft).
	synced chan struct{}
	// syncHook, if set (by tests), is called before each fsync of
	// syncLoop: a test holds it there, as a disk that does not answer.
	syncHook atomic.Pointer[func()]

	// member says this daemon is in the cell's configuration, as last
	// applied: a daemon removed from the cell says so once. voter says
	// it votes there: not while it is catching up (members.go).
	member, voter atomic.Bool
	memberMu      sync.Mutex // held by noteMembership
	// refusedOut says a majority of its configuration's voters refused
	// this member's key while it knew no leader: it takes itself as
	// removed, though raft's latest configuration still lists it
	// (learn.go, noteRefused), until it hears from a leader or applies a
	// configuration.
	refusedOut atomic.Bool

	// heard says this member has heard from the cell since it started: it
	// was elected (watchLeader), or a majority of its configuration's
	// voters, itself among them, named it among their members (learn.go,
	// noteHeard). Serving waits for it. listedLatest says raft's latest
	// configuration, as the transport's members were last set from it
	// (conf), lists this member as a voter.
	heard, listedLatest atomic.Bool
	// watchWake wakes watchLeader (raft's leader observations, and heard
	// set: the daemon is told of the leader again once the member serves).
	// learnWake wakes learnLoop (a leader known, not heard yet: the
	// members are up, and asked at once rather than at the next tick).
	watchWake chan raft.Observation
	learnWake chan struct{}
	// promoteWake wakes promoteLoop (wakePromote).
	promoteWake chan struct{}
	// stallWake wakes stallLoop: the state machine stalled (fsm.onStall).
	// catchUpWake wakes a catch-up at start waiting for a peer (catchUp):
	// a member dialled this one, or a leader is known.
	stallWake, catchUpWake chan struct{}
	// timingWake wakes timingLoop: a round of votes completed late
	// (voteGranted); votes keeps those rounds (timing.go).
	timingWake chan struct{}
	votes      votesLate
	// served is closed the first time this member serves (Serving) since
	// it started (checkServing).
	served     chan struct{}
	servedOnce sync.Once

	// live is raft once Start has started it (running).
	live atomic.Pointer[raft.Raft]

	// decided is the configuration this node last applied, installed
	// from the leader or restored at Start, with the raft index of its
	// entry: a change of the cell (members.go) is decided in it and made
	// only if raft's latest configuration is still that one, which raft
	// checks as it appends the change. (raft's GetConfiguration leaves
	// its Index 0, which raft takes for no condition.)
	decided atomic.Pointer[indexedConf]
	// changing is held (a value in it) by the change of the cell this
	// node is making, from its decision until raft answers it: changes
	// asked together are made one after another, each decided in the
	// configuration the one before left, rather than refused by raft.
	changing chan struct{}
	// beforeChange, if set (by tests), is called as a change of the cell
	// has been decided, before it is handed to raft.
	beforeChange func()

	mu      sync.Mutex
	started bool
	closed  bool
	// restarted says Start found raft state this node had kept: it is a
	// member that ran before, not one of a new cell or one that joins.
	restarted bool
	// ready is the term in which this node leads and has applied
	// everything earlier terms committed (its barrier ran); 0 otherwise.
	ready uint64
	// behind is, on the leader, how far each member catching up was
	// behind when last asked (members.go).
	behind map[wire.Fingerprint]behind
	// catchUpMu guards catchUps, the catch-ups served to each key
	// (catchup.go): not mu, which Start holds through raft's restore,
	// while the member serves its peers' catch-ups.
	catchUpMu sync.Mutex
	catchUps  map[wire.Fingerprint]int

	// learnMu guards learned, the members other members named when this
	// one knew of no leader (learn.go), and conf, the configuration the
	// transport's members were last set from.
	learnMu sync.Mutex
	learned []Peer
	conf    raft.Configuration

	// keyMu guards mismatches, the mismatches of the members' keys the
	// last check reported (keycheck.go).
	keyMu      sync.Mutex
	mismatches []KeyMismatch
}

// New returns a node for cfg. It does no I/O; Start opens raft's state and
// joins the cell. It returns cfg.Validate's error.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := &Node{cfg: cfg, closing: make(chan struct{}), down: make(chan struct{}), stopped: make(chan struct{}), futures: new(atomic.Int64), changing: make(chan struct{}, 1),
		watchWake: make(chan raft.Observation, 1), learnWake: make(chan struct{}, 1), stallWake: make(chan struct{}, 1),
		promoteWake: make(chan struct{}, 1), catchUpWake: make(chan struct{}, 1), timingWake: make(chan struct{}, 1), served: make(chan struct{}), self: Peer{Addr: cfg.Advertise, Fingerprint: cfg.Identity.Fingerprint()}}
	tr, err := NewTransport(TransportConfig{Identity: cfg.Identity, QUIC: cfg.QUIC, Advertise: cfg.Advertise,
		Peers: cfg.Peers, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	n.tr = tr
	n.votes.window = or(cfg.voteWindow, voteWindow)
	n.fsm = newFSM(cfg.Host, cfg.Logger, n.closing)
	n.fsm.onConfig = n.applied
	n.fsm.catchUp = n.catchUp
	n.fsm.onStall = func() {
		select {
		case n.stallWake <- struct{}{}:
		default: // a wake-up is pending
		}
	}
	tr.onDialedIn(n.wakeCatchUp)
	tr.handle(kindCatchUp, n.serveCatchUp)
	tr.handle(kindProgress, n.serveProgress)
	tr.handle(kindMembers, n.serveMembers)
	return n, nil
}

// Transport returns the node's transport: the daemon's listener hands it
// the connections that chose ALPN, and checks their keys with VerifyPeer.
func (n *Node) Transport() *Transport { return n.tr }

// Self returns this daemon as a member of the cell.
func (n *Node) Self() Peer { return n.self }

// Start opens raft's state (cfg.Dir), starts raft over the transport and,
// for a new cell, bootstraps it with cfg.Peers. It returns once raft runs;
// the cell elects a leader in the background. A restarted member whose
// group logs are behind its raft snapshot returns only once a peer has
// caught them up (fsm.Restore, catchUp), which may take as long as its
// peers take to apply what the snapshot covers: raft runs meanwhile (the
// member votes; elected, it hands the leadership over, awaitRestored),
// and Close ends the wait (ErrClosed). Errors: ErrClosed, and those of
// opening raft's state and of that restore (raft ran by then: Close the
// node).
func (n *Node) Start() error {
	if err := n.start(); err != nil {
		return err
	}
	d := n.fsm.atStart.Load()
	if d == nil {
		return nil
	}
	<-d.done // finishRestore ends on Close
	if !d.ok.Load() {
		return fmt.Errorf("cell: start: %w", d.err)
	}
	n.checkServing()
	return nil
}

// start is Start's work but the wait for the restore at start.
func (n *Node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return ErrClosed
	case n.started:
		return nil
	}
	if err := os.MkdirAll(n.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("cell: %w", err)
	}
	logs, err := openRaftStore(n.cfg.Dir, raftlog.Options{Sync: n.cfg.Fsync.Always})
	if err != nil {
		return fmt.Errorf("cell: open raft's log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.Dir, 2, hclogFor(n.cfg.Logger, "snapshots"))
	if err != nil {
		logs.Close()
		return fmt.Errorf("cell: open raft's snapshots: %w", err)
	}
	n.log, n.snaps = logs, checkedSnapshots{snaps}
	// The entries raft replicates next are read from memory: one batch
	// of them (entries are up to 256 KiB: at most 64 MiB).
	cached, err := raft.NewLogCache(n.cfg.MaxAppendEntries, logs)
	if err != nil {
		n.closeStores()
		return fmt.Errorf("cell: %w", err)
	}
	existing, err := raft.HasExistingState(cached, logs, n.snaps)
	if err != nil {
		n.closeStores()
		return fmt.Errorf("cell: read raft's state: %w", err)
	}
	// Raft restores its newest snapshot as it starts, and a group log
	// behind it catches up from a peer (fsm.Restore): the members asked
	// are the snapshot's (accepted), not the flags', which may name hosts
	// long replaced, until the configuration raft ends up with (the log's
	// latest) is set below.
	if metas, err := n.snaps.List(); err == nil && len(metas) > 0 {
		n.setPeers(metas[0].Configuration)
		n.decide(metas[0].Configuration, metas[0].ConfigurationIndex)
	}
	if err := n.tr.Listen(); err != nil {
		n.closeStores()
		return err
	}
	if !existing && !n.cfg.Join {
		if err := n.checkBootstrapKeys(); err != nil {
			n.tr.Close()
			n.closeStores()
			return err
		}
	}
	n.net = newRaftNet(n.tr, n.cfg.RPCTimeout, hclogFor(n.cfg.Logger, "transport"), func(rn *raftNet) {
		rn.received = n.cfg.received
		rn.rtt = n.cfg.rtt
		rn.transferWait.Store(int64(2 * n.cfg.ElectionTimeout))
		rn.voteGranted = n.voteGranted
	})
	n.net.onInstalled(n.installed)
	n.net.onAppended(n.appendedConfig)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.self.Fingerprint.String())
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.CommitTimeout
	rc.MaxAppendEntries = n.cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.TrailingLogs = n.cfg.TrailingLogs
	rc.Logger = hclogFor(n.cfg.Logger, "raft")
	rc.NoLegacyTelemetry = true
	// A leader never removes itself (RemoveMember hands over first); were
	// it to, it would step down rather than shut raft down under the
	// entries it was handed, which would never be answered (BatchApplyCh).
	rc.ShutdownOnRemove = false
	n.fsm.starting.Store(true)
	r, err := raft.NewRaft(rc, n.fsm, cached, logs, n.snaps, n.net)
	n.fsm.starting.Store(false)
	if err != nil {
		n.net.Close()
		n.tr.Close()
		n.closeStores()
		select {
		case <-n.closing: // Close began while raft restored: the restore refused
			return fmt.Errorf("cell: start raft: %w", ErrClosed)
		default:
		}
		return fmt.Errorf("cell: start raft: %w", err)
	}
	n.raft = r
	if !existing && !n.cfg.Join {
		var servers []raft.Server
		for _, p := range n.cfg.Peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.Fingerprint.String()), Address: raft.ServerAddress(p.Addr)})
		}
		// Every member bootstraps the same configuration; the one entry
		// they write is identical, so whichever is elected, they agree.
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.cfg.Logger.Warn("cell: bootstrap", "err", err)
		}
	}
	// Live before the transport is configured: a configuration applied
	// meanwhile (applied) reads raft's latest too, not only its own.
	n.live.Store(r)
	if f := r.GetConfiguration(); f.Error() == nil {
		n.configured(f.Configuration())
	}
	n.started, n.restarted = true, existing
	n.tr.warm()
	n.net.keepReady()
	n.wg.Add(7)
	go n.leaderLoop()
	go n.promoteLoop()
	go n.learnLoop()
	go n.keyCheckLoop()
	go n.timingLoop()
	go n.stallLoop()
	go n.staleLeaderLoop()
	// A wake-up, not a record: the watcher reads the leader raft knows
	// now, so an observation dropped while one is pending loses nothing.
	// It runs whether or not the daemon wants to hear of leaders: a
	// member removed learns it there (noteMembership).
	wake := n.watchWake
	obs := raft.NewObserver(wake, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(obs)
	n.wg.Add(1)
	go n.watchLeader(obs, wake)
	if !n.cfg.Fsync.Always {
		n.synced = make(chan struct{})
		go n.syncLoop()
	}
	if n.fsm.atStart.Load() != nil {
		// Group logs behind the snapshot restored: they catch up now that
		// raft runs (Start waits for it).
		n.wg.Go(n.fsm.finishRestore)
	}
	return nil
}

func (n *Node) closeStores() {
	if n.log != nil {
		n.log.Close() // what reached only the OS reaches the device
	}
}

// configured notes configuration c (whether this daemon is a member; the
// daemon's MembersChanged) and sets the transport's members from it: at
// Start (raft's latest configuration) and on the leader adding a member
// (the configuration it is about to append).
func (n *Node) configured(c raft.Configuration) {
	n.noteConfig(c)
	n.setPeers(c)
}

// applied is told each configuration raft commits, as this member applies
// it (in the log's order, from raft's apply goroutine). It notes c, and
// sets the transport's members from raft's latest configuration, which
// is c or one appended after it: a member applying the entries of the
// past (after a restart, or catching up) applies configurations older
// than the one its log ends with, and the leader of now may be in none of
// them (see accepted).
func (n *Node) applied(c raft.Configuration, index uint64) {
	n.refusedOut.Store(false) // the leader's word, from the log
	n.decide(c, index)
	n.noteConfig(c)
	n.setLatestPeers(c)
}

// appendedConfig is told each configuration entry this member appended
// from the leader (raftNet's onAppended), before it answers the leader: it
// sets the transport's members from raft's latest configuration, which is
// that entry's (or a later one's), as applied will once it applies it. A
// member removed is refused from then on: before, a follower accepted its
// key until it applied its removal, a heartbeat after the leader committed
// it, or never if that leader was lost first. (Who the daemon is told the
// members are, MembersChanged, waits for the configuration to be applied:
// this one may yet be cut from the log.)
func (n *Node) appendedConfig() {
	n.setLatestPeers(raft.Configuration{})
}

// wakeCatchUp has a catch-up at start that waits for a peer ask again at
// once (catchUp).
func (n *Node) wakeCatchUp() {
	select {
	case n.catchUpWake <- struct{}{}:
	default: // a wake-up is pending
	}
}

// wakeWatch has watchLeader look again at the leader and whether this
// member serves.
func (n *Node) wakeWatch() {
	select {
	case n.watchWake <- raft.Observation{}:
	default: // a wake-up is pending
	}
}

// setLatestPeers sets the transport's members from raft's latest
// configuration, read under n.learnMu so that of two calls the later read
// wins; from fallback (unless it is empty) if raft does not run yet.
func (n *Node) setLatestPeers(fallback raft.Configuration) {
	n.learnMu.Lock()
	defer n.learnMu.Unlock()
	c := fallback
	if r := n.running(); r != nil {
		if f := r.GetConfiguration(); f.Error() == nil { // an atomic load, not the main loop
			c = f.Configuration()
		}
	}
	if len(c.Servers) == 0 {
		return
	}
	n.noteConfLocked(c)
	n.applyPeersLocked()
}

// installed is told each snapshot raft installed from the leader (raftNet's
// onInstalled), once raft has taken the snapshot's configuration as its
// latest: it notes it and sets the transport's members from it, as applied
// does for a configuration in the log. A member brought up to date by a
// snapshot gets no entry of the configurations the snapshot covers: until
// its next configuration entry (a new member's promotion; for a member
// that was away, perhaps never) it accepted the keys of its flags, or of
// its own log's last configuration, a member removed meanwhile among them.
func (n *Node) installed() {
	n.refusedOut.Store(false)                                       // the leader's word, its snapshot
	if metas, err := n.snaps.List(); err == nil && len(metas) > 0 { // the snapshot installed is the newest
		n.decide(metas[0].Configuration, metas[0].ConfigurationIndex)
	}
	n.reconfigure()
}

// reconfigure notes raft's latest configuration and sets the transport's
// members from it (configured).
func (n *Node) reconfigure() {
	if r := n.running(); r != nil {
		if f := r.GetConfiguration(); f.Error() == nil {
			n.configured(f.Configuration())
		}
	}
}

// indexedConf is a configuration and the raft index of its entry.
type indexedConf struct {
	conf  raft.Configuration
	index uint64
}

// decide notes c, the configuration of raft's entry index, as the one this
// node last applied (decided).
func (n *Node) decide(c raft.Configuration, index uint64) {
	n.decided.Store(&indexedConf{conf: c.Clone(), index: index})
}

// lastDecided returns the configuration this node last applied and its
// index; index 0 if it applied none yet.
func (n *Node) lastDecided() (raft.Configuration, uint64) {
	if d := n.decided.Load(); d != nil {
		return d.conf, d.index
	}
	return raft.Configuration{}, 0
}

// noteConfig notes whether c lists this daemon, and tells the daemon's
// MembersChanged.
func (n *Node) noteConfig(c raft.Configuration) {
	n.noteMembership(c)
	if n.cfg.MembersChanged != nil && len(c.Servers) > 0 {
		var members []Peer
		for _, s := range c.Servers {
			if fp, err := wire.ParseFingerprint(string(s.ID)); err == nil {
				members = append(members, Peer{Addr: string(s.Address), Fingerprint: fp})
			}
		}
		n.cfg.MembersChanged(members)
	}
}

// setPeers sets the transport's members from configuration c and what was
// learnt (accepted); c is kept for learnMembers and forgetLearned.
func (n *Node) setPeers(c raft.Configuration) {
	n.learnMu.Lock()
	defer n.learnMu.Unlock()
	n.noteConfLocked(c)
	n.applyPeersLocked()
}

// noteConfLocked sets c as the configuration the transport's members are
// set from (conf), and notes whether it lists this member as a voter
// (listedLatest). n.learnMu is held.
func (n *Node) noteConfLocked(c raft.Configuration) {
	n.conf = c
	self := raft.ServerID(n.self.Fingerprint.String())
	n.listedLatest.Store(slices.ContainsFunc(c.Servers, func(s raft.Server) bool { return s.ID == self && s.Suffrage == raft.Voter }))
	n.checkServing()
}

// refreshPeers sets the transport's members again, from the configuration
// they were last set from and what was learnt since.
func (n *Node) refreshPeers() {
	n.learnMu.Lock()
	defer n.learnMu.Unlock()
	n.applyPeersLocked()
}

// applyPeersLocked gives the transport its members (accepted). n.learnMu
// is held until the transport has them, so that the last set wins.
func (n *Node) applyPeersLocked() {
	n.tr.SetPeers(accepted(n.self, n.cfg.Peers, n.conf, n.learned))
}

// accepted returns the members a member's transport accepts (and dials),
// this member self, started with the peers flags, whose configuration is
// conf and which learnt the members learned (learn.go).
//
// The rule: once conf lists self, conf is the cell, and flags count for
// nothing: a member removed from the cell (huddle cell remove) is refused
// by every member that appended its removal, on raft's listener and the
// cell's QUIC ALPN alike (SetPeers closes its connections), whatever
// their --cell-peer flags still name. The flags are only how a daemon
// finds the cell before its configuration lists it. While conf does not
// list self, the flags and conf are both accepted. What was learnt is
// accepted besides, until forgotten (learn.go). Where two keys are named
// at one address, conf wins, then the flags (what was learnt may be older
// than the configuration).
//
// Who dials whom, and when each member's conf changes (conf is raft's
// latest configuration, read as each configuration entry is appended from
// the leader (appendedConfig) and as it is applied, as a snapshot from the
// leader is installed (installed), at Start, and on the leader as it adds
// a member):
//
//   - A cell started (every member with the same flags): each bootstraps
//     the flags as its configuration, which lists it; the flags and conf
//     are the same keys.
//   - A member added (--cell-join, then huddle cell add): it has no
//     configuration, and accepts its flags (the cell's members: the leader
//     among them). The leader puts it in its own conf before it appends
//     the change (AddMember), so it dials the new member at once; the
//     others accept its key once they append the change. The new member's
//     conf changes as it applies what the leader sends: a snapshot, or the
//     log from its start, whose old configurations do not list it (and may
//     not list the leader: flags and conf together do); from the snapshot
//     or the entry that adds it on, conf lists it, and is the cell. Its
//     catch-up asks every member at once: the leader, which accepted it
//     before anyone, serves it while the others may still refuse it.
//   - A member removed: the leader applies the change when it commits and
//     stops accepting the removed key then (its dialed connections to it
//     close leaveGrace later, for raft's last replication, the removal,
//     to reach it); each follower as it appends the change, before it
//     answers the leader, so a majority refuses the key by the time the
//     removal is committed (until session 13, as it applied it, a
//     heartbeat after the commit, or never if that leader was lost first). The removed member's own conf, once it has the change (it may
//     never get it), no longer lists it, and it accepts flags and conf.
//   - A removed member added again: the leader dials it at once; it
//     accepts the leader if its last configuration (or its flags) name the
//     leader, or learns of the leader from a member that accepts it again
//     once it applied the re-adding (a member that still sees itself in its
//     configuration asks, learn.go).
//   - A member that was away while another was replaced: its conf lists it
//     and the members of before; it refuses the new member, which may
//     lead. Knowing of no leader, it asks the members it knows (learn.go),
//     accepts those named, takes the new leader's replication, and forgets
//     what it learnt once its own conf names its leader (1cf5358).
//   - A restart: conf is raft's latest configuration at Start (the log's
//     last, or the snapshot's). Replayed configurations are older, but
//     raft's latest is read as each is applied, so the leader of now stays
//     accepted.
//   - 3 -> 5 -> 3: each addition and removal as above, one at a time.
//
// A configuration raft appended but did not commit, later cut from the
// log (its leader lost before commit), stays the transport's until the
// next configuration is applied: a member it refuses that comes to lead
// is learnt from the others, as above.
func accepted(self Peer, flags []Peer, conf raft.Configuration, learned []Peer) []Peer {
	var confPeers []Peer
	for _, s := range conf.Servers {
		if fp, err := wire.ParseFingerprint(string(s.ID)); err == nil {
			confPeers = append(confPeers, Peer{Addr: string(s.Address), Fingerprint: fp})
		}
	}
	listed := slices.ContainsFunc(confPeers, func(p Peer) bool { return p.Fingerprint == self.Fingerprint })
	if listed {
		flags = nil
	}
	known := make(map[wire.Fingerprint]bool)
	for _, p := range flags {
		known[p.Fingerprint] = true
	}
	for _, p := range confPeers {
		known[p.Fingerprint] = true
	}
	// What was learnt comes first, then the flags, then conf: the later
	// win at an address (below).
	var peers []Peer
	for _, p := range learned {
		if !known[p.Fingerprint] {
			peers = append(peers, p)
			known[p.Fingerprint] = true
		}
	}
	peers = append(peers, flags...)
	inFlags := make(map[wire.Fingerprint]bool, len(flags))
	for _, p := range flags {
		inFlags[p.Fingerprint] = true
	}
	for _, p := range confPeers {
		if !inFlags[p.Fingerprint] {
			peers = append(peers, p)
		}
	}
	// A member added under an address another key held before: the
	// configuration wins.
	byAddr := make(map[string]int)
	out := peers[:0]
	for _, p := range peers {
		if i, ok := byAddr[p.Addr]; ok {
			out[i] = p
			continue
		}
		byAddr[p.Addr] = len(out)
		out = append(out, p)
	}
	return out
}

// noteMembership records whether configuration c lists this daemon, and
// says so once when it no longer does: it was removed from the cell. (A
// removed member may never learn that its removal was committed; it sees
// it in raft's latest configuration, which watchLeader checks when the
// leader's heartbeats stop reaching it, or learns it from the others'
// refusals: refusedOut, learn.go.) It reports whether c changed whether
// this daemon is a member, or votes.
func (n *Node) noteMembership(c raft.Configuration) (changed bool) {
	n.memberMu.Lock()
	defer n.memberMu.Unlock()
	self := raft.ServerID(n.self.Fingerprint.String())
	out := n.refusedOut.Load()
	in := !out && slices.ContainsFunc(c.Servers, func(s raft.Server) bool { return s.ID == self })
	voter := n.voter.Swap(!out && slices.ContainsFunc(c.Servers, func(s raft.Server) bool { return s.ID == self && s.Suffrage == raft.Voter }))
	was := n.member.Swap(in)
	if was && !in {
		n.cfg.Logger.Warn("cell: this daemon was removed from the cell; it takes no part in it any more (stop it, or add it again with huddle cell add)")
	}
	n.checkServing()
	return was != in || voter != n.voter.Load()
}

// Restarted reports whether Start found raft state the node had kept (a
// member that ran before, restarted), rather than starting a new cell's
// member or one that joins. It is false before Start.
func (n *Node) Restarted() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.restarted
}

// Member reports whether this daemon is in the cell's configuration as it
// last saw it: false for a daemon waiting to be added (Join) and for one
// removed from the cell.
func (n *Node) Member() bool { return n.member.Load() }

// Voter reports whether this daemon votes in the cell's configuration as
// it last saw it: Member, and not catching up (AddMember).
func (n *Node) Voter() bool { return n.voter.Load() }

// Serving reports whether this daemon serves the cell's groups as one of
// its replicas (fetches, watches, registrations): it is a Voter; its
// groups are restored (a member restarted with group logs behind its raft
// snapshot serves none until it has caught them up from a peer, though its
// raft runs: Start); raft's latest configuration, with the entries it
// appended and has not applied yet, lists it as a voter; and it has heard
// from the cell since it started: it was elected, or a majority of its
// configuration's voters, itself among them, named it a member in their
// configurations (learn.go: it asks them at start, as it does when it
// knows of no leader).
//
// Why heard: a member removed while it was down finds itself a voter in
// its own configuration when it starts again, and served the groups from
// a log that no longer follows the cell (fetches, watches, registrations)
// for a second or two, until it learnt the others refuse its key. The
// members that appended its removal, a majority of the configuration that
// removed it (which raft committed), neither vote for it nor name it, so
// it never hears enough to serve. Knowing of a leader is not enough: the
// appends a leader had in flight to it when it removed it, its heartbeats
// until then, and its last append, which carries the removal (and may be
// lost), reach it as it starts again. A member that hears from nobody
// (its peers down) serves nothing either, until they are back.
func (n *Node) Serving() bool {
	return n.heard.Load() && n.listedLatest.Load() && n.Voter() && n.fsm.restoredNow()
}

// Served returns a channel closed the first time this member serves the
// cell's groups (Serving) since it started: the daemon lists them then.
func (n *Node) Served() <-chan struct{} { return n.served }

// checkServing closes served if the member serves, and has watchLeader
// tell the daemon of the leader again (LeaderChanged) if it does now. It
// is called as each of Serving's conditions may have come to hold.
func (n *Node) checkServing() {
	if n.Serving() {
		n.servedOnce.Do(func() { close(n.served) })
		n.wakeWatch()
	}
}

// leaderLoop follows this node's leadership: on becoming leader it runs a
// barrier (so the groups' logs hold everything committed before), then
// marks the node ready to stamp sends, and creates the configured groups
// the cell lacks.
func (n *Node) leaderLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.closing:
			return
		case leader := <-n.raft.LeaderCh():
			n.setReady(0)
			if !leader {
				continue
			}
			// Before the barrier, which does not reach the state machine
			// when no entry was committed since start.
			if !n.awaitRestored() {
				return // closing
			}
			for n.raft.State() == raft.Leader {
				term := n.raft.CurrentTerm()
				if err := n.barrier(); err == nil {
					if n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term {
						n.setReady(term)
						n.wakePromote()
						n.cfg.Logger.Info("cell: leading", "term", term)
						n.createGroups()
					}
					break
				}
				select {
				case <-n.closing:
					return
				case <-time.After(n.cfg.HeartbeatTimeout / 4):
				}
			}
		}
	}
}

// awaitRestored waits, on a member elected, until the restore at start is
// done (fsm.restored), handing the leadership over meanwhile each time it
// leads: it could stamp nothing until its group logs have caught up, which
// takes as long as copying them from a peer does (a whole history, for a
// member whose logs were lost), and the others can (session 13; it led,
// refusing every send, for as long as its copy took). If none can take
// over (raft's transfer fails), it asks again every HeartbeatTimeout while
// it leads, and leads once caught up. False if the node closed first, or
// the restore failed.
//
// Why again: a member just elected has heard no answer to its
// AppendEntries yet, and transfers only to a voter whose replication is
// current (transferable); on a loaded host it asked before the first
// answers came, was refused ("no other voter's replication is current"),
// and led, refusing every send, until its copy was done
// (TestElectedWhileCatchingUpHandsOver at load 25, session 20).
func (n *Node) awaitRestored() bool {
	d := n.fsm.atStart.Load()
	if d == nil {
		return true
	}
	var told uint64 // the term whose failed hand-over was logged
	for !d.ok.Load() {
		var again <-chan time.Time
		if term := n.raft.CurrentTerm(); n.raft.State() == raft.Leader {
			if told != term {
				n.cfg.Logger.Info("cell: elected while this member's group logs catch up at start: handing the leadership over", "term", term)
			}
			if err := n.transfer(nil); errors.Is(err, ErrClosed) {
				return false
			} else if err != nil {
				if told != term {
					n.cfg.Logger.Warn("cell: could not hand the leadership over; this member asks again while it leads, and leads once its group logs have caught up", "err", err)
					told = term
				}
				again = time.After(n.cfg.HeartbeatTimeout)
			}
		}
		select {
		case <-d.done:
			return d.ok.Load()
		case <-n.closing:
			return false
		case <-n.raft.LeaderCh(): // elected again, or no longer leading: look again
		case <-again:
		}
	}
	return true
}

// watchLeader calls cfg.LeaderChanged (if set) with each leader this node
// comes to know of (and again once the node serves, Serving, with one
// known), and notes whether the node is still a member when it knows of
// none, until the node closes.
func (n *Node) watchLeader(obs *raft.Observer, wake <-chan raft.Observation) {
	defer n.wg.Done()
	defer n.raft.DeregisterObserver(obs)
	var last Peer
	known, served := false, false
	report := func() {
		p, ok := n.Leader()
		if ok && p == n.self && !n.heard.Swap(true) {
			// Elected: a majority of its configuration's voters voted
			// for it (Serving).
			n.checkServing()
		}
		// Told again once it serves with a leader known: the daemon
		// registers its groups then, and not while it does not serve.
		serving := ok && n.Serving()
		if ok == known && p == last && serving == served {
			return
		}
		last, known, served = p, ok, serving
		if ok && !n.heard.Load() {
			select {
			case n.learnWake <- struct{}{}:
			default: // a wake-up is pending
			}
		}
		if ok {
			// Taken as removed when the others refused its key (learn.go),
			// it hears from a leader after all (added again): the
			// configuration it applies from the leader says again, as for
			// any member removed and added back.
			n.refusedOut.Store(false)
			n.wakeCatchUp() // the cell runs: its members apply again
		}
		if n.cfg.LeaderChanged != nil {
			n.cfg.LeaderChanged(p, ok)
		}
		if f := n.raft.GetConfiguration(); !ok && f.Error() == nil {
			if c := f.Configuration(); n.noteMembership(c) {
				// Its removal, never applied here: the daemon is told as
				// of a configuration applied (MembersChanged), and ends
				// its watches of the cell's groups, which no longer follow
				// the cell, rather than at their next heartbeat.
				n.noteConfig(c)
			}
		}
	}
	report()
	for {
		select {
		case <-n.closing:
			return
		case <-wake:
			report()
		}
	}
}

func (n *Node) setReady(term uint64) {
	n.mu.Lock()
	n.ready = term
	n.mu.Unlock()
}

// leading returns the term this node leads in, ready to stamp, or the
// error to answer with: a *NotLeaderError, a *StalledError, or ErrClosed.
func (n *Node) leading() (uint64, error) {
	n.mu.Lock()
	ready, closed, started := n.ready, n.closed, n.started
	n.mu.Unlock()
	switch {
	case closed:
		return 0, ErrClosed
	case !started:
		return 0, &NotLeaderError{}
	}
	leads := n.raft.State() == raft.Leader
	if ready != 0 && leads && n.raft.CurrentTerm() == ready {
		if n.fsm.stalledAt.Load() != 0 {
			return 0, n.stalledError()
		}
		return ready, nil
	}
	if leads && n.fsm.stalledAt.Load() != 0 {
		// Elected while its state machine is stalled: the barrier that
		// makes it ready waits behind the stalled append for as long as
		// the disk refuses it, and stallLoop hands the leadership over as
		// for a leader that stalled. It said no leader was known (an
		// election under way) for as long as the disk stayed full.
		return 0, n.stalledError()
	}
	leader, _ := n.Leader()
	if leader == n.self {
		// Elected, but the barrier has not run yet: not ready to stamp.
		leader = Peer{}
	}
	return 0, &NotLeaderError{Leader: leader}
}

// running returns raft once Start has started it, else nil. It takes no
// lock: Start holds n.mu while raft restores its snapshot, and the state
// machine's restore may catch a group up from a peer, which asks Leader.
func (n *Node) running() *raft.Raft { return n.live.Load() }

// Leading returns nil if this member leads the cell, ready to stamp
// sends; else a *NotLeaderError naming the leader it knows of, or
// ErrClosed. A daemon asks it before anything that only the leader knows
// for sure (whether a key that just joined is a member).
func (n *Node) Leading() error {
	_, err := n.leading()
	return err
}

// Leader returns the member that leads the cell, as this node knows it;
// ok is false if it knows of none.
func (n *Node) Leader() (p Peer, ok bool) {
	r := n.running()
	if r == nil {
		return Peer{}, false
	}
	addr, id := r.LeaderWithID()
	if addr == "" {
		return Peer{}, false
	}
	fp, err := wire.ParseFingerprint(string(id))
	if err != nil {
		return Peer{}, false
	}
	return Peer{Addr: string(addr), Fingerprint: fp}, true
}

// createGroups proposes the configured groups the cell lacks.
func (n *Node) createGroups() {
	for _, gc := range lacking(n.fsm.list(), n.cfg.Groups) {
		id := gc.ID
		if id == (wire.UUID{}) {
			id = uuid.New()
		}
		spec := GroupSpec{ID: id, Name: gc.Name, Epoch: newEpoch(), DedupWindow: n.cfg.DedupWindow}
		if len(gc.Secret) > 0 {
			spec.Private, spec.SecretSHA256 = true, sha256.Sum256(gc.Secret)
		}
		if err := n.applyWait(encodeCreate(nil, spec)); err != nil {
			n.cfg.Logger.Warn("cell: could not create a group; the next leader will", "group", gc.Name, "err", err)
			return
		}
		n.cfg.Logger.Info("cell: created group", "group", gc.Name, "uuid", id, "epoch", spec.Epoch)
	}
}

// lacking returns the groups of configured that none of have is: none has
// its name, nor its UUID. By UUID too, since a group the cell created under
// a name the rules now refuse ("team ", refused since session 23) is
// configured under the name it shows as ("team"), with its UUID (the group
// daemon's groups.json keeps it), and is that group: proposed again, its
// create was refused by the cell's state (the first stands) at each
// leader's start, each time logged as a group created.
//
// By the name it shows as too (wire.ShownName): a member whose state
// directory never held "team " (one added since, or its directory new)
// configures "team" under a UUID of its own, and, leading, created a
// second group, "team", beside the cell's "team ", which every member then
// served under that name instead of the group with its history.
func lacking(have []*groupState, configured []GroupConfig) []GroupConfig {
	names := make(map[string]bool, 2*len(have))
	ids := make(map[wire.UUID]bool, len(have))
	for _, g := range have {
		names[g.spec.Name], names[wire.ShownName(g.spec.Name)], ids[g.spec.ID] = true, true, true
	}
	var out []GroupConfig
	for _, gc := range configured {
		if !names[gc.Name] && !ids[gc.ID] {
			out = append(out, gc)
		}
	}
	return out
}

// newEpoch returns a random nonzero epoch.
func newEpoch() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if e := binary.LittleEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}

// Join proposes that m join group id, with the leader's clock as its join
// time (but never before the latest message the leader stamped in the
// group: a leader whose clock is behind the one before it stamps messages
// just after that one's, and dates joins so too), and returns once the
// cell decided: already is set if m was a member (renamed, if its name
// differs). Errors: as Send's, and ErrFull.
func (n *Node) Join(ctx context.Context, id wire.UUID, fp wire.Fingerprint, name string) (already bool, err error) {
	joined := n.cfg.Now().UnixNano()
	if term, err := n.leading(); err == nil {
		if g := n.fsm.group(id); g != nil {
			joined = max(joined, g.latestStamp(term))
		}
	}
	m := Member{Fingerprint: fp, Name: name, Joined: joined}
	resp, err := n.propose(ctx, "join", func() []byte { return encodeJoin(nil, id, m, n.cfg.MaxMembers) })
	if err != nil {
		return false, err
	}
	r, _ := resp.(joinResult)
	if r.full {
		// Committed, and applied as a refusal on every replica alike.
		return false, unchanged(fmt.Errorf("join: %w: %d members", ErrFull, n.cfg.MaxMembers))
	}
	return r.already, nil
}

// Leave proposes that fp leave group id; was says it was a member.
// Errors: as Send's.
func (n *Node) Leave(ctx context.Context, id wire.UUID, fp wire.Fingerprint) (was bool, err error) {
	resp, err := n.propose(ctx, "leave", func() []byte { return encodeLeave(nil, id, fp) })
	if err != nil {
		return false, err
	}
	r, _ := resp.(leaveResult)
	return r.was, nil
}

// propose applies one command that needs no stamping and returns its
// result.
func (n *Node) propose(ctx context.Context, op string, cmd func() []byte) (any, error) {
	if _, err := n.leading(); err != nil {
		return nil, unchanged(err)
	}
	f, err := n.apply(cmd())
	if err != nil {
		return nil, unchanged(err) // closing: raft was not handed it
	}
	done := make(chan struct{})
	var resp any
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(done)
		err = n.answer(f)
		if err == nil {
			resp = f.Response()
			if rerr, ok := resp.(error); ok {
				err = rerr
			}
		}
		if untaken(err) {
			err = unchanged(proposeError(op, err))
		} else {
			err = proposeError(op, err)
		}
	}()
	wait := time.NewTimer(n.cfg.CommitWait)
	defer wait.Stop()
	select {
	case <-done:
		return resp, err
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w: %v", op, ErrUnavailable, context.Cause(ctx))
	case <-wait.C:
		return nil, fmt.Errorf("%s: %w: the cell did not commit it within %v; its outcome is unknown", op, ErrUnavailable, n.cfg.CommitWait)
	}
}

// Handover hands the cell's leadership to another voter if this member
// leads (raft's leadership transfer: the most up-to-date follower is
// brought level and told to stand at once, without waiting out its
// heartbeat timeout), and waits until it has, or raft gave up (about an
// ElectionTimeout). A daemon that stops on purpose calls it before it
// stops serving: its sends are then refused naming the new leader, and
// the cell's pause is a transfer's, not the heartbeat timeout and
// election that a leader that vanished costs (in internal/jepsen's
// rolling restarts, a leader stopped with SIGTERM paused sends for
// 0.5-2.4 s without it). Once raft has handed over, it waits until this
// member knows the next leader, from its first AppendEntries, or ctx
// ends: raft's transfer ends as this member steps down, before the next
// one is elected, and sends refused until then would name no leader. The
// election takes a round trip on a quiet host, and may outlast an
// ElectionTimeout on a loaded one (400 ms at load 13), which was all it
// waited until session 12: the caller's ctx bounds the wait instead, and
// also follows a transfer raft gave up on (it waits an ElectionTimeout for
// this member to step down), whose member may still be elected; if this
// member still leads once that member's TimeoutNow and an election had
// time to come, none is coming, and it transfers again. It returns nil if
// this member does not lead (or is not started, or closed), or handed
// over, else raft's error: the caller stops anyway, and the cell elects as
// it would.
func (n *Node) Handover(ctx context.Context) error {
	n.mu.Lock()
	started, closed := n.started, n.closed
	n.mu.Unlock()
	if !started || closed || n.raft.State() != raft.Leader {
		return nil
	}
	for again := false; ; again = true {
		term := n.raft.CurrentTerm()
		err := n.transferWithin(ctx, nil)
		if err == nil {
			leader, ok := n.nextLeaderAfter(ctx, term)
			if ok {
				n.cfg.Logger.Info("cell: handed the leadership over", "to", leader.String())
				return nil
			}
			if !n.leadsAfter(term) {
				n.cfg.Logger.Info("cell: handed the leadership over", "to", "not known yet") // internal/jepsen matches the message
				return nil
			}
			// Elected again: raft answers a transfer nil also when this
			// member lost its lease during it (it stepped down), and the
			// cell may then elect this member again. It waited for
			// another leader while it led, until ctx ended, and answered
			// that none was known (session 23:
			// TestRestartCatchesUpFromConfiguration at load 34, its
			// removal of the leader failed so for 30 s).
			if ctx.Err() != nil {
				n.cfg.Logger.Warn("cell: could not hand the leadership over before stopping", "err", "elected again")
				return fmt.Errorf("cell: hand over the leadership: %w: this member lost its lease during the transfer, and was elected again", ErrUnavailable)
			}
			n.cfg.Logger.Info("cell: elected again while handing the leadership over; handing it over again", "term", n.raft.CurrentTerm())
			continue
		}
		if !mayStandYet(err, again) {
			n.cfg.Logger.Warn("cell: could not hand the leadership over before stopping", "err", err)
			return fmt.Errorf("cell: hand over the leadership: %w", err)
		}
		// Raft gives up at an ElectionTimeout if this member has not
		// stepped down by then, though the member it told to stand may
		// still be elected: on a loaded host, as the election after it
		// may outlast one (above). That one is waited for too, for as
		// long as its TimeoutNow may take (transferWait) and an election
		// after it.
		bound := time.Duration(n.net.transferWait.Load()) + 2*n.raft.ReloadableConfig().ElectionTimeout
		if errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			// The last transfer's TimeoutNow has not returned (at most
			// transferWait after it began): asked again soon.
			bound = n.cfg.HeartbeatTimeout
		}
		wait, cancel := context.WithTimeout(ctx, bound)
		leader, ok := n.nextLeaderAfter(wait, term)
		cancel()
		if !ok && n.raft.State() != raft.Leader {
			// This member stepped down since: another stood (the one
			// told to, most often) and the cell moves on, its leader not
			// known here yet, as when raft's transfer ends in time with
			// none known (above).
			leader, ok = n.nextLeader(ctx)
		}
		if ok {
			n.cfg.Logger.Info("cell: handed the leadership over", "to", leader.String(), "after", err)
			return nil
		}
		if n.raft.State() != raft.Leader {
			// Until session 16 this was raft's error: huddle cell remove
			// of the leader failed with "leadership transfer timeout" on
			// a loaded host though the leadership had passed.
			n.cfg.Logger.Info("cell: handed the leadership over", "to", "not known yet", "after", err) // internal/jepsen matches the message
			return nil
		}
		if ctx.Err() != nil {
			n.cfg.Logger.Warn("cell: could not hand the leadership over before stopping", "err", err)
			return fmt.Errorf("cell: hand over the leadership: %w", err)
		}
		// Still leading, with no election since: the member told to
		// stand never was. Raft's TimeoutNow never reached it (raft
		// sends it only once the member is brought level, and a
		// catch-up or a dial that outlasted the give-up sends none), and
		// this member waited for an election that was not coming until
		// ctx ended (session 23: TestHandoverSlowTransfer at load 34,
		// and a daemon stopping named no leader). It is told again.
		n.cfg.Logger.Info("cell: the member told to take the leadership over did not stand; handing it over again", "after", err)
	}
}

// mayStandYet reports whether err, of a leadership transfer, leaves the
// member told to stand able to be elected still: raft gave the transfer
// up (raftTransferTimeout), or its TimeoutNow failed, which may have
// reached the member all the same (its bound, transferWait, passed first:
// an ElectionTimeout raised between its start and raft's give-up). Again
// (a transfer after one that did not end),
// also no voter current enough (transferable refuses the member raft
// gave a transfer up to until it is level) or raft's transfer still in
// progress (its TimeoutNow not returned): it is waited for again.
func mayStandYet(err error, again bool) bool {
	switch {
	case strings.Contains(err.Error(), raftTransferTimeout), strings.Contains(err.Error(), raftTimeoutNowFailed):
		return true
	case again:
		return errors.Is(err, errNoCurrentVoter) || errors.Is(err, raft.ErrLeadershipTransferInProgress)
	}
	return false
}

// raftTimeoutNowFailed is how raft (v1.7.2, leadershipTransfer) says the
// TimeoutNow of a transfer returned an error.
const raftTimeoutNowFailed = "failed to make TimeoutNow RPC"

// transfer hands the leadership over (raft's leadership transfer) to the
// server to, or, if nil, to the most up-to-date voter, and waits for
// raft's answer; only to a voter whose replication is current
// (transferable: raft's transfer to another wedged the leader). Errors:
// raft's, errNoCurrentVoter (wrapped), ErrClosed (wrapped) if the node
// closes first.
func (n *Node) transfer(to *raft.Server) error { return n.transferWithin(context.Background(), to) }

// transferWithin is transfer, which stops waiting for raft's answer once
// ctx ends (ErrUnavailable, wrapped). Raft queues a transfer at once
// (or refuses it), but only its main loop starts it and answers it: a
// loop blocked behind a state machine that hangs (its disk) never does,
// and Handover, which the daemon's shutdown calls first, waited for it
// for ever until session 19 (TestHandoverBoundedOnWedgedLeader).
func (n *Node) transferWithin(ctx context.Context, to *raft.Server) error {
	if n.cfg.transferFault != nil {
		if err := n.cfg.transferFault(); err != nil {
			return err
		}
	}
	term := n.raft.CurrentTerm()
	s, err := n.transferable(to)
	if err != nil {
		return err
	}
	f, err := hand(n, func() raft.Future { return n.raft.LeadershipTransferToServer(s.ID, s.Address) })
	if err != nil {
		return err
	}
	err = n.answerOr(ctx.Done(), f)
	if err == errStopped {
		return fmt.Errorf("%w: raft has not started the transfer: %v", ErrUnavailable, context.Cause(ctx))
	}
	if err != nil && strings.Contains(err.Error(), raftTransferTimeout) {
		n.net.replicationTo(s.ID).givenUp(term) // transferable.go
	}
	return err
}

// raftTransferTimeout is how raft (v1.7.2) says a leadership transfer
// did not end within an ElectionTimeout: this member still led then. Raft
// has no sentinel for it.
const raftTransferTimeout = "leadership transfer timeout"

// nextLeader waits until this node knows of a leader other than itself,
// or ctx ends, or the node closes, and returns it.
func (n *Node) nextLeader(ctx context.Context) (Peer, bool) {
	return n.nextLeaderAfter(ctx, math.MaxUint64)
}

// nextLeaderAfter is nextLeader, which also ends (false) once this member
// leads in a term after term: elected again, the leader it hands over to
// is not coming.
func (n *Node) nextLeaderAfter(ctx context.Context, term uint64) (Peer, bool) {
	tick := time.NewTicker(n.cfg.HeartbeatTimeout / 20)
	defer tick.Stop()
	for {
		if leader, ok := n.Leader(); ok && leader != n.self {
			return leader, true
		}
		if n.leadsAfter(term) {
			return Peer{}, false
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return Peer{}, false
		case <-n.closing:
			return Peer{}, false
		}
	}
}

// leadsAfter reports whether this member leads in a term after term.
func (n *Node) leadsAfter(term uint64) bool {
	return n.raft.State() == raft.Leader && n.raft.CurrentTerm() > term
}

// Abort begins Close without waiting for the node's lock: what Start waits
// for (a restore's catch-up from peers) ends, and a Start that has not
// begun refuses. A Start stuck in a disk that does not answer (opening
// raft's log, or a group log its snapshot holds) holds that lock, and
// Close waits for it; Abort does not. Close must still be called.
func (n *Node) Abort() { n.closeOnce.Do(func() { close(n.closing) }) }

// Close leaves the cell's raft (the others go on: a leader closing hands
// over to the next election; see Handover), closes the transport and raft's state, and
// waits for every goroutine. It is safe to call more than once.
func (n *Node) Close() error {
	// Before the lock, which Start holds while raft restores; the
	// catch-up of a restore at start (fsm.finishRestore), which Start
	// waits for, ends on it too.
	n.closeOnce.Do(func() { close(n.closing) })
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.wg.Wait()
		n.timers.close()
		return nil
	}
	n.closed = true
	started := n.started
	n.mu.Unlock()
	n.settle()
	// Dials to members that are down, and RPCs to members gone silent,
	// would hold raft's shutdown for their timeouts: they fail at once
	// from now on.
	n.tr.stopOutgoing()
	var err error
	if started {
		err = n.stopRaft()
	}
	n.tr.Close()
	n.wg.Wait()
	// Every proposal is decided by now (raft answered each entry as it
	// shut down, or answer gave up on it); a CommitWait timer that fired
	// meanwhile may still be answering its senders.
	n.timers.close()
	if started && err == nil {
		n.closeStores()
	}
	if err == nil {
		close(n.stopped)
	}
	return err
}

// Stopped returns a channel closed once the node writes nothing more in
// its directory: raft has shut down and its log is closed. Close, returning
// nil, closes it first; after Close returned ErrStuck it closes once raft
// stops, if ever (its state machine's append, or its log's write or fsync,
// returns). A daemon keeps its state directory locked until then. It is
// never closed before Close is called.
func (n *Node) Stopped() <-chan struct{} { return n.stopped }

// shutdownWait bounds how long Close waits for raft to shut down, and for
// syncLoop's fsync of raft's log. Raft's shutdown (v1.7.2, and v1.8.0)
// waits for its goroutines, which it never interrupts: its state
// machine's, in an append to a group log, and its main loop's, in a write
// to its own log, return when the disk does, as does an fsync, for ever
// on a disk that hangs (an NFS mount gone, a disk retrying for minutes,
// one that takes writes into the page cache and never flushes them), and
// Close waited with them, past the daemon's own stop (systemd's
// TimeoutStopSec, 15 s), until session 19. A healthy disk returns within
// a second under load.
const shutdownWait = 3 * time.Second

// stopRaft shuts raft down and waits for it and for syncLoop, at most
// shutdownWait, then closes raft's transport (Close closes its stores
// after its goroutines); if either is still stuck then, it leaves both to
// a goroutine that closes them once raft and the fsync end, if ever, and
// returns ErrStuck (wrapped): what raft holds is left as a crash (kill -9)
// leaves it, which raft's log and the group logs recover from at the next
// start (every append reached the operating system before it was
// acknowledged). Raft's goroutines hold the node meanwhile.
func (n *Node) stopRaft() error {
	f := n.raft.Shutdown()
	stopped := make(chan struct{})
	go func() {
		f.Error()
		if n.synced != nil {
			<-n.synced // the fsync of raft's log in progress, if any
		}
		close(stopped)
	}()
	wait := time.NewTimer(or(n.cfg.shutdownWait, shutdownWait))
	defer wait.Stop()
	select {
	case <-stopped:
		close(n.down)
		n.net.Close()
		return nil
	case <-wait.C:
	}
	close(n.down) // raft's answers are waited for no more
	go func() {
		<-stopped
		n.net.Close()
		n.closeStores()
		close(n.stopped)
	}()
	n.cfg.Logger.Error("cell: raft did not shut down in time (its state machine, or its log's write or fsync, has not returned; the daemon says which if it can): stopping without it; what it holds is recovered at the next start, as after a crash",
		"waited", or(n.cfg.shutdownWait, shutdownWait))
	return fmt.Errorf("%w: waited %v", ErrStuck, or(n.cfg.shutdownWait, shutdownWait))
}

// apply hands cmd to raft, unless the node is closing (ErrClosed), as
// hand does (without its closure: a send's path). The caller takes raft's
// answer with answer.
//
// Raft takes it within CommitWait or refuses it (raft.ErrEnqueueTimeout:
// never in the log, proposeError's ErrUnavailable): raft's queue is
// full while its main loop is blocked (behind a state machine whose
// disk hangs, once fsmQueue batches wait for it), and a send waited there,
// past the CommitWait its caller was promised, for as long as that
// lasted. It waited under the gate until session 19, and Close, which
// shuts the gate before it shuts raft down (and raft's shutdown is the
// one thing that ends such a wait), waited for it in turn: for ever on a
// disk that hangs (TestCloseWhileSendWaitsForRaftQueue). Counted under the
// gate and handed over outside it, as hand does, it is answered
// ErrRaftShutdown once Close gave up settling.
func (n *Node) apply(cmd []byte) (raft.ApplyFuture, error) {
	n.gate.RLock()
	if n.gated {
		n.gate.RUnlock()
		return nil, ErrClosed
	}
	n.futures.Add(1) // under the gate: settle waits for it
	n.gate.RUnlock()
	return n.raft.Apply(cmd, n.cfg.CommitWait), nil
}

// applyWait applies cmd and waits for raft's verdict (answer).
func (n *Node) applyWait(cmd []byte) error {
	f, err := n.apply(cmd)
	if err != nil {
		return err
	}
	return n.answer(f)
}

// barrier waits until raft applied every entry before it.
func (n *Node) barrier() error {
	f, err := hand(n, func() raft.Future { return n.raft.Barrier(n.cfg.RPCTimeout) })
	if err != nil {
		return err
	}
	return n.answer(f)
}

// hand hands raft a request (ask, which returns raft's future for it),
// unless the node is closing (ErrClosed), and counts it as not answered
// yet: the caller takes raft's answer with answer. Close, which closes the
// gate, waits for the count, so for ask too, which may wait for raft to
// take the request (its enqueue timeout: a change's is the request's
// deadline), but not under the gate: a change asked with a distant
// deadline holds Close back for settleWait at most, and raft answers it
// ErrRaftShutdown as it shuts down.
func hand[F raft.Future](n *Node, ask func() F) (F, error) {
	n.gate.RLock()
	if n.gated {
		n.gate.RUnlock()
		var none F
		return none, ErrClosed
	}
	n.futures.Add(1) // under the gate: settle waits for it
	n.gate.RUnlock()
	return ask(), nil
}

// answer waits for raft's answer to f, a request handed over by hand,
// (or by apply) and returns it, or ErrClosed (wrapped) if raft shut down
// without answering it. Close lets raft answer every request handed over
// before it shuts raft down (settle), for at most settleWait: one raft
// still held then, and dropped, is left to a goroutine that waits for it
// for as long as raft keeps it (Close logs how many): raft (v1.7.2, and
// v1.8.0) never answers a request it dropped (its futures' Error has no
// way out but raft's answer: hashicorp/raft#498), and that goroutine then
// waits for ever. It holds the request and the count only, not n: a
// closed node's raft, state machine and stores are not kept alive by it.
// A send's wait (await) takes its answer here too, since session 16.
func (n *Node) answer(f raft.Future) error { return n.answerOr(nil, f) }

// answerOr is answer, which also ends, with errStopped, once stop is
// closed (nil: never): the request stays counted until raft answers it.
func (n *Node) answerOr(stop <-chan struct{}, f raft.Future) error {
	done := make(chan error, 1)
	futures := n.futures
	go func() {
		// The answer is given before it is counted: Close shuts raft down
		// (closing down) once the count is zero, and the other order left
		// a moment in which an answered request was taken for ErrClosed.
		done <- f.Error()
		futures.Add(-1)
	}()
	select {
	case err := <-done:
		return err
	case <-stop:
		return errStopped
	case <-n.down:
		select {
		case err := <-done: // answered as raft shut down
			return err
		default:
			return fmt.Errorf("%w: raft shut down without answering", ErrClosed)
		}
	}
}

// settleWait bounds how long Close waits for raft to answer the requests
// it was handed: a leader that lost its majority answers them when it
// steps down, within its lease; a leadership transfer ends within an
// ElectionTimeout. settleStall ends the wait sooner once raft has neither
// answered one nor applied an entry for that long: raft whose loop is
// blocked (behind a state machine on a disk that hangs) answers nothing
// until it shuts down, and Close waited the whole settleWait for it, which
// with raft's shutdown and the daemon's own stop outlasted systemd's
// TimeoutStopSec (15 s).
const (
	settleWait  = 10 * time.Second
	settleStall = 2 * time.Second
)

// settle closes the gate and waits (at most settleWait, or settleStall
// without progress) until raft has answered every request it was
// handed, so that none is left in its buffers, or on its state machine's
// queue, when it shuts down.
func (n *Node) settle() {
	n.gate.Lock()
	n.gated = true
	n.gate.Unlock()
	start := time.Now()
	deadline := start.Add(or(n.cfg.settleWait, settleWait))
	stall := or(n.cfg.settleStall, settleStall)
	var applied uint64
	k, moved := n.futures.Load(), start
	for k > 0 {
		now := time.Now()
		if r := n.running(); r != nil && r.AppliedIndex() != applied {
			applied, moved = r.AppliedIndex(), now
		}
		if now.After(deadline) || now.Sub(moved) >= stall {
			break
		}
		time.Sleep(2 * time.Millisecond)
		if next := n.futures.Load(); next != k {
			k, moved = next, time.Now()
		}
	}
	if k > 0 {
		n.cfg.Logger.Warn("cell: closing with raft requests unanswered", "requests", k, "waited", time.Since(start).Round(time.Millisecond))
	}
}

// syncLoop fsyncs raft's state every Fsync.Interval, when appends are
// only written to the operating system (Fsync.Always unset), until the
// node closes; it closes synced as it returns.
func (n *Node) syncLoop() {
	defer close(n.synced)
	n.loop(or(n.cfg.Fsync.Interval, store.DefaultFsyncInterval), nil, func() {
		if hook := n.syncHook.Load(); hook != nil {
			(*hook)()
		}
		if err := n.log.Sync(); err != nil {
			n.cfg.Logger.Error("cell: cannot sync raft's log", "err", err)
		}
	})
}

// every calls f every d, in the calling goroutine (one of n.wg's, which it
// marks done), until the node closes.
func (n *Node) every(d time.Duration, f func()) { n.everyOrWoken(d, nil, f) }

// everyOrWoken calls f as every does, and also after each wake-up on wake
// (nil: none). (promoteLoop has a loop of its own: it waits a heartbeat
// interval after a wake-up, and asks again sooner than d after some
// rounds.)
func (n *Node) everyOrWoken(d time.Duration, wake <-chan struct{}, f func()) {
	defer n.wg.Done()
	n.loop(d, wake, f)
}

// loop is everyOrWoken's loop, in a goroutine that is not one of n.wg's.
func (n *Node) loop(d time.Duration, wake <-chan struct{}, f func()) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-tick.C:
		case <-wake:
		}
		f()
	}
}
