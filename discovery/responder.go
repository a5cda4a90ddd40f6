package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// announceGap is the pause between the two announcements a responder sends
// when it starts (RFC 6762 §8.3: at least two, one second apart).
const announceGap = time.Second

// responder answers the mDNS queries that arrive on one interface from its
// zone, announces the zone when it starts, and watches others' responses
// for its instance name (RFC 6762 §9): another advertiser using the name
// with other records is a conflict, which the lower of the two settles by
// renaming.
type responder struct {
	c    *conn
	zone *zone
	fp   string                // our fingerprint
	ours func(netip.Addr) bool // reports whether an address is this host's
	lost func(theirs *advert)  // called when we must rename; it must not block
	log  *slog.Logger
	warn *warnOnce // send failures, once

	prefixes []netip.Prefix // the interface's subnets: queriers answered directly are on them

	now func() time.Time // the clock answers are paced by

	mu            sync.Mutex
	lastDefense   time.Time
	lastMulticast time.Time  // the last answer to the group (replyTo)
	direct        answerPace // the answers to queriers directly (replyTo)

	stopped chan struct{} // closed by stop
	wg      sync.WaitGroup
}

// startResponder joins the mDNS group on ifc, whose subnets are prefixes,
// and answers from z until stop.
// Errors are *SocketError.
func startResponder(ifc net.Interface, prefixes []netip.Prefix, z *zone, fp string, ours func(netip.Addr) bool, lost func(*advert), log *slog.Logger, warn *warnOnce, now func() time.Time) (*responder, error) {
	c, err := listenGroup(ifc)
	if err != nil {
		return nil, err
	}
	r := &responder{c: c, prefixes: prefixes, zone: z, fp: fp, ours: ours, lost: lost, log: log, warn: warn, now: now, stopped: make(chan struct{})}
	r.wg.Add(2)
	go r.serve()
	go r.announce()
	return r, nil
}

// stop closes the socket and waits for the responder's goroutines.
func (r *responder) stop() {
	close(r.stopped)
	r.c.close()
	r.wg.Wait()
}

// announce sends every record to the group twice, announceGap apart, so
// browsers that listen (group daemons) learn of the registry at once.
func (r *responder) announce() {
	defer r.wg.Done()
	for i := range 2 {
		if i > 0 {
			t := time.NewTimer(announceGap)
			select {
			case <-r.stopped:
				t.Stop()
				return
			case <-t.C:
			}
		}
		r.send(&dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Compress: true, Answer: r.zone.all()}, mdnsDest)
	}
}

func (r *responder) serve() {
	defer r.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, ifindex, err := r.c.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Debug("discovery: mDNS read", "iface", r.c.ifc.Name, "err", err)
			continue
		}
		if !r.c.heard(ifindex) {
			continue
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil {
			r.log.Debug("discovery: undecodable mDNS packet", "iface", r.c.ifc.Name, "from", from, "err", err)
			continue
		}
		// RFC 6762 §18: ignore non-zero opcodes and rcodes.
		if m.Opcode != dns.OpcodeQuery || m.Rcode != 0 {
			continue
		}
		if m.Response {
			r.checkConflict(&m, from)
			continue
		}
		r.answer(&m, from)
	}
}

// answer replies to one query: to the querier directly when it asked from a
// port other than 5353 (a "legacy unicast" query, RFC 6762 §6.7, which is
// what our browsers send) or set the unicast-response bit, otherwise to the
// group.
func (r *responder) answer(q *dns.Msg, from netip.AddrPort) {
	legacy := from.Port() != mdnsPort
	var answers []dns.RR
	for _, qq := range q.Question {
		for _, rr := range r.zone.answer(qq) {
			if !slices.ContainsFunc(answers, func(have dns.RR) bool { return dns.IsDuplicate(have, rr) }) {
				answers = append(answers, rr)
			}
		}
	}
	if len(answers) == 0 {
		return
	}
	dst, ok := r.replyTo(q, from, r.now())
	if !ok {
		return
	}
	resp := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Compress: true, Answer: answers}
	if legacy && dst != mdnsDest {
		resp.Id = q.Id
		resp.Question = q.Question
	}
	r.send(resp, dst)
}

// replyTo says where the answer to q, from from, goes, if anywhere: to the
// querier when it asked from a port other than 5353 or set a question's
// unicast-response bit, but only if it is on the link (RFC 6762 §11:
// anyone who can reach port 5353 could otherwise have the registry send
// its records, several times the query's size, to an address of their
// choosing), and within answerPace's bounds unless it is this host on lo;
// otherwise to the group, at most once every announceGap
// (RFC 6762 §6: the answer just multicast serves every querier on the
// link, and a flood of queries would be a flood of multicasts). A query
// answerPace holds back is answered to the group too: the bounds are
// spent by anyone who forges queries from on-link sources (64 a second
// spend them all, 8 a second from a querier's address its own), and an
// honest querier then had no answer at all, the registry announcing
// itself only as it starts; our browsers hear the group beside their
// query socket (queryLoop), and the group gets no more than its one
// answer a second.
func (r *responder) replyTo(q *dns.Msg, from netip.AddrPort, now time.Time) (netip.AddrPort, bool) {
	unicast := from.Port() != mdnsPort
	for _, qq := range q.Question {
		if qq.Qclass&(1<<15) != 0 {
			unicast = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if unicast {
		a := from.Addr().Unmap().WithZone("")
		switch {
		case !r.onLink(a):
			return netip.AddrPort{}, false
		case a.IsLoopback() || a.IsUnspecified():
			// This host on lo (no packet from the wire has such a
			// source): its answers reach no one else, and every browser
			// of a host whose only interface is lo (its daemons, huddle
			// web, each command) asks from there.
			return from, true
		}
		if r.direct.allow(a, now) {
			return from, true
		}
	}
	if !r.lastMulticast.IsZero() && now.Sub(r.lastMulticast) < announceGap {
		return netip.AddrPort{}, false
	}
	r.lastMulticast = now
	return mdnsDest, true
}

// onLink reports whether a is on the responder's link: link-local, on a
// subnet of its interface, or this host (a loopback address, or none: a
// query sent on lo without a source address reads as from 0.0.0.0, and an
// answer to it comes back here).
func (r *responder) onLink(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if a.IsLinkLocalUnicast() || a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	for _, p := range r.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (r *responder) send(m *dns.Msg, dst netip.AddrPort) {
	out, err := m.Pack()
	if err != nil {
		r.log.Warn("discovery: pack mDNS answer", "err", err)
		return
	}
	key := "send " + r.c.ifc.Name
	if err := r.c.send(out, dst); err != nil {
		r.warn.warn(key, "discovery: cannot send mDNS answers on "+r.c.ifc.Name, "iface", r.c.ifc.Name, "err", cause(err), "fix", advice(err))
	} else if r.warn.ok(key) {
		r.log.Info("discovery: mDNS answers go out again", "iface", r.c.ifc.Name)
	}
}

// checkConflict looks for our instance name in another responder's
// response. A copy of ourselves (same fingerprint, host, port, and only
// this host's addresses: our responder on another interface of the same
// link) is no conflict, nor is anyone else's instance. Another advertiser
// of our key (a copy of it) under our name is: the side whose records
// sort lower renames. We defend the name against anyone else by
// announcing it again (at most once a second).
func (r *responder) checkConflict(m *dns.Msg, from netip.AddrPort) {
	for _, a := range adverts(m) {
		if !strings.EqualFold(a.instance, r.zone.instance) || !a.hasSRV && !a.hasTXT {
			continue
		}
		if r.isSelf(a) {
			continue
		}
		// Only a copy of our key renames us: the fingerprint in another's
		// TXT is a claim nothing verifies, and a stranger claiming our
		// name with a key that sorts above ours would rename us again and
		// again. Browsers refuse such a claim (the name's tag is not its
		// key's); we announce ours again.
		if txtValue(a.txt, "fp") == r.fp && r.losesTo(a) {
			r.log.Warn("discovery: another registry advertises our mDNS instance name; renaming", "iface", r.c.ifc.Name,
				"instance", r.zone.instance, "from", from, "their_fp", txtValue(a.txt, "fp"), "their_addrs", a.addrs)
			r.lost(a)
			return
		}
		r.mu.Lock()
		defend := time.Since(r.lastDefense) >= announceGap
		if defend {
			r.lastDefense = time.Now()
		}
		r.mu.Unlock()
		if defend {
			r.log.Info("discovery: another registry advertises our mDNS instance name; it renames, we keep ours", "iface", r.c.ifc.Name, "instance", r.zone.instance, "from", from)
			r.send(&dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Compress: true, Answer: r.zone.all()}, mdnsDest)
		}
	}
}

func (r *responder) isSelf(a *advert) bool {
	if txtValue(a.txt, "fp") != r.fp || a.hasSRV && (a.host != strings.ToLower(r.zone.host) || a.port != r.zone.port) {
		return false
	}
	for _, addr := range a.addrs {
		if !r.ours(addr) {
			return false
		}
	}
	return true
}

// losesTo decides a conflict the same way on both sides: by fingerprint,
// then by the sorted addresses, then by port and host; the lower renames.
func (r *responder) losesTo(a *advert) bool {
	ours := conflictKey(r.fp, r.zone.addrs, r.zone.port, strings.ToLower(r.zone.host))
	return ours < conflictKey(txtValue(a.txt, "fp"), a.addrs, a.port, a.host)
}

func conflictKey(fp string, addrs []netip.Addr, port uint16, host string) string {
	s := slices.Clone(addrs)
	slices.SortFunc(s, netip.Addr.Compare)
	var b strings.Builder
	b.WriteString(fp)
	for _, a := range s {
		b.WriteByte(' ')
		b.WriteString(a.String())
	}
	fmt.Fprintf(&b, " %05d %s", port, host)
	return b.String()
}

// txtValue returns the value of key in TXT strings "key=value".
func txtValue(txt []string, key string) string {
	for _, kv := range txt {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

// Bounds of the answers a responder sends to queriers directly (answerPace):
// a querier's browser asks at most 5 times in its first 2 s and once a
// second then (query.go), and a host runs a few (its daemons, huddle web,
// a command), so each address may take a burst of paceBurst answers and
// paceRate a second after it; all queriers together paceAllBurst and
// paceAllRate a second (a link of paceAllRate browsing hosts, each asking
// once a second; one not answered asks again within a second).
const (
	paceBurst    = 16
	paceRate     = 8
	paceAllBurst = 128
	paceAllRate  = 64
	// paceDests bounds the addresses tracked: past it, those whose
	// buckets are full again are forgotten, and an address new past
	// that gets no answer. At paceAllRate a second, a bucket refilled in
	// paceBurst/paceRate seconds, few more than paceAllBurst + 2 *
	// paceAllRate addresses hold a bucket that is not full.
	paceDests = 1024
)

// answerPace paces the answers a responder sends to queriers directly, per
// address and in all, as a token bucket each. The querier's address is
// the source of its query, which on the link anyone can forge: the
// answers, several times a query's size, went to it as often as queries
// came (until session 23), so that a neighbour could have a registry send
// an address of its choosing a flood of them. The multicast answers were
// paced already (lastMulticast). Its zero value is ready; the responder's
// mu guards it.
type answerPace struct {
	all   tokens
	dests map[netip.Addr]*tokens
}

// tokens is a token bucket: n tokens as of at.
type tokens struct {
	n  float64
	at time.Time
}

// refill brings t up to now at rate a second, up to burst; a bucket never
// used is full. A clock that stepped back refills nothing.
func (t *tokens) refill(now time.Time, burst, rate float64) {
	switch {
	case t.at.IsZero():
		t.n = burst
	case now.After(t.at):
		t.n = min(burst, t.n+now.Sub(t.at).Seconds()*rate)
	default:
		return
	}
	t.at = now
}

// allow reports whether an answer may go to a now, taking a token from
// its bucket and from all if so.
func (p *answerPace) allow(a netip.Addr, now time.Time) bool {
	if p.dests == nil {
		p.dests = make(map[netip.Addr]*tokens)
	}
	p.all.refill(now, paceAllBurst, paceAllRate)
	t := p.dests[a]
	if t == nil {
		if len(p.dests) >= paceDests {
			for o, ot := range p.dests {
				if ot.refill(now, paceBurst, paceRate); ot.n >= paceBurst {
					delete(p.dests, o)
				}
			}
			if len(p.dests) >= paceDests {
				return false
			}
		}
		t = &tokens{}
		p.dests[a] = t
	}
	t.refill(now, paceBurst, paceRate)
	if t.n < 1 || p.all.n < 1 {
		return false
	}
	t.n--
	p.all.n--
	return true
}
