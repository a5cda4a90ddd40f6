package groupd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
	"unsafe"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// Sizes of the frames fetch and watch write.
const (
	// frameBodyBudget is roughly how many bytes of messages one Messages
	// frame carries; a single larger message gets a frame of its own.
	frameBodyBudget = 256 << 10
	// frameMaxMessages is the most messages per Messages frame, well under
	// wire.MaxArrayItems.
	frameMaxMessages = 1024
	// queryChunk is how many messages fetch and watch take from the log
	// per query.
	queryChunk = 1024
)

func (d *Daemon) handle(ctx context.Context, c *server.Call) error {
	switch c.Op() {
	case wire.OpInfo:
		return d.info(c)
	case wire.OpJoin:
		return d.join(ctx, c)
	case wire.OpLeave:
		return d.leave(ctx, c)
	case wire.OpMembers:
		return d.members(c)
	case wire.OpSend:
		return d.send(ctx, c)
	case wire.OpFetch:
		return d.fetch(c)
	case wire.OpWatch:
		return d.watch(ctx, c)
	case wire.OpCellStatus:
		return d.cellStatus(c)
	case wire.OpCellAdd, wire.OpCellRemove:
		return d.cellChange(ctx, c)
	}
	return fmt.Errorf("%w: %v", wire.ErrUnsupported, c.Op())
}

// request decodes c's args into req, whose group field is id, and finds
// that group. Errors: the decoding's (bad_request, too_large) and
// not_found.
func (d *Daemon) request(c *server.Call, req any, id *wire.UUID) (*group, error) {
	if err := c.Decode(req); err != nil {
		return nil, err
	}
	return d.group(c.Op(), *id)
}

// group returns the hosted group id. d.groups is read-only once Listen has
// returned, before any handler runs; a member of a cell finds the groups
// the cell created in d.host, which grows as the cell creates them.
func (d *Daemon) group(op wire.Op, id wire.UUID) (*group, error) {
	if d.host != nil {
		if g := d.host.group(id); g != nil {
			if !d.node.Serving() {
				return nil, d.notServing(op, g)
			}
			return g, nil
		}
		if d.host.count() < len(d.cfg.Groups) {
			// A member that has not yet applied the cell's groups (it is
			// starting, or the cell has no leader to create them): the
			// group may well be one of them, so not_found, which a client
			// takes as final, would be wrong.
			return nil, &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(cellRetry.Milliseconds()), Unchanged: true,
				Message: fmt.Sprintf("%v group %s: this member of a cell has not yet applied all its groups: try again shortly", op, id)}
		}
		return nil, fmt.Errorf("%v: %w: no group %s here", op, wire.ErrNotFound, id)
	}
	if g := d.groups[id]; g != nil {
		if g.broken != nil {
			return nil, brokenGroup(op, g)
		}
		return g, nil
	}
	return nil, fmt.Errorf("%v group %s: %w: no such group here", op, id, wire.ErrNotFound)
}

// memberRequest is request for an operation only members may make: it
// also requires the call's peer to be a member of the group, and returns
// the channel closed when it leaves. Errors: request's, not_member, and,
// on a replica of a cell's group that does not lead the cell,
// unavailable (see notMemberHere).
func (d *Daemon) memberRequest(c *server.Call, req any, id *wire.UUID) (g *group, left <-chan struct{}, err error) {
	return d.readRequest(c, req, id, nil, time.Time{})
}

// readRequest is memberRequest for fetch and watch, whose min_seq
// (decoded into *minSeq) asks for read-your-writes: a member of a cell
// that has not yet applied all its groups waits for the group until by
// (awaitGroup) before it looks the group up.
func (d *Daemon) readRequest(c *server.Call, req any, id *wire.UUID, minSeq *uint64, by time.Time) (g *group, left <-chan struct{}, err error) {
	if err := c.Decode(req); err != nil {
		return nil, nil, err
	}
	if minSeq != nil && *minSeq > 0 {
		d.awaitGroup(c, *id, by)
	}
	if g, err = d.group(c.Op(), *id); err != nil {
		return nil, nil, err
	}
	left, ok := g.membership(c.Peer())
	if !ok && g.cell != nil && awaitMember(c.Context(), g, c.Peer()) {
		// A join the leader acknowledged, not yet applied here.
		left, ok = g.membership(c.Peer())
	}
	if !ok {
		if g.cell != nil {
			if err := g.cell.node.Leading(); err != nil {
				return nil, nil, notMemberHere(c.Op(), g, err)
			}
		}
		return nil, nil, fmt.Errorf("%v group %s: %w", c.Op(), g.name, wire.ErrNotMember)
	}
	return g, left, nil
}

// notMemberHere answers a key that a replica of a cell's group, which
// does not lead the cell (notLeading says why), does not know as a
// member. Only the leader knows for sure: a follower may lag the join by
// more than awaitMember waits (it is cut off from the leader, slow, or
// replaying its log after a restart), and not_member, final for a client
// (it ends a watch), would be wrong for a member. Unavailable, naming the
// leader, sends the client to a replica that knows; the leader answers a
// key that is no member not_member. The refusal names the members that
// serve the group (key 6, as every refusal of a member that does not lead
// does), so that a client holding an older list asks one that serves,
// and is marked unchanged: it refuses a read (members, fetch, watch)
// before anything was read or recorded. Until session 21 it carried
// neither.
func notMemberHere(op wire.Op, g *group, notLeading error) error {
	we := &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(cellRetry.Milliseconds()), Replicas: cellMembers(g), Unchanged: true,
		Message: fmt.Sprintf("%v group %s: this replica does not know your key as a member, and it may lag the cell: ask its leader", op, g.name)}
	var nl *cell.NotLeaderError
	if errors.As(notLeading, &nl) && nl.Leader.Addr != "" {
		we.Leader = leaderHint(nl.Leader)
		we.Message = fmt.Sprintf("%v group %s: this replica does not know your key as a member, and it may lag the cell: ask its leader at %s", op, g.name, nl.Leader.Addr)
	}
	return we
}

func epochMismatch(op wire.Op, g *group) error {
	epoch := g.epoch()
	return &wire.Error{Code: wire.CodeEpochMismatch, Epoch: epoch,
		Message: fmt.Sprintf("%v group %s: the cursor's epoch is not the log's (%d): the group's history was lost (a daemon keeping it in memory restarted, or its files were deleted)", op, g.name, epoch)}
}

func (d *Daemon) limits() wire.Limits {
	r := d.cfg.Retention
	burst := uint64(d.cfg.SendBurst)
	if d.cfg.SendRate < 0 {
		burst = 0 // unlimited
	}
	return wire.Limits{
		MaxMessageBytes:  uint64(d.cfg.MaxMessageBytes),
		MaxBatch:         uint64(d.cfg.MaxBatch),
		MaxMessages:      uint64(orDefault(r.MaxMessages, store.DefaultMaxMessages)),
		MaxBytes:         uint64(orDefault(r.MaxBytes, store.DefaultMaxBytes)),
		MaxAgeMS:         uint64(r.MaxAge.Milliseconds()),
		FetchPage:        uint64(d.cfg.FetchPage),
		MaxMembers:       uint64(d.cfg.MaxMembers),
		HeartbeatMS:      uint64(d.cfg.HeartbeatInterval.Milliseconds()),
		SendRateMilli:    uint64(max(0, math.Round(d.cfg.SendRate*1000))),
		SendBurst:        burst,
		MaxFrameBytes:    uint64(d.cfg.Server.MaxRequestBytes),
		MaxStreams:       uint64(d.cfg.Server.MaxIncomingStreams),
		MaxConnsPerAddr:  uint64(d.cfg.Server.MaxConnsPerAddr),
		RequestTimeoutMS: uint64(d.cfg.Server.RequestTimeout.Milliseconds()),
		IdleTimeoutMS:    uint64(d.cfg.Server.IdleTimeout.Milliseconds()),
	}
}

func (d *Daemon) info(c *server.Call) error {
	var req wire.GroupRef
	g, err := d.request(c, &req, &req.Group)
	if err != nil {
		return err
	}
	st := g.log.Stats()
	storage, fsync, interval := d.cfg.Storage.wire()
	return c.Result(wire.Info{
		Storage:         storage,
		Fsync:           fsync,
		FsyncIntervalMS: interval,
		Group:           g.id,
		Name:            g.name,
		Epoch:           g.epoch(),
		First:           st.First,
		Last:            st.Last,
		Members:         uint64(g.memberCount()),
		Limits:          d.limits(),
		Private:         g.private(),
		Member:          g.isMember(c.Peer()),
		Fingerprint:     d.id.Fingerprint(),
		Replicas:        d.replicaList(),
		SendAfter:       true, // send: after is checked (windowPassed)
	})
}

func (d *Daemon) join(ctx context.Context, c *server.Call) error {
	var req wire.Join
	g, err := d.request(c, &req, &req.Group)
	if err != nil {
		return err
	}
	if g.cell != nil {
		return d.cellJoin(ctx, c, g, &req)
	}
	if g.private() {
		if err := d.checkSecret(c, g, g.secretOK(req.Secret)); err != nil {
			return err
		}
	}
	ch := &memberChange{fp: c.Peer(), name: req.Name, joined: d.cfg.Now().UnixNano(), max: d.cfg.MaxMembers}
	if err := g.commit(ctx, ch); err != nil {
		return shuttingDown(c.Op(), g, err)
	}
	switch {
	case ch.err != nil:
		return d.notStored(c.Op(), g, ch.err)
	case ch.full:
		// Decided as the batch was applied: the list is as it was.
		return &wire.Error{Code: wire.CodeUnavailable, Unchanged: true,
			Message: fmt.Sprintf("join group %s: the group has %d members, its limit", g.name, d.cfg.MaxMembers)}
	}
	already := ch.already
	if !already {
		d.cfg.Logger.Info("member joined", "group", g.name, "member", c.Peer().Short(), "name", req.Name)
	}
	return c.Result(wire.Joined{Epoch: g.epoch(), Last: g.log.Stats().Last, Already: already})
}

func (d *Daemon) leave(ctx context.Context, c *server.Call) error {
	var req wire.GroupRef
	g, err := d.request(c, &req, &req.Group)
	if err != nil {
		return err
	}
	if g.cell != nil {
		return d.cellLeave(ctx, c, g)
	}
	ch := &memberChange{fp: c.Peer(), leave: true}
	if err := g.commit(ctx, ch); err != nil {
		return shuttingDown(c.Op(), g, err)
	}
	if ch.err != nil {
		return d.notStored(c.Op(), g, ch.err)
	}
	was := ch.was
	if was {
		d.cfg.Logger.Info("member left", "group", g.name, "member", c.Peer().Short())
	}
	return c.Result(wire.Left{WasMember: was})
}

// shuttingDown is the error of a lone group's join or leave the daemon
// stopped waiting for because it is shutting down (the handler's ctx
// ended with err). It is marked unchanged (PROTOCOL.md §9, key 7):
// group.commit fails only once it withdrew the change before any writer
// took it, so it was neither stored nor applied, nor will be. Until
// session 21 it said "nothing changed" in its text alone, and a client
// could not tell it from a change that may have been made.
func shuttingDown(op wire.Op, g *group, err error) error {
	return &wire.Error{Code: wire.CodeUnavailable, Unchanged: true,
		Message: fmt.Sprintf("%v group %s: the daemon is shutting down (%v); nothing changed", op, g.name, err)}
}

// notStoredRetry is the retry_after_ms of a membership change that could
// not be stored: a full or failing disk is not fixed in milliseconds.
const notStoredRetry = 5 * time.Second

// notStored logs, sparingly, why a membership change could not be stored
// (the file-system error, which names paths and stays on the server), and
// returns what its caller is told: unavailable, nothing changed.
func (d *Daemon) notStored(op wire.Op, g *group, err error) error {
	if ok, suppressed := d.stateLog.Allow(g.id); ok {
		d.cfg.Logger.Error("cannot store a group's member list: joins and leaves are refused until it can be",
			"group", g.name, "err", err, "refused_since_last_logged", suppressed)
	}
	return &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(notStoredRetry.Milliseconds()), Unchanged: true,
		Message: fmt.Sprintf("%v group %s: the daemon cannot store its member list now (its disk may be full); nothing changed: try again later", op, g.name)}
}

func (d *Daemon) members(c *server.Call) error {
	var req wire.GroupRef
	g, _, err := d.memberRequest(c, &req, &req.Group)
	if err != nil {
		return err
	}
	now := d.cfg.Now().UnixNano()
	g.seen(c.Peer(), now)
	// The list and its frame: up to MaxMembers entries of a name and a
	// fingerprint each.
	if err := c.Need(g.memberCount() * memberReplySize); err != nil {
		return err
	}
	return c.Result(wire.MemberList{Members: g.memberList(now)})
}

func (d *Daemon) send(ctx context.Context, c *server.Call) error {
	sc := newSendScratch()
	later := false // sc and c are the cell's proposal's, which answers them
	defer func() {
		if !later {
			sc.put()
		}
	}()
	// In place: the bodies are read from the request frame, and the store
	// copies them; nothing keeps them past this handler.
	sc.req = wire.Send{Messages: sc.req.Messages[:0]}
	req := &sc.req
	if err := c.DecodeInPlace(req); err != nil {
		return err
	}
	g, err := d.group(c.Op(), req.Group)
	if err != nil {
		return err
	}
	if g.cell != nil {
		// Sent to the leader first: a follower may not have applied a
		// join the leader acknowledged a moment ago.
		if err := g.cell.node.Leading(); err != nil {
			return cellError(c.Op(), g, err)
		}
	}
	now := d.cfg.Now()
	from, ok := g.sender(c.Peer(), now.UnixNano())
	if !ok {
		return fmt.Errorf("%v group %s: %w", c.Op(), g.name, wire.ErrNotMember)
	}
	if len(req.Messages) > d.cfg.MaxBatch {
		return fmt.Errorf("send group %s: %w: %d messages, at most %d per send", g.name, wire.ErrTooLarge, len(req.Messages), d.cfg.MaxBatch)
	}
	var bytes int64 // of bodies, in all
	for i, m := range req.Messages {
		if len(m.Body) > d.cfg.MaxMessageBytes {
			which := "the message" // what the sender sent: one message, or one of several, counted from 1
			if len(req.Messages) > 1 {
				which = fmt.Sprintf("message %d of %d", i+1, len(req.Messages))
			}
			return fmt.Errorf("send group %s: %w: %s has %d bytes, at most %d", g.name, wire.ErrTooLarge, which, len(m.Body), d.cfg.MaxMessageBytes)
		}
		sc.entries = append(sc.entries, store.Entry{ID: m.ID, From: from, Body: m.Body})
		bytes += int64(len(m.Body))
	}
	if err := d.retentionHolds(g, len(sc.entries), bytes); err != nil {
		return err
	}
	if wait, ok := g.rate.take(c.Peer(), len(sc.entries), now); !ok {
		ms := max(1, uint64((wait+time.Millisecond-1)/time.Millisecond))
		return &wire.Error{Code: wire.CodeRateLimited, RetryAfterMS: ms,
			Message: fmt.Sprintf("send to %s: rate limited: each member may send %g messages a second, %d at once", g.name, g.rate.rate, int(g.rate.burst))}
	}
	if g.cell != nil {
		if later, err = d.cellSend(ctx, c, g, sc); later {
			return server.ErrLater
		}
		if err != nil || c.Answered() {
			return err
		}
	} else if sc.acks, err = g.append(sc.entries, sc.acks, store.After{Epoch: req.AfterEpoch, Seq: req.After}); err == nil {
		// Outside the sequencing lock: one fsync serves every send
		// waiting here (under fsync always; else at once).
		var last uint64
		for _, a := range sc.acks {
			last = max(last, a.Seq)
		}
		if err = g.log.Durable(last); err != nil {
			err = &notDurableError{err}
		}
	} else if errors.Is(err, store.ErrMaybeWritten) {
		// Its record's write failed and could not be cut back: a restart
		// may read it back, as a batch whose fsync failed.
		err = &notDurableError{err}
	}
	switch {
	case errors.Is(err, store.ErrBatchTooLarge), errors.Is(err, store.ErrBodyTooLarge):
		// A batch larger than the retention limits.
		return fmt.Errorf("send group %s: %w: %v", g.name, wire.ErrTooLarge, err)
	case errors.Is(err, store.ErrOutOfOrder):
		return fmt.Errorf("send group %s: %w", g.name, err) // a bug: internal
	case errors.Is(err, store.ErrForgotten):
		return windowPassed(g, req.After)
	case err != nil:
		return d.notAppended(g, err)
	}
	return c.Result(sc.reply(g, sc.acks))
}

// windowPassed refuses a send whose after (PROTOCOL.md §8.5) the group's
// dedup window no longer reaches back to: a message of it stored by an
// earlier try may be forgotten, and stored again under its ID it would be
// stored twice. Nothing was stored (unchanged); the sender decides (its
// user: send it as a new message, or drop it).
func windowPassed(g *group, after uint64) error {
	return &wire.Error{Code: wire.CodeWindowPassed, Unchanged: true,
		Message: fmt.Sprintf("send group %s: the group's dedup window no longer holds every message stored after %d, so an earlier try of these messages may be stored and forgotten: not stored again under their IDs (a second copy could result)", g.name, after)}
}

// retentionHolds refuses a batch of n messages and bytes of bodies that
// retention could never hold (PROTOCOL.md §8.5: too_large), before it
// takes tokens or reaches a cell's raft log. The log would refuse it too,
// but a cell's replicas only once raft had committed it: each would retry
// applying it for ever, and serve no new message of the group again.
func (d *Daemon) retentionHolds(g *group, n int, bytes int64) error {
	maxMsgs, maxBytes := d.cfg.Retention.Retains()
	if n > maxMsgs || bytes > maxBytes {
		return fmt.Errorf("send group %s: %w: %d messages of %d bytes in all, more than the group's log may hold (%d messages, %d bytes)",
			g.name, wire.ErrTooLarge, n, bytes, maxMsgs, maxBytes)
	}
	return nil
}

// notAppendedRetry is the retry_after_ms of a send the log could not
// store.
const notAppendedRetry = time.Second

// notAppended logs, sparingly, why a group's log could not store a send
// (its error stays on the server), and returns what the sender is told:
// unavailable; nothing stored, or, if the messages were appended but could
// not be made durable (notDurableError), that they may be stored.
func (d *Daemon) notAppended(g *group, err error) error {
	if ok, suppressed := d.logLog.Allow(g.id); ok {
		d.cfg.Logger.Error("a group's log cannot store messages: sends are refused until it can",
			"group", g.name, "err", err, "refused_since_last_logged", suppressed)
	}
	we := &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(notAppendedRetry.Milliseconds()), Unchanged: true,
		Message: fmt.Sprintf("send to %s: the group's log cannot store messages now; nothing was stored: try again later", g.name)}
	if nd := (*notDurableError)(nil); errors.As(err, &nd) {
		// Not Unchanged: the client reports the send in doubt.
		we.Unchanged = false
		we.Message = fmt.Sprintf("send to %s: the group's log could not make the messages durable; they may be stored: try again later with the same message IDs (one stored is acknowledged as a duplicate)", g.name)
	}
	return we
}

// notDurableError is a send's whose messages were appended, but that the
// log could not make as durable as an ack promises (an fsync failed), or
// whose record's failed write could not be cut back
// (store.ErrMaybeWritten): they may be stored, so the refusal must not
// say they were not.
type notDurableError struct{ err error }

func (e *notDurableError) Error() string { return "make durable: " + e.err.Error() }
func (e *notDurableError) Unwrap() error { return e.err }

// sendScratch is the send handler's working space, pooled: what a send
// used to allocate (four slices, the request and the reply, which an
// interface argument moved to the heap, and a cell's answer function).
type sendScratch struct {
	req     wire.Send // the request, its messages decoded in place
	entries []store.Entry
	acks    []store.Ack
	sent    []wire.Ack
	out     wire.Sent // the reply, built by reply
	// call and group are a cell's send's, for answer: sc.answerLater,
	// bound once when the scratch is made.
	call   *server.Call
	group  *group
	answer func([]store.Ack, error)
}

// sendScratches pools sendScratch (newSendScratch).
var sendScratches sync.Pool

// newSendScratch returns a pooled scratch, or a new one.
func newSendScratch() *sendScratch {
	if sc, ok := sendScratches.Get().(*sendScratch); ok {
		return sc
	}
	sc := new(sendScratch)
	sc.answer = sc.answerLater
	return sc
}

// reply is the Sent frame that acknowledges acks, built in sc.
func (sc *sendScratch) reply(g *group, acks []store.Ack) *wire.Sent {
	sc.sent = sc.sent[:0]
	for _, a := range acks {
		sc.sent = append(sc.sent, wire.Ack{Seq: a.Seq, Time: a.Time, Duplicate: a.Duplicate})
	}
	sc.out = wire.Sent{Epoch: g.epoch(), Acks: sc.sent}
	return &sc.out
}

// answerLater answers a cell's send (sc.call), which its handler left to
// its raft entry (cell.Node.SendLater), on the goroutine that learns raft's
// verdict, and ends the call: with acks as soon as the entry is applied,
// together with the other sends the entry carries (server.Call.TryResult),
// so that the handler's goroutine need not be woken for it. A reply that
// cannot be queued at once, or an error, is written by a goroutine of its
// own: this one must not wait.
func (sc *sendScratch) answerLater(acks []store.Ack, err error) {
	c, g := sc.call, sc.group
	if err == nil {
		sc.acks = acks
		g.countDuplicates(acks)
		if c.TryResult(sc.reply(g, acks)) {
			sc.put()
			c.End(nil)
			return
		}
	}
	go sc.endLater(c, g, acks, err)
}

// endLater answers and ends a cell's send that answerLater could not.
func (sc *sendScratch) endLater(c *server.Call, g *group, acks []store.Ack, err error) {
	if err != nil {
		err = cellError(wire.OpSend, g, err)
	} else {
		err = c.Result(sc.reply(g, acks))
	}
	sc.put()
	c.End(err)
}

// put empties sc, dropping its references to the request's bodies and
// the call, and returns it to the pool unless it grew past a chat-sized
// batch.
func (sc *sendScratch) put() {
	if cap(sc.entries) > 256 || cap(sc.req.Messages) > 256 {
		return
	}
	clear(sc.req.Messages)
	clear(sc.entries)
	sc.req = wire.Send{Messages: sc.req.Messages[:0]}
	sc.entries, sc.acks, sc.sent = sc.entries[:0], sc.acks[:0], sc.sent[:0]
	sc.out, sc.call, sc.group = wire.Sent{}, nil, nil
	sendScratches.Put(sc)
}

// sendMessages writes msgs as Messages frames of bounded size, and returns
// msgs emptied, its references to bodies dropped, for reuse.
//
// Each frame's reply memory is taken before it is encoded (call.need):
// working is what the caller holds meanwhile (its query buffers), and the
// frame is the larger of its estimate and the encoding buffer the call
// keeps from earlier frames.
func sendMessages(c *server.Call, msgs []wire.Message, working int) ([]wire.Message, error) {
	defer clear(msgs)
	for rest := msgs; len(rest) > 0; {
		n, size := frameCut(rest, frameMaxMessages, frameBodyBudget)
		if err := c.Need(working + max(size, c.Buffered())); err != nil {
			return msgs[:0], err
		}
		if err := c.Send(wire.KindMessages, wire.Messages{Messages: rest[:n]}); err != nil {
			return msgs[:0], err
		}
		rest = rest[n:]
	}
	return msgs[:0], nil
}

// memberReplySize bounds from above the reply memory of one member in a
// members reply: its wire.Member and its encoding.
var memberReplySize = int(unsafe.Sizeof(wire.Member{})) + 2*wire.MaxNameBytes + 64

// Reply memory of the query buffers of fetch and watch, per message.
var (
	storeMessageSize = int(unsafe.Sizeof(store.Message{}))
	wireMessageSize  = int(unsafe.Sizeof(wire.Message{}))
)

// working returns the reply memory of query buffers of these capacities.
func working(buf []store.Message, out []wire.Message) int {
	return cap(buf)*storeMessageSize + cap(out)*wireMessageSize
}

// keepBuffers is the most messages a watch keeps its query buffers sized
// for while it waits: an idle watcher holds little, and live traffic (a
// few messages per wake) reuses them.
const keepBuffers = 64

func (d *Daemon) fetch(c *server.Call) error {
	var req wire.Fetch
	readBy := time.Now().Add(cellReadWait)
	g, _, err := d.readRequest(c, &req, &req.Group, &req.MinSeq, readBy)
	if err != nil {
		return err
	}
	g.seen(c.Peer(), d.cfg.Now().UnixNano())
	if req.Epoch != 0 && req.Epoch != g.epoch() {
		return epochMismatch(c.Op(), g)
	}
	if err := d.awaitSeq(c.Context(), c, g, req.MinSeq, readBy); err != nil {
		return err
	}
	remain := d.cfg.FetchPage
	if req.Limit != 0 && req.Limit < uint64(remain) {
		remain = int(req.Limit)
	}
	chunk := min(remain, queryChunk)
	if err := c.Need(chunk * (storeMessageSize + wireMessageSize)); err != nil {
		return err
	}
	buf := make([]store.Message, 0, chunk)
	out, cur, err := query(make([]wire.Message, 0, chunk), func() ([]store.Message, store.Cursor, error) {
		switch {
		case req.Since != nil:
			return g.log.Since(*req.Since, min(remain, queryChunk), buf)
		case req.After != nil:
			return g.log.After(*req.After, min(remain, queryChunk), buf)
		}
		return g.log.After(0, min(remain, queryChunk), buf)
	})
	if err != nil {
		return queryErr(c.Op(), g, err)
	}
	for {
		n := len(out)
		if out, err = sendMessages(c, out, working(buf, out)); err != nil {
			return err
		}
		remain -= n
		if remain <= 0 || !cur.More || n == 0 {
			break
		}
		next := cur.Next
		var more store.Cursor
		out, more, err = query(out, func() ([]store.Message, store.Cursor, error) {
			return g.log.After(next, min(remain, queryChunk), buf[:0])
		})
		if err != nil {
			// No End: the reply so far is not the whole page.
			return queryErr(c.Op(), g, err)
		}
		if len(out) > 0 && out[0].Seq != next+1 {
			// Retention dropped what followed the messages sent while
			// they were sent (a busy group at its limits): the page ends
			// before the hole, so that a reply is one run of messages,
			// and the next page, asked after next, begins past it and
			// says so (End's first). Sent on, the messages past the hole
			// followed as if nothing were missing, and the reference
			// client refuses such a reply (since session 17).
			cur = store.Cursor{Next: next, More: true, First: more.First, Last: more.Last}
			break
		}
		cur = more
	}
	return c.Send(wire.KindEnd, wire.End{Next: cur.Next, More: cur.More, First: cur.First, Last: cur.Last, Epoch: g.epoch()})
}

// queryErr is the error a fetch or watch of g answers when its log
// refused a query. A closed log (store.ErrClosed: the daemon closes the
// logs as it shuts down) is unavailable: the client asks again, another
// replica or later, from where it is. Until session 19 a closed log's
// query was an empty page, which a fetch answered as the end of the log
// and a watch as being caught up: the reader believed it had everything.
func queryErr(op wire.Op, g *group, err error) error {
	if errors.Is(err, store.ErrClosed) {
		return fmt.Errorf("%v group %s: %w: its log is closed: the daemon is shutting down", op, g.name, wire.ErrUnavailable)
	}
	return fmt.Errorf("%v group %s: %w", op, g.name, err)
}

// watch sends the selected history, then follows the log with the
// watcher's own cursor: it queries the log for what follows the cursor and,
// when nothing does, waits on the log's Changed channel (taken before the
// query, so no append between the query and the wait is missed). A slow
// watcher therefore never slows senders and costs no queue: it falls behind
// in the log, and learns of what retention dropped meanwhile from a Gap.
func (d *Daemon) watch(ctx context.Context, c *server.Call) error {
	var req wire.Watch
	readBy := time.Now().Add(cellReadWait)
	g, left, err := d.readRequest(c, &req, &req.Group, &req.MinSeq, readBy)
	if err != nil {
		return err
	}
	if req.Epoch != 0 && req.Epoch != g.epoch() {
		return epochMismatch(c.Op(), g)
	}
	if err := d.awaitSeq(ctx, c, g, req.MinSeq, readBy); err != nil {
		return err
	}
	// The member is online while this watch is open (PROTOCOL.md §8.4).
	closed := g.watching(c.Peer(), d.cfg.Now().UnixNano())
	defer func() { closed(d.cfg.Now().UnixNano()) }()
	st := g.log.Stats()
	if err := c.Send(wire.KindStart, wire.Start{Epoch: g.epoch(), First: st.First, Last: st.Last,
		HeartbeatMS: uint64(d.cfg.HeartbeatInterval.Milliseconds())}); err != nil {
		return err
	}

	// The query buffers are sized by what each query returns (a catch-up
	// chunk, or the few messages of a live wake), and shrunk again while
	// the watch waits (keepBuffers).
	var buf []store.Message
	var out []wire.Message
	var cursor uint64
	switch {
	case req.Since != nil:
		if err := c.Need(queryChunk * (storeMessageSize + wireMessageSize)); err != nil {
			return err
		}
		var cur store.Cursor
		out, cur, err = query(out, func() ([]store.Message, store.Cursor, error) {
			msgs, cur, err := g.log.Since(*req.Since, queryChunk, buf)
			buf = msgs
			return msgs, cur, err
		})
		if err != nil {
			return queryErr(c.Op(), g, err)
		}
		if out, err = sendMessages(c, out, working(buf, out)); err != nil {
			return err
		}
		cursor = cur.Next
	case req.After != nil:
		// A cursor: what retention dropped after it is reported in a Gap
		// (below), before any message.
		cursor = *req.After
	default:
		// No selection: everything the log holds, from its first message.
		// What retention dropped before the watch began is not a gap: the
		// watcher never asked for it (PROTOCOL.md §8.7).
		if st.First > 0 {
			cursor = st.First - 1
		}
	}

	stopped := func() error {
		select {
		case <-left:
			return fmt.Errorf("watch group %s: %w: left the group", g.name, wire.ErrNotMember)

		case <-c.Stopping():
			return fmt.Errorf("watch group %s: %w: the daemon is shutting down", g.name, wire.ErrUnavailable)
		case <-ctx.Done():
			return fmt.Errorf("watch group %s: %w: the daemon is shutting down", g.name, wire.ErrUnavailable)
		case <-c.Gone():
			return c.Lost()
		default:
		}
		if g.cell != nil && !d.node.Serving() {
			return d.notServing(c.Op(), g) // removed from the cell
		}
		return nil
	}
	heartbeat := time.NewTimer(d.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	for {
		if err := stopped(); err != nil {
			return err
		}
		changed := g.log.Changed() // before reading the log: see the doc comment
		var membership <-chan struct{}
		if g.cell != nil {
			membership = d.membership()
		}
		var logLast uint64 // the log's last sequence, for heartbeats
		if f := g.sharedAfter(cursor); f != nil {
			// Another watcher at this cursor has encoded what comes next.
			if err := c.Write(f.frame); err != nil {
				return err
			}
			cursor = f.last
			heartbeat.Reset(d.cfg.HeartbeatInterval)
			if logLast = g.log.Last(); logLast > cursor {
				continue
			}
		} else {
			// The most this query may return, and the buffers it needs.
			want := int(min(uint64(queryChunk), g.log.Last()-min(cursor, g.log.Last())))
			if err := c.Need(working(buf, out) + max(0, want-cap(buf))*(storeMessageSize+wireMessageSize)); err != nil {
				return err
			}
			var cur store.Cursor
			out, cur, err = query(out, func() ([]store.Message, store.Cursor, error) {
				msgs, cur, err := g.log.After(cursor, queryChunk, buf[:0])
				buf = msgs
				return msgs, cur, err
			})
			if err != nil {
				// Not caught up: ends the watch, which the client resumes
				// from its cursor.
				return queryErr(c.Op(), g, err)
			}
			logLast = cur.Last
			if cur.First > 0 && cursor < cur.First-1 {
				// Retention dropped messages the watcher had not been sent.
				if err := c.Send(wire.KindGap, wire.Gap{From: cursor + 1, To: cur.First - 1}); err != nil {
					return err
				}
				cursor = cur.First - 1
			}
			if len(out) > 0 {
				first, last := out[0].Seq, out[len(out)-1].Seq
				n, _ := frameCut(out, frameMaxMessages, frameBodyBudget)
				one := n == len(out)
				if out, err = sendMessages(c, out, working(buf, out)); err != nil {
					return err
				}
				if one && first == cursor+1 {
					g.share(first, last, c.Frame()) // the frame just written
				}
				cursor = last
				heartbeat.Reset(d.cfg.HeartbeatInterval)
				if cur.More {
					continue
				}
			}
		}
		// All the log held when changed was taken is sent: wait on it
		// rather than read again for what is most often nothing, one query
		// and one poll of the stop channels fewer per wake. The buffers
		// kept for the next wake count in the call's reply memory.
		if err := c.Need(working(buf, out) + c.Buffered()); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-heartbeat.C:
			// Idle for a whole heartbeat: give back large buffers (a
			// catch-up's), which live traffic does not need.
			if cap(buf) > keepBuffers {
				buf, out = nil, nil
			}
			if c.Buffered() > maxSharedFrame {
				c.DropBuffer()
			}
			if err := c.Send(wire.KindHeartbeat, wire.Heartbeat{Last: logLast, Now: d.cfg.Now().UnixNano()}); err != nil {
				return err
			}
			heartbeat.Reset(d.cfg.HeartbeatInterval)
		case <-left:
		case <-membership:
		case <-c.Stopping():
		case <-ctx.Done():
		case <-c.Gone():
		}
	}
}
