package cell

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// Log is a replicated group's log, as the cell's state machine uses it:
// store.Log in memory, store.DiskLog on disk. The state machine appends
// what the leader stamped, in raft's order; the leader looks IDs up in it
// before stamping; a replica catching up is served from it.
type Log interface {
	// Epoch names the log's history; a replica's log must have the
	// group's (GroupSpec.Epoch).
	Epoch() uint64
	// Tail returns the sequence number and time of the last message
	// appended (0, 0 for none).
	Tail() (seq uint64, time int64)
	// Lookup appends one ack per entry of batch: the original's stamps,
	// Duplicate set, for an ID the log remembers; else the zero Ack.
	Lookup(batch []store.Entry, acks []store.Ack) []store.Ack
	// Remembers reports whether Lookup finds the ID of every message
	// stored after sequence number after (store.Log.Remembers).
	Remembers(after uint64) bool
	// Append stores batch as stamped, all of it or none. Readers see it
	// at once; its write to a file may wait until Sync (a group log on
	// disk lets its writes lag, store.DiskConfig.WriteBehind): raft's log
	// holds the entry meanwhile, and a restart replays what the log lost.
	Append(batch []store.Entry) error
	// After appends up to limit messages after seq to dst; store.ErrClosed
	// once the log is closed.
	After(seq uint64, limit int, dst []store.Message) ([]store.Message, store.Cursor, error)
	// Sync returns once everything appended is written and on the
	// device. A snapshot waits for it before raft may drop the entries.
	Sync() error
	// Reset empties the log and makes it stand after seq, at time t: the
	// next message appended is seq+1, after t. A replica catching up from
	// a peer whose retention dropped what it lacks starts there, and one
	// whose retention cannot hold a message at all stands after it.
	Reset(seq uint64, t int64) error
}

// Host is where the cell's state machine applies what the cell decided:
// the group daemon that serves the cell's groups to clients.
type Host interface {
	// OpenGroup returns the daemon's replica of the group spec describes,
	// opening it if it has none: its log opened (on disk: read back) or
	// created empty with spec.Epoch. A log that exists with another epoch
	// is an error: it holds another history. Once the daemon is closing
	// it opens none: an error that wraps ErrClosed, which the state
	// machine logs as expected, not as a log it cannot open.
	OpenGroup(spec GroupSpec) (Replica, error)
}

// Replica is one group of the cell as the daemon serves it. The state
// machine calls its methods in raft's order, one at a time.
type Replica interface {
	// Log is the group's log.
	Log() Log
	// Joined says m is a member now (joined, or renamed).
	Joined(m Member)
	// Left says fp is no longer a member.
	Left(fp wire.Fingerprint)
	// SetMembers says the members are ms, after a restore: those not in
	// ms have left.
	SetMembers(ms []Member)
}

// Results of applying a command, which the proposer's future returns.
type (
	joinResult  struct{ already, full bool }
	leaveResult struct{ was bool }
)

// errGap is the result of a send that does not follow on from its group's
// log: its proposer stamped from a tail that is not the log's (a bug).
// Every replica rejects it alike.
var errGap = errors.New("cell: send does not follow on from the log")

// errStale is the result of a send stamped in another raft term than the
// one its entry was appended in: the leadership that stamped it ended
// before raft appended it, and the tail it stamped from may not be the
// log's. Every replica refuses it alike; its sender is told to retry.
var errStale = errors.New("cell: send stamped by an earlier leadership")

// errNoGroup is the result of a command for a group the cell has not
// created.
var errNoGroup = errors.New("cell: no such group")

// fsm is the cell's state machine (raft.BatchingFSM): the groups the cell
// created, their members, and their logs, which are durable on their own.
//
// A send is applied by appending its messages, as the leader stamped them,
// to the group's log. The log's tail says how far it is applied: when raft
// replays entries after a restart, a send whose messages the log holds
// already is skipped, and one whose messages it lost (appended, but not
// written to its files before the daemon died: Log.Append) is appended
// again. So a snapshot need not hold messages: it records each group's
// position (and members), after syncing the logs to it, and only then may
// raft drop the entries before it; a replica whose log is behind a
// snapshot it restores catches up from a peer (catchup.go), and then raft
// replays what follows.
type fsm struct {
	host    Host
	log     *slog.Logger
	closing <-chan struct{}
	// onConfig is told each configuration raft commits, with the index
	// of its entry.
	onConfig func(c raft.Configuration, index uint64)
	// catchUp brings a replica's log up to a position from a peer; with
	// wait set, it waits until a peer can (Node.catchUp).
	catchUp func(ctx context.Context, g *groupState, seq uint64, t int64, wait bool, restore *catchUpRestore) error
	// starting is set while raft restores the newest snapshot at start
	// (raft.NewRaft, which calls Restore on the caller's goroutine);
	// startFailed once a restore then failed. See Restore.
	starting, startFailed atomic.Bool
	// atStart is the restore at start whose logs catch up once raft runs
	// (restoreAtStart), if one was left to finish: set by Restore within
	// raft.NewRaft, before raft's goroutines start, and not changed after.
	atStart atomic.Pointer[restoreAtStart]
	// stalledAt is, while an append the state machine must make (a
	// committed send) is refused by its log (a full or failing disk) and
	// retried, the raft index of the last entry of the batch it stalled
	// on; 0 otherwise. onStall, if set, is told as a stall begins
	// (Node.stallLoop: a leader that cannot apply hands the leadership
	// over).
	stalledAt atomic.Uint64
	onStall   func()
	// stall is, while stalledAt is not 0, why (Status.Stall); set before
	// stalledAt, cleared after it.
	stall atomic.Pointer[Stall]
	// applied is the raft index of the last entry of the last batch the
	// state machine applied (its appends made), 0 until it applied one
	// since it started or restored a snapshot. Raft's AppliedIndex is
	// not that: it counts the entries raft handed to the state machine's
	// goroutine, which may not have reached them yet (a progress answer:
	// a member about to stall on the entry a stalled leader stalled on
	// must not be taken for one past it; stall.go).
	applied atomic.Uint64

	mu sync.RWMutex // Apply and Restore write the groups' members; the rest read
	// groups is the cell's groups, replaced whole (under mu) when one is
	// created or restored: a send looks its group up without waiting for
	// an apply in progress.
	groups atomic.Pointer[map[wire.UUID]*groupState]

	// Working space of ApplyBatch, which raft calls from one goroutine
	// (as it does Snapshot and Restore).
	entries []store.Entry
	pending []*groupState // the groups whose pend the batch staged
	last    uint64        // the raft index of the batch's last entry
}

// groupState is one group of the cell.
type groupState struct {
	spec    GroupSpec
	replica Replica
	log     Log
	members map[wire.Fingerprint]Member // under fsm.mu
	// memberCount is len(members), kept beside it so that a status view
	// reads it without fsm.mu, which an apply stalled on its log's disk
	// holds for as long as the stall lasts.
	memberCount atomic.Int64

	propMu sync.Mutex // serialises the leader's sequencing of the group
	prop   proposer   // under propMu (propose.go)

	pend pendingAppend // ApplyBatch's, under fsm.mu; kept for its capacity
}

// pendingAppend is what one ApplyBatch appends to one group: the sends of
// the batch merged, so that one write (one fsync, under an always policy)
// carries them all.
type pendingAppend struct {
	staged  bool // by the batch being applied
	entries []store.Entry
	seq     uint64 // where the log will stand after entries
	time    int64
	resps   []int // the responses that wait on the append
}

// maxKeptEntries bounds the capacity a group's pendingAppend keeps from
// one batch to the next.
const maxKeptEntries = 4 * maxCommandMessages

// reset empties p for the next batch, keeping its arrays unless they grew
// past what a usual batch needs. The entries' bodies alias raft's entries:
// they are let go.
func (p *pendingAppend) reset() {
	clear(p.entries)
	if cap(p.entries) > maxKeptEntries {
		p.entries = nil
	}
	p.staged, p.entries, p.resps = false, p.entries[:0], p.resps[:0]
}

func newFSM(host Host, log *slog.Logger, closing <-chan struct{}) *fsm {
	f := &fsm{host: host, log: log, closing: closing}
	f.groups.Store(&map[wire.UUID]*groupState{})
	return f
}

// group returns the group with id, or nil.
func (f *fsm) group(id wire.UUID) *groupState {
	return (*f.groups.Load())[id]
}

// list returns the cell's groups, sorted by name.
func (f *fsm) list() []*groupState {
	groups := *f.groups.Load()
	gs := make([]*groupState, 0, len(groups))
	for _, g := range groups {
		gs = append(gs, g)
	}
	slices.SortFunc(gs, func(a, b *groupState) int {
		return cmp.Or(cmp.Compare(a.spec.Name, b.spec.Name), slices.Compare(a.spec.ID[:], b.spec.ID[:]))
	})
	return gs
}

// Apply applies one entry (raft.FSM).
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies entries in order (raft.BatchingFSM). Sends to the same
// group are merged into one append.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	resps := make([]any, len(logs))
	if f.atStart.Load() != nil && !f.restored() {
		// Closing before the restore at start finished: nothing is
		// applied over a state not restored (raft's next start replays).
		for i := range resps {
			resps[i] = ErrClosed
		}
		return resps
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = f.entries[:0]
	for i, l := range logs {
		switch l.Type {
		case raft.LogConfiguration:
			if f.onConfig != nil {
				f.onConfig(raft.DecodeConfiguration(l.Data), l.Index)
			}
			continue
		case raft.LogCommand:
		default:
			continue
		}
		c, err := decodeCommand(l.Data, f.entries[:0])
		if err != nil {
			// Every replica decodes the same bytes alike: a command this
			// daemon cannot read is skipped everywhere that runs this
			// version. (A newer leader's kind: see PROTOCOL.md, "Cells".)
			f.log.Error("cell: skipping an entry this daemon cannot read", "index", l.Index, "err", err)
			resps[i] = err
			continue
		}
		f.entries = c.entries[:0] // stage copies what it keeps
		resps[i] = f.applyLocked(&c, i, l.Index, l.Term)
	}
	f.last = logs[len(logs)-1].Index
	f.flush(resps)
	f.applied.Store(f.last)
	return resps
}

// applyLocked applies c, the command of entry index, whose response is
// resps[i]; a send's is set when its append is flushed. f.mu is held.
func (f *fsm) applyLocked(c *command, i int, index, term uint64) any {
	if c.kind == cmdCreate {
		return f.create(c.spec)
	}
	g := f.group(c.group)
	if g == nil {
		return errNoGroup
	}
	switch c.kind {
	case cmdSend:
		if c.term != term {
			return errStale
		}
		return f.stage(g, c.entries, i, index)
	case cmdJoin:
		m, ok := g.members[c.member.Fingerprint]
		switch {
		case ok:
			if m.Name != c.member.Name {
				m.Name = c.member.Name
				g.members[m.Fingerprint] = m
				g.replica.Joined(m)
			}
			return joinResult{already: true}
		case len(g.members) >= c.max:
			return joinResult{full: true}
		}
		g.members[c.member.Fingerprint] = c.member
		g.memberCount.Store(int64(len(g.members)))
		g.replica.Joined(c.member)
		return joinResult{}
	case cmdLeave:
		fp := c.member.Fingerprint
		if _, ok := g.members[fp]; !ok {
			return leaveResult{}
		}
		delete(g.members, fp)
		g.memberCount.Store(int64(len(g.members)))
		g.replica.Left(fp)
		return leaveResult{was: true}
	}
	return nil
}

// create adds the group spec describes, unless the cell has it. f.mu is
// held.
func (f *fsm) create(spec GroupSpec) any {
	groups := *f.groups.Load()
	for _, g := range groups {
		if g.spec.ID == spec.ID || g.spec.Name == spec.Name {
			return nil // created twice: the first stands
		}
	}
	r, err := f.host.OpenGroup(spec)
	if errors.Is(err, ErrClosed) {
		// The daemon is closing (raft applying on after a shutdown the
		// daemon stopped waiting for: ErrStuck): expected, and nothing is
		// lost, since raft's log holds the create, which the next start
		// applies again. Logged as an error until session
		// 22, as if the group's log were unusable.
		f.log.Info("cell: not opening a group the cell created: this member is closing; it opens the group at its next start", "group", spec.Name, "uuid", spec.ID)
		return err
	}
	if err != nil {
		// This replica cannot serve the group (its log is unusable); the
		// others can. It is logged, and every command for the group is
		// refused here (errNoGroup) until the daemon restarts.
		f.log.Error("cell: cannot open a group the cell created: this replica does not serve it", "group", spec.Name, "uuid", spec.ID, "err", err)
		return err
	}
	next := make(map[wire.UUID]*groupState, len(groups)+1)
	for id, g := range groups {
		next[id] = g
	}
	next[spec.ID] = &groupState{spec: spec, replica: r, log: r.Log(), members: make(map[wire.Fingerprint]Member)}
	f.groups.Store(&next)
	return nil
}

// stage adds a send's entries to its group's pending append. Entries the
// log holds already (raft replaying what was applied before a restart)
// are skipped; a send that does not follow on is refused (errGap). f.mu is
// held.
func (f *fsm) stage(g *groupState, entries []store.Entry, i int, index uint64) any {
	p := &g.pend
	if !p.staged {
		p.staged = true
		p.seq, p.time = g.log.Tail()
		f.pending = append(f.pending, g)
	}
	skip := 0
	for skip < len(entries) && entries[skip].Seq <= p.seq {
		skip++
	}
	if skip == len(entries) {
		return nil // applied before
	}
	if e := entries[skip]; e.Seq != p.seq+1 || e.Time <= p.time {
		f.log.Error("cell: a send does not follow on from its group's log: refused (a sequencing bug)",
			"group", g.spec.Name, "index", index, "seq", e.Seq, "time", e.Time, "log_seq", p.seq, "log_time", p.time)
		return errGap
	}
	p.entries = append(p.entries, entries[skip:]...)
	last := entries[len(entries)-1]
	p.seq, p.time = last.Seq, last.Time
	p.resps = append(p.resps, i)
	return nil
}

// retryAppend is how long the state machine waits before trying again an
// append its log refused (a full or failing disk).
const retryAppend = 100 * time.Millisecond

// flush appends each group's pending entries. An append the log refuses
// (a full disk) is tried again until it succeeds or the daemon stops: a
// committed entry must be applied, in order, and the cell goes on without
// this replica meanwhile. f.mu is held.
func (f *fsm) flush(resps []any) {
	closed := false
	for _, g := range f.pending {
		p := &g.pend
		if !closed && len(p.entries) > 0 {
			closed = !f.append(g, p.entries)
		}
		if closed { // this group's sends and the rest are not applied here
			for _, i := range p.resps {
				resps[i] = ErrClosed
			}
		}
		p.reset()
	}
	clear(f.pending)
	f.pending = f.pending[:0]
}

// append appends entries to g's log, trying again until it succeeds (true)
// or the daemon stops (false). f.mu is held.
//
// Entries more than the log holds at once (its retention, or a record's
// size on disk) are appended in halves: each send fitted when the leader
// took it, but the sends a raft entry gathered, and those an ApplyBatch
// merged, may not together; retention then keeps the newest.
//
// One message more than this log holds at all (a body over this member's
// MaxBytes, which the leader's retention held: the members' limits
// differ) is aged out as it arrives: the log is emptied to stand after
// it (Log.Reset), as retention would leave a log that held it a moment.
// The group's sequence stays the same on every replica; this one holds
// none of the messages up to that one.
func (f *fsm) append(g *groupState, entries []store.Entry) bool {
	for attempt := 0; ; attempt++ {
		err := g.log.Append(entries)
		if err == nil {
			f.unstalled(g, attempt)
			return true
		}
		tooLarge := errors.Is(err, store.ErrBatchTooLarge) || errors.Is(err, store.ErrBodyTooLarge)
		if tooLarge && len(entries) > 1 {
			half := len(entries) / 2
			return f.append(g, entries[:half]) && f.append(g, entries[half:])
		}
		if tooLarge {
			e := entries[0]
			if err = g.log.Reset(e.Seq, e.Time); err == nil {
				f.log.Warn("cell: a message larger than this member's retention holds is aged out at once; the group's log here is empty up to it",
					"group", g.spec.Name, "seq", e.Seq, "bytes", len(e.Body))
				f.unstalled(g, attempt)
				return true
			}
		}
		if attempt == 0 || attempt%100 == 0 {
			f.log.Error("cell: cannot append to a group's log: retrying; this replica serves no new messages of the group meanwhile",
				"group", g.spec.Name, "err", err, "attempts", attempt+1)
			// The cause may change (a full disk failing its fsync).
			s := Stall{Since: time.Now(), Index: f.last, Group: g.spec.Name, Cause: stallCause(err)}
			if old := f.stall.Load(); attempt > 0 && old != nil {
				s.Since, s.Index = old.Since, old.Index
			}
			f.stall.Store(&s)
		}
		if attempt == 0 && f.stalledAt.Swap(f.last) == 0 && f.onStall != nil {
			f.onStall()
		}
		select {
		case <-f.closing:
			return false
		case <-time.After(retryAppend):
		}
	}
}

// unstalled notes that g's log took what append retried (attempt > 0).
func (f *fsm) unstalled(g *groupState, attempt int) {
	if attempt > 0 && f.stalledAt.Swap(0) != 0 {
		f.stall.Store(nil)
		f.log.Info("cell: a group's log takes appends again", "group", g.spec.Name, "attempts", attempt+1)
	}
}

// Snapshot captures each group's position and members (raft.FSM). Apply
// is not running meanwhile.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if !f.restoredNow() {
		return nil, errors.New("cell: snapshot: the groups restored at start are still catching up")
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	groups := *f.groups.Load()
	s := &fsmSnapshot{groups: make([]snapGroup, 0, len(groups))}
	for _, g := range groups {
		sg := snapGroup{spec: g.spec, log: g.log}
		sg.seq, sg.time = g.log.Tail()
		sg.members = make([]Member, 0, len(g.members))
		for _, m := range g.members {
			sg.members = append(sg.members, m)
		}
		slices.SortFunc(sg.members, func(a, b Member) int { return slices.Compare(a.Fingerprint[:], b.Fingerprint[:]) })
		s.groups = append(s.groups, sg)
	}
	slices.SortFunc(s.groups, func(a, b snapGroup) int { return slices.Compare(a.spec.ID[:], b.spec.ID[:]) })
	return s, nil
}

// Restore replaces the state with a snapshot's (raft.FSM): each group is
// opened, its members set, and its log brought up to the snapshot's
// position from a peer if it is behind (a new replica, or one that lagged
// past what the leader keeps of its raft log).
//
// At start (raft.NewRaft), a log behind the snapshot is not caught up
// here: raft runs only once NewRaft returns, and the peers may serve the
// messages only once a leader has told them they are committed, which may
// take this member's vote (every member restarted, one of them slow: the
// others are no majority without it). Restore leaves the catch-up to
// finishRestore, which the node runs once raft runs (restoreAtStart);
// everything else the state machine is asked waits for it meanwhile.
//
// At start, raft falls back to an older snapshot when the newest one's
// restore fails, and then replays the raft entries after it: entries its
// log no longer holds once compacted past the newest (TrailingLogs), so
// raft panics ("log not found") and takes the daemon down. Once a restore
// at start failed, the older snapshots are refused too: raft's start then
// fails, naming the first failure in the log, and the daemon exits with
// "failed to load any existing snapshots".
func (f *fsm) Restore(rc io.ReadCloser) error {
	if !f.starting.Load() {
		// A snapshot from the leader, once the restore at start is done.
		if !f.restored() {
			rc.Close()
			return fmt.Errorf("cell: restore: %w", ErrClosed)
		}
		return f.closingRefusal(f.restore(rc, false))
	}
	if f.startFailed.Load() {
		rc.Close()
		return errors.New("cell: restore: an older snapshot is not restored once the newest failed (raft's log may no longer hold the entries after it)")
	}
	err := f.restore(rc, true)
	if err != nil {
		f.startFailed.Store(true)
	}
	return f.closingRefusal(err)
}

// closingRefusal returns err, a restore's failure, as wrapping ErrClosed if
// the node is closing: the restore's catch-up or its group logs may fail
// otherwise then (a log closed under it). Raft logs every failed restore at
// error level; one refused because the member closes is expected, and
// hclog.go says so at info (restoreRefused), knowing it by ErrClosed.
func (f *fsm) closingRefusal(err error) error {
	if err == nil || errors.Is(err, ErrClosed) {
		return err
	}
	select {
	case <-f.closing:
		return fmt.Errorf("%w (%v)", ErrClosed, err)
	default:
		return err
	}
}

// restore is Restore's work, at start or from a snapshot the leader sent.
func (f *fsm) restore(rc io.ReadCloser, atStart bool) error {
	defer rc.Close()
	f.applied.Store(0) // the snapshot's index is raft's alone
	// Closing, raft's start falls back to an older snapshot when this
	// one fails, and that one may need no catch-up: it would be restored,
	// and raft, finding the entries after it compacted away, panics. Each
	// snapshot is refused instead.
	select {
	case <-f.closing:
		return fmt.Errorf("cell: restore: %w", ErrClosed)
	default:
	}
	groups, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	// Apply does not run during Restore: only the daemon's lookups
	// (f.group) need the lock, and not while a log catches up.
	next := make(map[wire.UUID]*groupState, len(groups))
	var behind []snapGroup
	for _, sg := range groups {
		g := f.group(sg.spec.ID)
		if g == nil {
			r, err := f.host.OpenGroup(sg.spec)
			if err != nil {
				return fmt.Errorf("cell: restore group %s: %w", sg.spec.Name, err)
			}
			g = &groupState{spec: sg.spec, replica: r, log: r.Log()}
		}
		g.members = make(map[wire.Fingerprint]Member, len(sg.members))
		for _, m := range sg.members {
			g.members[m.Fingerprint] = m
		}
		g.memberCount.Store(int64(len(g.members)))
		g.replica.SetMembers(sg.members)
		if seq, _ := g.log.Tail(); seq < sg.seq {
			if f.catchUp == nil {
				return fmt.Errorf("cell: restore group %s: its log stands at %d, the snapshot at %d, and there is no peer to catch up from", sg.spec.Name, seq, sg.seq)
			}
			behind = append(behind, sg)
		}
		next[sg.spec.ID] = g
	}
	if atStart && len(behind) > 0 {
		f.atStart.Store(&restoreAtStart{groups: next, behind: behind, done: make(chan struct{})})
		return nil
	}
	restore := newCatchUpRestore() // for the whole restore: catchUp
	for _, sg := range behind {
		g := next[sg.spec.ID]
		if err := f.catchUp(context.Background(), g, sg.seq, sg.time, false, restore); err != nil {
			return fmt.Errorf("cell: restore group %s: %w", sg.spec.Name, err)
		}
		// What a peer sent is in no raft entry of this member's:
		// written and synced now, not left for a later sync.
		if err := g.log.Sync(); err != nil {
			return fmt.Errorf("cell: restore group %s: %w", sg.spec.Name, err)
		}
	}
	f.mu.Lock()
	f.groups.Store(&next)
	f.mu.Unlock()
	return nil
}

// restoreAtStart is a snapshot restored at start some of whose groups'
// logs are behind it (Restore): they catch up from a peer once raft runs
// (finishRestore), and the groups become the state machine's only then,
// so that no reader sees a log behind what it was acknowledged. Meanwhile
// the member takes part in raft (it votes; elected, it hands the
// leadership over: Node.awaitRestored), but its state machine applies
// nothing: ApplyBatch, Restore and a leader's readiness wait for the
// restore to finish, and Snapshot is refused.
type restoreAtStart struct {
	groups map[wire.UUID]*groupState // the snapshot's groups
	behind []snapGroup               // those whose logs are behind it, and where it has them
	done   chan struct{}             // closed once finishRestore returned
	ok     atomic.Bool               // set before done closes if the groups were restored
	err    error                     // why not, once done closed
}

// restored waits until the restore at start, if one was left to finish, is
// done, and reports whether it restored the groups: false if the node
// closed first (or the restore failed).
func (f *fsm) restored() bool {
	d := f.atStart.Load()
	if d == nil {
		return true
	}
	select {
	case <-d.done:
	case <-f.closing:
	}
	return d.ok.Load()
}

// restoredNow reports, without waiting, whether the groups are restored:
// no restore at start was left to finish, or it finished.
func (f *fsm) restoredNow() bool {
	d := f.atStart.Load()
	return d == nil || d.ok.Load()
}

// finishRestore catches up the logs of the restore at start (atStart) from
// the peers, waiting until one can serve them (Node.catchUp), then makes
// its groups the state machine's. It returns once they are, or the node
// closes. The node runs it once raft runs.
func (f *fsm) finishRestore() {
	d := f.atStart.Load()
	defer close(d.done)
	restore := newCatchUpRestore() // for the whole restore: catchUp
	for _, sg := range d.behind {
		g := d.groups[sg.spec.ID]
		if err := f.catchUp(context.Background(), g, sg.seq, sg.time, true, restore); err != nil {
			d.err = fmt.Errorf("cell: restore group %s: %w", sg.spec.Name, err)
			return
		}
		// What a peer sent is in no raft entry of this member's: written
		// and synced before the group is served, and tried again until
		// it is (a full or failing disk) or the node closes.
		for attempt := 0; ; attempt++ {
			err := g.log.Sync()
			if err == nil {
				break
			}
			if attempt%100 == 0 {
				f.log.Error("cell: cannot sync a group's log caught up at start: retrying; this member serves none of the cell's groups meanwhile",
					"group", g.spec.Name, "err", err, "attempts", attempt+1)
			}
			select {
			case <-f.closing:
				d.err = fmt.Errorf("cell: restore group %s: %w", sg.spec.Name, ErrClosed)
				return
			case <-time.After(retryAppend):
			}
		}
	}
	f.mu.Lock()
	f.groups.Store(&d.groups)
	f.mu.Unlock()
	d.ok.Store(true)
}

// fsmSnapshot is what Snapshot captured.
type fsmSnapshot struct {
	groups []snapGroup
}

type snapGroup struct {
	spec    GroupSpec
	seq     uint64 // the log's position
	time    int64
	members []Member
	log     Log // to sync before the snapshot is written
}

// Persist syncs every group's log up to (at least) the position recorded,
// then writes the snapshot: a snapshot never says more is applied than
// the logs hold on the device.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	for _, g := range s.groups {
		if err := g.log.Sync(); err != nil {
			sink.Cancel()
			return fmt.Errorf("cell: snapshot: sync group %s: %w", g.spec.Name, err)
		}
	}
	if _, err := sink.Write(encodeSnapshot(nil, s.groups)); err != nil {
		sink.Cancel()
		return fmt.Errorf("cell: snapshot: %w", err)
	}
	return sink.Close()
}

// Release does nothing: the snapshot holds no resources.
func (s *fsmSnapshot) Release() {}
