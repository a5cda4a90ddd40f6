package groupd

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/metrics"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// CellConfig makes a group daemon a member of a cell: 3 or 5 daemons that
// host the same groups, replicated by one raft group (package cell). The
// zero value of each field but Peers means its default.
type CellConfig struct {
	// Peers are the cell's members, this daemon among them (its entry is
	// the address the others reach it at, on the daemon's fixed UDP
	// port): 3 or 5 to start a cell, every member started with the same
	// list. With Join, the members of the running cell and this daemon.
	Peers []cell.Peer
	// Join starts the daemon as a new member of a running cell: it waits
	// to be added (huddle cell add) and never starts a cell of its own.
	Join bool
	// Advertise is this daemon's address in the cell when Join is set
	// and Peers does not list its key. Default: the first of
	// Config.Advertise.
	Advertise string
	// Dir holds raft's state (its log, votes and snapshots). Default
	// StateDir/cell. With Storage.Memory, raft's state is kept in memory
	// too: a restarted member comes back empty and is brought up to date
	// by the others.
	Dir string
	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout,
	// SnapshotThreshold and SnapshotInterval tune raft (package cell's
	// defaults: 300 ms, 300 ms, HeartbeatTimeout, 4096 entries, 30 s;
	// TrailingLogs 4096 entries).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
}

// cellReadWait bounds how long a replica of a cell's group waits for its
// log to hold what a reader was acknowledged (Fetch.MinSeq: for the group
// itself too, on a member that has not yet applied it), or for a join the
// leader acknowledged to reach it, before answering unavailable.
const cellReadWait = 5 * time.Second

// cellRetry is the retry_after_ms of an operation a cell cannot decide now
// (an election, a lost majority).
const cellRetry = 200 * time.Millisecond

// handoverWait bounds how long a stopping leader that handed the
// leadership over waits to learn the next leader, whom its shutdown's
// refusals name (Node.Handover): an election takes a round trip on a
// quiet host, and took 400 ms at load 13 (session 11), longer than the
// ElectionTimeout it waited until session 12, and its clients then waited
// the refusals' retry_after_ms (1 s). A cell that elects nobody within it
// is left to elect once the daemon has stopped.
const handoverWait = 3 * time.Second

// cellGroup is what a group replicated by a cell adds to a hosted group.
type cellGroup struct {
	spec cell.GroupSpec
	node *cell.Node
	log  cell.Log
	// writing counts the state machine's writes to the cell's group logs
	// under way (cellHost.writing).
	writing *atomic.Int32
	host    *cellHost // the daemon's (serving)
}

// cellLog is a log a cell's group can be kept in: the daemon's Log, with
// what the cell's state machine needs.
type cellLog interface {
	Log
	cell.Log
}

// cellHost is the daemon as the cell's Host: it opens the groups the cell
// creates. Groups are added as the cell creates them (its state machine
// calls OpenGroup), so the hosted set changes while the daemon serves:
// handlers find them in groups, a copy-on-write map.
type cellHost struct {
	d *Daemon

	mu     sync.Mutex
	groups map[wire.UUID]*group
	added  chan struct{} // closed and replaced when a group is added
	// closed is set once the daemon took the groups to close them
	// (closing): OpenGroup opens none after.
	closed bool
	// opening is held by OpenGroup from its second check of closed until
	// it added its group or closed its log (opensEnded).
	opening sync.Mutex
	// checked and opened, if set (by tests), are called by OpenGroup once
	// it first checked closed, and once it opened a group's log, before
	// it adds the group.
	checked, opened func(spec cell.GroupSpec)
	// writing counts the group logs' opens, appends, resets and syncs
	// under way on raft's goroutines (OpenGroup, countingLog): a raft
	// that does not stop while one is under way waits on a group log's
	// disk, one that does not while none is waits on something else
	// (raftStuck says which).
	writing atomic.Int32
	// undialable holds the members at an address not to dial that
	// serving has logged, each once (guarded by mu).
	undialable map[cell.Peer]bool
}

func newCellHost(d *Daemon) *cellHost {
	return &cellHost{d: d, groups: make(map[wire.UUID]*group), added: make(chan struct{}), undialable: make(map[cell.Peer]bool)}
}

// OpenGroup opens (or creates) this daemon's replica of a group of the
// cell: its log under the cell's epoch and dedup window. It is called from
// raft's apply goroutine (and its restore), one group at a time. The log
// is opened without h.mu: reading a large log back takes a while, and
// every lookup of every group (handlers, through group) waited for it
// until session 17, where it now answers that this member has not yet
// applied the group, or waits for it (awaitGroup).
//
// Once the daemon took the groups to close them (closing) it opens none,
// and closes one it opened meanwhile: ErrClosed. Why: a raft whose
// shutdown the daemon did not wait for (its apply goroutine stuck in a
// disk that does not answer: cell.ErrStuck) goes on once the disk
// answers, and a group it then created, or restored, opened a log after
// the daemon had closed the others; nothing closed it (session 20's note).
// It checks again holding h.opening, and holds it while it creates or
// opens the group's files: the daemon waits for it (opensEnded) before
// it releases the state directory. An open that had passed the first
// check as the daemon closed created the group's files after the release
// until session 22, in a directory another daemon may have locked since.
//
// Its ErrClosed wraps cell.ErrClosed as well: the cell's state machine
// logs such a refusal as expected, not as a log it cannot open.
func (h *cellHost) OpenGroup(spec cell.GroupSpec) (cell.Replica, error) {
	h.mu.Lock()
	g, closed := h.groups[spec.ID], h.closed
	h.mu.Unlock()
	if g != nil {
		return cellReplica{g}, nil
	}
	if closed {
		return nil, errHostClosed(spec)
	}
	if h.checked != nil {
		h.checked(spec)
	}
	h.opening.Lock()
	defer h.opening.Unlock()
	h.mu.Lock()
	closed = h.closed
	h.mu.Unlock()
	if closed {
		return nil, errHostClosed(spec)
	}
	d := h.d
	retention := d.cfg.Retention
	retention.Epoch, retention.DedupWindow = spec.Epoch, spec.DedupWindow
	h.writing.Add(1)
	l, err := d.openLog(spec.ID, spec.Name, retention, true)
	h.writing.Add(-1)
	if err != nil {
		return nil, err
	}
	cl, ok := l.(cellLog)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("group %s: its log cannot be replicated", spec.Name)
	}
	if h.opened != nil {
		h.opened(spec)
	}
	// A cell keeps the name its group was created under, and one created
	// before the rules refused it (loadGroupIDs) is served, and
	// registered, under the name it shows as: registries refuse the other.
	g = newGroup(spec.ID, Spec{Name: wire.ShownName(spec.Name)}, l, d.cfg.StateDir, nil, newRateLimiter(d.cfg.SendRate, d.cfg.SendBurst), d.cfg.Now)
	g.cell = &cellGroup{spec: spec, node: d.node, log: cl, writing: &h.writing, host: h}
	g.changed = d.countsChanged
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		l.Close()
		return nil, errHostClosed(spec)
	}
	next := make(map[wire.UUID]*group, len(h.groups)+1)
	for id, o := range h.groups {
		next[id] = o
	}
	next[spec.ID] = g
	h.groups = next
	close(h.added)
	h.added = make(chan struct{})
	h.mu.Unlock()
	d.cfg.Logger.Info("hosting group", "group", spec.Name, "uuid", spec.ID, "epoch", spec.Epoch, "private", spec.Private, "members", g.memberCount(), "cell", true)
	return cellReplica{g}, nil
}

// errHostClosed is OpenGroup's refusal once the daemon is closing.
func errHostClosed(spec cell.GroupSpec) error {
	return fmt.Errorf("group %s: the daemon is closing: %w (%w)", spec.Name, ErrClosed, cell.ErrClosed)
}

// group returns the cell's group id, or nil.
func (h *cellHost) group(id wire.UUID) *group {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.groups[id]
}

// count returns how many of the cell's groups this daemon hosts so far.
func (h *cellHost) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.groups)
}

// next returns the channel closed when the next group is added.
func (h *cellHost) next() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.added
}

// byName returns the groups named names, one for each at most, and the
// channel closed when the next group is added. A group is named n if it
// was created as n, else if it shows as n (wire.ShownName: created before the
// rules refused its name, "team " for "team"), the first of those in the
// order of the names they were created under, as loadGroupIDs renames a
// groups.json entry: a cell of before session 23 may hold "team" and
// "team " both, and awaitCellGroups, finding two groups for one name,
// waited for ever.
func (h *cellHost) byName(names []string) (found []*group, added <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range names {
		var pick *group
		for _, g := range h.groups {
			switch created := g.cell.spec.Name; {
			case created == n:
				pick = g
			case g.name == n && (pick == nil || pick.cell.spec.Name != n && created < pick.cell.spec.Name):
				pick = g
			}
			if pick != nil && pick.cell.spec.Name == n {
				break
			}
		}
		if pick != nil {
			found = append(found, pick)
		}
	}
	return found, h.added
}

// closing returns every group of the cell this daemon hosts, for the
// daemon to close their logs, and has OpenGroup open none after.
func (h *cellHost) closing() []*group {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	gs := make([]*group, 0, len(h.groups))
	for _, g := range h.groups {
		gs = append(gs, g)
	}
	return gs
}

// raftStuck says what the cell's raft, which did not stop (cell.ErrStuck),
// waits on, as far as the daemon can tell: a write to one of its group
// logs (writing), or something else. Until session 22 the daemon said "a
// disk that does not answer?" whatever it was.
func (h *cellHost) raftStuck() string {
	if h.writing.Load() > 0 {
		return "the cell's raft did not stop: its state machine is in a group log's write that has not returned (a disk that does not answer)"
	}
	return "the cell's raft did not stop, in no group log's write: in its own log's write or fsync (its disk does not answer), or on a machine too loaded to run it"
}

// opensEnded returns once an OpenGroup under way as the daemon took the
// groups (closing) has ended: its group is among those closing returned,
// or its log closed. Any later one refuses before it creates anything. The
// daemon releases the state directory only after: an open stuck in the
// disk keeps it locked, as the daemon's other leftovers do.
func (h *cellHost) opensEnded() {
	h.opening.Lock()
	h.opening.Unlock()
}

// cellReplica is a hosted group as the cell's state machine applies to it.
// Membership lives in the cell's replicated state: the member files of a
// daemon's own groups are not used.
type cellReplica struct{ g *group }

// Log is the group's log as the cell's state machine appends to it: each
// append and reset counts as a change of the group's counts (group.changed).
func (r cellReplica) Log() cell.Log { return countingLog{r.g.cell.log, r.g, r.g.cell.writing} }

// countingLog is a cell group's log that tells its group when it grew or
// was reset, and counts its writes under way (cellHost.writing).
type countingLog struct {
	cell.Log
	g       *group
	writing *atomic.Int32
}

func (l countingLog) Append(batch []store.Entry) error {
	l.writing.Add(1)
	err := l.Log.Append(batch)
	l.writing.Add(-1)
	if err == nil {
		l.g.changed()
	}
	return err
}

func (l countingLog) Reset(seq uint64, t int64) error {
	l.writing.Add(1)
	err := l.Log.Reset(seq, t)
	l.writing.Add(-1)
	if err == nil {
		l.g.changed()
	}
	return err
}

// Sync is a snapshot's, on raft's snapshot goroutine.
func (l countingLog) Sync() error {
	l.writing.Add(1)
	defer l.writing.Add(-1)
	return l.Log.Sync()
}

func (r cellReplica) Joined(m cell.Member) {
	g := r.g
	defer g.changed()
	g.mu.Lock()
	defer g.mu.Unlock()
	name := wire.ShownName(m.Name) // one joined before the rules refused it: as a members file's (loadMembers)
	if o := g.members[m.Fingerprint]; o != nil {
		o.name = name
		return
	}
	g.members[m.Fingerprint] = &member{name: name, joined: m.Joined, left: make(chan struct{})}
}

func (r cellReplica) Left(fp wire.Fingerprint) {
	g := r.g
	defer g.changed()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.leaveLocked(fp)
}

func (r cellReplica) SetMembers(ms []cell.Member) {
	g := r.g
	defer g.changed()
	g.mu.Lock()
	defer g.mu.Unlock()
	keep := make(map[wire.Fingerprint]bool, len(ms))
	for _, m := range ms {
		keep[m.Fingerprint] = true
		if o := g.members[m.Fingerprint]; o != nil {
			o.name = m.Name
			continue
		}
		g.members[m.Fingerprint] = &member{name: m.Name, joined: m.Joined, left: make(chan struct{})}
	}
	for fp := range g.members {
		if !keep[fp] {
			g.leaveLocked(fp)
		}
	}
}

// cellSecretOK compares a join's secret with a private cell group's, by
// its SHA-256 (the cell keeps no secret), in constant time.
func (c *cellGroup) secretOK(s []byte) bool {
	sum := sha256.Sum256(s)
	return subtle.ConstantTimeCompare(sum[:], c.spec.SecretSHA256[:]) == 1
}

// cellKeyListed refuses, before anything is written, a member of a cell
// whose state directory holds no key yet: a key created now could not be
// among the peers the operator listed, and newCellNode would refuse it
// after the directory and the key had been made. A daemon joining a
// running cell (Join) with an address of its own to give may start with a
// new key: it says FINGERPRINT@ADDR to add it by.
func (d *Daemon) cellKeyListed() error {
	cc := d.cfg.Cell
	if cc == nil || d.id != nil {
		return nil
	}
	if cc.Join && (cc.Advertise != "" || len(d.cfg.Advertise) > 0) {
		return nil
	}
	key := filepath.Join(d.cfg.StateDir, identity.KeyFile)
	if _, err := os.Stat(key); !errors.Is(err, fs.ErrNotExist) {
		return nil // a key, or an error the key's loading reports
	}
	return fmt.Errorf("%w: cell: this daemon has no key yet (no %s), so it is not among the cell's peers: create it with 'HUDDLE_HOME=%s huddle id' and list the fingerprint that prints, at this daemon's address, in every member's --cell-peer",
		ErrInvalidConfig, key, d.cfg.StateDir)
}

// newCellNode makes the daemon's cell member, once its key and socket are
// known (Listen). d.mu is held.
func (d *Daemon) newCellNode() error {
	cc := d.cfg.Cell
	fp := d.id.Fingerprint()
	advertise := cc.Advertise
	for _, p := range cc.Peers {
		if p.Fingerprint == fp {
			advertise = p.Addr
		}
	}
	if advertise == "" && len(d.cfg.Advertise) > 0 {
		advertise = d.cfg.Advertise[0]
	}
	if advertise == "" {
		return fmt.Errorf("%w: cell: this daemon's key %s is not among the cell's peers (add FINGERPRINT@HOST:PORT for it)", ErrInvalidConfig, fp)
	}
	ids, err := loadGroupIDs(d.cfg.StateDir, groupNames(d.cfg.Groups), d.cfg.Logger)
	if err != nil {
		return err
	}
	var groups []cell.GroupConfig
	for _, g := range d.cfg.Groups {
		groups = append(groups, cell.GroupConfig{ID: ids[g.Name], Name: g.Name, Secret: g.Secret})
	}
	dir := orDefault(cc.Dir, filepath.Join(d.cfg.StateDir, "cell"))
	d.host = newCellHost(d)
	node, err := cell.New(cell.Config{
		Identity:           d.id,
		QUIC:               d.srv.Transport(),
		Advertise:          advertise,
		Peers:              cc.Peers,
		Join:               cc.Join,
		Dir:                dir,
		Fsync:              d.cfg.Storage.Fsync,
		Host:               d.host,
		Groups:             groups,
		DedupWindow:        d.cfg.Retention.DedupWindow,
		MaxMembers:         d.cfg.MaxMembers,
		HeartbeatTimeout:   cc.HeartbeatTimeout,
		ElectionTimeout:    cc.ElectionTimeout,
		LeaderLeaseTimeout: cc.LeaderLeaseTimeout,
		SnapshotThreshold:  cc.SnapshotThreshold,
		SnapshotInterval:   cc.SnapshotInterval,
		TrailingLogs:       cc.TrailingLogs,
		LeaderChanged:      d.leaderChanged,
		MembersChanged:     d.membersChanged,
		Logger:             d.cfg.Logger.With("component", "cell"),
		Now:                d.cfg.Now,
	})
	if err != nil {
		return err
	}
	d.node = node
	return nil
}

// leaderChanged registers the cell's groups again at once when this
// member learns of a new leader, so that registries list it within a round
// trip of its election instead of at the next renewal (a third of the
// lease's TTL): the new leader registers itself as leading, and the
// others, the member that stopped leading among them, name it too. While
// no leader is known (an election) nothing is registered: the listing
// keeps the last leader until a member knows the next.
func (d *Daemon) leaderChanged(_ cell.Peer, ok bool) {
	if rs := d.regs.Load(); rs != nil && ok {
		rs.refreshNow()
	}
}

// membersChanged registers the cell's groups again at once when a member
// was added or removed: the listing's replicas follow the cell's
// configuration, rather than lag until the next renewal.
// It also wakes the watches of the cell's groups: on a daemon removed
// from the cell they end, so that their clients go on at the members that
// serve the groups.
func (d *Daemon) membersChanged([]cell.Peer) {
	d.cellMu.Lock()
	close(d.cellChanged)
	d.cellChanged = make(chan struct{})
	d.cellMu.Unlock()
	if rs := d.regs.Load(); rs != nil {
		rs.refreshNow()
	}
}

// membership returns the channel closed at the cell's next change of
// configuration.
func (d *Daemon) membership() <-chan struct{} {
	d.cellMu.Lock()
	defer d.cellMu.Unlock()
	return d.cellChanged
}

func groupNames(specs []Spec) []string {
	names := make([]string, len(specs))
	for i, g := range specs {
		names[i] = g.Name
	}
	return names
}

// cellHook routes the connections of a cell's members (ALPN cell.ALPN) on
// the daemon's listener to the node's transport.
type cellHook struct {
	d *Daemon
}

func (h cellHook) node() *cell.Node {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	return h.d.node
}

// Verify is the TLS check of a connection under the cell's ALPN: only the
// keys of the cell's members.
func (h cellHook) Verify(cs tls.ConnectionState) error {
	n := h.node()
	if n == nil {
		return fmt.Errorf("cell: %w", ErrClosed)
	}
	return n.Transport().VerifyPeer(cs)
}

func (h cellHook) Handle(conn *quic.Conn) {
	if n := h.node(); n != nil {
		n.Transport().Handle(conn)
		return
	}
	conn.CloseWithError(0, "not ready")
}

// awaitCellGroups waits until the cell holds every configured group (the
// first leader creates them) and the node serves them (cell.Node.Served: a
// started member, once a majority of the cell's members list it), then
// makes them the daemon's groups: the ones it registers, reports and
// expires. It looks first once the node has started (a restarted member's
// snapshot may hold them already), and says if it must wait
// (cellWaiting). It returns false if the daemon closed first.
func (d *Daemon) awaitCellGroups() bool {
	select {
	case <-d.cellStarted:
	case <-d.life.Ctx().Done():
		return false
	}
	names := groupNames(d.cfg.Groups)
	for first := true; ; first = false {
		found, added := d.host.byName(names)
		if len(found) == len(names) {
			select {
			case <-d.node.Served():
			default:
				if first {
					close(d.cellWaiting)
				}
				select {
				case <-d.node.Served():
				case <-d.life.Ctx().Done():
					return false
				}
			}
			byID := make(map[wire.UUID]*group, len(found))
			for _, g := range found {
				byID[g.id] = g
			}
			d.mu.Lock()
			d.groups, d.order = byID, found
			d.mu.Unlock()
			close(d.cellReady)
			return true
		}
		if first {
			close(d.cellWaiting)
		}
		select {
		case <-added:
		case <-d.life.Ctx().Done():
			return false
		}
	}
}

// replicas returns the cell's members as the wire lists them, the leader
// marked.
func replicas(st cell.Status) []wire.Replica {
	rs := make([]wire.Replica, 0, len(st.Members))
	for _, m := range st.Members {
		rs = append(rs, wire.Replica{Addr: m.Addr, Fingerprint: m.Fingerprint, Leader: m.Peer == st.Leader, CatchingUp: !m.Voter})
	}
	slices.SortFunc(rs, func(a, b wire.Replica) int { return slices.Compare(a.Fingerprint[:], b.Fingerprint[:]) })
	return rs
}

// keep the store import for the interface assertion below.
var _ cell.Log = (*store.DiskLog)(nil)

// validate checks what can be checked before the daemon's key is known;
// the cell checks the rest when the daemon listens.
func (c *CellConfig) validate() error {
	switch {
	case !c.Join && len(c.Peers) != 3 && len(c.Peers) != 5:
		return fmt.Errorf("%w: a cell starts with 3 or 5 members, not %d (or join a running one)", ErrInvalidConfig, len(c.Peers))
	case c.HeartbeatTimeout < 0 || c.ElectionTimeout < 0 || c.LeaderLeaseTimeout < 0:
		return fmt.Errorf("%w: cell: negative timeout", ErrInvalidConfig)
	}
	return nil
}

// afterCellGroups returns loop, run once the cell holds the configured
// groups when the daemon is a member of a cell.
func (d *Daemon) afterCellGroups(loop func()) func() {
	if d.cfg.Cell == nil {
		return loop
	}
	return func() {
		select {
		case <-d.cellReady:
			loop()
		case <-d.life.Ctx().Done():
		}
	}
}

// CellGroups returns a channel closed once the daemon hosts its configured
// groups: at once for a daemon of its own (after Listen), and for a member
// of a cell once the cell created them (its first leader does); Groups
// lists them from then on. It is never closed for a member of a cell that
// closes first.
func (d *Daemon) CellGroups() <-chan struct{} {
	if d.cfg.Cell == nil {
		done := make(chan struct{})
		close(done)
		return done
	}
	return d.cellReady
}

// CellWaiting returns a channel closed when a member of a cell, its node
// started, has found that the cell does not hold its configured groups yet
// and waits for a leader: a new cell's first leader creates them; a
// restarted member (CellRestarted) applies them once a leader has told it
// how far the cell's log is committed. It is never closed for a member
// whose state held the groups as it started (CellGroups is closed at once
// then), nor for a daemon that is no member of a cell.
func (d *Daemon) CellWaiting() <-chan struct{} { return d.cellWaiting }

// CellRestarted reports whether the daemon is a member of a cell that
// started from the raft state it had kept (a restart); it is false until
// the node has started (CellWaiting or CellGroups).
func (d *Daemon) CellRestarted() bool { return d.node != nil && d.node.Restarted() }

// replicaList returns the cell's members for Info, or nil for a daemon
// that is no member of a cell.
func (d *Daemon) replicaList() []wire.Replica {
	if d.node == nil {
		return nil
	}
	rs := d.host.serving(replicas(d.node.Status()))
	if !d.node.Serving() {
		// Not this daemon, which does not serve (cell.Node.Serving),
		// though its configuration lists it as a voter: a member just
		// started, or one removed while it was down that has not
		// concluded so yet.
		self := d.node.Self().Fingerprint
		rs = slices.DeleteFunc(rs, func(r wire.Replica) bool { return r.Fingerprint == self })
	}
	return rs
}

// serving returns the replicas that serve the cell's groups, as info,
// refusals (key 6) and registrations list them: not those still catching
// up, nor those at an address a peer would refuse (wire.Dialable), which
// a configuration made before session 20 ("box:http") or 22
// ("0.0.0.0:7001", "224.0.0.251:5353") may hold: a client refuses the
// whole info or refusal naming one, and a registry the whole
// registration, and the cell's groups dropped out of listings. Each such
// member is logged once, with how to move it.
func (h *cellHost) serving(rs []wire.Replica) []wire.Replica {
	return slices.DeleteFunc(rs, func(r wire.Replica) bool {
		if r.CatchingUp {
			return true
		}
		if wire.Dialable(r.Addr) {
			return false
		}
		h.mu.Lock()
		said := h.undialable[cell.Peer{Addr: r.Addr, Fingerprint: r.Fingerprint}]
		h.undialable[cell.Peer{Addr: r.Addr, Fingerprint: r.Fingerprint}] = true
		h.mu.Unlock()
		if !said {
			h.d.cfg.Logger.Warn("a member of the cell is configured at an address peers do not dial, so info, refusals and registrations leave it out",
				"member", r.Fingerprint.String(), "addr", r.Addr, "why", wire.CheckAddr(r.Addr).Error(),
				"move", fmt.Sprintf("on a member's host: huddle cell add --server MEMBER %s@HOST:PORT", r.Fingerprint))
		}
		return true
	})
}

// leaderHint is l as a refusal names the leader (key 7), or nil if l's
// address is not one to dial (wire.Dialable): a client refuses the whole
// refusal naming one, and asks the members it knows instead of none.
func leaderHint(l cell.Peer) *wire.Replica {
	if !wire.Dialable(l.Addr) {
		return nil
	}
	return &wire.Replica{Addr: l.Addr, Fingerprint: l.Fingerprint, Leader: true}
}

// cellStats reports the daemon's view of its cell for metrics.
func (d *Daemon) cellStats() metrics.CellStats {
	d.mu.Lock()
	n := d.node
	d.mu.Unlock()
	if n == nil {
		return metrics.CellStats{LastContact: -1}
	}
	st := n.Status()
	catchingUp := 0
	for _, m := range st.Members {
		if !m.Voter {
			catchingUp++
		}
	}
	out := metrics.CellStats{Leader: st.State == "leader", Term: st.Term, CommitIndex: st.CommitIndex,
		AppliedIndex: st.AppliedIndex, LastIndex: st.LastIndex, LastContact: st.LastContact, Members: len(st.Members),
		Voter: n.Voter(), CatchingUp: catchingUp, KeyMismatches: len(st.KeyMismatches)}
	if s := st.Stall; s != nil {
		out.Stall = &metrics.CellStall{For: max(0, time.Since(s.Since)), Index: s.Index, Cause: s.Cause}
	}
	return out
}
