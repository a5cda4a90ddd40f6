package daemon

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"slices"
	"sync"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// group is one hosted group: its log, epoch and members.
type group struct {
	id     wire.UUID
	name   string
	secret []byte // empty: a public group
	epoch  uint64 // random at each start: the log does not survive one
	log    *store.Log
	dir    string // the state directory

	mu      sync.RWMutex
	members map[wire.Fingerprint]*member
	// senders interns (fingerprint, name) pairs: a stored message's From is
	// an index here, so each message costs 4 bytes for its sender, and a
	// message keeps the name its sender had when it was sent.
	senders  []sender
	senderIx map[sender]uint32
	version  uint64 // of members; bumped on each change

	persistMu sync.Mutex
	persisted uint64 // the version last written to the members file
}

type member struct {
	name   string
	joined int64         // Unix ns
	from   uint32        // senders index of (fingerprint, name)
	left   chan struct{} // closed when the member leaves; ends its watches
}

type sender struct {
	fp   wire.Fingerprint
	name string
}

func newGroup(id wire.UUID, spec GroupSpec, log *store.Log, dir string, records []memberRecord) *group {
	g := &group{
		id:       id,
		name:     spec.Name,
		secret:   spec.Secret,
		epoch:    newEpoch(),
		log:      log,
		dir:      dir,
		members:  make(map[wire.Fingerprint]*member, len(records)),
		senderIx: make(map[sender]uint32),
	}
	for _, r := range records {
		g.members[r.Fingerprint] = &member{
			name:   r.Name,
			joined: r.Joined,
			from:   g.internLocked(r.Fingerprint, r.Name),
			left:   make(chan struct{}),
		}
	}
	return g
}

func (g *group) private() bool { return len(g.secret) > 0 }

// secretOK compares a join's secret with the group's in constant time;
// hashing both first keeps the comparison from revealing the length.
func (g *group) secretOK(s []byte) bool {
	a, b := sha256.Sum256(s), sha256.Sum256(g.secret)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// internLocked returns the sender index of (fp, name). g.mu is held for
// writing.
func (g *group) internLocked(fp wire.Fingerprint, name string) uint32 {
	s := sender{fp, name}
	if i, ok := g.senderIx[s]; ok {
		return i
	}
	i := uint32(len(g.senders))
	g.senders = append(g.senders, s)
	g.senderIx[s] = i
	return i
}

// membership returns the sender index and the left channel of fp's
// membership, or ok false if fp is not a member.
func (g *group) membership(fp wire.Fingerprint) (from uint32, left <-chan struct{}, ok bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	m := g.members[fp]
	if m == nil {
		return 0, nil, false
	}
	return m.from, m.left, true
}

func (g *group) isMember(fp wire.Fingerprint) bool {
	_, _, ok := g.membership(fp)
	return ok
}

func (g *group) memberCount() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.members)
}

// join adds fp as a member named name, or renames it if it is one. It
// returns whether fp was a member already, and false for full if the group
// has max members and fp is not one of them.
func (g *group) join(fp wire.Fingerprint, name string, now int64, max int) (already, full bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m := g.members[fp]; m != nil {
		if m.name != name {
			m.name = name
			m.from = g.internLocked(fp, name)
			g.version++
		}
		return true, false
	}
	if len(g.members) >= max {
		return false, true
	}
	g.members[fp] = &member{name: name, joined: now, from: g.internLocked(fp, name), left: make(chan struct{})}
	g.version++
	return false, false
}

// leave removes fp's membership and ends its watches. It reports whether fp
// was a member.
func (g *group) leave(fp wire.Fingerprint) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.members[fp]
	if m == nil {
		return false
	}
	delete(g.members, fp)
	close(m.left)
	g.version++
	return true
}

// memberList returns the members sorted by name, then fingerprint.
func (g *group) memberList() []wire.Member {
	g.mu.RLock()
	list := make([]wire.Member, 0, len(g.members))
	for fp, m := range g.members {
		list = append(list, wire.Member{Fingerprint: fp, Name: m.name, Joined: m.joined})
	}
	g.mu.RUnlock()
	slices.SortFunc(list, func(a, b wire.Member) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), slices.Compare(a.Fingerprint[:], b.Fingerprint[:]))
	})
	return list
}

// persist writes the members file if the members changed since it was last
// written. Concurrent callers never write an older list over a newer one.
func (g *group) persist() error {
	g.mu.RLock()
	v := g.version
	records := make([]memberRecord, 0, len(g.members))
	for fp, m := range g.members {
		records = append(records, memberRecord{Fingerprint: fp, Name: m.name, Joined: m.joined})
	}
	g.mu.RUnlock()

	g.persistMu.Lock()
	defer g.persistMu.Unlock()
	if g.persisted >= v {
		return nil // a newer or the same list is on disk
	}
	slices.SortFunc(records, func(a, b memberRecord) int {
		return cmp.Or(cmp.Compare(a.Joined, b.Joined), slices.Compare(a.Fingerprint[:], b.Fingerprint[:]))
	})
	if err := saveMembers(g.dir, g.id, records); err != nil {
		return err
	}
	g.persisted = v
	return nil
}

// toWire converts stored messages to wire messages, appending to out,
// mapping each From back to its sender's fingerprint and name. It stops
// after max messages or once the messages' estimated encoding passes budget
// bytes (always taking at least one), and returns how many it took.
func (g *group) toWire(out []wire.Message, msgs []store.Message, max, budget int) ([]wire.Message, int) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	size, n := 0, 0
	for ; n < len(msgs) && n < max; n++ {
		m := &msgs[n]
		s := g.senders[m.From]
		size += messageOverhead + len(s.name) + len(m.Body)
		if n > 0 && size > budget {
			break
		}
		out = append(out, wire.Message{Seq: m.Seq, Time: m.Time, ID: m.ID, From: s.fp, Name: s.name, Body: m.Body})
	}
	return out, n
}

// messageOverhead bounds from above the encoding of a wire.Message besides
// its name and body (keys, headers, seq, time, id, fingerprint).
const messageOverhead = 96
