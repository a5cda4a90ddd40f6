package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestInstanceName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain._huddle._udp.local.", "plain"},
		{`huddle\ registry\ on\ box._huddle._udp.local.`, "huddle registry on box"},
		{`caf\195\169._huddle._udp.local.`, "café"},
		{`a\.b._huddle._udp.local.`, "a.b"},
		{`A._HUDDLE._UDP.LOCAL.`, "A"},
		{`trailing\`, `trailing\`},
	} {
		if got := instanceName(tc.in); got != tc.want {
			t.Errorf("instanceName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestZoneRoundTrip builds a registry's records, answers each kind of
// question with them, packs and unpacks the answer as a browser would, and
// reads the registry back, names with dots, backslashes, spaces and UTF-8
// included.
func TestZoneRoundTrip(t *testing.T) {
	z := &zone{
		instance: `huddle registry on a.b\c é (abcd-efgh)`,
		host:     "box-abcdefgh.local.",
		port:     7373,
		txt:      txtRecord("1.2.3", "abcd-efgh-ijkl"),
		addrs:    []netip.Addr{netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.9"), netip.MustParseAddr("fd00::1")},
	}
	q := func(name string, t uint16) dns.Question {
		return dns.Question{Name: name, Qtype: t, Qclass: dns.ClassINET}
	}
	for _, tc := range []struct {
		name  string
		q     dns.Question
		types string // the record types answered, in order
	}{
		{"browse", q(serviceName, dns.TypePTR), "PTR SRV TXT A A AAAA"},
		{"browse, upper case", q(strings.ToUpper(serviceName), dns.TypePTR), "PTR SRV TXT A A AAAA"},
		{"enumeration", q(enumName, dns.TypePTR), "PTR"},
		{"instance SRV", q(z.instanceFQDN(), dns.TypeSRV), "SRV A A AAAA"},
		{"instance ANY", q(z.instanceFQDN(), dns.TypeANY), "SRV TXT A A AAAA"},
		{"host A", q(z.host, dns.TypeA), "A A"},
		{"host AAAA", q(z.host, dns.TypeAAAA), "AAAA"},
		{"another service", q("_http._tcp.local.", dns.TypePTR), ""},
		{"another class", dns.Question{Name: serviceName, Qtype: dns.TypePTR, Qclass: dns.ClassCHAOS}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rrs := z.answer(tc.q)
			var types []string
			for _, rr := range rrs {
				types = append(types, dns.TypeToString[rr.Header().Rrtype])
			}
			if got := strings.Join(types, " "); got != tc.types {
				t.Fatalf("answer types %q, want %q", got, tc.types)
			}
		})
	}

	out, err := (&dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Compress: true, Answer: z.all()}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	var m dns.Msg
	if err := m.Unpack(out); err != nil {
		t.Fatal(err)
	}
	as := adverts(&m)
	if len(as) != 1 {
		t.Fatalf("%d adverts, want 1", len(as))
	}
	got := fmt.Sprintf("%+v", *as[0])
	want := fmt.Sprintf("%+v", advert{instance: z.instance, host: z.host, port: 7373, txt: z.txt, addrs: z.addrs, hasSRV: true, hasTXT: true})
	if got != want {
		t.Errorf("advert read back:\n%s\nwant\n%s", got, want)
	}
}

// TestAdvertsKeepsInstancesApart checks that one response describing two
// instances, on two hosts, gives each its own addresses.
func TestAdvertsKeepsInstancesApart(t *testing.T) {
	a := &zone{instance: "a", host: "a.local.", port: 1, txt: txtRecord("", "fa"), addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
	b := &zone{instance: "b", host: "b.local.", port: 2, txt: txtRecord("", "fb"), addrs: []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")}}
	m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Answer: append(a.all(), b.all()...)}
	as := adverts(m)
	if len(as) != 2 || fmt.Sprint(as[0].addrs) != "[10.0.0.1]" || fmt.Sprint(as[1].addrs) != "[10.0.0.2 10.0.0.3]" {
		t.Fatalf("adverts %+v %+v", as[0], as[1])
	}
}

// TestNameTag checks that an answer whose instance name carries another
// key's tag than the key it advertises is refused: a registry's name says
// which key it has, so a spoofer cannot borrow a real registry's name.
func TestNameTag(t *testing.T) {
	c := candidate{}
	for _, tc := range []struct {
		instance, fp string
		ok           bool
	}{
		{"huddle registry on box (abcd-efgh)", "abcd-efgh-ijkl", true},
		{"huddle registry on box (abcd-efgh) #2", "abcd-efgh-ijkl", true},
		{"huddle registry on box (zzzz-zzzz)", "abcd-efgh-ijkl", false},
		{"huddle registry on box (zzzz-zzzz) #3", "abcd-efgh-ijkl", false},
		{"a registry of another program", "abcd-efgh-ijkl", true}, // no tag: nothing to check
		{"box (a b)", "abcd-efgh-ijkl", true},                     // not a tag
	} {
		a := &advert{instance: tc.instance, host: "h.local.", port: 7373, txt: txtRecord("", tc.fp), hasSRV: true, hasTXT: true,
			addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
		_, err := toRegistry(a, c)
		if (err == nil) != tc.ok {
			t.Errorf("%q advertising %s: err %v, want ok=%v", tc.instance, tc.fp, err, tc.ok)
		}
	}
}

// TestInstanceNameIsText checks that an answer whose instance name is not
// one line of printable text is refused: the name reaches a user's
// terminal (huddle doctor) and the known_registries file, where a line
// break (\010 in a label, unescaped) wrote pins of the advertiser's
// choosing and an escape sequence drove the terminal. A format character
// or a line separator, which made a name pass for another (until session
// 19), is refused too, and so is a filler drawn as nothing or as a blank
// (until session 20).
func TestInstanceNameIsText(t *testing.T) {
	fp := "abcd-efgh-ijkl"
	for _, fqdn := range []string{
		`a\010127.0.0.1:7373\032abcdefghijkl._huddle._udp.local.`,
		`a\013b._huddle._udp.local.`,
		`\027]0;title\007._huddle._udp.local.`,
		`caf\195._huddle._udp.local.`,            // a UTF-8 sequence cut short
		`a\194\155b._huddle._udp.local.`,         // U+009B, an 8-bit CSI
		`\032a._huddle._udp.local.`,              // a blank a pin would lose
		`office\226\128\139._huddle._udp.local.`, // U+200B, a zero-width space: "office" to the eye
		`\226\128\174eciffo._huddle._udp.local.`, // U+202E, a right-to-left override
		`a\226\128\168b._huddle._udp.local.`,     // U+2028, a line separator
		`office\227\133\164._huddle._udp.local.`, // U+3164, a Hangul filler: "office" to the eye
		`\227\133\164._huddle._udp.local.`,       // U+3164 alone: no name to the eye
		`office\226\160\128._huddle._udp.local.`, // U+2800, the Braille blank
	} {
		z := &zone{host: "h.local.", port: 7373, txt: txtRecord("", fp), addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
		m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Answer: []dns.RR{
			&dns.PTR{Hdr: z.hdr(serviceName, dns.TypePTR), Ptr: fqdn},
			&dns.SRV{Hdr: z.hdr(fqdn, dns.TypeSRV), Target: z.host, Port: z.port},
			&dns.TXT{Hdr: z.hdr(fqdn, dns.TypeTXT), Txt: z.txt},
		}, Extra: z.addrRRs()}
		out, err := m.Pack()
		if err != nil {
			t.Fatalf("%s: %v", fqdn, err)
		}
		var back dns.Msg
		if err := back.Unpack(out); err != nil {
			t.Fatalf("%s: %v", fqdn, err)
		}
		as := adverts(&back)
		if len(as) != 1 {
			t.Fatalf("%s: %d adverts, want 1", fqdn, len(as))
		}
		r, err := toRegistry(as[0], candidate{})
		if !errors.Is(err, ErrBadAnswer) {
			t.Errorf("%s read as %q: err %v, want ErrBadAnswer", fqdn, r.Instance, err)
		}
	}
}

// TestVerifierBounded checks what a flood of answers makes a browser
// spend. mDNS answers are anyone's to send, spoofed or not, and each new
// one (another instance name, another address) was a goroutine dialling
// every address it listed, one after the other, and an entry kept for as
// long as the browser ran: a few thousand datagrams held a daemon's or
// huddle web's memory and made it dial any host the sender liked.
func TestVerifierBounded(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	running, most, dialled := 0, 0, map[string]int{}
	cfg, err := BrowseConfig{Verify: func(ctx context.Context, r Advertised, addr netip.AddrPort) error {
		mu.Lock()
		running++
		most = max(most, running)
		dialled[r.Instance]++
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		mu.Unlock()
		return errors.New("no registry there")
	}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t.Context(), cfg, func(Advertised, netip.AddrPort) {})
	var addrs []netip.AddrPort
	for i := range 50 {
		addrs = append(addrs, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 9, byte(i)}), 7373))
	}
	flood := func(from int) {
		for i := from; i < from+5000; i++ {
			v.consider(Advertised{Instance: fmt.Sprint("spoof ", i), Fingerprint: "abcd", Addrs: addrs, Iface: "lo"}, nil)
		}
	}
	// While every verification hangs, then while each fails at once.
	flood(0)
	close(release)
	flood(5000)
	v.wait()
	v.mu.Lock()
	held := len(v.state)
	v.mu.Unlock()
	if most > maxVerifying {
		t.Errorf("%d verifications at once, want at most %d", most, maxVerifying)
	}
	if held > maxAnswerStates {
		t.Errorf("%d answers remembered, want at most %d", held, maxAnswerStates)
	}
	for inst, n := range dialled {
		if n > maxVerifyAddrs {
			t.Errorf("%s: %d of its addresses dialled, want at most %d", inst, n, maxVerifyAddrs)
			break
		}
	}
}

// TestBrowseReportsBounded checks that Browse reports a bounded number of
// registries, shared by source address: anyone on the LAN can run any
// number of registries, each under a key of its own, and every one was
// reported, each becoming a daemon's registrar, a registry huddle web
// polls, a pin in known_registries.
func TestBrowseReportsBounded(t *testing.T) {
	var got []string
	rep := newReporter(nil, func(r Advertised, addr netip.AddrPort) { got = append(got, r.Fingerprint) })
	at := func(a string) netip.AddrPort { return netip.MustParseAddrPort(a) }
	for i := range 20 { // one host, many keys
		rep.report(Advertised{Instance: "x", Fingerprint: fmt.Sprint("fp", i), Iface: "lo"}, at(fmt.Sprintf("127.0.0.2:%d", 1000+i)))
	}
	if len(got) != MaxRegistriesPerSource {
		t.Errorf("%d registries reported from one address, want %d", len(got), MaxRegistriesPerSource)
	}
	for i := range 100 { // many hosts
		rep.report(Advertised{Instance: "y", Fingerprint: fmt.Sprint("fq", i), Iface: "lo"}, at(fmt.Sprintf("127.0.1.%d:7373", i+1)))
	}
	if len(got) != MaxRegistries {
		t.Errorf("%d registries reported in all, want %d", len(got), MaxRegistries)
	}
	// A registry reported already is reported again where it moves.
	n := len(got)
	rep.report(Advertised{Instance: "x", Fingerprint: "fp0", Iface: "lo"}, at("127.0.0.3:1"))
	if len(got) != n+1 {
		t.Errorf("a known registry at a new address was not reported")
	}
}

// TestConflictNeedsOurKey checks that a registry renames only for an
// advertiser of its own key under its instance name (a copy of the key,
// RFC 6762 §9), not for anyone who claims the name with a fingerprint of
// their own in TXT, which nothing verifies: a spoofer whose fp sorted
// higher made a registry rename itself, then again under each new name.
func TestConflictNeedsOurKey(t *testing.T) {
	ours := "abcd-efgh-ijkl"
	z := &zone{instance: "huddle registry on box (abcd-efgh)", host: "box-abcdefgh.local.", port: 7373,
		txt: txtRecord("", ours), addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
	renamed := 0
	r := &responder{c: &conn{ifc: net.Interface{Name: "lo"}}, zone: z, fp: ours, ours: func(netip.Addr) bool { return false }, lost: func(*advert) { renamed++ },
		log: slog.New(slog.DiscardHandler), lastDefense: time.Now()}
	for _, fp := range []string{"zzzz-zzzz-zzzz", "abcd-efgh-zzzz", "abcd-efgh-ijkl-"} {
		spoof := &zone{instance: z.instance, host: "spoof.local.", port: 1, txt: txtRecord("", fp), addrs: []netip.Addr{netip.MustParseAddr("10.0.0.0")}}
		r.checkConflict(&dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Answer: spoof.all()}, netip.MustParseAddrPort("10.0.0.66:5353"))
	}
	if renamed != 0 {
		t.Errorf("renamed %d times for advertisers of other keys", renamed)
	}
	// A copy of our own key at a higher address: the documented conflict,
	// which the lower side (ours) settles by renaming.
	twin := &zone{instance: z.instance, host: "twin.local.", port: 7373, txt: txtRecord("", ours), addrs: []netip.Addr{netip.MustParseAddr("10.0.0.9")}}
	r.checkConflict(&dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Answer: twin.all()}, netip.MustParseAddrPort("10.0.0.67:5353"))
	if renamed != 1 {
		t.Errorf("a copy of our key under our name: renamed %d times, want 1", renamed)
	}
}

// TestBrowseReportsKeyOnce checks that a registry's key answering under
// many instance names at one address is reported once: anyone can
// advertise a registry's key and address under a name of their own, and
// each name reported was pinned by huddle web in known_registries, a line
// a name, the file rewritten each time.
func TestBrowseReportsKeyOnce(t *testing.T) {
	var got []string
	rep := newReporter(nil, func(r Advertised, addr netip.AddrPort) { got = append(got, r.Instance) })
	addr := netip.MustParseAddrPort("127.0.0.2:7373")
	for i := range 100 {
		rep.report(Advertised{Instance: fmt.Sprintf("name %d (abcd-efgh)", i), Fingerprint: "abcd-efgh-ijkl", Iface: "lo"}, addr)
	}
	if len(got) != 1 {
		t.Errorf("one key at one address reported under %d names", len(got))
	}
}

// TestResponderReplies checks where a registry's responder sends its
// answers: to a querier directly only when it is on the link (RFC 6762 §11:
// anyone who can reach port 5353 could otherwise have a registry send its
// records to an address of their choosing, several times the query's
// size), and to the group at most once a second, however many queries ask
// (each answered a flood of queries with as many multicasts).
func TestResponderReplies(t *testing.T) {
	r := &responder{prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/64")}}
	now := time.Now()
	for _, tc := range []struct {
		from    string
		qu      bool // the unicast-response bit
		at      time.Duration
		to      string // "" for no answer
		comment string
	}{
		{"10.0.0.5:40000", false, 0, "10.0.0.5:40000", "a legacy query on the link"},
		{"[fd00::5]:40000", false, 0, "[fd00::5]:40000", "IPv6, on the link"},
		{"169.254.7.7:40000", false, 0, "169.254.7.7:40000", "IPv4 link-local"},
		{"[fe80::7%lo]:40000", false, 0, "[fe80::7%lo]:40000", "IPv6 link-local"},
		{"0.0.0.0:40000", false, 0, "0.0.0.0:40000", "this host, on lo without a source address"},
		{"127.0.0.1:40000", false, 0, "127.0.0.1:40000", "this host"},
		{"203.0.113.9:40000", false, 0, "", "a legacy query from off the link"},
		{"203.0.113.9:5353", true, 0, "", "a QU query from off the link"},
		{"10.0.0.5:5353", false, 0, "224.0.0.251:5353", "a QM query: to the group"},
		{"10.0.0.6:5353", false, 500 * time.Millisecond, "", "another, within a second of that answer"},
		{"203.0.113.9:5353", false, 600 * time.Millisecond, "", "and one from off the link"},
		{"10.0.0.6:5353", false, 1100 * time.Millisecond, "224.0.0.251:5353", "a second after it"},
	} {
		q := &dns.Msg{Question: []dns.Question{{Name: serviceName, Qtype: dns.TypePTR, Qclass: dns.ClassINET}}}
		if tc.qu {
			q.Question[0].Qclass |= 1 << 15
		}
		dst, ok := r.replyTo(q, netip.MustParseAddrPort(tc.from), now.Add(tc.at))
		got := ""
		if ok {
			got = dst.String()
		}
		if got != tc.to {
			t.Errorf("%s (from %s): answered to %q, want %q", tc.comment, tc.from, got, tc.to)
		}
	}
}

// TestPacedAnswersGoToGroup: a legacy query whose direct answer
// answerPace holds back is answered to the group, at most once a second.
// The bounds are spent by whoever forges on-link sources: until session
// 23's review, an honest querier whose address (8 forged queries a
// second) or the link's whole bound (64 a second from any sources) was
// spent got no answer at all, the registry announcing itself only as it
// starts; our browsers hear the group (queryLoop).
func TestPacedAnswersGoToGroup(t *testing.T) {
	q := &dns.Msg{Question: []dns.Question{{Name: serviceName, Qtype: dns.TypePTR, Qclass: dns.ClassINET}}}
	now := time.Now()
	ask := func(r *responder, from string, at time.Duration) string {
		dst, ok := r.replyTo(q, netip.MustParseAddrPort(from), now.Add(at))
		if !ok {
			return ""
		}
		return dst.String()
	}
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}

	// One address's bound spent (a neighbour forging the querier's
	// address): its next query is answered to the group, once a second.
	r := &responder{prefixes: prefixes}
	for i := range paceBurst {
		if got := ask(r, "10.0.0.5:40000", 0); got != "10.0.0.5:40000" {
			t.Fatalf("query %d of a burst: answered to %q, want the querier", i+1, got)
		}
	}
	for _, tc := range []struct {
		at   time.Duration
		want string
	}{
		{0, "224.0.0.251:5353"},
		{50 * time.Millisecond, ""}, // within a second of the group's answer, its bucket not a token fuller
		{1100 * time.Millisecond, "10.0.0.5:40000"},
	} {
		if got := ask(r, "10.0.0.5:40000", tc.at); got != tc.want {
			t.Errorf("past its address's bound, at +%v: answered to %q, want %q", tc.at, got, tc.want)
		}
	}

	// The bound of all spent by forged sources: a querier never heard
	// from before is answered to the group.
	r = &responder{prefixes: prefixes}
	for i := range paceAllBurst {
		if got := ask(r, fmt.Sprintf("10.0.0.%d:40000", 10+i/paceBurst), 0); got == "" || got == "224.0.0.251:5353" {
			t.Fatalf("query %d within the bound of all: answered to %q, want the querier", i+1, got)
		}
	}
	if got := ask(r, "10.0.0.200:40000", 0); got != "224.0.0.251:5353" {
		t.Errorf("a new querier past the bound of all: answered to %q, want the group", got)
	}
}

// TestBrowseFreesPlaces checks that a place among the registries Browse
// reports is held while its registry verifies, not for as long as Browse
// runs. Once MaxRegistries keys (or MaxRegistriesPerSource from one
// address) had been reported, a registry found after that was never
// reported, although those holding the places were long gone (laptops
// that ran huddle up and left). Now one that has not verified for
// forgetAfter is forgotten (gone is told) and a new one takes its place;
// one that still verifies keeps its place, whatever others send.
func TestBrowseFreesPlaces(t *testing.T) {
	now := time.Unix(1000, 0)
	var got, gone []string
	rep := newReporter(nil, func(r Advertised, addr netip.AddrPort) { got = append(got, r.Fingerprint) })
	rep.gone = func(r Advertised) { gone = append(gone, r.Fingerprint) }
	rep.now = func() time.Time { return now }
	at := func(a string) netip.AddrPort { return netip.MustParseAddrPort(a) }
	live := map[string]bool{"fp0": true, "fq0": true}
	verify := func(_ context.Context, r Advertised, _ netip.AddrPort) error {
		if live[r.Fingerprint] {
			return nil
		}
		return errors.New("gone")
	}
	fill := func(prefix string) { // places all taken, and from 127.0.0.2
		for i := range MaxRegistriesPerSource {
			rep.report(Advertised{Fingerprint: fmt.Sprint("fp", prefix, i), Iface: "lo"}, at(fmt.Sprintf("127.0.0.2:%d", 1000+i)))
		}
		for i := range MaxRegistries {
			rep.report(Advertised{Fingerprint: fmt.Sprint("fq", prefix, i), Iface: "lo"}, at(fmt.Sprintf("127.0.1.%d:7373", i+1)))
		}
	}
	fill("")
	if len(got) != MaxRegistries {
		t.Fatalf("%d reported, want %d", len(got), MaxRegistries)
	}
	newcomer := func() bool {
		n := len(got)
		rep.report(Advertised{Fingerprint: "new", Iface: "lo"}, at("127.0.2.1:7373"))
		rep.report(Advertised{Fingerprint: "new2", Iface: "lo"}, at("127.0.0.2:2000"))
		return len(got) == n+2
	}
	// Within forgetAfter nothing is forgotten, verified or not.
	now = now.Add(rep.forgetAfter - time.Second)
	rep.check(context.Background(), verify)
	if len(gone) != 0 || newcomer() {
		t.Fatalf("forgot %q, or took a newcomer, before forgetAfter", gone)
	}
	// A flood of others' answers meanwhile changes nothing.
	fill("flood")
	now = now.Add(time.Second)
	rep.check(context.Background(), verify)
	if len(gone) != MaxRegistries-2 {
		t.Errorf("%d registries forgotten after forgetAfter unverified, want %d (all but the two that verify)", len(gone), MaxRegistries-2)
	}
	for _, fp := range gone {
		if live[fp] {
			t.Errorf("%s forgotten although it verifies", fp)
		}
	}
	if !newcomer() {
		t.Error("a registry found once the places were freed was not reported")
	}
	// A flood takes the free places, and no more: the live ones keep theirs.
	fill("flood2")
	rep.mu.Lock()
	n := len(rep.keys)
	_, l0 := rep.keys["fp0"]
	_, l1 := rep.keys["fq0"]
	rep.mu.Unlock()
	if n != MaxRegistries || !l0 || !l1 {
		t.Errorf("after a flood: %d places taken (want %d), live ones kept: %v %v", n, MaxRegistries, l0, l1)
	}
	// A forgotten registry that comes back is reported again.
	live["fp1"] = true
	gone = gone[:0]
	now = now.Add(rep.forgetAfter)
	rep.check(context.Background(), verify)
	k := len(got)
	rep.report(Advertised{Fingerprint: "fp1", Iface: "lo"}, at("127.0.0.2:1001"))
	if len(got) != k+1 {
		t.Error("a forgotten registry that came back was not reported again")
	}
}

// TestAnswerPaceRefills checks answerPace's buckets over time, which
// TestDirectAnswersPaced holds still: an address spent refills at 8
// answers a second, a clock that steps back refills nothing, and the
// addresses tracked stay within paceDests however many ask (an IPv6
// link has as many addresses as a neighbour cares to forge), those whose
// buckets are full forgotten first.
func TestAnswerPaceRefills(t *testing.T) {
	var p answerPace
	a := netip.MustParseAddr("10.0.0.5")
	now := time.Now()
	took := func(at time.Time, n int) int {
		got := 0
		for range n {
			if p.allow(a, at) {
				got++
			}
		}
		return got
	}
	if got := took(now, 40); got != paceBurst {
		t.Fatalf("40 at once: %d answered, want the burst of %d", got, paceBurst)
	}
	if got := took(now.Add(-time.Hour), 5); got != 0 {
		t.Errorf("the clock back an hour: %d answered, want none", got)
	}
	if got := took(now.Add(time.Second), 40); got != paceRate {
		t.Errorf("a second later: %d answered, want %d", got, paceRate)
	}
	later := now.Add(time.Hour) // every bucket full again
	for i := range 3 * paceDests {
		p.allow(netip.AddrFrom16([16]byte{0xfe, 0x80, 14: byte(i >> 8), 15: byte(i)}), later)
		if len(p.dests) > paceDests {
			t.Fatalf("%d addresses tracked after %d asked, want at most %d", len(p.dests), i+1, paceDests)
		}
	}
	if !p.allow(netip.MustParseAddr("10.0.0.6"), later.Add(time.Second)) {
		t.Errorf("an address new after the flood, a second later: not answered, want it answered (its place freed)")
	}
}
