package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// A group replicated by a cell (PROTOCOL.md §13) is served by each of the
// cell's members: sends, joins and leaves by its leader, fetches and
// watches by any. A Group follows the leader by itself: a member that
// does not lead answers unavailable naming the leader, and the call is
// repeated there with the same arguments (a send's message IDs included,
// so a send the old leader stored is acknowledged once, as a duplicate).
// While the cell elects a leader, or when the member it knew is
// unreachable, it tries the other replicas it knows of (from the
// registry's listing, Info, and the leaders it was sent to) until the
// call's context ends, at most cellFollowFor.

// Replica is a member of the cell that replicates a group: its address,
// its key's fingerprint, and whether it leads the cell.
type Replica = wire.Replica

// cellFollowFor bounds how long a call to a replicated group keeps
// looking for its leader when its context has no deadline.
const cellFollowFor = 15 * time.Second

// cellDoubtFor bounds how long a send to a cell is retried once an
// attempt left it in doubt (ErrInDoubt), whatever its context's deadline:
// a retry under the same IDs settles it as soon as a leader answers
// (acknowledged, as a duplicate if the attempt had stored it), and a cell
// that has not elected one in this long (a cell elects within a second or
// two, several times that on a loaded host), a majority of its members
// unreachable, is not about to settle it. Until session 21 such a send
// went on dialling members that never answered until its context ended
// (a minute, for a program that allowed one), when the program could have
// told its user the send was in doubt, to retry later.
const cellDoubtFor = 10 * time.Second

// cellRetryMin is the least wait before trying the next replica.
const cellRetryMin = 50 * time.Millisecond

// Replicas returns the members of the cell that replicates the group, as
// this handle knows them (the leader marked), or nil for a group of one
// daemon.
func (g *Group) Replicas() []Replica {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Replica(nil), g.replicas...)
}

// learnReplicas records rs, as the member from named them, as the cell's
// members, if there are any, unless the handle knows members other than
// from and rs names none of them.
//
// Why not: a member's word on the cell is its own, and a list of itself
// alone (or of itself and keys of its own) kept every call of the handle
// on it, no other member left to ask (until session 16: one member, a
// removed one whose key was stolen, say, held the group from the user).
// Raft changes a cell's members one at a time: the members a member
// names share some with those the handle knew, unless every one of them
// was replaced meanwhile.
func (g *Group) learnReplicas(rs []wire.Replica, from Fingerprint) {
	if len(rs) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	other := func(r wire.Replica) bool { return r.Fingerprint != from }
	known := func(r wire.Replica) bool {
		return other(r) && slices.ContainsFunc(g.replicas, func(o wire.Replica) bool { return o.Fingerprint == r.Fingerprint })
	}
	if slices.ContainsFunc(g.replicas, other) && !slices.ContainsFunc(rs, known) {
		g.cl.cfg.Logger.Debug("cell: a member names none of the other members known; list kept", "from", from.Short())
		return
	}
	g.replicas = append(g.replicas[:0], rs...)
}

// learnFrom records the replicas a member, from, named in its refusal
// (one that does not serve the group, removed from the cell or still
// catching up; or one that does not lead, refusing a send, join or
// leave): they replace the list the handle holds (learnReplicas).
func (g *Group) learnFrom(err error, from Fingerprint) {
	var we *wire.Error
	if errors.As(err, &we) && len(we.Replicas) > 0 {
		g.learnReplicas(we.Replicas, from)
	}
}

// otherReplica decides, for a read of a replicated group that a member
// refused or left unanswered before any message came (err), whether to ask
// another member: each once (tries counts them), learning the members
// from the refusal first. It points the handle at the next one.
func (g *Group) otherReplica(err error, tries *int) bool {
	if !g.replicated() || !g.cellRetryable(err) {
		return false
	}
	g.learnFrom(err, g.peer().pin)
	*tries++
	if *tries >= len(g.Replicas()) {
		return false
	}
	g.cl.cfg.Logger.Debug("cell: read refused; asking the next replica", "addr", g.peer().addrs, "err", err)
	return g.nextReplica()
}

// follow points the handle at r, the cell's leader, as a member named
// it. A member r closed a connection of as it stopped (code 0x2) a moment
// ago is dialled all the same: the cell elected it since, restarted (a
// leader that stops hands the leadership over first, so members do not go
// on naming it), and the second the client otherwise waits before
// dialling a server that stopped kept sends from the new leader in a
// rolling restart (0.4-0.8 s pauses in internal/jepsen, where a restarted
// member is often the next one handed the leadership). If the member
// named is in fact gone, the dial says so within cellDialFor.
//
// A leader the handle did not know of is added to its members, up to
// wire.MaxReplicas (a cell's listing has no more): a member naming a new
// leader at each refusal (a rogue one, a new key each time) grew the list
// by one per call for as long as the handle lived (until session 17), and
// with it each pass over the members (replicaAfter, the wrong-key count
// that ends a call). Past the bound the leader is followed unlisted; its
// own refusals, or Info, name the cell's members as it has them.
func (g *Group) follow(r wire.Replica) error {
	p, err := g.peerAt([]string{r.Addr}, r.Fingerprint)
	if err != nil {
		return err
	}
	p.forgetStop()
	defer g.done(p) // after g.mu is let go
	g.mu.Lock()
	defer g.mu.Unlock()
	g.p = p
	known := false
	for i := range g.replicas {
		g.replicas[i].Leader = g.replicas[i].Fingerprint == r.Fingerprint
		known = known || g.replicas[i].Leader
	}
	if !known && len(g.replicas) > 0 && len(g.replicas) < wire.MaxReplicas {
		g.replicas = append(g.replicas, wire.Replica{Addr: r.Addr, Fingerprint: r.Fingerprint, Leader: true})
	}
	return nil
}

// nextReplica points the handle at the replica after the one it uses, and
// reports whether there is another to try.
func (g *Group) nextReplica() bool {
	r, ok := g.replicaAfter()
	if !ok {
		return false
	}
	p, err := g.peerAt([]string{r.Addr}, r.Fingerprint)
	if err != nil {
		return false
	}
	g.moveTo(p)
	return true
}

// replicaAfter returns the replica after the one the handle uses (passing
// over one that went silent), if there is another.
func (g *Group) replicaAfter() (wire.Replica, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.replicas) < 2 {
		return wire.Replica{}, false
	}
	at := -1
	for i, r := range g.replicas {
		if r.Fingerprint == g.p.pin {
			at = i
		}
	}
	r := g.replicas[(at+1)%len(g.replicas)]
	if g.suspectedLocked(r.Fingerprint) && len(g.replicas) > 2 {
		r = g.replicas[(at+2)%len(g.replicas)] // the member that went silent: the one after
	}
	return r, true
}

// suspectFor is how long a member that left an attempt unanswered is
// passed over, and not followed when others still name it leader: until
// the cell elects another (within a second or so), its followers name
// the dead leader, and following them there cost an attempt's timeout
// again. It is short: a dead leader restarted may well be elected again.
const suspectFor = 1500 * time.Millisecond

// suspect marks fp as a member that went silent, or (handshake) that
// did not complete a handshake within the last dial bound.
func (g *Group) suspect(fp Fingerprint, handshake bool) {
	g.mu.Lock()
	g.suspectFP, g.suspectUntil, g.suspectBound = fp, time.Now().Add(suspectFor), 0
	if handshake {
		g.suspectBound = g.failedBound
	}
	g.mu.Unlock()
}

// suspected reports whether fp went silent a moment ago.
func (g *Group) suspected(fp Fingerprint) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.suspectedLocked(fp)
}

func (g *Group) suspectedLocked(fp Fingerprint) bool {
	return fp == g.suspectFP && time.Now().Before(g.suspectUntil)
}

// replicated reports whether the group is known to be replicated by a
// cell.
func (g *Group) replicated() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.replicas) > 0
}

// anyCall performs an operation any member of a cell answers (info,
// members): on a group of one daemon, at its daemon (reach, which follows
// it if it moved); on a replicated group, as memberCall does, so that a
// member gone is passed over for the others. Until session 15's walk it
// asked the member the handle knew alone: huddle web, which keeps a cell
// group's handle across elections, found the group unreachable at every
// info once the leader it knew was killed, while the cell served.
func (g *Group) anyCall(ctx context.Context, op wire.Op, args, out any) error {
	if g.replicated() {
		return g.memberCall(ctx, op, args, out)
	}
	var u inUse
	defer g.doneAll(&u)
	p, err := g.reach(ctx, &u)
	if err == nil {
		err = p.singleThen(ctx, op, args, out, g.redial(&u))
	}
	return err
}

// memberCall performs an operation at the member the handle is on: on a
// group of one daemon, a single call; on a replicated group, one attempt
// there, then at the leader a refusal names (send, join and leave only
// a leader runs: a follower names it), or at the next member when one is
// silent, stopping or without a leader, as the package comment above says.
// (Named leaderCall until session 17: it asks no leader of its own accord,
// and info and members go through it too.)
func (g *Group) memberCall(ctx context.Context, op wire.Op, args, out any) error {
	return g.memberCallOnDoubt(ctx, op, args, out, nil)
}

// memberCallOnDoubt is memberCall, calling onDoubt, if not nil, once the
// first attempt leaves the call in doubt, before the call's own retries:
// a send's sets, in the request args points to, where the log stood
// before its first try (after, PROTOCOL.md §8.5), so that a retry the
// call makes names it as a later send of the messages does. Until session
// 21 the retries within cellDoubtFor went without it, and a cell whose
// dedup window passed meanwhile stored a second copy. A call never in
// doubt, the usual send, never calls it.
func (g *Group) memberCallOnDoubt(ctx context.Context, op wire.Op, args, out any, onDoubt func()) error {
	// The bound on following the leader, if ctx sets none, ends the
	// attempts and the waits between them, rather than a context of its
	// own: that was a timer per call.
	var until time.Time
	_, bounded := ctx.Deadline()
	if !bounded && g.replicated() {
		until = time.Now().Add(g.cl.cellFollowFor)
	}
	attempt := cellAttemptMin
	// selfNamed is the last refusal of a member that named itself the
	// leader (a leader whose disk is full, handing over): a call that
	// ends on a refusal naming it leader (its own, or a follower's "ask
	// the leader") ends with it, the leader's own reason. Not one that
	// ends otherwise: a member that left the request unanswered may have
	// been elected and taken it, its outcome unknown.
	var selfNamed error
	var selfKey Fingerprint
	// doubt: an attempt's send may have been stored (its error in doubt,
	// ErrInDoubt): the call's error is then in doubt too, whatever the
	// later attempts' (a member's refusal, another's silence) say. Until
	// session 19 the call ended with the last attempt's error alone: a
	// send cut short at the leader, then refused by the followers (no
	// leader yet), was reported refused, nothing stored.
	doubt := false
	// doubtUntil is when the call ends in doubt (cellDoubtFor after the
	// first attempt that left it so), if its context and the follow bound
	// have not ended it before; doubtErr is that attempt's error, which
	// the call ends with if the bound cuts the attempt then under way
	// short (its error would otherwise be the bound's deadline, not what
	// a member did).
	var doubtUntil time.Time
	var doubtErr error
	// refused is the last refusal a member answered, if it named no
	// leader (unavailable: an election under way): a call its bound (ctx's, the
	// follow bound, the doubt's) ends in an attempt cut short, or on
	// doubtErr, keeps it beside its error (refusedBefore). Until session
	// 23 it was lost: huddle send to a cell an election outlasted said
	// "timed out; is the daemon running?", though its members had
	// answered each try. Not a refusal naming a leader: a leader's own
	// ("it took nothing of this", selfNamed) would read as the outcome of
	// a call whose last attempt went unanswered, perhaps taken.
	var refused *wire.Error
	// settling: the call counts in g.settling from its doubt on, until it
	// ends (dialBound).
	settling := false
	defer func() {
		if settling {
			g.settled()
		}
	}()
	ended := func(err error) error {
		var we *wire.Error
		if selfNamed != nil && errors.As(err, &we) && we.Leader != nil && we.Leader.Fingerprint == selfKey {
			err = selfNamed
		}
		return inDoubtIf(doubt, err)
	}
	// doubted calls onDoubt once: at the first attempt in doubt, here, or
	// within a single call to a group of one daemon, before its retry on
	// a new connection (callOnDoubt).
	var doubted func()
	if onDoubt != nil {
		called := false
		doubted = func() {
			if !called {
				called = true
				onDoubt()
			}
		}
	}
	wrongKeys := 0 // members whose address another key answered, this call
	for redirects := 0; ; redirects++ {
		asked := g.peer().pin
		err := g.attempt(ctx, until, attempt, op, args, out, doubted)
		if err == nil {
			return nil
		}
		if !doubtUntil.IsZero() && until.Equal(doubtUntil) && past(until) && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = doubtErr // the doubt's bound, not a member's doing
		}
		if errors.Is(err, ErrInDoubt) && doubtUntil.IsZero() {
			doubt, doubtErr = true, err
			doubtUntil = time.Now().Add(g.cl.cellDoubtFor)
			if until.IsZero() || doubtUntil.Before(until) {
				until = doubtUntil
			}
			if doubted != nil {
				doubted()
			}
			settling = true
			g.settle()
			g.cl.cfg.Logger.Debug("cell: the call is in doubt; retrying it under the same IDs", "op", op, "for", g.cl.cellDoubtFor, "err", err)
		}
		if !bounded && until.IsZero() {
			// A group of one daemon (no members known) has the same bound
			// from its first refusal on (its call had none but its
			// context's, and a daemon naming as leader one that named it
			// back, each refusing, kept a call without a deadline going
			// for ever, and the handle's Close waiting for it, until
			// session 17). Its first attempt, a single call, has no bound
			// of the kind: a daemon may take its time.
			until = time.Now().Add(g.cl.cellFollowFor)
		}
		if ctx.Err() != nil || past(until) {
			if refused != nil && !serverSaid(err) {
				err = &refusedBefore{err: err, refusal: refused}
			}
			return ended(err)
		}
		var we *wire.Error
		if errors.As(err, &we) && we.Code == wire.CodeUnavailable {
			refused = we
			if we.Leader != nil {
				refused = nil // a later word: the cell had a leader to name
			}
		}
		leader := errors.As(err, &we) && we.Code == wire.CodeUnavailable && we.Leader != nil
		// A member's refusal names the cell's members: a list made before
		// one was replaced is replaced, so that a member gone is not asked.
		g.learnFrom(err, asked)
		log := g.cl.cfg.Logger
		if leader && we.Leader.Fingerprint == asked {
			// The member refusing names itself: a leader that cannot take
			// the call now (a full disk: it hands the leadership over) says
			// so, and is asked again after its wait; but the next member
			// is asked between, which names the leader as it stands. Until
			// session 16 the call stayed on the member naming itself until
			// its context ended: one member doing so (a removed one, its
			// key stolen, a rogue registry listing it first) kept every
			// call from the cell's leader, the others never asked.
			selfNamed, selfKey = err, asked
			leader = false
		}
		if leader && g.suspected(we.Leader.Fingerprint) {
			log.Debug("cell: passing over the leader named, silent a moment ago", "op", op, "leader", we.Leader.Addr)
			// The member named went silent a moment ago: the cell is
			// electing another. Ask the others again shortly.
			leader = false
		} else if leader {
			// Members may name a leader that just lost its leadership
			// (an election under way): after the first hops, wait a
			// little more at each, until the call's context ends.
			if redirects >= 2 && !pause(ctx, until, jitter(cellRetryMin*time.Duration(min(redirects, 20)))) {
				return ended(err)
			}
			log.Debug("cell: following the leader named", "op", op, "leader", we.Leader.Addr)
			if ferr := g.follow(*we.Leader); ferr != nil {
				return ended(err)
			}
			continue
		}
		if !g.replicated() || !g.cellRetryable(err) {
			return ended(err)
		}
		if isWrongKey(err) {
			// Another key at the member's address (a leader named at an
			// address since taken by another daemon, or by a rogue
			// member's naming): it is passed over as a silent one is,
			// unless every member known met another key. Until session
			// 16 the call ended there, and the handle stayed on that
			// address: every later call, reads and watches too, met the
			// same key, the group unreachable for good.
			if wrongKeys++; wrongKeys >= len(g.Replicas()) {
				return ended(err)
			}
			log.Debug("cell: another key at the member's address; trying the next replica", "op", op, "addr", g.peer().addrs, "err", err)
			g.suspect(asked, false)
			g.nextReplica()
			continue
		}
		if errors.Is(err, errAttemptTimeout) || errors.Is(err, errNoHandshake) || errors.Is(err, errSilent) {
			// A member that says nothing (killed, or cut off): the next
			// one at once, and, if it took the request but did not answer
			// it, more patience with the next request.
			if errors.Is(err, errAttemptTimeout) {
				attempt = min(2*attempt, cellAttemptMax)
			}
			log.Debug("cell: no answer in time; trying the next replica", "op", op, "addr", g.peer().addrs, "err", err)
			g.suspect(g.peer().pin, errors.Is(err, errNoHandshake))
			g.nextReplica()
			continue
		}
		wait := cellRetryMin
		if d, ok := RetryAfter(err); ok && d > wait {
			wait = d
		}
		log.Debug("cell: refused; trying again", "op", op, "addr", g.peer().addrs, "in", wait, "err", err)
		if !pause(ctx, until, jitter(wait)) {
			return ended(err)
		}
		if !leader {
			g.nextReplica()
		}
	}
}

// Each attempt of a call to a replicated group gets cellAttemptMin to be
// answered, doubling up to cellAttemptMax: a member killed with SIGKILL
// answers nothing, and its QUIC connection would take seconds to be
// declared dead, while the cell has a new leader within about a second.
// A slow answer costs a repeat on another member, with the same message
// IDs: never a duplicate.
//
// An attempt that must dial first gets cellDialFor for the handshake
// (more on a slow path: dialBound), and then its time to be answered: a
// live member completes a handshake in a round trip and a little CPU,
// and the member most often dialled in a failover is the dead leader its
// followers still name, which answers nothing until the attempt's end.
//
// And an attempt on a connection from which not one packet arrives for
// cellSilentFor after the request went out (more on a slow path:
// silentFor) ends there: a live member acknowledges the request's packets
// within a round trip and its 25 ms ack delay, however long the operation
// then takes (a raft commit under load), so silence means the member is
// gone (killed, frozen, cut off), and the next one is asked at once rather
// than after the attempt's second.
//
// While a call is in doubt, the handshakes that failed widen an attempt's
// dial bound to cellDoubtDialFor at most (dialBound).
const (
	cellAttemptMin   = time.Second
	cellAttemptMax   = 8 * time.Second
	cellDialFor      = 500 * time.Millisecond
	cellDoubtDialFor = 2 * cellDialFor
	cellSilentFor    = 400 * time.Millisecond
)

// silentFor is how long an attempt on a connection waits for a first
// packet before it takes the member for gone: cellSilentFor, or on a path
// whose round trips are long, two of them: at their smoothed length plus
// four deviations (as QUIC's probe timeout counts one), and at least two
// handshakes with the cell (right after a handshake quic-go's smoothed
// round trip is still its initial guess, 100 ms). A client 300 ms from a
// cell, each way, hears no ack sooner than 600 ms after its request: with
// cellSilentFor alone, every attempt there ended silent.
func silentFor(s quic.ConnectionStats, handshake time.Duration) time.Duration {
	return max(cellSilentFor, 2*(s.SmoothedRTT+4*s.MeanDeviation), 2*handshake)
}

// dialBound returns how long an attempt waits for a handshake with the
// member fp: cellDialFor, or on a path found slow, three times as long as
// the last handshake with one of the cell's members took; and after a
// handshake with fp that did not complete in time, twice as long as that
// one had (up to cellAttemptMax), until one with fp does.
//
// The failures are fp's own once the handle has measured its path (a
// handshake with any member completed): a member that failed them is
// gone (killed, cut off), not far, since the path's own room is the
// handshake's three times, and says nothing of the others. Until session
// 23 they were the handle's: a member gone for long, its dials failed
// until its bound stood at 8 s, gave a leader killed since (which its
// followers name until the cell elects another) 8 s for its dial rather
// than 500 ms before the call passed it over, and a handshake completed
// with any other member set the gone one's bound back to 500 ms. Before
// the path is measured, a failure with any member counts for each: a
// client that knows nothing yet of its path to a cell far away would
// otherwise give up on every handshake with every member, and never send.
//
// But while a call of the handle is in doubt (settling), and the handle
// has measured its path, the handshakes that failed widen it to
// cellDoubtDialFor at most: the send's doubt is settled by the first
// member back that can answer it, the leader that took the first try
// often. Until session 22 a member gone for long, its bound doubled to
// 8 s, took 8 s of the 10 s a send in doubt is retried (cellDoubtFor):
// the leader that held the first try, back within a second or two, was
// asked again only after it, and the send ended in doubt, settled by
// nothing. Outside a doubt the doubled bound stands, and a dead member is
// not dialled every half second for as long as it is gone.
func (g *Group) dialBound(fp Fingerprint) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	failed := g.dialFor[fp]
	if g.handshake == 0 {
		for _, d := range g.dialFor {
			failed = max(failed, d)
		}
	}
	if g.settling > 0 && g.handshake > 0 {
		failed = min(failed, cellDoubtDialFor)
	}
	return max(cellDialFor, failed, min(3*g.handshake, cellAttemptMax))
}

// settle and settled count a call of the handle in doubt, from its doubt
// on until it ends (dialBound).
func (g *Group) settle() {
	g.mu.Lock()
	g.settling++
	g.mu.Unlock()
}

func (g *Group) settled() {
	g.mu.Lock()
	g.settling--
	g.mu.Unlock()
}

// answered takes an attempt answered in took as evidence of the path to
// the cell as it is now: the handshake time the bounds scale with
// (dialBound, silentFor) falls to it, by half at most per attempt. A
// handshake made while the machine was loaded (seconds, where the path
// takes milliseconds) widened the bounds until the next handshake, which a
// client on a steady connection may not make for hours: the first failover
// after it waited seconds of silence for the dead leader, not 400 ms. An
// attempt is answered no sooner than a round trip, and the bounds allow
// two or three times the handshake, so a far cell's keep their room.
// attempt calls it only while the handshake time widens a bound (over a
// third of cellDialFor): not on a near cell's every send.
func (g *Group) answered(took time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.handshake > took {
		g.handshake = max(took, g.handshake/2)
	}
}

// handshakeTook returns how long the last handshake with a member took.
func (g *Group) handshakeTook() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.handshake
}

// dialed records the outcome of an attempt's handshake with the member
// fp, bounded by bound: it took took, or (ok false) the bound passed
// first.
//
// A handshake that took longer than the bound under which the member
// passed over (suspect) failed its own says that member was likely as
// far, not dead: it is no longer passed over. A client far from a cell
// knows nothing of its path at first, its first dial (the leader, most
// often) times out, and the members it asks next name that leader, which
// it then passed over for suspectFor: seconds lost for nothing.
func (g *Group) dialed(fp Fingerprint, ok bool, took, bound time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !ok {
		// From the larger of the bounds: one a doubt kept low (dialBound)
		// leaves the bound where it was, or doubles it, for the calls
		// after the doubt.
		if g.dialFor == nil {
			g.dialFor = make(map[Fingerprint]time.Duration)
		}
		g.dialFor[fp], g.failedBound = min(2*max(bound, g.dialFor[fp]), cellAttemptMax), bound
		if len(g.dialFor) > wire.MaxReplicas {
			// Leaders followed unlisted (a rogue member naming a new key
			// at each refusal: follow) are forgotten, the members known
			// kept: the handle's bounds stay as many as a cell's members.
			for k := range g.dialFor {
				if k != fp && !slices.ContainsFunc(g.replicas, func(r wire.Replica) bool { return r.Fingerprint == k }) {
					delete(g.dialFor, k)
				}
			}
		}
		return
	}
	delete(g.dialFor, fp)
	g.handshake = took
	if g.suspectBound > 0 && took > g.suspectBound {
		g.suspectUntil, g.suspectBound = time.Time{}, 0
	}
}

// handshakeTimedOut reports whether a dial's err says a handshake did not
// complete within the client's DialTimeout: quic-go's handshake idle
// timeout (HandshakeIdleTimeout) or the dial's own context (peer.dial),
// whichever ended it first, at one address at least. The caller has
// checked that its own context has not ended.
//
// quic-go ends a dial to a member that answers nothing with an
// IdleTimeoutError (HandshakeIdleTimeout passed since its first packet
// went out): its HandshakeTimeoutError is for a handshake that packets
// kept alive for twice as long. The idle timer starts a moment after
// peer.dial's context, so the context's deadline mostly came first; but
// when both had passed before the dial's goroutine ran (a loaded
// machine), quic-go returned either, and until session 23 the idle
// timeout was taken for a refusal: the member not passed over, the
// failure not counted. A dial has no idle timeout but the handshake's.
func handshakeTimedOut(err error) bool {
	var hs *quic.HandshakeTimeoutError
	var idle *quic.IdleTimeoutError
	return errors.As(err, &hs) || errors.As(err, &idle) || errors.Is(err, context.DeadlineExceeded)
}

var (
	errAttemptTimeout = errors.New("no answer in time")
	errNoHandshake    = errors.New("no handshake in time")
	errSilent         = errors.New("not a packet in time")
)

// refusedBefore is the error of a call to a cell that its bound ended
// (err: an attempt cut short, or the one that left it in doubt) after a
// member had refused it (refusal: unavailable, no leader known: the cell
// electing). It unwraps to err alone: the call was not refused as a
// whole (RefusedWhole), and errors.Is and errors.As see what ended it;
// LastRefusal finds the refusal.
type refusedBefore struct {
	err     error
	refusal *wire.Error
}

func (e *refusedBefore) Error() string {
	return fmt.Sprintf("%v; a member's last answer: %v", e.err, e.refusal)
}
func (e *refusedBefore) Unwrap() error { return e.err }

// LastRefusal returns the refusal naming no leader that a cell's member
// answered a call with last (unavailable: "no leader is known (an
// election is under way)"), when the call ended otherwise: its deadline,
// or its retries in doubt (ErrInDoubt) ended, during an attempt that no
// member answered. A send to a cell that an election outlasts fails so: its
// error is the deadline's or the doubt's, and this says the members were
// there, answering. ok is false if no member refused the call, or if it
// ended on a refusal (errors.As finds that one).
func LastRefusal(err error) (refusal *wire.Error, ok bool) {
	var rb *refusedBefore
	if errors.As(err, &rb) {
		return rb.refusal, true
	}
	return nil, false
}

// past reports whether until is set and has passed.
func past(until time.Time) bool { return !until.IsZero() && !time.Now().Before(until) }

// pause waits d, and reports false instead if ctx ends first, or until
// (if set) comes first.
func pause(ctx context.Context, until time.Time, d time.Duration) bool {
	if !until.IsZero() {
		if left := time.Until(until); left < d {
			sleep(ctx, left)
			return false
		}
	}
	return sleep(ctx, d)
}

// attempt is one try of a call: single, bounded by d on a replicated group,
// and by until, if set (memberCall's bound on following the leader: the
// attempt then ends with ctx's error, as if ctx had that deadline).
//
// Its context is an attemptCtx (attempts.go), timed by the client's
// attemptClock, and the stream is cancelled directly when the attempt
// ends. A deadline context, a context for the silence watch, its timer and
// the stream's context.AfterFunc were, under unbatched 16x16 to a cell,
// ~20% of the client's CPU (BENCHMARKS.md, issue 20, session 5).
//
// Its errors name the member, not op: Group.fail names the operation and
// the group ("send group g: send at ..." until session 18).
//
// On a group of one daemon it is a single call, which onDoubt (if not nil)
// is told of before its retry on a new connection, once its first try is
// in doubt (callOnDoubt).
func (g *Group) attempt(ctx context.Context, until time.Time, d time.Duration, op wire.Op, args, out any, onDoubt func()) error {
	if !g.replicated() {
		var u inUse
		defer g.doneAll(&u)
		p, err := g.reach(ctx, &u)
		if err != nil {
			return err
		}
		return p.callOnDoubt(ctx, op, args, resultInto(out), g.redial(&u), nil, onDoubt)
	}
	p := g.use()
	defer g.done(p)
	if !p.connected() {
		bound := g.dialBound(p.pin)
		began := time.Now()
		dialEnd := began.Add(bound)
		if !until.IsZero() && until.Before(dialEnd) {
			dialEnd = until
		}
		dctx, cancel := context.WithDeadline(ctx, dialEnd)
		_, err := p.get(dctx)
		timedOut := dctx.Err() != nil // before cancel, which would set it whatever happened
		cancel()
		if err != nil && !until.IsZero() && past(until) && ctx.Err() == nil {
			return context.DeadlineExceeded
		}
		if err != nil && ctx.Err() == nil && (timedOut || handshakeTimedOut(err)) {
			// The client's own bound on a dial (DialTimeout: quic-go's
			// handshake idle timeout, or peer.dial's context) may come
			// before the attempt's, once failed handshakes have widened
			// it: a dial it cut short failed the same way, under the
			// lower bound. Until session 23 its error was quic-go's: the
			// member was not passed over (suspect), the failure not
			// counted (dialed), and the next attempt waited cellRetryMin.
			bound = min(bound, g.cl.cfg.DialTimeout)
			g.dialed(p.pin, false, 0, bound)
			g.cl.cfg.Logger.Debug("cell: no handshake with the member within its dial bound", "addr", p.addrs, "bound", bound)
			return fmt.Errorf("member at %s: %w: %w", strings.Join(shownAll(p.addrs), ", "), ErrUnreachable, errNoHandshake)
		}
		if err != nil {
			return err
		}
		g.dialed(p.pin, true, time.Since(began), bound)
	}
	began := time.Now()
	// The attempt watches the connection the call uses (unless it dies
	// meanwhile) for silence, sooner than the call's own watch would
	// (its liveness, liveness.go), which it then spares.
	handshake := g.handshakeTook()
	actx := g.cl.attempts.start(ctx, d, until, p.current(), handshake)
	defer actx.release()
	err := p.single(actx, op, args, out)
	if err == nil && handshake > cellDialFor/3 {
		g.answered(time.Since(began))
	}
	if err != nil && ctx.Err() == nil {
		// The error of an attempt the clock ended says why it ended, and
		// stays in doubt if the send's request had gone out (its
		// stream's error, an attempt's context ended, was so marked).
		doubt := errors.Is(err, ErrInDoubt)
		switch cause := actx.ended(); {
		case cause == nil:
		case cause == errAttemptEnd && actx.atLimit():
			return inDoubtIf(doubt, context.DeadlineExceeded) // until, not the attempt's own bound
		case cause == errSilent:
			p.dropCurrent()
			return inDoubtIf(doubt, fmt.Errorf("member at %s: %w: %w", strings.Join(shownAll(p.addrs), ", "), ErrUnreachable, errSilent))
		default:
			p.dropCurrent()
			return inDoubtIf(doubt, fmt.Errorf("member at %s: %w: %w", strings.Join(shownAll(p.addrs), ", "), ErrUnreachable, errAttemptTimeout))
		}
	}
	return err
}

// cellRetryable reports whether another replica, or the same one a moment
// later, may do what err refused: the cell had no leader, or the member
// was unreachable or stopping.
func (g *Group) cellRetryable(err error) bool {
	var we *wire.Error
	switch {
	case errors.Is(err, ErrUnreachable), errors.Is(err, ErrShuttingDown), isWrongKey(err):
		// Another key at a member's address: the member is not there,
		// another may be.
		return true
	case errors.As(err, &we):
		return we.Code == wire.CodeUnavailable
	}
	return false
}

// sawSeq records that the group acknowledged seq under epoch: fetches and
// watches of a replicated group then ask for it (MinSeq), so that any
// replica answers with it (read-your-writes).
func (g *Group) sawSeq(epoch, seq uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if epoch != g.ackEpoch {
		g.ackEpoch, g.ackSeq = epoch, 0
	}
	g.ackSeq = max(g.ackSeq, seq)
}

// ackRefuted forgets the acknowledgement a read asked for (minSeq, under
// the handle's epoch) when the member asked, from, refused the read as the
// cell's leader (unavailable, naming itself leader) and reports whether it
// did: the read is then asked again without it. A leader answers a send
// once it applied it, so it holds every message it acknowledged, and one
// that says it does not hold this one refutes it: the acknowledgement was
// not the cell's (a broken leader's, sequence 2^64-1 say) and, kept, it
// had every later fetch and watch of the handle wait 5 s at each replica
// and fail unavailable, for the rest of the epoch (until session 17). A
// follower's refusal refutes nothing: it may lag the cell.
func (g *Group) ackRefuted(err error, minSeq uint64, from Fingerprint) bool {
	var we *wire.Error
	if minSeq == 0 || !errors.As(err, &we) || we.Code != wire.CodeUnavailable || we.Leader == nil || we.Leader.Fingerprint != from {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ackSeq != minSeq {
		return false // another acknowledgement since, or forgotten already
	}
	g.ackSeq = 0
	g.cl.cfg.Logger.Warn("cell: the leader does not hold a message it acknowledged; reads no longer wait for it", "group", g.id, "seq", minSeq, "leader", from.Short())
	return true
}

// minSeq returns the MinSeq to ask of a replica for a read under epoch (0:
// the current one, whatever it is).
func (g *Group) minSeq(epoch uint64) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.replicas) == 0 || (epoch != 0 && epoch != g.ackEpoch) {
		return 0
	}
	return g.ackSeq
}
