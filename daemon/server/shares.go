package server

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// Fair shares of what peers can make a server hold.
//
// Three resources are counted: operations running (each a stream with its
// goroutine), request bytes (the frames being read), and reply bytes (large
// reply frames, and the working sets that build them, held until they are
// written). Each is bounded per connection, per source address (an IPv4
// address, or an IPv6 /64), per key, and in all.
//
// The bound in all is shared fairly between addresses. While it is spent,
// an address that holds less than an equal part of it (the budget divided
// by the addresses with a connection open) takes from the address that
// holds the most: the server cuts off that address's oldest stalled
// stream, one whose request has not fully arrived or whose large reply is
// not being read, with stream error 0x2, and gives what it held to the
// newcomer. Streams that make progress finish and give back on their own;
// only stalling costs a peer its place. So an attacker, however many
// connections and keys it uses from a few addresses, holds at most its
// addresses' caps, and an honest user from another address is served
// throughout, not after the attacker's requests time out (issue 15.1, where
// one address held the whole request budget for 10 s at a time).
//
// An operation over its shares is refused at once (unavailable, with a
// time to wait). Request and reply bytes over them are waited for, within
// the request or write deadline: a well-behaved client that sends large
// requests or reads large replies slowly only slows down.

// resource is one of the things shares counts.
type resource int

const (
	resOps     resource = iota // operations running
	resRequest                 // request frame bytes held
	resReply                   // reply bytes held
	nResources
)

func (r resource) String() string {
	return [...]string{"operations", "request memory", "reply memory"}[r]
}

// amounts is a count of each resource.
type amounts [nResources]int

// shareLimits are the bounds of a server's shares.
type shareLimits struct {
	conn, addr, key, total amounts
}

// Default shares (SECURITY.md, "Limits"). The per-address and per-key
// bounds scale with MaxConnsPerAddr above its default: an operator who
// lets one address hold more connections (a NAT, a load generator) lets it
// hold more of the rest too.
func defaultShares() shareLimits {
	return shareLimits{
		conn:  amounts{resOps: 1 << 30, resRequest: 4 << 20, resReply: 4 << 20},
		addr:  amounts{resOps: 1024, resRequest: 16 << 20, resReply: 16 << 20},
		key:   amounts{resOps: 1024, resRequest: 16 << 20, resReply: 16 << 20},
		total: amounts{resOps: 8192, resRequest: 256 << 20, resReply: 256 << 20},
	}
}

// Amounts is a count of each resource the shares bound.
type Amounts struct {
	Operations   int // operations running
	RequestBytes int // request frame bytes held
	ReplyBytes   int // reply bytes held
}

// Shares bounds what peers may make a server hold: per connection, per
// source address (an IPv4 address, or an IPv6 /64), per key, and in all.
type Shares struct {
	Conn, Addr, Key, Total Amounts
}

// Bounds returns the shares a server of this configuration applies:
// c.Shares' nonzero amounts, and the defaults for the rest.
func (c Config) Bounds() Shares {
	l := defaultShares()
	if scale := c.MaxConnsPerAddr / DefaultMaxConnsPerAddr; scale > 1 {
		for r := range nResources {
			l.addr[r] = min(l.addr[r]*scale, l.total[r])
			l.key[r] = min(l.key[r]*scale, l.total[r])
		}
	}
	set := c.Shares.limits()
	for _, p := range []struct{ set, l *amounts }{{&set.conn, &l.conn}, {&set.addr, &l.addr}, {&set.key, &l.key}, {&set.total, &l.total}} {
		for r := range nResources {
			if p.set[r] != 0 {
				p.l[r] = p.set[r]
			}
		}
	}
	return l.exported()
}

func (s Shares) valid() bool {
	l := s.limits()
	for _, a := range []amounts{l.conn, l.addr, l.key, l.total} {
		for _, n := range a {
			if n < 0 {
				return false
			}
		}
	}
	return true
}

func (s Shares) limits() shareLimits {
	return shareLimits{conn: s.Conn.amounts(), addr: s.Addr.amounts(), key: s.Key.amounts(), total: s.Total.amounts()}
}

func (l shareLimits) exported() Shares {
	return Shares{Conn: l.conn.exported(), Addr: l.addr.exported(), Key: l.key.exported(), Total: l.total.exported()}
}

func (a Amounts) amounts() amounts {
	return amounts{resOps: a.Operations, resRequest: a.RequestBytes, resReply: a.ReplyBytes}
}

func (a amounts) exported() Amounts {
	return Amounts{Operations: a[resOps], RequestBytes: a[resRequest], ReplyBytes: a[resReply]}
}

// share is what one source address or one key holds.
type share struct {
	held  amounts
	conns int // connections open: the share is dropped once none is and it holds nothing
	// calls are the address's operations, oldest first (for an address's
	// share only): the candidates to cut off for a newcomer.
	calls callList
	// Its key in shares.addrs or shares.keys.
	addr   netip.Prefix
	fp     wire.Fingerprint
	isAddr bool
}

// callList is an intrusive list of calls, through call.prev and call.next.
type callList struct{ head, tail *Call }

func (l *callList) push(c *Call) {
	c.prev, c.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
}

func (l *callList) remove(c *Call) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next = nil, nil
}

// shares counts what every peer of one server holds. One mutex guards it
// all: each operation takes it once to start and once to end (and twice
// more per large request or reply), as the two budgets it replaces did.
type shares struct {
	limits shareLimits

	mu    sync.Mutex
	held  amounts // in all
	addrs map[netip.Prefix]*share
	keys  map[wire.Fingerprint]*share
	// freed is closed (and replaced) when something is given back while a
	// taker waits; waited says one does.
	freed  chan struct{}
	waited bool
	cuts   amounts // streams cut off for a newcomer, for tests and logs
	// cutting is what calls cut off but not ended yet still hold: it is
	// on its way back, so it is not cut for twice.
	cutting amounts
	// peak is the most held since the memory reclaimer last looked, in
	// bytes (heldBytesLocked).
	peak int64
}

func newShares(l shareLimits) *shares {
	return &shares{limits: l, addrs: make(map[netip.Prefix]*share), keys: make(map[wire.Fingerprint]*share), freed: make(chan struct{})}
}

// connShare is one connection's part of its server's shares.
type connShare struct {
	s         *shares
	addr, key *share
	held      amounts // guarded by s.mu
}

// attach opens the shares of a connection from addr with key.
func (s *shares) attach(addr netip.Prefix, key wire.Fingerprint) *connShare {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.addrs[addr]
	if a == nil {
		a = &share{addr: addr, isAddr: true}
		s.addrs[addr] = a
	}
	k := s.keys[key]
	if k == nil {
		k = &share{fp: key}
		s.keys[key] = k
	}
	a.conns++
	k.conns++
	return &connShare{s: s, addr: a, key: k}
}

// detach closes the connection's shares; what it still holds is given
// back by the operations that hold it.
func (cs *connShare) detach() {
	s := cs.s
	s.mu.Lock()
	defer s.mu.Unlock()
	cs.addr.conns--
	cs.key.conns--
	s.dropLocked(cs.addr)
	s.dropLocked(cs.key)
}

// dropLocked forgets sh once no connection uses it and it holds nothing.
// s.mu is held.
func (s *shares) dropLocked(sh *share) {
	if sh.conns > 0 || sh.held != (amounts{}) {
		return
	}
	if sh.isAddr {
		delete(s.addrs, sh.addr)
	} else {
		delete(s.keys, sh.fp)
	}
}

// capsLocked reports whether n more of r fit the connection's, its
// address's and its key's caps. s.mu is held.
func (cs *connShare) capsLocked(r resource, n int) bool {
	l := &cs.s.limits
	return cs.held[r]+n <= l.conn[r] && cs.addr.held[r]+n <= l.addr[r] && cs.key.held[r]+n <= l.key[r]
}

// fairLocked is an equal part of the server's budget of r: what any one
// address is owed while the budget is spent. s.mu is held.
func (s *shares) fairLocked(r resource) int {
	return s.limits.total[r] / max(1, len(s.addrs))
}

func (cs *connShare) addLocked(c *Call, r resource, n int) {
	if c.cut.Load() {
		// What a call cut off holds is on its way back (cutLocked): as
		// it gives back (or, in a race with the cut, takes), so does
		// cutting, which comes back to zero when the call ends.
		cs.s.cutting[r] += n
	}
	c.shareHeld[r] += n
	cs.held[r] += n
	cs.addr.held[r] += n
	cs.key.held[r] += n
	cs.s.held[r] += n
	if n > 0 {
		cs.s.peak = max(cs.s.peak, cs.s.heldBytesLocked())
	}
}

// admit starts operation c: it takes one of resOps, and lists c among its
// address's calls (reading its request). It reports false if the
// operation is over its shares.
func (cs *connShare) admit(c *Call) bool {
	s := cs.s
	s.mu.Lock()
	ok := cs.capsLocked(resOps, 1)
	var cut []*quic.Stream
	if ok && s.held[resOps] >= s.limits.total[resOps] {
		// The server runs all it may: an address under its equal part
		// takes the place of another's stalled operation.
		ok = cs.addr.held[resOps]+1 <= s.fairLocked(resOps)
		if ok {
			cut = cs.cutLocked(resOps, 1+s.held[resOps]-s.limits.total[resOps]-s.cutting[resOps])
			ok = len(cut) > 0 || s.cutting[resOps] > 0
		}
	}
	if ok {
		c.reading.Store(true)
		cs.addLocked(c, resOps, 1)
		cs.addr.calls.push(c)
	}
	s.mu.Unlock()
	cutOff(cut)
	return ok
}

// readingStreams returns the streams of the operations still reading
// their requests.
func (s *shares) readingStreams() []*quic.Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	var strs []*quic.Stream
	for _, a := range s.addrs {
		for c := a.calls.head; c != nil; c = c.next {
			if c.reading.Load() {
				strs = append(strs, c.str)
			}
		}
	}
	return strs
}

// end ends operation c: it gives back everything c still holds.
func (cs *connShare) end(c *Call) {
	s := cs.s
	s.mu.Lock()
	cs.addr.calls.remove(c)
	held := c.shareHeld
	for r := range nResources {
		cs.addLocked(c, r, -held[r])
	}
	c.requestHeld, c.replyHeld = 0, 0
	if cs.addr.conns == 0 || cs.key.conns == 0 {
		s.dropLocked(cs.addr)
		s.dropLocked(cs.key)
	}
	s.wakeLocked()
	s.mu.Unlock()
}

func (s *shares) wakeLocked() {
	if s.waited {
		close(s.freed)
		s.freed, s.waited = make(chan struct{}), false
	}
}

// errOverShare is a take that waited past its deadline.
var errOverShare = errors.New("over its share")

// take takes n of r for c, waiting until deadline for the shares to allow
// it, or until stop or gone is closed (shutdown; the peer cancelled the
// stream: it must get its stream credit back at once). While the server's
// budget is spent, an address under its equal part cuts off another's
// stalled streams (see the package comment) rather than wait for them. Its
// errors wrap os.ErrDeadlineExceeded (a timeout), or are errCancelled.
func (cs *connShare) take(c *Call, r resource, n int, deadline time.Time, stop, gone <-chan struct{}) error {
	s := cs.s
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		if cs.capsLocked(r, n) && s.held[r]+n <= s.limits.total[r] {
			cs.addLocked(c, r, n)
			s.mu.Unlock()
			return nil
		}
		var cut []*quic.Stream
		if cs.capsLocked(r, n) && cs.addr.held[r]+n <= s.fairLocked(r) {
			cut = cs.cutLocked(r, s.held[r]+n-s.limits.total[r]-s.cutting[r])
		}
		s.waited = true
		wait := s.freed
		s.mu.Unlock()
		cutOff(cut)
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
		}
		select {
		case <-wait:
		case <-timer.C:
			return fmt.Errorf("wait for %d bytes of %v: %w: %w", n, r, errOverShare, os.ErrDeadlineExceeded)
		case <-stop:
			return fmt.Errorf("wait for %v: shutting down: %w", r, os.ErrDeadlineExceeded)
		case <-gone:
			return errCancelled
		}
	}
}

// give gives back n of r that c holds.
func (cs *connShare) give(c *Call, r resource, n int) {
	if n == 0 {
		return
	}
	s := cs.s
	s.mu.Lock()
	cs.addLocked(c, r, -n)
	s.wakeLocked()
	s.mu.Unlock()
}

// cutLocked picks stalled streams to cut off so that need more of r are
// free, from the addresses that hold the most of r above an equal part,
// oldest first, and marks their calls cut. It returns the streams, which
// the caller cancels once s.mu is released (cutOff). What they hold comes
// back when their calls end. s.mu is held.
func (cs *connShare) cutLocked(r resource, need int) []*quic.Stream {
	s := cs.s
	fair := s.fairLocked(r)
	var over []*share
	for _, a := range s.addrs {
		if a != cs.addr && a.held[r] > fair && a.held[r] > cs.addr.held[r] {
			over = append(over, a)
		}
	}
	slices.SortFunc(over, func(a, b *share) int { return cmp.Compare(b.held[r], a.held[r]) })
	var cut []*quic.Stream
	for _, a := range over {
		for c := a.calls.head; c != nil && need > 0; c = c.next {
			if c.cut.Load() || c.shareHeld[r] == 0 || !c.stalled(r) {
				continue
			}
			c.cut.Store(true)
			cut = append(cut, c.str)
			need -= c.shareHeld[r]
			for r := range nResources {
				s.cutting[r] += c.shareHeld[r]
			}
			s.cuts[r]++
		}
		if need <= 0 {
			break
		}
	}
	return cut
}

// cutOff cancels streams chosen by cutLocked with code 0x2: their reads
// and writes fail at once, and their calls end.
func cutOff(strs []*quic.Stream) {
	for _, str := range strs {
		str.CancelRead(wire.StreamTimeout)
		str.CancelWrite(wire.StreamTimeout)
	}
}
