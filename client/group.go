package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// Group is a handle on one group at its daemon. It does no I/O until used;
// its methods are safe for concurrent use.
type Group struct {
	id   wire.UUID
	name string
	cl   *Client
	regs Registries // empty: the group's address is fixed

	mu sync.Mutex
	p  *peer
	b  *batcher // nil until the first batched Send
	// stopBatcher ends b's goroutines (Close, which then waits for
	// b.done); nil until b starts.
	stopBatcher context.CancelFunc
	// closed is set by Close; held are the peers this handle holds (each
	// counted in its peer's groups), given back once it is closed and no
	// call counted in calls (every call but a send: a Watch among them)
	// runs. nil once given back. Each counts the handle's operations
	// using its peer now (use): one that is neither the handle's peer,
	// nor a member of the cell it knows, is given back when none does
	// (prune).
	closed atomic.Bool
	calls  int
	held   map[*peer]int
	// A group replicated by a cell (cell.go): its members, the highest
	// sequence number acknowledged and its epoch.
	replicas         []wire.Replica
	ackEpoch, ackSeq uint64
	// seen is the furthest the handle has seen the group's log stand, in
	// the latest epoch it knows (an info's or join's last, an ack, a
	// message a watch delivered): where a send's messages, if it ends in
	// doubt, were stored after (doubts, Position).
	seen Position
	// suspectFP went silent on an attempt; it is passed over until
	// suspectUntil (cell.go). suspectBound is the handshake bound it
	// failed to meet, if that was what it failed (0: it went silent).
	suspectFP    Fingerprint
	suspectUntil time.Time
	suspectBound time.Duration
	// dialFor bounds an attempt's handshake with each member after one
	// with that member that did not complete in time (a member not in it
	// has completed one since, or never failed one), failedBound is the
	// bound the last such one failed, and handshake is how long the last
	// one that did complete (with any member: the path) took, lowered by
	// attempts answered sooner: see dialBound, dialed and answered
	// (cell.go).
	dialFor                map[Fingerprint]time.Duration
	failedBound, handshake time.Duration
	// settling counts the handle's calls in doubt (a cell's send retried
	// under its IDs, memberCallOnDoubt): while any is, dialBound does not
	// let failed handshakes widen the bound past cellDoubtDialFor.
	settling int
	// memberAddrs are, for a replicated group's handle made from a merged
	// listing (GroupListed), the addresses registries list each member's
	// key at: each member is dialled at them too, after those it was
	// named at. Set when the handle is made, then only read.
	memberAddrs map[Fingerprint][]string
	// doubts are the messages whose send ended in doubt, until acknowledged.
	doubts doubts
}

// Group returns a handle on a group listed by a registry, pinning the
// daemon's fingerprint from the listing and dialling its addresses in order
// (the next one too while one has not answered within 250 ms).
// The handle keeps those addresses; Registry.Group returns one that follows
// the daemon when it moves. Close the handle when done with it: until then
// it keeps the connection to the daemon open. Errors: ErrBadRequest (the
// entry has no fingerprint), ErrClosed.
func (c *Client) Group(e GroupEntry) (*Group, error) {
	return c.GroupListed(ListedGroup{GroupEntry: e})
}

// GroupListed returns a handle on a group of a merged listing (Merge), as
// Group does for its entry; a replicated group's members are dialled at
// every address a registry lists them at (ListedGroup.MemberAddrs), each
// in turn, after those the entry and the members themselves give. Errors:
// as Group's.
func (c *Client) GroupListed(lg ListedGroup) (*Group, error) {
	e, listed := lg.GroupEntry, lg.MemberAddrs
	if e.Fingerprint.IsZero() {
		return nil, fmt.Errorf("group %s: listing has no fingerprint: %w", e.Group, ErrBadRequest)
	}
	g := &Group{id: e.Group, name: e.Name, cl: c}
	if len(e.Replicas) > 0 && len(listed) > 0 {
		g.memberAddrs = make(map[Fingerprint][]string, len(e.Replicas))
		for _, r := range e.Replicas {
			if addrs := listed[r.Fingerprint]; len(addrs) > 0 {
				g.memberAddrs[r.Fingerprint] = slices.Clone(addrs)
			}
		}
	}
	p, err := c.groupPeer(g.alsoAt(e.Addrs, e.Fingerprint), e.Fingerprint, e.Group)
	if err != nil {
		return nil, err
	}
	g.p, g.held = p, map[*peer]int{p: 0}
	g.learnReplicas(e.Replicas, Fingerprint{})
	return g, nil
}

// alsoAt returns addrs, then the other addresses registries listed the
// member fp at when the handle was made (GroupListed), if any.
func (g *Group) alsoAt(addrs []string, fp Fingerprint) []string {
	more := g.memberAddrs[fp]
	if len(more) == 0 {
		return addrs
	}
	return unionAddrs(addrs, more)
}

// Group returns a handle on a group from this registry's listing. When its
// daemon cannot be reached, long-lived calls (Watch) ask the registry for
// the daemon's current addresses and fingerprint.
func (r *Registry) Group(e GroupEntry) (*Group, error) {
	return Registries{r}.Group(e)
}

// peer returns the connection holder for the group's daemon now.
func (g *Group) peer() *peer {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.p
}

// refresh asks the registries where the group's daemon is now and points
// the handle there: the addresses every registry lists it at under the
// same daemon fingerprint, merged (listedAt), as the handle's calls look
// for it (locate). Failures are left to the caller's next attempt. Until
// session 15 the first registry listing it won alone: a rogue one listing
// the group under its real key at an address of its own had a watch that
// found its daemon unreachable dial only that address from then on.
func (g *Group) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, g.cl.cfg.DialTimeout)
	defer cancel()
	fp := g.peer().pin
	addrs, _, found, _ := g.listedAt(ctx, fp)
	if found != listedThere {
		return
	}
	p, err := g.peerAt(addrs, fp)
	if err != nil {
		return
	}
	g.moveTo(p)
}

// peerAt returns the shared connection holder for the daemon at addrs
// with key fp, held by g until Close gives its holds back, or until it is
// of no more use (prune); ErrClosed if Close did already. It returns it in
// use: the caller gives that back (done, or moveTo). g.mu is not held: a
// hold given back may close a connection.
func (g *Group) peerAt(addrs []string, fp Fingerprint) (*peer, error) {
	p, err := g.cl.groupPeer(g.alsoAt(addrs, fp), fp, g.id)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	closed := g.held == nil
	_, had := g.held[p]
	if !closed {
		g.held[p]++
	}
	g.mu.Unlock()
	if closed || had {
		g.cl.releaseGroup(p)
	}
	if closed {
		return nil, ErrClosed
	}
	return p, nil
}

// moveTo points the handle at p, which peerAt returned in use, and gives
// that use back.
func (g *Group) moveTo(p *peer) {
	g.mu.Lock()
	g.p = p
	g.mu.Unlock()
	g.done(p)
}

// use returns the handle's peer, in use by the caller until it calls
// done: a hold the handle gives back meanwhile (prune) would close the
// connection under its call.
func (g *Group) use() *peer {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != nil {
		g.held[g.p]++ // g.p is always held while held is not nil
	}
	return g.p
}

// done gives back a use of p (use, peerAt), and the holds of no more use.
func (g *Group) done(p *peer) {
	g.mu.Lock()
	if n, ok := g.held[p]; ok {
		g.held[p] = n - 1
	}
	drop := g.pruneLocked()
	g.mu.Unlock()
	for _, p := range drop {
		g.cl.releaseGroup(p)
	}
}

// pruneLocked forgets, and returns to be given back, the peers the handle
// holds that none of its operations uses, that it is not pointed at, and
// that are not members of the cell it knows at the address it knows them
// by. g.mu is held.
//
// Why: a handle kept every daemon it was pointed at until Close (until
// session 18). A program that keeps a handle for long (huddle web, a
// watch of days) on a cell whose members move, or on a daemon that moves,
// or facing a rogue member naming a new leader key at each refusal, held
// a connection (and its keep-alives) to each, one more per move.
func (g *Group) pruneLocked() []*peer {
	if len(g.held) <= 1 {
		return nil
	}
	var drop []*peer
	for p, n := range g.held {
		if n > 0 || p == g.p || slices.ContainsFunc(g.replicas, func(r wire.Replica) bool {
			return r.Fingerprint == p.pin && slices.Contains(p.addrs, r.Addr)
		}) {
			continue
		}
		delete(g.held, p)
		drop = append(drop, p)
	}
	return drop
}

// inUse is the peers one call uses (reach, and the redial of its second
// attempt), given back together when it ends (doneAll).
type inUse []*peer

// doneAll gives back the uses of u.
func (g *Group) doneAll(u *inUse) {
	for _, p := range *u {
		g.done(p)
	}
	*u = (*u)[:0]
}

// Close releases the handle: once the calls running on it end (a Watch
// runs on until its context ends), the connections it used close, unless
// another handle (of this group or another on the same daemon) uses them.
// A program that opens handles on groups as listings come and go closes
// those it is done with, or keeps a connection to each daemon until the
// Client closes. (An open handle keeps only its daemon's, and its cell's
// members': one to a daemon it moved on from closes once unused.) Queued and unfinished sends fail with ErrClosed, unless
// answered first (one in flight may be stored: retry them with their IDs on another handle); calls begun after Close
// return ErrClosed. Close
// returns once the goroutines the handle started (send batching's) have
// ended, so a program that checks for leaks (goleak) at a handle's close
// finds none of them. It is safe to call again, also from several
// goroutines at once: each returns once they have ended.
func (g *Group) Close() error {
	g.mu.Lock()
	b := g.b
	if g.closed.Swap(true) {
		g.mu.Unlock()
		if b != nil {
			<-b.done
		}
		return nil
	}
	stop := g.stopBatcher
	held := g.giveBackLocked()
	g.mu.Unlock()
	if stop != nil {
		stop()
		<-b.done
	}
	for p := range held {
		g.cl.releaseGroup(p)
	}
	return nil
}

// giveBackLocked returns the holds to give back if g is closed and no
// call runs, and forgets them. g.mu is held.
func (g *Group) giveBackLocked() map[*peer]int {
	if !g.closed.Load() || g.calls > 0 {
		return nil
	}
	held := g.held
	g.held = nil
	return held
}

// enter counts a call (any but a send) as running on g, so that Close
// keeps its connections until exit; ErrClosed after Close.
func (g *Group) enter() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed.Load() {
		return ErrClosed
	}
	g.calls++
	return nil
}

// exit ends a call enter counted; the last after Close gives the
// handle's holds back.
func (g *Group) exit() {
	g.mu.Lock()
	g.calls--
	held := g.giveBackLocked()
	g.mu.Unlock()
	for p := range held {
		g.cl.releaseGroup(p)
	}
}

// ID returns the group's UUID.
func (g *Group) ID() UUID { return g.id }

// Name returns the group's name as listed.
func (g *Group) Name() string { return g.name }

// Info describes the group, its log and its limits. Anyone may ask.
// Errors: ErrNotFound.
func (g *Group) Info(ctx context.Context) (Info, error) {
	if err := g.enter(); err != nil {
		return Info{}, g.fail("info", err)
	}
	defer g.exit()
	var info wire.Info
	if err := g.anyCall(ctx, wire.OpInfo, wire.GroupRef{Group: g.id}, &info); err != nil {
		return Info{}, g.fail("info", err)
	}
	if info.Group != g.id {
		// Another group's info (or none's): its log, its limits and its
		// cell's members were taken for this group's (until session 17).
		return Info{}, g.fail("info", fmt.Errorf("%w: the daemon answered with the info of group %s", ErrProtocol, info.Group))
	}
	g.learnReplicas(info.Replicas, g.peer().pin)
	g.saw(Position{Epoch: info.Epoch, Seq: info.Last})
	return infoFrom(&info), nil
}

// Join makes this client's key a member under a display name; secret is
// needed for private groups (nil otherwise). Joining again updates the name.
// Errors: ErrUnauthorized (wrong or missing secret), ErrRateLimited (a
// private group: too many joins from this address, RetryAfter says how
// long to wait), ErrNotFound, ErrUnavailable (the group is full),
// ErrBadRequest (bad name).
func (g *Group) Join(ctx context.Context, name string, secret []byte) (Joined, error) {
	if err := g.enter(); err != nil {
		return Joined{}, g.fail("join", err)
	}
	defer g.exit()
	var j wire.Joined
	if err := g.memberCall(ctx, wire.OpJoin, wire.Join{Group: g.id, Name: name, Secret: secret}, &j); err != nil {
		return Joined{}, g.fail("join", err)
	}
	g.saw(Position{Epoch: j.Epoch, Seq: j.Last})
	return Joined{Epoch: j.Epoch, Last: j.Last, Already: j.Already}, nil
}

// Leave ends membership, and reports whether this key was a member.
// Errors: ErrNotFound.
func (g *Group) Leave(ctx context.Context) (bool, error) {
	if err := g.enter(); err != nil {
		return false, g.fail("leave", err)
	}
	defer g.exit()
	var l wire.Left
	if err := g.memberCall(ctx, wire.OpLeave, wire.GroupRef{Group: g.id}, &l); err != nil {
		return false, g.fail("leave", err)
	}
	return l.WasMember, nil
}

// Members lists the group's members. Errors: ErrNotMember, ErrNotFound.
func (g *Group) Members(ctx context.Context) ([]Member, error) {
	if err := g.enter(); err != nil {
		return nil, g.fail("members", err)
	}
	defer g.exit()
	var m wire.MemberList
	if err := g.anyCall(ctx, wire.OpMembers, wire.GroupRef{Group: g.id}, &m); err != nil {
		return nil, g.fail("members", err)
	}
	out := make([]Member, len(m.Members))
	for i := range m.Members {
		out[i] = memberFrom(&m.Members[i])
	}
	return out, nil
}

// Ack is the acknowledgement of one message sent: the group holds it as
// Seq, stamped Time, in the log epoch Epoch (sequence numbers of another
// epoch are unrelated). ID is the message's ID: sending it again
// (SendWithID, SendMessages) never stores the message twice, and returns
// the original Seq and Time with Duplicate set.
type Ack struct {
	ID        ID
	Seq       uint64
	Time      time.Time
	Duplicate bool
	Epoch     uint64
}

func ackOf(id ID, a wire.Ack, epoch uint64) Ack {
	return Ack{ID: id, Seq: a.Seq, Time: time.Unix(0, a.Time), Duplicate: a.Duplicate, Epoch: epoch}
}

// Send appends one message and returns its acknowledgement. The message
// gets a new ID, which the Ack carries even when err is not nil: a Send
// whose outcome is unknown (err matches ErrInDoubt: it timed out, the
// connection died, the daemon stopped, after its request went out) is
// retried with SendWithID(ctx, ack.ID, body), which stores it at most
// once. An err that does not match ErrInDoubt means the message was not
// stored. Send itself retries once on a new connection with the same ID;
// to a cell, once in doubt, it retries at its members for up to 10 s
// (whatever ctx allows beyond), settled by the first leader that answers.
//
// Concurrent Sends on one Group are gathered into one send operation (unless
// Config.NoBatching): a Send with nothing else in flight goes out at once,
// the others wait at most Config.BatchLinger for company. Each caller gets
// its own Ack and its own error; messages of one caller keep their order,
// since each Send returns only once its message is stored. A caller whose
// ctx ends while its message is queued withdraws it.
//
// Errors: ErrNotMember, ErrTooLarge, ErrRateLimited (RetryAfter says how
// long to wait), ErrUnavailable, ErrUnreachable, ErrClosed; any of them,
// or a context's error, with ErrInDoubt when the message may be stored.
func (g *Group) Send(ctx context.Context, body []byte) (Ack, error) {
	return g.SendWithID(ctx, wire.NewID(), body)
}

// SendWithID is Send with an ID the caller chose (a UUIDv7 from
// NewID, or another random UUID: not all-zero, not guessable by other
// members, never used for another message): sending the same ID again
// returns the first acknowledgement, with Duplicate set, as long as the
// group remembers it (at least its last 65,536 messages). The Ack carries
// id even when err is not nil.
func (g *Group) SendWithID(ctx context.Context, id ID, body []byte) (Ack, error) {
	m := wire.Outgoing{ID: id, Body: body}
	if g.closed.Load() {
		return Ack{ID: id}, g.fail("send", g.doubts.outcome([]wire.Outgoing{m}, ErrClosed))
	}
	if _, named := g.doubts.after([]wire.Outgoing{m}); g.cl.cfg.NoBatching || named {
		// A retry that names where the log stood goes alone: a daemon
		// past its window refuses the whole send it is in (window_passed),
		// and another caller's fresh message would share the refusal.
		return g.sendOne(ctx, m)
	}
	b, err := g.batcher()
	if err != nil {
		return Ack{ID: id}, g.fail("send", err)
	}
	return b.send(ctx, m)
}

// sendOne sends m as an operation of its own.
func (g *Group) sendOne(ctx context.Context, m wire.Outgoing) (Ack, error) {
	s, err := g.send(ctx, []wire.Outgoing{m})
	if err != nil {
		return Ack{ID: m.ID}, err
	}
	return ackOf(m.ID, s.Acks[0], s.Epoch), nil
}

// batcher returns the group's batcher, starting it on first use.
func (g *Group) batcher() (*batcher, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.b != nil {
		return g.b, nil
	}
	if g.closed.Load() {
		return nil, ErrClosed
	}
	b := newBatcher(g)
	// Its goroutines end with the Client, or with the handle (Close).
	ctx, stop := context.WithCancel(g.cl.ctx)
	if err := g.cl.start(func(context.Context) { b.run(ctx) }); err != nil {
		stop()
		return nil, err
	}
	g.b, g.stopBatcher = b, stop
	return b, nil
}

// SendMessages appends a batch atomically, all or nothing, and returns one
// acknowledgement per message in order, each with its ID and the log's
// epoch. Each message must carry its own ID (NewID); calling again
// with the same IDs returns the original acknowledgements with Duplicate
// set and stores nothing twice. Errors: as Send's.
func (g *Group) SendMessages(ctx context.Context, msgs []Outgoing) ([]Ack, error) {
	out := make([]wire.Outgoing, len(msgs))
	for i, m := range msgs {
		out[i] = wire.Outgoing(m)
	}
	if g.closed.Load() {
		return nil, g.fail("send", g.doubts.outcome(out, ErrClosed))
	}
	s, err := g.send(ctx, out)
	if err != nil {
		return nil, err
	}
	acks := make([]Ack, len(msgs))
	for i, a := range s.Acks {
		acks[i] = ackOf(msgs[i].ID, a, s.Epoch)
	}
	return acks, nil
}

// SendMessagesAfter is SendMessages for messages whose earlier send may
// have been stored (it ended in doubt, perhaps on another handle or in
// another process) when the group's log stood at after, or further: the
// last position the caller had seen in the group before that first send
// (a message's Seq and the epoch it came in, an Info's Last and Epoch).
// A daemon that checks it (Info.SendAfter) refuses the send with
// ErrWindowPassed, storing nothing, if its dedup window may have
// forgotten a copy stored after it; the error is ErrInDoubt too (the
// earlier send's copy may exist): send them again under these IDs only
// if the user accepts a second copy. A handle that noted the messages in
// doubt itself sends the earlier of the two positions; SendMessages sends
// its own (PROTOCOL.md §8.5, "A retry's window").
func (g *Group) SendMessagesAfter(ctx context.Context, msgs []Outgoing, after Position) ([]Ack, error) {
	out := make([]wire.Outgoing, len(msgs))
	for i, m := range msgs {
		out[i] = wire.Outgoing(m)
	}
	g.doubts.noteAfter(out, after)
	return g.SendMessages(ctx, msgs)
}

// send performs one send operation of msgs and checks that its reply
// acknowledges each. A message that an earlier send on this handle left
// in doubt stays so until acknowledged (doubts), and the send names where
// the log stood before that first try (after, PROTOCOL.md §8.5).
func (g *Group) send(ctx context.Context, msgs []wire.Outgoing) (wire.Sent, error) {
	var s wire.Sent
	before := g.position() // where a copy this send stores goes after
	req := wire.Send{Group: g.id, Messages: msgs}
	if after, ok := g.doubts.after(msgs); ok {
		req.After, req.AfterEpoch = after.Seq, after.Epoch
	}
	// Once an attempt leaves msgs in doubt, they are so on the handle, and
	// the call's own retries name where the log stood before (memberCall).
	doubted := func() {
		g.doubts.outcomeAt(msgs, ErrInDoubt, before)
		if after, ok := g.doubts.after(msgs); ok {
			req.After, req.AfterEpoch = after.Seq, after.Epoch
		}
	}
	if err := g.memberCallOnDoubt(ctx, wire.OpSend, &req, &s, doubted); err != nil {
		return wire.Sent{}, g.fail("send", g.doubts.outcomeAt(msgs, err, before))
	}
	if len(s.Acks) != len(msgs) {
		// A Result: the daemon stored them, presumably, but under what
		// numbers is unknown.
		return wire.Sent{}, g.fail("send", g.doubts.outcomeAt(msgs, inDoubt(fmt.Errorf("%d acks for %d messages: %w", len(s.Acks), len(msgs), ErrProtocol)), before))
	}
	g.doubts.outcome(msgs, nil)
	var last uint64 // the acks' highest: one lock each, not one per ack
	for _, a := range s.Acks {
		last = max(last, a.Seq)
	}
	g.sawSeq(s.Epoch, last)
	g.saw(Position{Epoch: s.Epoch, Seq: last})
	return s, nil
}

// Position is where a group's log stood as a client saw it: its last
// sequence number Seq in epoch Epoch (0: not known).
type Position struct {
	Epoch, Seq uint64
}

// saw records p as seen on the handle: a later epoch's replaces the
// position, the same epoch's only moves it on.
func (g *Group) saw(p Position) {
	if p.Epoch == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if p.Epoch != g.seen.Epoch {
		g.seen = p
		return
	}
	g.seen.Seq = max(g.seen.Seq, p.Seq)
}

// position returns the furthest the handle has seen the log stand.
func (g *Group) position() Position {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen
}

// Message is one message of a group as a client sees it.
type Message struct {
	Seq  uint64      // gapless sequence number from 1, per epoch
	Time time.Time   // server timestamp, strictly increasing in the group
	ID   ID          // the sender's message ID
	From Fingerprint // the key that sent it
	Name string      // the sender's display name when it sent it
	Body []byte      // the message, the caller's to keep
}

func messageFrom(m *wire.Message) Message {
	return Message{Seq: m.Seq, Time: time.Unix(0, m.Time), ID: m.ID, From: m.From, Name: m.Name, Body: m.Body}
}

// Query selects messages: those at or after Since, or those after the
// sequence After, or all held messages when both are zero. Setting both is
// an error (ErrBadRequest).
type Query struct {
	Since time.Time
	After uint64
	// Limit caps how many messages a Fetch returns; 0 means all.
	Limit int
	// Epoch, if not zero, is the log epoch After belongs to; a fetch against
	// another epoch fails with ErrEpochMismatch instead of matching the
	// cursor against new sequence numbers.
	Epoch uint64
	// Status, for Watch only, asks for the watch's own state as events too:
	// EventLive when the daemon accepts it, EventInterrupted when it loses
	// its stream and starts reconnecting. For programs that show it.
	Status bool
}

func (q Query) selection() (*int64, *uint64, error) {
	switch {
	case !q.Since.IsZero() && q.After != 0:
		return nil, nil, fmt.Errorf("query has both Since and After: %w", ErrBadRequest)
	case !q.Since.IsZero():
		ns := unixNano(q.Since)
		return &ns, nil, nil
	case q.After != 0:
		after := q.After
		return nil, &after, nil
	}
	return nil, nil, nil
}

// stoppedAt is the Cursor of a Fetch whose yield stopped it at the message
// delivered, the rest of its page unread: the page's End, which says the
// epoch and what the group holds, was not read. An earlier page's End says
// them (cur, unless unpaged: no End was read); on the first page (resumed
// or not), q's epoch (the daemon checked it) or, without one, Info's,
// unless Info says the group holds less than was delivered (the log
// changed: the epoch stays unknown, 0). gap is the first page's: its
// first message came after the one asked from.
func (g *Group) stoppedAt(ctx context.Context, cur Cursor, unpaged bool, epoch uint64, gap bool, delivered uint64) Cursor {
	if unpaged {
		cur = Cursor{Epoch: epoch, Gap: gap}
		if info, err := g.Info(ctx); err == nil && info.Last >= delivered && (epoch == 0 || epoch == info.Epoch) {
			cur.Epoch, cur.First, cur.Last = info.Epoch, info.First, info.Last
		}
	}
	cur.Next = delivered
	cur.More = cur.Last == 0 || delivered < cur.Last
	return cur
}

// unixNano is t in the protocol's Unix nanoseconds, held to what an int64
// holds: time.UnixNano wraps around for times before 1678 or after 2262,
// so a Since of 500 years ago selected nothing, one in the year 3000
// everything.
func unixNano(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// Cursor is where a fetch ended and what the group held at the time.
type Cursor struct {
	Next  uint64 // the After to continue from
	Epoch uint64 // the log epoch Next belongs to
	First uint64 // the first sequence the group still holds
	Last  uint64 // the last sequence assigned
	More  bool   // messages remain past Next
	// Gap reports that the query asked for messages retention has already
	// dropped (an After below First-1, or everything while First > 1), or
	// that retention dropped some between two pages of the fetch.
	Gap bool
}

// Fetch streams the selected messages to yield in order, following the
// server's cursor across pages until the selection (or q.Limit) is
// exhausted or yield returns false, and returns where it stopped. Message
// bodies belong to the caller. Cursor.Next continues a later Fetch (as
// Query.After, with Query.Epoch set to Cursor.Epoch): after a yield that
// returned false it is that message, the last one taken. For a watch that
// goes on with live messages, see Watch. A page whose connection dies
// half read is asked for again from the last message delivered when its
// epoch is known (Query.Epoch, or a page after the first); otherwise from
// the last message delivered itself, which must come back as it was
// delivered (the same log), else the error is returned: ErrEpochMismatch
// for another message there, ErrUnreachable if it is not held. The cursor
// returned with an error is at the last message delivered (Cursor.Epoch is
// the page's, zero if not known), so continuing from it reads none again.
// Errors: ErrNotMember, ErrEpochMismatch (the log was reset under q.Epoch
// or while paging, or, its epoch not known, the daemon restarted with
// another log),
// ErrBadRequest, ErrProtocol (the daemon broke the protocol: a page of
// another epoch than the cursor's, whose messages were delivered already,
// or an epoch_mismatch naming the cursor's own epoch).
func (g *Group) Fetch(ctx context.Context, q Query, yield func(Message) bool) (Cursor, error) {
	if err := g.enter(); err != nil {
		return Cursor{}, g.fail("fetch", err)
	}
	defer g.exit()
	since, after, err := q.selection()
	if err != nil {
		return Cursor{}, g.fail("fetch", err)
	}
	req := wire.Fetch{Group: g.id, Since: since, After: after, Epoch: q.Epoch, MinSeq: g.minSeq(q.Epoch)}
	var cur Cursor
	first := true
	left := q.Limit
	var md wire.MessagesDecoder
	var msgs []wire.Message // reused from frame to frame; bodies are not
	tries := 0              // replicas that refused the page at hand
	// The last sequence delivered (or the cursor asked from): a message at
	// or before it is not delivered again, whatever the server sends, so
	// that a daemon repeating a page ends the fetch (a page that delivers
	// nothing new does) rather than have it page on for ever.
	var from uint64 // the cursor asked from (0: none, or Since)
	if after != nil {
		from = *after
	}
	delivered := from
	at := from // the last message cur accounts for: its Next, or from
	// check is the last message delivered from a page of no known epoch
	// that a lost connection cut short: the rest is asked for from it,
	// and it must come back as it was delivered (same ID, time and
	// sender) for the rest to be of the same log (see below).
	var check *wire.Message
	var lost error // the connection's loss, returned if check cannot be made
	// paged: an End was read, and cur is from it. Not before, though a
	// first page cut short and resumed is no longer first (its gap is
	// known): a fetch stopped then took its cursor from an End never
	// read, epoch 0 (until session 16).
	paged := false
	for {
		if q.Limit > 0 {
			req.Limit = uint64(left)
			if check != nil {
				req.Limit++
			}
		}
		var end wire.End
		var pageAfter uint64 // the page is asked after it (pages past the first)
		if req.After != nil {
			pageAfter = *req.After
		}
		stopped, ended := false, false
		n := 0
		checked := false    // the message checked came back: the page goes on from it
		var firstSeq uint64 // of the page: the gap of a first page cut short
		var u inUse
		p, err := g.reach(ctx, &u)
		if err != nil {
			g.doneAll(&u)
			return failedAt(cur, at, delivered, req.Epoch), g.fail("fetch", err)
		}
		err = p.callThen(ctx, wire.OpFetch, req, func(kind wire.Kind, raw wire.Frame) (bool, error) {
			switch kind {
			case wire.KindMessages:
				var err error
				if msgs, err = md.Decode(raw, msgs); err != nil {
					return true, badFrame(err)
				}
				for i := range msgs {
					if check != nil {
						m := &msgs[i]
						switch {
						case m.Seq < check.Seq:
							continue
						case m.Seq > check.Seq:
							// Dropped by retention since: the log it is
							// in cannot be told.
							return true, lost
						case m.ID != check.ID || m.Time != check.Time || m.From != check.From:
							return true, fmt.Errorf("%w: the daemon, restarted, holds another message %d than the one delivered: another log than the fetch read (its epoch was not known)", ErrEpochMismatch, m.Seq)
						}
						check, checked = nil, true
						continue
					}
					if msgs[i].Seq <= delivered {
						continue
					}
					if (n > 0 || checked) && msgs[i].Seq-1 != delivered {
						// A page is of consecutive messages (a log holds
						// one run of them): one skipping ahead within it
						// (or past the message checked, the page resumed)
						// was delivered as if it followed (until session
						// 17). Between pages, retention may drop some.
						return true, fmt.Errorf("%w: message %d after message %d in a page", ErrProtocol, msgs[i].Seq, delivered)
					}
					if q.Limit > 0 && n == left {
						// An honest daemon sends at most the limit asked.
						return true, fmt.Errorf("more messages than the %d asked: %w", left, ErrProtocol)
					}
					if n == 0 {
						firstSeq = msgs[i].Seq
					}
					delivered = msgs[i].Seq
					n++
					if !yield(messageFrom(&msgs[i])) {
						// delivered is where the cursor stops: the
						// rest of the page is not read, unless the
						// End is all that is left of it.
						stopped = true
						return q.Limit == 0 || n < left, nil
					}
				}
				return false, nil
			case wire.KindEnd:
				if err := raw.Decode(&end); err != nil {
					return true, badFrame(err)
				}
				if check != nil {
					return true, lost // the message delivered is not held
				}
				if end.Epoch == 0 || req.Epoch != 0 && end.Epoch != req.Epoch {
					// The page of another log than the cursor's: its
					// messages were delivered as if they followed it.
					return true, fmt.Errorf("%w: a fetch of epoch %d answered in epoch %d", ErrProtocol, req.Epoch, end.Epoch)
				}
				if end.Next < delivered {
					// next is the last message returned, or the cursor
					// asked from: one behind what was delivered, returned
					// as the cursor to go on from, had a program read
					// those messages again, as new.
					return true, fmt.Errorf("%w: the page ends at %d, before message %d, which the fetch delivered (or asked after)", ErrProtocol, end.Next, delivered)
				}
				ended = true
				return true, nil
			}
			return true, fmt.Errorf("unexpected frame kind %d: %w", kind, ErrProtocol)
		}, g.redial(&u), nil)
		g.doneAll(&u)
		if e, ok := EpochOf(err); ok && (e == 0 || e == req.Epoch) {
			// No new log (see Watch): a program restarting from it read
			// the same messages again under the same epoch.
			err = fmt.Errorf("%w: epoch_mismatch naming epoch %d, the fetch's own (or none)", ErrProtocol, e)
		}
		if err != nil && n == 0 && g.ackRefuted(err, req.MinSeq, p.pin) {
			req.MinSeq = g.minSeq(req.Epoch)
			continue // the same page, asked without the acknowledgement refuted
		}
		if err != nil && n == 0 && g.otherReplica(err, &tries) {
			continue // the same page from another member of the cell
		}
		if err != nil && n > 0 && req.Epoch != 0 && (q.Limit == 0 || n < left) && ctx.Err() == nil && errors.Is(err, ErrUnreachable) {
			// The connection died with the page half read (its daemon
			// killed and restarted in place, say): the rest is asked for
			// again, after the last message delivered and under the
			// page's epoch, which the daemon checks (ErrEpochMismatch if
			// its log is another now), so nothing is repeated or skipped.
			// Without an epoch (a first page of a Query without one) the
			// messages delivered may be of a log the daemon no longer
			// holds: the error is returned.
			if first {
				cur.Gap = since == nil && firstSeq > from+1
				first = false
			}
			left -= n
			resume := delivered
			req.Since, req.After = nil, &resume
			continue
		}
		if err != nil && n > 0 && req.Epoch == 0 && check == nil && (q.Limit == 0 || n < left) && ctx.Err() == nil && errors.Is(err, ErrUnreachable) {
			// The same with no epoch known (a first page of a Query
			// without one): the messages delivered may be of a log the
			// daemon no longer holds (a memory log, or history lost,
			// begins a new epoch at a restart). The rest is asked for
			// from the last message delivered, which must come back as
			// it was: then the log is the same (a new one stamps its
			// messages anew), and the page's End names its epoch, which
			// the next pages are asked under. Another message there is
			// another log (ErrEpochMismatch); none (dropped since, or
			// not held) leaves it unknown, and the error is returned, as
			// it is if the connection is lost again before the check, or
			// before a message past it (each resumption must deliver: a
			// daemon that answered the check and dropped the connection,
			// again and again, had the fetch dial it for ever).
			// Until session 15 the error was returned in every case.
			if c := lastDelivered(msgs, delivered); c != nil {
				if first {
					cur.Gap = since == nil && firstSeq > from+1
					first = false
				}
				left -= n
				check, lost = c, err
				resume := delivered - 1
				req.Since, req.After = nil, &resume
				continue
			}
		}
		if err != nil {
			if first {
				cur.Gap = since == nil && firstSeq > from+1
			}
			return failedAt(cur, at, delivered, req.Epoch), g.fail("fetch", err)
		}
		tries = 0
		if stopped && !ended {
			// Before any End (paged), the first page's, resumed or not:
			// its gap is cur's once it was resumed.
			gap := cur.Gap
			if first {
				gap = since == nil && firstSeq > from+1
			} else if n > 0 && !checked && firstSeq > pageAfter+1 {
				// Retention dropped some since the last page (a page
				// resumed from the message checked begins with it).
				gap = true
			}
			return g.stoppedAt(ctx, cur, !paged, q.Epoch, gap, delivered), nil
		}
		if first {
			cur.Gap = since == nil && end.First > from+1
			first = false
		} else if end.First > pageAfter+1 {
			// Retention dropped what followed the last page before this
			// one was asked for: only the first page's gap was reported
			// (until session 17), and a program paging a busy group was
			// not told of what it missed.
			cur.Gap = true
		}
		cur = Cursor{Next: end.Next, Epoch: end.Epoch, First: end.First, Last: end.Last, More: end.More, Gap: cur.Gap}
		paged = true
		at = end.Next
		left -= n
		if !end.More || (q.Limit > 0 && left <= 0) || n == 0 {
			return cur, nil
		}
		next := end.Next
		req.Since, req.After, req.Epoch = nil, &next, end.Epoch
	}
}

// lastDelivered returns a copy of the message delivered last, seq, if it
// is among msgs, the last frame's messages; nil if not.
func lastDelivered(msgs []wire.Message, seq uint64) *wire.Message {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Seq == seq {
			m := msgs[i]
			m.Name, m.Body = "", nil // the frame's, reused
			return &m
		}
	}
	return nil
}

// failedAt is the cursor a Fetch returns with an error: cur, or, when
// messages past the last one cur accounts for (at) were delivered (a
// page half read, resumed or not), the last of them, delivered, in the
// page's epoch (zero if the fetch does not know it), as after a yield that
// returned false: a program continuing from it reads none of them again.
// It returned cur, the previous page's, after a page half read and resumed
// under its epoch failed.
func failedAt(cur Cursor, at, delivered, epoch uint64) Cursor {
	if delivered <= at {
		return cur
	}
	if cur.Epoch != epoch {
		cur.First, cur.Last = 0, 0 // the group's bounds in that epoch are not known
	}
	cur.Next, cur.Epoch = delivered, epoch
	if cur.Last != 0 {
		cur.Last = max(cur.Last, delivered)
	}
	cur.More = cur.Last == 0 || delivered < cur.Last
	return cur
}

// fail names the operation and the group in an error of the client's
// own (a closed client, a context ended, a reply it cannot use). A
// server's error is returned as it is: its message names them already
// ("fetch group lobby: not a member"), and naming them twice is noise.
func (g *Group) fail(op string, err error) error {
	if serverSaid(err) {
		return err
	}
	return fmt.Errorf("%s group %s: %w", op, wire.Shown(g.name), err)
}

// RetryAfter returns how long a rate-limited server asked to wait, and
// whether err carries such advice.
func RetryAfter(err error) (time.Duration, bool) {
	var we *wire.Error
	if errors.As(err, &we) && we.RetryAfterMS > 0 {
		return we.RetryAfter(), true
	}
	return 0, false
}

// EpochOf returns the current epoch a server reported with
// ErrEpochMismatch, and whether err carries one.
func EpochOf(err error) (uint64, bool) {
	var we *wire.Error
	if errors.As(err, &we) && we.Code == wire.CodeEpochMismatch {
		return we.Epoch, true
	}
	return 0, false
}
