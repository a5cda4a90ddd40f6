package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/miekg/dns"

	"github.com/huddle-chat/huddle/wire"
)

// firstQueryWait is the pause after the first query on an interface; it
// doubles up to BrowseConfig.QueryInterval.
const firstQueryWait = 100 * time.Millisecond

// ifaceState is what browsing saw of one interface's sockets.
type ifaceState struct {
	mu        sync.Mutex
	joined    bool
	joinErr   error
	openErr   error
	sendErr   error
	queries   int
	responses int
}

func (s *ifaceState) update(f func(*ifaceState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// states holds every interface's ifaceState for one browse, by name.
type states struct {
	mu sync.Mutex
	m  map[string]*ifaceState
}

func (s *states) get(name string) *ifaceState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]*ifaceState)
	}
	st := s.m[name]
	if st == nil {
		st = &ifaceState{}
		s.m[name] = st
	}
	return st
}

// fill copies what was seen into the reports of the interfaces used.
func (s *states) fill(reports []InterfaceReport) {
	for i := range reports {
		r := &reports[i]
		if !r.Used {
			continue
		}
		st := s.get(r.Name)
		st.mu.Lock()
		r.Joined, r.JoinErr, r.Queries, r.Responses = st.joined, st.joinErr, st.queries, st.responses
		r.SendErr = st.sendErr
		if st.openErr != nil {
			r.SendErr = st.openErr
		}
		st.mu.Unlock()
	}
}

// browse runs one query loop per selected interface until ctx ends,
// calling consider (from several goroutines) with each answer, or with a
// non-nil error for an answer that cannot be a registry. Every goroutine
// it starts has ended when it returns.
func browse(ctx context.Context, cfg BrowseConfig, st *states, consider func(Advertised, error)) error {
	cands, _, err := selectInterfaces(cfg.Interfaces)
	if err != nil {
		return err
	}
	warn := newWarnOnce(cfg.Logger)
	var wg sync.WaitGroup
	loops := make(map[string]context.CancelFunc) // by interface name and addresses
	defer func() {
		for _, stop := range loops {
			stop()
		}
		wg.Wait()
	}()
	update := func(cands []candidate) {
		keep := make(map[string]bool)
		for _, c := range cands {
			k := c.iface.Name + fmt.Sprint(c.iface.Index, c.prefixes)
			keep[k] = true
			if loops[k] != nil {
				continue
			}
			lctx, stop := context.WithCancel(ctx)
			loops[k] = stop
			wg.Go(func() { queryLoop(lctx, cfg, c, st.get(c.iface.Name), warn, consider) })
		}
		for k, stop := range loops {
			if !keep[k] {
				stop()
				delete(loops, k)
			}
		}
	}
	update(cands)
	t := time.NewTicker(cfg.RescanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			cands, _, err := selectInterfaces(cfg.Interfaces)
			if err != nil {
				warn.warn("select", "discovery: no interface to look for registries on; retrying", "every", cfg.RescanInterval, "err", err)
				continue
			}
			warn.ok("select")
			update(cands)
		}
	}
}

// queryLoop queries on one interface until ctx ends: at once, then after
// pauses doubling from firstQueryWait to cfg.QueryInterval. Queries go from
// a socket of their own (answers come back to it by unicast); a second
// socket joined to the group on this interface hears announcements and
// answers to others' queries. When the join fails, queries still work: the
// failure is logged once, with what to do about it.
func queryLoop(ctx context.Context, cfg BrowseConfig, c candidate, st *ifaceState, warn *warnOnce, consider func(Advertised, error)) {
	name := c.iface.Name
	var wg sync.WaitGroup
	defer wg.Wait()
	var socks []*conn
	defer func() {
		for _, s := range socks {
			s.close()
		}
	}()
	read := func(s *conn) {
		wg.Go(func() { readAnswers(s, c, st, cfg, consider) })
	}

	gc, err := listenGroup(c.iface)
	st.update(func(s *ifaceState) { s.joined, s.joinErr = err == nil, err })
	if err != nil {
		warn.warn("join "+name, "discovery: cannot hear mDNS announcements on "+name+"; answers to our queries still arrive",
			"iface", name, "err", err, "fix", advice(err))
	} else {
		warn.ok("join " + name)
		socks = append(socks, gc)
		read(gc)
	}

	query, err := (&dns.Msg{Question: []dns.Question{{Name: serviceName, Qtype: dns.TypePTR, Qclass: dns.ClassINET}}}).Pack()
	if err != nil {
		panic(err) // a constant message
	}
	var qc *conn
	pause := firstQueryWait
	for ctx.Err() == nil {
		if qc == nil {
			qc, err = listenQuery(c.iface)
			st.update(func(s *ifaceState) { s.openErr = err })
			if err != nil {
				warn.warn("open "+name, "discovery: cannot query for registries on "+name, "iface", name, "err", err, "fix", advice(err))
			} else {
				warn.ok("open " + name)
				socks = append(socks, qc)
				read(qc)
			}
		}
		if qc != nil {
			err := qc.send(query, mdnsDest)
			st.update(func(s *ifaceState) {
				s.sendErr = err
				if err == nil {
					s.queries++
				}
			})
			if err != nil {
				warn.warn("send "+name, "discovery: cannot send mDNS queries on "+name, "iface", name, "err", cause(err), "fix", advice(err))
			} else if warn.ok("send " + name) {
				cfg.Logger.Info("discovery: mDNS queries go out again", "iface", name)
			}
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		pause = min(2*pause, cfg.QueryInterval)
	}
}

// advice returns a *SocketError's advice, or "".
func advice(err error) string {
	var se *SocketError
	if errors.As(err, &se) {
		return se.Advice()
	}
	return ""
}

// readAnswers reads s until it is closed, handing every huddle registry a
// response describes to consider.
func readAnswers(s *conn, c candidate, st *ifaceState, cfg BrowseConfig, consider func(Advertised, error)) {
	buf := make([]byte, maxPacket)
	for {
		n, from, ifindex, err := s.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			cfg.Logger.Debug("discovery: mDNS read", "iface", c.iface.Name, "err", err)
			continue
		}
		if !s.heard(ifindex) {
			continue
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil || !m.Response || m.Opcode != dns.OpcodeQuery || m.Rcode != 0 {
			continue
		}
		st.update(func(s *ifaceState) { s.responses++ })
		for _, a := range adverts(&m) {
			r, err := toRegistry(a, c)
			cfg.Logger.Debug("discovery: answer", "iface", c.iface.Name, "from", from, "instance", r.Instance, "addrs", r.Addrs, "fp", r.Fingerprint)
			consider(r, err)
		}
	}
}

// toRegistry converts an advert heard on c. The error, wrapping
// ErrBadAnswer, says why it cannot be a registry.
func toRegistry(a *advert, c candidate) (Advertised, error) {
	r := Advertised{Instance: a.instance, Host: a.host, Iface: c.iface.Name}
	for k, p := range map[string]*string{"v": &r.Version, "proto": &r.Proto, "fp": &r.Fingerprint} {
		*p = txtValue(a.txt, k)
	}
	addrs := slices.Clone(a.addrs)
	for i, ad := range addrs {
		if ad.Is6() && ad.IsLinkLocalUnicast() {
			addrs[i] = ad.WithZone(c.iface.Name)
		}
	}
	// On-link addresses first: they are the ones this interface reaches.
	slices.SortStableFunc(addrs, func(x, y netip.Addr) int {
		switch ox, oy := c.onLink(x), c.onLink(y); {
		case ox && !oy:
			return -1
		case oy && !ox:
			return 1
		}
		return 0
	})
	for _, ad := range addrs {
		r.Addrs = append(r.Addrs, netip.AddrPortFrom(ad, a.port))
		if c.onLink(ad) {
			r.OnLink++
		}
	}
	switch {
	case !a.hasSRV || !a.hasTXT:
		return r, fmt.Errorf("%w: %q comes without its SRV and TXT records", ErrBadAnswer, r.Instance)
	case r.Fingerprint == "":
		return r, fmt.Errorf("%w: %q has no fp= in its TXT record", ErrBadAnswer, r.Instance)
	case r.Proto != "" && r.Proto != Proto:
		return r, fmt.Errorf("%w: %q speaks %q, not %q", ErrBadAnswer, r.Instance, r.Proto, Proto)
	case len(r.Addrs) == 0 || a.port == 0:
		return r, fmt.Errorf("%w: %q has no usable address", ErrBadAnswer, r.Instance)
	case !plainName(r.Instance):
		// Anyone on the link names an instance, and the name is shown to
		// users and kept in their known_registries file (one line each).
		return r, fmt.Errorf("%w: instance name %q is not one line of text", ErrBadAnswer, r.Instance)
	}
	if tag, ok := nameTag(r.Instance); ok && tag != fingerprintTag(r.Fingerprint) {
		return r, fmt.Errorf("%w: %q is named for key %s but advertises %s", ErrBadAnswer, r.Instance, tag, fingerprintTag(r.Fingerprint))
	}
	return r, nil
}

// plainName reports whether an instance name is one line of printable
// text that reads as itself: valid UTF-8 with no control character (C0,
// DEL, C1), no format character (a bidirectional override, a zero-width
// space or joiner: "office" and "office\u200b" read alike, each pinned to
// its own key; until session 19 they were taken), no line or paragraph
// separator, no filler drawn as nothing or as a blank (wire.Filler: the
// Hangul filler U+3164, the Braille blank U+2800...; until session 20
// they were taken), and no blank at either end, one a variation selector
// hides included (wire.BlankAtEnd: "office " and U+FE0F was taken until
// session 23's review): the rule of group and member names
// (wire.CheckName) and of the names registries are pinned under.
func plainName(s string) bool {
	return s != "" && utf8.ValidString(s) && !wire.BlankAtEnd(s) && !strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) || wire.Filler(r)
	})
}

// nameTag returns the fingerprint tag an instance name carries ("NAME
// (TAG)" or "NAME (TAG) #N", as Advertiser names them), if it has one.
func nameTag(instance string) (string, bool) {
	if i := strings.LastIndex(instance, ") #"); i >= 0 {
		if _, err := strconv.Atoi(instance[i+3:]); err == nil {
			instance = instance[:i+1]
		}
	}
	if !strings.HasSuffix(instance, ")") {
		return "", false
	}
	i := strings.LastIndex(instance, " (")
	if i < 0 {
		return "", false
	}
	tag := instance[i+2 : len(instance)-1]
	return tag, tag != "" && !strings.ContainsAny(tag, " ()")
}
