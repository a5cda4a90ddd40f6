package groupd

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// group is one hosted group: its log and members.
type group struct {
	id     wire.UUID
	name   string
	secret []byte // empty: a public group
	log    Log
	broken error            // the log could not be opened: the group is not served
	dir    string           // the state directory
	now    func() time.Time // the daemon's clock: stamps, presence
	// cell is set for a group replicated by a cell (cell.go): its sends,
	// joins and leaves go through the cell's leader, and its members are
	// the cell's.
	cell *cellGroup
	// changed is called once the group's member count or last sequence
	// number has changed, for the registries to list it early
	// (Daemon.countsChanged); a group of a test alone ignores it.
	changed func()

	// seqMu serialises the sequencing step and the append after it
	// (sequence.go), which seq is; duplicates counts the messages it
	// acknowledged as already stored.
	seqMu      sync.Mutex
	seq        store.Sequencer
	duplicates atomic.Uint64

	mu      sync.RWMutex
	members map[wire.Fingerprint]*member
	rate    *rateLimiter
	guesses guessLimiter // paces joins of a private group per address (guesses.go)

	// shared is the last small Messages frame a watcher wrote, for the
	// watchers that follow the log from the same cursor (see watch).
	shared atomic.Pointer[sharedFrame]

	// Membership changes are stored before they are applied (members.go).
	pendingMu sync.Mutex
	pending   []*memberChange // changes waiting for a writer
	writer    chan struct{}   // holds a token while a writer stores changes
	writes    bucket          // paces members-file writes; the writer's
}

type member struct {
	name   string
	joined int64         // Unix ns
	left   chan struct{} // closed when the member leaves; ends its watches
	presence
}

// presence is what the daemon knows of a member's comings and goings, for
// the members reply (PROTOCOL.md §8.4). It is kept in memory only: after a
// restart nobody has been seen yet. Both fields change under g.mu's read
// lock (the member cannot be swapped meanwhile), hence atomics.
type presence struct {
	watches atomic.Int32 // the member's watches on the group open now
	// seen is when the member last made a request of the group that needs
	// membership (or joined), or ended a watch on it: Unix ns, 0 if never
	// since the daemon started.
	seen atomic.Int64
}

// see records that the member was seen at now; an earlier time (a clock
// that stepped back, or a slower request) never replaces a later one.
func (p *presence) see(now int64) {
	for {
		old := p.seen.Load()
		if now <= old || p.seen.CompareAndSwap(old, now) {
			return
		}
	}
}

func newGroup(id wire.UUID, spec Spec, log Log, dir string, records []memberRecord, rate *rateLimiter, now func() time.Time) *group {
	g := &group{
		id:      id,
		name:    spec.Name,
		secret:  spec.Secret,
		log:     log,
		dir:     dir,
		now:     now,
		members: make(map[wire.Fingerprint]*member, len(records)),
		rate:    rate,
		writer:  make(chan struct{}, 1),
		changed: func() {},
	}
	for _, r := range records {
		g.members[r.Fingerprint] = &member{name: r.Name, joined: r.Joined, left: make(chan struct{})}
	}
	return g
}

// epoch names the log's history (store.Log.Epoch).
func (g *group) epoch() uint64 { return g.log.Epoch() }

func (g *group) private() bool { return len(g.secret) > 0 || (g.cell != nil && g.cell.spec.Private) }

// secretOK compares a join's secret with the group's in constant time;
// hashing both first keeps the comparison from revealing the length.
func (g *group) secretOK(s []byte) bool {
	a, b := sha256.Sum256(s), sha256.Sum256(g.secret)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// membership returns the left channel of fp's membership, or ok false if
// fp is not a member.
func (g *group) membership(fp wire.Fingerprint) (left <-chan struct{}, ok bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	m := g.members[fp]
	if m == nil {
		return nil, false
	}
	return m.left, true
}

// sender returns fp as the sender of a message sent now: its fingerprint
// and its name as a member, which the log keeps with the message. It
// records fp as seen at now. ok is false if fp is not a member.
func (g *group) sender(fp wire.Fingerprint, now int64) (from store.Sender, ok bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	m := g.members[fp]
	if m == nil {
		return store.Sender{}, false
	}
	m.see(now)
	return store.Sender{Fingerprint: fp, Name: m.name}, true
}

// seen records that fp, if a member, made a request of the group at now.
func (g *group) seen(fp wire.Fingerprint, now int64) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if m := g.members[fp]; m != nil {
		m.see(now)
	}
}

// watching counts a watch of fp's on the group as open, and returns what
// marks it closed; fp is online (PROTOCOL.md §8.4) while it has one open. A
// member that left meanwhile is not counted: its watch is ending anyway.
func (g *group) watching(fp wire.Fingerprint, now int64) (closed func(now int64)) {
	g.mu.RLock()
	m := g.members[fp]
	if m != nil {
		m.watches.Add(1)
		m.see(now)
	}
	g.mu.RUnlock()
	if m == nil {
		return func(int64) {}
	}
	return func(now int64) {
		m.see(now)
		m.watches.Add(-1)
	}
}

func (g *group) isMember(fp wire.Fingerprint) bool {
	_, ok := g.membership(fp)
	return ok
}

func (g *group) memberCount() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.members)
}

// joinLocked adds fp as a member named name, or renames it if it is one,
// in memory only (see commit), and marks it seen at now. It returns whether
// fp was a member already, and false for full if the group has max members
// and fp is not one of them. g.mu is held for writing.
func (g *group) joinLocked(fp wire.Fingerprint, name string, now int64, max int) (already, full bool) {
	if m := g.members[fp]; m != nil {
		m.see(now)
		m.name = name
		return true, false
	}
	if len(g.members) >= max {
		return false, true
	}
	m := &member{name: name, joined: now, left: make(chan struct{})}
	m.see(now)
	g.members[fp] = m
	return false, false
}

// leaveLocked removes fp's membership and ends its watches, in memory only
// (see commit). It reports whether fp was a member. g.mu is held for
// writing.
func (g *group) leaveLocked(fp wire.Fingerprint) bool {
	m := g.members[fp]
	if m == nil {
		return false
	}
	delete(g.members, fp)
	close(m.left)
	return true
}

// memberList returns the members sorted by name, then fingerprint, with
// their presence at now: a member with a watch open is online and last seen
// now.
func (g *group) memberList(now int64) []wire.Member {
	g.mu.RLock()
	list := make([]wire.Member, 0, len(g.members))
	for fp, m := range g.members {
		e := wire.Member{Fingerprint: fp, Name: m.name, Joined: m.joined, LastSeen: m.seen.Load()}
		if m.watches.Load() > 0 {
			e.Online, e.LastSeen = true, max(e.LastSeen, now)
		}
		list = append(list, e)
	}
	g.mu.RUnlock()
	slices.SortFunc(list, func(a, b wire.Member) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), slices.Compare(a.Fingerprint[:], b.Fingerprint[:]))
	})
	return list
}

// query runs q (a query of g.log) and appends the messages it returns to
// out as wire messages; its error is q's (queryErr says it to the client).
func query(out []wire.Message, q func() ([]store.Message, store.Cursor, error)) ([]wire.Message, store.Cursor, error) {
	msgs, cur, err := q()
	if err != nil {
		return out, cur, err
	}
	for i := range msgs {
		m := &msgs[i]
		out = append(out, wire.Message{Seq: m.Seq, Time: m.Time, ID: m.ID, From: m.From.Fingerprint, Name: m.From.Name, Body: m.Body})
	}
	return out, cur, nil
}

// sharedFrame is an encoded Messages frame (length prefix included) of the
// messages first..last, immutable once published.
//
// Watchers following a group's log are nearly always at the same cursor:
// each new message wakes them all to send the same one-message frame. Under
// \`huddle bench fanout\` (100 watchers, 1,000 msgs/s) each of them queried
// the log, converted and encoded that frame for itself; the first now
// publishes what it wrote and the rest write those bytes.
type sharedFrame struct {
	first, last uint64
	frame       []byte
}

// maxSharedFrame bounds the frames shared: live traffic, not catch-up pages.
const maxSharedFrame = 16 << 10

// share publishes frame as the one for first..last, unless a frame at least
// as recent is published already.
func (g *group) share(first, last uint64, frame []byte) {
	if len(frame) == 0 || len(frame) > maxSharedFrame {
		return
	}
	if cur := g.shared.Load(); cur != nil && cur.last >= last {
		return
	}
	g.shared.Store(&sharedFrame{first: first, last: last, frame: slices.Clone(frame)})
}

// sharedAfter returns the published frame that starts right after cursor,
// or nil.
func (g *group) sharedAfter(cursor uint64) *sharedFrame {
	if f := g.shared.Load(); f != nil && f.first == cursor+1 {
		return f
	}
	return nil
}

// frameCut returns how many of msgs go in one Messages frame: at most max,
// and no more once their estimated encoding passes budget bytes (always at
// least one); and that frame's estimated size, from above.
func frameCut(msgs []wire.Message, max, budget int) (n, size int) {
	size = 16 // the envelope and the array's head
	for ; n < len(msgs) && n < max; n++ {
		m := messageOverhead + len(msgs[n].Name) + len(msgs[n].Body)
		if n > 0 && size+m > budget {
			break
		}
		size += m
	}
	return n, size
}

// rateLimiter holds a group's per-key token buckets (PROTOCOL.md §8.5).
// Buckets are kept by fingerprint, not membership, so leaving and joining
// again does not refill one; a full bucket is the same as none, so full
// ones are pruned when the map grows.
type rateLimiter struct {
	rate  float64 // tokens per second; <= 0: unlimited
	burst float64

	mu      sync.Mutex
	buckets map[wire.Fingerprint]*bucket
	pruneAt int
}

// minPrune is the number of buckets below which take never prunes.
const minPrune = 64

type bucket struct {
	tokens float64
	at     time.Time // when tokens was computed
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), buckets: make(map[wire.Fingerprint]*bucket), pruneAt: minPrune}
}

// refill brings b up to now. A clock that stepped back refills nothing.
func (r *rateLimiter) refill(b *bucket, now time.Time) {
	if now.After(b.at) {
		b.tokens = min(r.burst, b.tokens+now.Sub(b.at).Seconds()*r.rate)
	}
	b.at = now
}

// take takes n tokens from fp's bucket, or reports how long until the
// bucket will hold n.
func (r *rateLimiter) take(fp wire.Fingerprint, n int, now time.Time) (wait time.Duration, ok bool) {
	if r.rate <= 0 {
		return 0, true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[fp]
	if b == nil {
		if len(r.buckets) >= r.pruneAt {
			for k, o := range r.buckets {
				if r.refill(o, now); o.tokens >= r.burst {
					delete(r.buckets, k)
				}
			}
			r.pruneAt = max(minPrune, 2*len(r.buckets))
		}
		b = &bucket{tokens: r.burst, at: now}
		r.buckets[fp] = b
	}
	r.refill(b, now)
	if b.tokens >= float64(n) {
		b.tokens -= float64(n)
		return 0, true
	}
	need := float64(n) - b.tokens
	// At most a day: a wait too long for a Duration (a huge burst at the
	// least rate) converted to garbage, and a client waits an hour at most.
	return time.Duration(math.Ceil(min(need/r.rate, maxRateWait.Seconds()) * float64(time.Second))), false
}

// messageOverhead bounds from above the encoding of a wire.Message besides
// its name and body (keys, headers, seq, time, id, fingerprint).
const messageOverhead = 96
