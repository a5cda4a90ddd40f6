package cell

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// Catch-up: a replica whose log is behind a snapshot it restores (a new
// member, a replica back after lagging past what the leader keeps of its
// raft log, or one whose data directory was lost) copies the messages it
// lacks from a peer's log, group by group, over a stream of kind
// kindCatchUp. The cell goes on meanwhile; only this replica's state
// machine waits.
//
// The request (after the kind byte): group [16], epoch u64, after u64,
// upto u64: the messages after..upto of the group's history of that
// epoch. The reply is frames, each a u32 length then a payload whose
// first byte says what it is:
//
//	'h' status u8 (0: ok; 1: this peer's log ends before upto; 2: this
//	    peer has no such group, or another epoch of it), first u64: the
//	    first message it will send (after+1, or later if its retention
//	    dropped the messages before)
//	'b' a batch of messages, as a send command carries them from its
//	    count on
//	'e' the end: every message up to upto was sent, or (since session
//	    18) every message up to a hole the peer's retention made in its
//	    log while it sent them (the group's sends went on): the replica
//	    asks that peer again from where its log ends, and that answer's
//	    header names where the peer's log begins now (catchUp)
//
// A replica asks every member at once (catchUpOrder) and copies from the
// first that answers ok; the others' streams are closed unread.
const (
	catchUpRequestSize = 16 + 8 + 8 + 8 // catchUpRequest
	catchUpChunk       = 1024
	catchUpFrameBytes  = 1 << 20
	maxCatchUpFrame    = 4 << 20
	catchUpTimeout     = 30 * time.Second // without progress, once the member answered
	// catchUpWindow is how often a copy's pace is measured and set
	// against the other members' (catchUpStream.copy, catchUp), and
	// catchUpFaster how many times faster than the member copied from
	// another must have been measured to take the copy over. Why 1 s: a
	// member's key that keeps to the least pace costs a copy about a
	// window before another member is tried, and an honest member's pace
	// over a window on a LAN (a few thousand round trips) is its own, not
	// its stream's start. Why 2: members of one cell serve the same
	// messages from the same kind of log, so an honest member measured
	// half as fast is slow for a reason (its disk, its link, its load),
	// and a measure's noise (a pause for a collection, a busy moment)
	// does not make the copy go back and forth between two members alike.
	catchUpWindow = time.Second
	catchUpFaster = 2
	// catchUpRecent is how many of a group's copy's latest measures (a
	// window's end, or a copy's) set the top pace a member is judged
	// slow against (catchUp's judge): a member's pace not measured again
	// since is no longer the top. Why 4: the copy is with the fastest
	// member that can serve (faster), measured each window, so the top
	// ages out only when its member can no longer serve (its link down,
	// it answered no); then the member serving meanwhile is lifted after
	// 4 windows, not shunned for the rest of the restore against a pace
	// no member gives.
	catchUpRecent = 4
	// catchUpLifted: a member shunned for its pace (catchUpFaster times
	// slower than the top) is lifted once its pace is within catchUpLifted
	// times of the top (judgePaces). Why 1.5: between half and two thirds
	// of the top a member stays as it was, so a pace that hovers around
	// half (a measure's noise is a few tens of percent under load) does
	// not shun and lift it at each window.
	catchUpLifted = 1.5
	// catchUpRetryMin and catchUpRetryMax bound the wait between rounds
	// of a catch-up at Start that no peer could serve (catchUp).
	catchUpRetryMin = 250 * time.Millisecond
	catchUpRetryMax = 15 * time.Second
	// maxCatchUpsPerKey bounds the catch-ups a member serves at once to
	// one member's key: a replica catches up one group at a time.
	maxCatchUpsPerKey = 4

	catchUpOK     = 0
	catchUpBehind = 1
	catchUpNone   = 2
)

var errCatchUp = errors.New("cell: catch-up")

// errCatchUpMoved: a copy was left for a member measured faster
// (catchUpStream.copy): no fault of the member it was copied from.
var errCatchUpMoved = errors.New("cell: catch-up moved to a faster member")

// errCatchUpLog wraps the errors of this member's own log in a copy (a
// full disk): no fault of the member it copies from.
var errCatchUpLog = errors.New("this member's log")

// errCatchUpHole, with errCatchUp: the member's copy ended short of the
// messages asked for, or skipped some: its retention dropped them while
// it sent them (serveCatchUp). It is asked again at once, from where the
// log ends, and its copy goes on (catchUp).
//
// How often: as long as the copy, across the times it is asked, keeps to
// the least pace (and stands against the others' at each window's end:
// catchUpRun), and each answer shows the hole, its log beginning past
// where the copy ended: retention never brings messages back, so one
// that has the next message said falsely that its copy could go no
// further, and its copy failed. Until session 19 a member was asked
// again at most 3 times a catch-up, a number nothing measured: with
// retention by count or bytes, an honest member's copy faster than the
// group's sends meets two holes at most (one for the copy that began
// behind the front, one if the segment the next begins in is dropped
// first), but with retention by age the front moves as fast as messages
// were sent an age before, a burst faster than any copy, and each hole
// moves the copy forward; a fourth failed the copy, and with no other
// member to serve, the restore.
var errCatchUpHole = errors.New("the peer's retention dropped messages while it sent them")

// catchUpRun is a copy's accounts with the least pace and its window
// (catchUpStream.copy), kept across the copies of a member asked again
// after a hole: a member's key that ended its copies at a hole, each
// after a message or none, kept the copy going as long as it liked.
type catchUpRun struct {
	by      time.Time // the least pace's deadline
	began   time.Time // the window's start
	from    uint64    // the log's tail at began
	batched bool      // a batch came
	// fromBatch (Config.catchUpFromBatch, tests) measures no window
	// before the member's first batch, however late it comes.
	fromBatch bool
}

// remainder returns the pace (messages a second) of the copy's last
// window, cut short by the copy's end (the log's tail now), and whether
// it is measured at all: only if it lasted at least half a window and
// copied messages (past the first batch, which begins the first window).
//
// Why: until session 21 a copy's end measured the whole copy, from the
// request on: the member's first read of its log and the messages its
// retention had dropped (skipped by a reset of this log) counted in its
// pace, and a copy of a batch or two (a small group's) over a few
// milliseconds counted as much as a window's. One such measure, far from
// an honest member's over a window, shunned one of them for the rest of
// the restore (catchUpFaster).
func (r *catchUpRun) remainder(g *groupState, window time.Duration) (float64, bool) {
	took := time.Since(r.began)
	tail, _ := g.log.Tail()
	if !r.batched || took < window/2 || tail <= r.from {
		return 0, false
	}
	return float64(tail-r.from) / took.Seconds(), true
}

// catchUp brings g's log up to seq (at time t) from a peer. It asks
// every member at once (catchUpOrder) and copies the messages from the
// first that has them; a member that does not answer (a dead host: a
// dial's timeout, RPCTimeout) holds up none of the others. With wait set
// (the restore of this member's own snapshot at start: fsm.finishRestore)
// it waits until a peer can serve the messages: each member that could
// not is asked again, in rounds backing off from catchUpRetryMin to
// catchUpRetryMax (one still being asked is not asked twice), each round
// logged, until one serves them or Close is called (ErrClosed). A member
// dialling this one, or a leader coming to be known, starts a round at
// once and the backoff again from catchUpRetryMin (catchUpWake).
//
// Why wait: the member's snapshot may cover messages no peer has applied
// yet (a leader stopped and restarted at once: its followers apply what
// it committed only once a leader tells them it is committed). Failing
// made the member refuse to start, though its peers would serve the
// messages a moment later; and it fails the same way each time it is
// started again until they do. Raft runs meanwhile, so the member's vote
// counts: when the others are no majority without it, they elect (it,
// or one of them) and apply what its snapshot covers (session 13; it
// waited for enough of them to come back). Meanwhile it serves none of
// the cell's groups: the state machine sets them only once every log is
// caught up (restoreAtStart), so no reader sees a log behind what it was
// acknowledged. A snapshot raft installs from the leader later is not
// waited for: raft reports the failure to the leader, which sends it
// again. Why at once: members were asked one after another, and each dead
// one cost a waiting round its dial's timeout (5 s) before the next was
// asked (session 11).
//
// A member whose copy failed after it said it had the messages (too slow
// for the least pace, a batch that breaks the rules, its stream or
// connection ended: copy) is shunned for the rest of the restore
// (restore, which the restore's calls share, one per group behind: nil
// for a restore of one call): it is asked again only
// as a last resort, once a round, when no other member is being asked
// (none other could serve the messages); and the others are asked again
// (a copy that moved to it from one of them closed their answers, and
// left that one: TestCatchUpMovedCopyFailsAsksAgain). And an answer that waited
// unread while another member's copy ran longer than half the least
// pace's (catchUpTimeout) is not copied from but asked for again: its
// member gives up after catchUpTimeout without a write going through, and
// its writes stall once the stream's window is full. Why: a member's key
// gone rogue that answered first in each round held the restore for the
// least pace each round, and the honest members' answers, unread
// meanwhile, had gone stale by the time they were taken, so that round
// failed too; it could hold a restore at start for as long as it liked
// (session 17's note). Now it costs a restore one least pace, plus at
// most one more in each round in which no other member could serve.
//
// And a copy that keeps to the least pace is measured against the other
// members (copy, each catchUpWindow): a member not measured yet that
// could serve takes the copy over for a window, asked from where the log
// ends, and then the fastest measured keeps it; a member whose latest
// pace, at a window's end or at its copy's end (its last window's
// remainder, if it lasted half a window: catchUpRun.remainder), is
// catchUpFaster times slower than the top is shunned, while it is (judge:
// the top is the fastest latest pace of the members measured in the
// copy's last catchUpRecent measures, but those shunned for a failure).
// One shunned for its pace alone is still moved to, as any member
// measured, by a copy catchUpFaster times slower than its pace (faster),
// and its shun is lifted once its pace in that group's copy stands. The
// paces measured are the restore's, as the shunned are: a member measured
// in one group's copy is set against the others as that in the next when
// the copy moves, not tried again as one not measured yet; but it is
// shunned for its pace only against those measured in the same group's
// copy (a pace is messages a second, and one group's messages are not
// another's). Why: the least pace is a floor, the same for every member,
// and a member's key keeping to it held a restore for as long as its copy
// took at that pace (1024 messages per 30 s: about 8 h for a million
// messages) while another member could serve them in seconds (session
// 18's note). Now it costs a copy a window or two (the first is measured
// from its first batch: copy), and, once measured slower than another
// member in one group's copy, shunned, little more of the restore; one
// keeping to half the fastest member's pace costs a copy twice its time
// at most; one that sends fast for a window and then crawls costs a copy
// the window its crawl is measured over, and the honest members measured
// against its burst are lifted then (TestCatchUpBurstThenCrawl,
// TestCatchUpBurstThenCrawlNextGroup). A member that alone can serve,
// however slow (over the least pace), is left no copy: none is measured
// faster.
func (n *Node) catchUp(ctx context.Context, g *groupState, seq uint64, t int64, waiting bool, restore *catchUpRestore) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel (deferred next), which ends the askers
	defer cancel()
	wg.Go(func() {
		select {
		case <-n.closing:
			cancel()
		case <-ctx.Done():
		}
	})
	closed := func() error {
		select {
		case <-n.closing:
			return fmt.Errorf("catch up to message %d: %w", seq, ErrClosed)
		default:
			return nil
		}
	}
	if err := closed(); err != nil {
		return err
	}
	if restore == nil {
		restore = newCatchUpRestore()
	}
	shun, slow, rates := restore.shun, restore.slow, restore.rates
	pace := or(n.cfg.catchUpPace, catchUpTimeout)
	runs := make(map[Peer]*catchUpRun) // copies ended at a hole, by member: asked again, they go on
	answers := make(chan catchUpAnswer)
	asking := make(map[Peer]bool)
	askOne := func(p Peer) {
		after, _ := g.log.Tail()
		asking[p] = true
		wg.Go(func() {
			s, err := n.askCatchUp(ctx, p, g, after, seq)
			select {
			case answers <- catchUpAnswer{p: p, s: s, err: err, at: time.Now(), after: after}:
			case <-ctx.Done():
				if s != nil {
					s.close()
				}
			}
		})
	}
	// ask asks the members not being asked, but the shunned; last asks
	// the shunned alone, once a round, when no other is being asked.
	resorted := false
	ask := func() {
		for _, p := range n.catchUpOrder() {
			if !asking[p] && !shun[p.Fingerprint] {
				askOne(p)
			}
		}
	}
	last := func() {
		for p := range asking {
			if !shun[p.Fingerprint] {
				return
			}
		}
		if resorted {
			return
		}
		resorted = true
		for _, p := range n.catchUpOrder() {
			if !asking[p] && shun[p.Fingerprint] {
				askOne(p)
			}
		}
	}
	// The copy's pace against the other members' (copy's faster): each
	// member that could serve and was not measured yet is tried for a
	// window, then the fastest measured keeps the copy unless the one
	// copied from is within catchUpFaster of it. want is the member the
	// copy moves to (asked, its answer awaited); while it is set, the
	// answers of others are closed, not copied from.
	window := or(n.cfg.catchUpWindow, catchUpWindow)
	unable := make(map[Peer]bool) // answered no, or nothing, this round
	here := make(map[Peer]catchUpPace)
	measures := 0 // this group's copy's, so far
	var want Peer
	judge := func() { judgePaces(n.cfg.Logger, g.spec.Name, here, measures, shun, slow) }
	// measured notes p's pace, and judges the paces of this group's copy.
	measured := func(p Peer, rate float64) {
		measures++
		rates[p], here[p] = rate, catchUpPace{rate: rate, at: measures}
		judge()
	}
	var errs []error
	faster := func(cur Peer, rate float64) bool {
		measured(cur, rate)
		// The answers that came while the copy ran, which waited unread
		// until now: a member that said it cannot serve is not the one
		// the copy moves to (it was, and the copy left a member that
		// could for it, and was asked again), and one that can is asked
		// afresh if the copy moves to it (its stream would send again
		// what the copy brought meanwhile).
		for more := true; more; {
			select {
			case a := <-answers:
				delete(asking, a.p)
				if a.err != nil {
					unable[a.p] = true
					delete(runs, a.p)
					n.cfg.Logger.Warn("cell: could not catch up a group from a peer", "group", g.spec.Name, "peer", a.p.Addr, "err", a.err)
					errs = append(errs, a.err)
				} else {
					a.s.close()
				}
			default:
				more = false
			}
		}
		var best Peer
		for _, p := range n.catchUpOrder() {
			if p == cur || shun[p.Fingerprint] && !slow[p.Fingerprint] || unable[p] || n.tr.knownDown(p.Addr) {
				continue // one shunned for its pace only is measured: it takes the copy if faster
			}
			r, known := rates[p]
			if !known {
				best = p
				break
			}
			if r > catchUpFaster*rate && (best == Peer{} || r > rates[best]) {
				best = p
			}
		}
		if best == (Peer{}) {
			return false
		}
		n.cfg.Logger.Info("cell: moving a group's catch-up to another member, faster or not measured yet",
			"group", g.spec.Name, "from", cur.Addr, "msgs_per_s", int64(rate), "to", best.Addr, "to_msgs_per_s", int64(rates[best]))
		want = best
		return true
	}
	if tail, _ := g.log.Tail(); tail >= seq {
		return nil
	}
	ask()
	last()
	start, round, wait := time.Now(), 1, or(n.cfg.catchUpWait, catchUpRetryMin)
	var again <-chan time.Time // the next round, while waiting
	var woken <-chan struct{}  // a peer back, while waiting
	if waiting {
		again, woken = time.After(wait), n.catchUpWake
	}
	for {
		if len(asking) == 0 && !waiting {
			return fmt.Errorf("catch up to message %d: %w", seq, errors.Join(append(errs, errCatchUp)...))
		}
		select {
		case a := <-answers:
			delete(asking, a.p)
			err := a.err
			if err == nil && want != (Peer{}) && a.p != want {
				// The copy moves to another member: this one is asked
				// again in the next round, or if that one cannot serve.
				a.s.close()
				continue
			}
			if tail, _ := g.log.Tail(); err == nil && (time.Since(a.at) > pace/2 || a.after < tail) {
				// It waited while another member's copy ran: its member
				// may have given up on it, and it would send again what
				// that copy brought.
				a.s.close()
				askOne(a.p)
				continue
			}
			if err != nil {
				unable[a.p] = true
				delete(runs, a.p)
			}
			if a.p == want {
				want = Peer{}
				if err != nil {
					// It cannot serve: the others are asked again, the
					// member the copy left among them.
					ask()
				}
			}
			if err == nil {
				from, _ := g.log.Tail()
				run := runs[a.p]
				delete(runs, a.p)
				if run != nil && a.s.first <= from+1 {
					err = fmt.Errorf("%w: its copy ended at a hole after message %d, and it has message %d", errCatchUp, from, a.s.first)
				} else {
					run = cmp.Or(run, &catchUpRun{fromBatch: n.cfg.catchUpFromBatch})
					err = a.s.copy(g, pace, window, func(rate float64) bool { return faster(a.p, rate) }, run)
				}
				a.s.close()
				if err == nil {
					if rate, ok := run.remainder(g, window); ok {
						measured(a.p, rate)
					}
				}
				if errors.Is(err, errCatchUpMoved) {
					if !asking[want] {
						askOne(want)
					}
					continue
				}
				n.tr.unanswered(a.p.Addr, a.s.conn, err)
				if errors.Is(err, errCatchUpHole) {
					// Its retention dropped messages as it sent them: the
					// next answer starts past them (a reset of this log).
					runs[a.p] = run
					n.cfg.Logger.Info("cell: a member's retention dropped a group's messages while it sent them: asking it again from where this log ends",
						"group", g.spec.Name, "peer", a.p.Addr, "err", err)
					askOne(a.p)
					continue
				}
				if err != nil && !errors.Is(err, errCatchUpLog) {
					if fp := a.p.Fingerprint; !shun[fp] || slow[fp] {
						shun[fp] = true
						delete(slow, fp)
						n.cfg.Logger.Warn("cell: a member said it had a group's messages, then did not send them: it is asked for them again during this restore only when no other member can serve them",
							"group", g.spec.Name, "peer", a.p.Addr, "err", err)
						judge() // its pace is no longer the others' measure
					}
					// The others are asked again: a copy that moved here
					// left its member, and closed the answers that waited
					// meanwhile, asking none of them again (only this one,
					// shunned, was asked again, by last: a catch-up
					// without a wait failed though they could serve).
					ask()
				}
				if err == nil {
					n.cfg.Logger.Info("cell: caught up a group from a peer", "group", g.spec.Name, "peer", a.p.Addr, "from", from, "to", seq)
					if waiting && round > 1 {
						n.cfg.Logger.Info("cell: caught a group up after waiting for a peer", "group", g.spec.Name, "to", seq, "waited", time.Since(start).Round(time.Millisecond))
					}
					return nil
				}
			}
			if cerr := closed(); cerr != nil {
				return cerr
			}
			n.cfg.Logger.Warn("cell: could not catch up a group from a peer", "group", g.spec.Name, "peer", a.p.Addr, "err", err)
			errs = append(errs, err)
			last()
		case <-again:
			// No member served the messages since the last round: those
			// that answered they could not are asked again.
			have, _ := g.log.Tail()
			n.cfg.Logger.Warn("cell: no peer can catch a group up yet; this member starts once one can, and serves none of the cell's groups until then (it takes part in the cell's elections meanwhile)",
				"group", g.spec.Name, "log_at", have, "snapshot_at", seq, "rounds", round, "waited", time.Since(start).Round(time.Millisecond),
				"asking", len(asking), "next_in", wait, "err", errors.Join(errs...))
			round++
			errs = nil
			resorted = false
			clear(unable)
			ask()
			last()
			again = time.After(wait)
			wait = min(2*wait, catchUpRetryMax)
		case <-woken:
			// A member dialled this one (it started, or its network came
			// back) or a leader is known: the peers may serve the
			// messages now, or soon (once they apply what the leader
			// commits). Asked at once, and the rounds back off from the
			// start again: a member that had backed off to 15 s waited
			// that long after its peers returned (session 13's note).
			n.cfg.Logger.Info("cell: a peer is back: asking again for a group's messages", "group", g.spec.Name, "rounds", round, "waited", time.Since(start).Round(time.Millisecond))
			round++
			errs = nil
			resorted = false
			clear(unable)
			ask()
			last()
			again = time.After(catchUpRetryMin)
			wait = min(2*catchUpRetryMin, catchUpRetryMax)
		case <-ctx.Done():
			if err := closed(); err != nil {
				return err
			}
			return fmt.Errorf("catch up to message %d: %w", seq, context.Cause(ctx))
		}
	}
}

// catchUpAnswer is a member's answer to a catch-up request: its stream,
// read up to the header that says it has the messages, or why not.
type catchUpAnswer struct {
	p     Peer
	s     *catchUpStream
	err   error
	at    time.Time // when it came
	after uint64    // the request's: the log's tail when it was asked
}

// catchUpRestore is what the catch-ups of one restore (one per group
// behind, one after another) learn of the members, kept for the whole
// restore (catchUp): the keys shunned, and each member's pace as last
// measured (messages a second), set against the others' whichever
// group's copy measured it when a copy moves (but not to shun: catchUp's
// measured).
//
// Why the paces too: until session 21 they were kept for one group's copy
// (and the shunned for the restore), so each group's copy measured afresh,
// and a member measured slower than another in one group's copy (within
// catchUpFaster, so not shunned) was taken in the next for one not
// measured yet: a large group's copy moved to it for a window, and stayed
// unless the other was then measured catchUpFaster times faster.
type catchUpRestore struct {
	shun  shunned
	slow  shunned // of shun, those shunned for their pace alone (catchUp's judge)
	rates map[Peer]float64
}

func newCatchUpRestore() *catchUpRestore {
	return &catchUpRestore{shun: make(shunned), slow: make(shunned), rates: make(map[Peer]float64)}
}

// catchUpPace is a member's latest pace in a group's copy (messages a
// second), and which of the copy's measures it was (catchUp's judge).
type catchUpPace struct {
	rate float64
	at   int
}

// judgePaces shuns for its pace (shun and slow) each member of a group's
// copy (here: its latest pace, by member, and measures: the copy's count
// of them so far) whose latest pace is catchUpFaster times slower than
// the top, and lifts that shun from each whose pace has come within
// catchUpLifted times of it. The top is the fastest latest pace of those
// measured in the copy's last catchUpRecent measures, but the members
// shunned for a failure. Each shun is logged at warn, each lift at info.
//
// Why this group's only: a pace is messages a second, and groups'
// messages differ in size; a member serving a group of 3 KiB messages
// at 320 a second, set against one measured at 1,280 a second in a
// group of 10-byte messages, was shunned for the rest of the restore
// (TestCatchUpShunsOnPaceWithinOneGroup). The paces of the restore's
// other copies choose where a copy moves (faster), a window's cost if
// wrong.
//
// Why latest and recent: until session 22 the top was the fastest
// pace any member was ever measured at in the copy, and a shun for
// pace lasted the restore. A member's key that sent fast for one
// window (the top) had the honest members measured after it shunned,
// took the copy back as the fastest, and then kept to the least pace:
// its own next measure shunned it too, and with every member shunned
// none was left to move the copy to, so it crawled to its end
// (TestCatchUpBurstThenCrawl). Now its crawl is its pace, the honest
// members are no longer slower than the top and are lifted, and the
// copy moves to one of them.
//
// Why lifted nearer the top than shunned: until session 23 a shun was
// lifted as soon as the pace was no longer catchUpFaster times slower,
// and a member whose pace hovered around half the top (a measure's noise
// either side of it) was shunned and lifted at each window's measure,
// with a warning each time (TestCatchUpPaceHoveringAtHalf).
func judgePaces(log *slog.Logger, group string, here map[Peer]catchUpPace, measures int, shun, slow shunned) {
	top := 0.0
	for q, m := range here {
		if measures-m.at < catchUpRecent && (!shun[q.Fingerprint] || slow[q.Fingerprint]) {
			top = max(top, m.rate)
		}
	}
	for q, m := range here {
		switch fp := q.Fingerprint; {
		case catchUpFaster*m.rate < top && !shun[fp]:
			shun[fp], slow[fp] = true, true
			log.Warn("cell: a member served a group's catch-up slower than another, by more than half: it is asked again during this restore only when no other member can serve, or once it is no longer that slow",
				"group", group, "peer", q.Addr, "msgs_per_s", int64(m.rate), "fastest_msgs_per_s", int64(top))
		case catchUpLifted*m.rate >= top && slow[fp]:
			delete(shun, fp)
			delete(slow, fp)
			log.Info("cell: a member shunned for serving a group's catch-up slowly is no longer that slow",
				"group", group, "peer", q.Addr, "msgs_per_s", int64(m.rate), "fastest_msgs_per_s", int64(top))
		}
	}
}

// shunned is, for one restore, the keys of the members whose copy failed
// after they said they had the messages, or that were measured
// catchUpFaster times slower than another, while they are (catchUp's
// judge).
type shunned map[wire.Fingerprint]bool

// catchUpOrder returns the members to catch up from: the leader first,
// then the members of the configuration the transport's members were last
// set from (setPeers), then those accepted besides (flags, what was
// learnt); within each, those whose link is not known to be down first.
// catchUp asks them all at once, in this order: a restarted member's
// flags may name hosts replaced long ago, and each member that does not
// answer takes a dial's timeout (RPCTimeout) to fail.
func (n *Node) catchUpOrder() []Peer {
	var order []Peer
	leader, ok := n.Leader()
	if ok && leader != n.self && !groupHost(leader.Addr) {
		order = append(order, leader)
	}
	n.learnMu.Lock()
	conf := n.conf
	n.learnMu.Unlock()
	inConf := make(map[wire.Fingerprint]bool, len(conf.Servers))
	for _, s := range conf.Servers {
		if fp, err := wire.ParseFingerprint(string(s.ID)); err == nil {
			inConf[fp] = true
		}
	}
	rank := func(p Peer) int {
		r := 0
		if !inConf[p.Fingerprint] {
			r += 2
		}
		if n.tr.knownDown(p.Addr) {
			r++
		}
		return r
	}
	// A member at a multicast or broadcast address is not dialed (its
	// refusal logged once, refuseGroup): asked, it failed each round with
	// a warning.
	rest := slices.DeleteFunc(n.tr.peerList(), func(p Peer) bool { return p == n.self || p == leader || groupHost(p.Addr) })
	slices.SortFunc(rest, func(a, b Peer) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a.Addr, b.Addr)) })
	return append(order, rest...)
}

// catchUpStream is a member's stream of the messages of a group, read up
// to its header: the member has them, from first to upto.
type catchUpStream struct {
	str         *quic.Stream
	conn        *quic.Conn // str's
	r           *bufio.Reader
	buf         []byte
	stop        func() bool // the AfterFunc that cancels str with the catch-up's context
	first, upto uint64
	// The frame being read: its length's bytes, and how many of its
	// bytes (length, then payload into buf) were read. A read that ends
	// at a deadline mid-frame is taken up where it stopped (read).
	head [4]byte
	got  int
}

// newCatchUpReader buffers a catch-up's stream for its frames (read),
// past deadlineData.
func newCatchUpReader(str io.Reader) *bufio.Reader {
	return bufio.NewReaderSize(deadlineData{str}, 64<<10)
}

// deadlineData is a stream whose Read that brought data reports no
// deadline error with it: the next Read checks the deadline set then.
//
// Why: a quic stream's Read that copies data across its frames returns
// the deadline's error with the bytes it read when the deadline passes
// meanwhile, and bufio.Reader keeps that error and returns it on its next
// Read that finds its buffer empty, whatever deadline was set since. A
// copy's window that ended as a batch arrived (copy) read the batch, moved
// its window's end on, and then met that old deadline on its next frame:
// the copy ended "deadline exceeded", and an honest member, slowed by
// nothing but the machine's load, was shunned for the rest of the restore
// (TestCatchUpShunsOnPaceWithinOneGroup's flake, session 21;
// TestCatchUpReaderDeadlinePassedWithData).
type deadlineData struct{ r io.Reader }

func (d deadlineData) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if n > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	}
	return n, err
}

// askCatchUp asks p for g's messages after..upto, and reads its answer's
// header: it returns the stream once p says it has them (the caller
// copies them, then closes it), else why not.
//
// The header is waited for until ctx's deadline, and RPCTimeout at most: a
// live member answers it once it has looked at its log. One that answers
// nothing by then has its connection dropped, as a progress or members
// question does (Transport.unanswered): it was taken to have restarted
// with no stateless reset reaching this daemon, and the next question
// dials it anew. Until session 16 the header was waited for catchUpTimeout
// (30 s) on the connection kept, and a catch-up at start did not ask that
// member again meanwhile (catchUp), nor did one without a wait (a snapshot
// installed from the leader) give up before it ended.
func (n *Node) askCatchUp(ctx context.Context, p Peer, g *groupState, after, upto uint64) (*catchUpStream, error) {
	answerBy := time.Now().Add(n.cfg.RPCTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(answerBy) {
		answerBy = d
	}
	dctx, cancel := context.WithDeadline(ctx, answerBy)
	str, conn, err := n.tr.open(dctx, p.Addr, []byte{kindCatchUp})
	cancel()
	if err != nil {
		return nil, err
	}
	s := &catchUpStream{str: str, conn: conn, r: newCatchUpReader(str), upto: upto,
		stop: context.AfterFunc(ctx, func() { str.CancelRead(streamClosed) })}
	req := catchUpRequest(g.spec.ID, g.spec.Epoch, after, upto)
	str.SetWriteDeadline(time.Now().Add(catchUpTimeout))
	if _, err := str.Write(req[:]); err != nil {
		s.close()
		return nil, err
	}
	str.Close()
	if err := s.header(g, after, answerBy); err != nil {
		s.close()
		if !errors.Is(err, errCatchUp) && !errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(answerBy) {
			// ctx's deadline, which cancels the stream too (stop), came
			// first: unanswered all the same.
			err = fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
		}
		n.tr.unanswered(p.Addr, conn, err)
		return nil, err
	}
	return s, nil
}

// header reads the answer's header (a request for the messages after
// after), by answerBy.
func (s *catchUpStream) header(g *groupState, after uint64, answerBy time.Time) error {
	s.str.SetReadDeadline(answerBy)
	kind, p1, err := s.read()
	if err != nil {
		return err
	}
	if kind != 'h' || len(p1) != 9 {
		return fmt.Errorf("%w: no header", errCatchUp)
	}
	switch p1[0] {
	case catchUpOK:
	case catchUpBehind:
		return fmt.Errorf("%w: the peer's log ends before message %d", errCatchUp, s.upto)
	default:
		return fmt.Errorf("%w: the peer has no such group of epoch %d", errCatchUp, g.spec.Epoch)
	}
	s.first = binary.LittleEndian.Uint64(p1[1:])
	if s.first <= after || s.first > s.upto+1 {
		return fmt.Errorf("%w: the peer starts at %d, for messages %d..%d", errCatchUp, s.first, after+1, s.upto)
	}
	return nil
}

// nextBy reads the stream's next frame, within catchUpTimeout and by by.
func (s *catchUpStream) nextBy(by time.Time) (byte, []byte, error) {
	d := time.Now().Add(catchUpTimeout)
	if by.Before(d) {
		d = by
	}
	s.str.SetReadDeadline(d)
	return s.read()
}

// paceEarned is the time a catch-up's copy gains by a frame of size bytes
// bringing count messages: pace for each catchUpChunk messages and for
// each catchUpFrameBytes bytes (copy).
func paceEarned(pace time.Duration, size, count int) time.Duration {
	return time.Duration(int64(pace)*int64(count)/catchUpChunk + int64(pace)*int64(size)/catchUpFrameBytes)
}

// read reads the stream's next frame, by the read deadline set. A
// deadline that ends it mid-frame loses nothing: the next read goes on
// from there (copy's window ends while a frame arrives).
func (s *catchUpStream) read() (byte, []byte, error) {
	if s.got < len(s.head) {
		n, err := io.ReadFull(s.r, s.head[s.got:])
		s.got += n
		if err != nil {
			return 0, nil, err
		}
		size := binary.LittleEndian.Uint32(s.head[:])
		if size == 0 || size > maxCatchUpFrame {
			return 0, nil, fmt.Errorf("%w: a frame of %d bytes", errCatchUp, size)
		}
		if cap(s.buf) < int(size) {
			s.buf = make([]byte, size)
		}
		s.buf = s.buf[:size]
	}
	n, err := io.ReadFull(s.r, s.buf[s.got-len(s.head):])
	s.got += n
	if err != nil {
		return 0, nil, err
	}
	s.got = 0
	return s.buf[0], s.buf[1:], nil
}

// copy appends to g's log the messages the stream brings, up to upto.
// The log may have grown since the request (from another member, whose
// copy failed midway): the messages it holds already are skipped.
//
// Each batch must start past the one before (the first, at the header's
// first), as a member's are: a member's key that sent the same batch of
// messages the log held again and again, each within catchUpTimeout, kept
// the copy going for ever, and the member catching up waited on it, never
// asking the others (session 17).
//
// And the messages must come at the least pace of catchUpChunk messages
// or catchUpFrameBytes bytes per pace (catchUpTimeout) on average: the
// copy may take pace, plus pace for each catchUpChunk messages and each
// catchUpFrameBytes bytes of batches that came, and is abandoned (and
// another member asked, catchUp) once that has passed. A member sends its
// batches back to back, each of catchUpChunk messages or catchUpFrameBytes
// (but the last of a chunk); a member's key that sent one message every
// 29 s held the restore waiting on it for 30 s a message (session 17).
//
// The least pace is a floor, the same for every member: a key keeping to
// it held a restore as long as its copy took at that pace (about 8 h for
// a million messages, session 18's note). So at the end of each window
// (window; 0 for none), the messages it brought a second are handed to
// faster (if not nil), which says whether a member measured faster (or
// not measured yet) takes the copy over: the copy then ends, with
// errCatchUpMoved (catchUp).
func (s *catchUpStream) copy(g *groupState, pace, window time.Duration, faster func(rate float64) bool, run *catchUpRun) error {
	tail, _ := g.log.Tail()
	reset := s.first > tail+1 // the peer's retention dropped what we lack
	last := s.first - 1       // the last message of the batch before
	var entries []store.Entry
	if run.by.IsZero() { // a copy's first stream, not one after a hole
		now := time.Now()
		run.by, run.began, run.from = now.Add(pace), now, tail
	}
	if faster == nil {
		window = 0
	}
	for {
		d := run.by
		if window > 0 && (run.batched || !run.fromBatch) {
			if now := time.Now(); now.Sub(run.began) >= window {
				at, _ := g.log.Tail()
				if faster(float64(at-run.from) / now.Sub(run.began).Seconds()) {
					return errCatchUpMoved
				}
				run.began, run.from = now, at
			}
			if end := run.began.Add(window); end.Before(d) {
				d = end
			}
		}
		kind, body, err := s.nextBy(d)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(run.by) {
				return fmt.Errorf("%w: the peer sends under the least pace, %d messages or %d bytes per %v (at message %d of %d)",
					errCatchUp, catchUpChunk, catchUpFrameBytes, pace, last, s.upto)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && window > 0 && time.Since(run.began) >= window {
				continue // the window's end: measured at the top
			}
			return err
		}
		switch kind {
		case 'e':
			if seq, _ := g.log.Tail(); seq != s.upto {
				return fmt.Errorf("%w: %w: ended at %d, want %d", errCatchUp, errCatchUpHole, seq, s.upto)
			}
			return nil
		case 'b':
		default:
			return fmt.Errorf("%w: a frame of kind %q", errCatchUp, kind)
		}
		rd := reader{p: body}
		entries = decodeEntries(&rd, entries[:0])
		if rd.err == nil && len(rd.p) != 0 {
			rd.fail("%d bytes after the batch", len(rd.p))
		}
		if rd.err != nil {
			return rd.err
		}
		if entries[len(entries)-1].Seq > s.upto {
			return fmt.Errorf("%w: a batch past %d", errCatchUp, s.upto)
		}
		if entries[0].Seq <= last {
			return fmt.Errorf("%w: a batch from %d after messages up to %d", errCatchUp, entries[0].Seq, last)
		}
		last = entries[len(entries)-1].Seq
		run.by = run.by.Add(paceEarned(pace, len(body), len(entries)))
		first := !run.batched
		run.batched = true
		if reset {
			if entries[0].Seq != s.first {
				return fmt.Errorf("%w: first batch at %d, header said %d", errCatchUp, entries[0].Seq, s.first)
			}
			if err := g.log.Reset(s.first-1, entries[0].Time-1); err != nil {
				return fmt.Errorf("%w: %w", errCatchUpLog, err)
			}
			reset = false
			run.from = max(run.from, s.first-1) // the messages skipped are no pace
		}
		tail, _ := g.log.Tail()
		held := entries
		for len(held) > 0 && held[0].Seq <= tail {
			held = held[1:]
		}
		if len(held) > 0 && held[0].Seq > tail+1 {
			// Daemons before session 18 sent the messages after the
			// hole, which the log refuses (out of order).
			return fmt.Errorf("%w: %w: a batch from %d, the log ends at %d", errCatchUp, errCatchUpHole, held[0].Seq, tail)
		}
		if len(held) > 0 {
			if err := g.log.Append(held); err != nil {
				return fmt.Errorf("%w: %w", errCatchUpLog, err)
			}
		}
		if first {
			// The first window is measured from the first batch on,
			// appended: the member's first read of its log, this log's
			// first write (a new segment), and the first batch (on its
			// way before then) are no pace of its sending. One that
			// sends none is measured a window from its answer all the
			// same. (The first batch was counted, over the time after
			// it: an honest member's first window, or a copy's short
			// end, measured a batch more than it brought.)
			run.began = time.Now()
			run.from, _ = g.log.Tail()
		}
		clear(entries)
	}
}

// close ends the stream.
func (s *catchUpStream) close() {
	s.stop()
	s.str.CancelRead(streamClosed)
	s.str.Close()
}

// catchUpRequest encodes a catch-up's request: the group's ID and epoch,
// and the messages wanted, those after after up to upto.
func catchUpRequest(id wire.UUID, epoch, after, upto uint64) [catchUpRequestSize]byte {
	var req [catchUpRequestSize]byte
	copy(req[:16], id[:])
	binary.LittleEndian.PutUint64(req[16:], epoch)
	binary.LittleEndian.PutUint64(req[24:], after)
	binary.LittleEndian.PutUint64(req[32:], upto)
	return req
}

// serveCatchUp answers a peer's catch-up request from this replica's log,
// unless it serves maxCatchUpsPerKey to the peer's key already: then it
// resets the stream (streamBusy), and the replica asks another member.
func (n *Node) serveCatchUp(ctx context.Context, peer wire.Fingerprint, str *quic.Stream) {
	if !n.startCatchUp(peer) {
		str.CancelWrite(streamBusy)
		return
	}
	defer n.endCatchUp(peer)
	// A fault reading memory ends this catch-up, not the daemon: the
	// bodies of a group's history read back at start are its files,
	// mapped (store/mapped.go), and a page the disk can no longer read,
	// touched as a batch is encoded, was SIGBUS, fatal to the process (as
	// daemon/server's serveCall, session 18).
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(interface{ Addr() uintptr })
			if !ok {
				panic(r)
			}
			str.CancelWrite(streamClosed)
			n.cfg.Logger.Error("cell: serving a catch-up faulted reading memory (a mapped log file the disk could not read?): the peer asks another member",
				"peer", peer.Short(), "addr", fmt.Sprintf("%#x", f.Addr()), "panic", r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var req [catchUpRequestSize]byte
	str.SetReadDeadline(time.Now().Add(kindTimeout))
	if _, err := io.ReadFull(str, req[:]); err != nil {
		return
	}
	var id wire.UUID
	copy(id[:], req[:16])
	epoch := binary.LittleEndian.Uint64(req[16:])
	after := binary.LittleEndian.Uint64(req[24:])
	upto := binary.LittleEndian.Uint64(req[32:])
	w := bufio.NewWriterSize(str, 64<<10)
	frame := func(kind byte, body []byte) error {
		var h [5]byte
		binary.LittleEndian.PutUint32(h[:], uint32(len(body)+1))
		h[4] = kind
		str.SetWriteDeadline(time.Now().Add(catchUpTimeout))
		if _, err := w.Write(h[:]); err != nil {
			return err
		}
		_, err := w.Write(body)
		return err
	}
	header := func(status byte, first uint64) error {
		var b [9]byte
		b[0] = status
		binary.LittleEndian.PutUint64(b[1:], first)
		if err := frame('h', b[:]); err != nil {
			return err
		}
		return w.Flush()
	}
	g := n.fsm.group(id)
	if g == nil || g.spec.Epoch != epoch || after >= upto {
		header(catchUpNone, 0)
		return
	}
	if tail, _ := g.log.Tail(); tail < upto {
		header(catchUpBehind, 0)
		return
	}
	// The header names the first message it will send, read alone: the
	// asker waits for the header for RPCTimeout at most (askCatchUp), and
	// a chunk of catchUpChunk messages of up to a frame each may take
	// longer to read from a slow disk.
	msgs, cur, err := g.log.After(after, 1, nil)
	if err != nil {
		// Its log is closed (this member closes): no header, so that the
		// asker tries another member, as for any member that fails it.
		str.CancelWrite(streamClosed)
		return
	}
	first := after + 1
	if len(msgs) > 0 {
		first = msgs[0].Seq
	} else if cur.First > first {
		first = cur.First
	}
	if err := header(catchUpOK, first); err != nil {
		return
	}
	msgs, _, err = g.log.After(after, catchUpChunk, msgs[:0])
	enc := newEncoder()
	var entries []store.Entry
	var out []byte
	// next is the message the asker takes next. A page that begins past
	// it is past a hole: retention dropped the messages between as the
	// group's sends went on (here, or before the first page was read).
	// The copy ends before the hole, as at upto: the asker asks again
	// from where its log ends, and this log's header then names where it
	// begins (catchUpStream.copy, catchUp). (The messages after the hole
	// were sent, and the asker's log refused them as out of order: a copy
	// failed, to be tried from another member or in the next round.)
	next := first
	for err == nil && len(msgs) > 0 && msgs[0].Seq == next && ctx.Err() == nil {
		for i := range msgs {
			m := &msgs[i]
			if m.Seq > upto {
				msgs = msgs[:i]
				break
			}
		}
		for len(msgs) > 0 {
			entries = entries[:0]
			size := 0
			for _, m := range msgs {
				if len(entries) > 0 && size+len(m.Body) > catchUpFrameBytes {
					break
				}
				entries = append(entries, store.Entry{Seq: m.Seq, Time: m.Time, ID: m.ID, From: *m.From, Body: m.Body})
				size += len(m.Body) + 64
			}
			out = enc.appendEntries(out[:0], entries)
			if err := frame('b', out); err != nil {
				return
			}
			msgs = msgs[len(entries):]
		}
		last := entries[len(entries)-1].Seq
		clear(entries)
		next = last + 1
		if last >= upto {
			break
		}
		msgs, _, err = g.log.After(last, catchUpChunk, msgs[:0])
	}
	if ctx.Err() != nil || err != nil {
		// This member closes (its log closed, store.ErrClosed): no end
		// said. An end here would tell the asker its copy stopped at a
		// hole, and it would ask this member again.
		str.CancelWrite(streamClosed)
		return
	}
	if frame('e', nil) != nil || w.Flush() != nil {
		return
	}
	if next <= upto {
		n.cfg.Logger.Info("cell: a peer's catch-up from this replica ended where retention dropped messages as they were sent; it asks again from there",
			"peer", peer.Short(), "group", g.spec.Name, "from", after, "to", next-1, "asked_to", upto)
		return
	}
	n.cfg.Logger.Info("cell: a peer caught up a group from this replica", "peer", peer.Short(), "group", g.spec.Name, "from", after, "to", upto)
}

// startCatchUp counts a catch-up served to peer, and reports whether it
// is within maxCatchUpsPerKey; endCatchUp counts it done.
//
// Why: each catch-up served holds a goroutine, a 64 KiB writer and a batch
// of up to catchUpFrameBytes while its reader is slow, for up to
// catchUpTimeout between writes; a key of the cell asking for a group's
// whole history on stream after stream, and reading none of it, made a
// member hold that for every stream its connections may open (the
// listener's limit, 1000 each).
func (n *Node) startCatchUp(peer wire.Fingerprint) bool {
	n.catchUpMu.Lock()
	defer n.catchUpMu.Unlock()
	if n.catchUps[peer] >= maxCatchUpsPerKey {
		return false
	}
	if n.catchUps == nil {
		n.catchUps = make(map[wire.Fingerprint]int)
	}
	n.catchUps[peer]++
	return true
}

func (n *Node) endCatchUp(peer wire.Fingerprint) {
	n.catchUpMu.Lock()
	defer n.catchUpMu.Unlock()
	if n.catchUps[peer]--; n.catchUps[peer] == 0 {
		delete(n.catchUps, peer)
	}
}
