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

	mu            sync.Mutex
	lastDefense   time.Time
	lastMulticast time.Time // the last answer to the group (replyTo)

	stopped chan struct{} // closed by stop
	wg      sync.WaitGroup
}

// startResponder joins the mDNS group on ifc, whose subnets are prefixes,
// and answers from z until stop.
// Errors are *SocketError.
func startResponder(ifc net.Interface, prefixes []netip.Prefix, z *zone, fp string, ours func(netip.Addr) bool, lost func(*advert), log *slog.Logger, warn *warnOnce) (*responder, error) {
	c, err := listenGroup(ifc)
	if err != nil {
		return nil, err
	}
	r := &responder{c: c, prefixes: prefixes, zone: z, fp: fp, ours: ours, lost: lost, log: log, warn: warn, stopped: make(chan struct{})}
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
	dst, ok := r.replyTo(q, from, time.Now())
	if !ok {
		return
	}
	resp := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Compress: true, Answer: answers}
	if legacy {
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
// choosing); otherwise to the group, at most once every announceGap
// (RFC 6762 §6: the answer just multicast serves every querier on the
// link, and a flood of queries would be a flood of multicasts).
func (r *responder) replyTo(q *dns.Msg, from netip.AddrPort, now time.Time) (netip.AddrPort, bool) {
	unicast := from.Port() != mdnsPort
	for _, qq := range q.Question {
		if qq.Qclass&(1<<15) != 0 {
			unicast = true
		}
	}
	if unicast {
		return from, r.onLink(from.Addr())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
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
