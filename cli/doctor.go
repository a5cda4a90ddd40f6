package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

func runDoctor(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	var wait time.Duration
	fs := newFlags(env, "doctor", "[--iface NAME]... [--registry ADDR]... [--wait DURATION] [--json]",
		"Check that huddle can find and reach its registries and group daemons, and say what to fix when not:\n"+
			"for each interface, whether mDNS could join the group and send there, and why not; every mDNS answer\n"+
			"(not with the registries given, --registry or HUDDLE_REGISTRY, unless --iface: no query is sent then);\n"+
			"every registry asked (as other commands ask them), where, whether it answered and whether its key is\n"+
			"the one pinned; and whether each group daemon answers with the key its registries list, at each\n"+
			"address listed (a cell's group: each member at each of its addresses; 64 groups at most, yours first).\n"+
			"It only looks: it pins no key and writes no cached listing.",
		"  huddle doctor\n  huddle doctor --iface eth0 --wait 5s\n  huddle doctor --json | jq .advice")
	// At least 1 ms: a wait of 0 or less listened to nothing, then advised
	// on the silence (until session 21 it was any duration, -1s too).
	fs.Var(newDuration(&wait, 2*time.Second, time.Millisecond, false), "wait", "how long to listen for mDNS answers")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(env, "doctor", "unexpected argument %q", fs.Arg(0))
	}
	dir, err := home(env)
	if err != nil {
		return fail(env, "doctor", err)
	}
	id, err := identity.LoadOrCreate(dir)
	if err != nil {
		return fail(env, "doctor", err)
	}
	kh := openKnownHosts(env, dir)
	// No KnownHosts in the client: the doctor checks pins itself, and pins
	// nothing.
	c, err := client.New(client.Config{Identity: id, DialTimeout: 3 * time.Second})
	if err != nil {
		return fail(env, "doctor", err)
	}
	defer c.Close()
	// The groups joined are checked first (doctorMaxGroups); a file it
	// cannot read leaves them unpreferred.
	joined, _ := loadJoined(dir)
	s := &session{env: env, verb: "doctor", flags: &cf, client: c, kh: kh, home: dir, looking: true, joined: joined}
	d := &doctor{s: s, report: doctorReport{You: id.Fingerprint().String()}}
	code := d.run(ctx, wait)
	if cf.json {
		d.report.OK = code == ExitOK
		d.report.print(env.Stdout)
	}
	return code
}

// doctor collects what it checks into a report, and prints it as it goes
// unless --json.
type doctor struct {
	s      *session
	report doctorReport
}

// doctorReport is huddle doctor's findings, and its --json output.
type doctorReport struct {
	You        string         `json:"you"`
	Interfaces []doctorIface  `json:"interfaces"`
	MDNS       []doctorAnswer `json:"mdns"`
	// MDNSUnchecked: the registries are given (--registry, or
	// HUDDLE_REGISTRY) and no --iface, so no mDNS query was sent and
	// Interfaces and MDNS are empty.
	MDNSUnchecked bool             `json:"mdns_unchecked,omitempty"`
	Registries    []doctorRegistry `json:"registries"`
	Cache         *doctorCache     `json:"cache,omitempty"`
	Groups        []doctorGroup    `json:"groups"`
	// GroupsUnchecked counts the groups listed past doctorMaxGroups:
	// not checked.
	GroupsUnchecked int      `json:"groups_unchecked,omitempty"`
	Advice          []string `json:"advice"`
	OK              bool     `json:"ok"`
}

// print writes r as huddle doctor --json's one object, each list a list
// (empty, not null, when nothing was found).
func (r doctorReport) print(w io.Writer) error {
	r.Interfaces = orEmpty(r.Interfaces)
	r.MDNS, r.Registries, r.Advice = orEmpty(r.MDNS), orEmpty(r.Registries), orEmpty(r.Advice)
	r.Groups = orEmpty(r.Groups)
	for i := range r.Interfaces {
		r.Interfaces[i].Addrs = orEmpty(r.Interfaces[i].Addrs)
	}
	for i := range r.Groups {
		r.Groups[i].Addrs = orEmpty(r.Groups[i].Addrs)
	}
	return printJSON(w, r)
}

// orEmpty returns s, or an empty slice for nil (JSON's [] rather than null).
func orEmpty[S ~[]E, E any](s S) S {
	if s == nil {
		return S{}
	}
	return s
}

type doctorIface struct {
	Name      string   `json:"name"`
	Used      bool     `json:"used"`
	Reason    string   `json:"reason,omitempty"` // why it is not used
	Addrs     []string `json:"addrs"`
	Joined    bool     `json:"joined"`               // the mDNS group was joined on it
	JoinError string   `json:"join_error,omitempty"` // why not
	SendError string   `json:"send_error,omitempty"` // why queries could not be sent
	Queries   int      `json:"queries"`
	Responses int      `json:"responses"` // mDNS responses heard, huddle's or not
}

type doctorAnswer struct {
	Instance    string `json:"instance"`
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint"`
	Iface       string `json:"iface"`
	AfterMS     int64  `json:"after_ms"`
	Pin         string `json:"pin"`             // "pinned", "new", "changed"
	Error       string `json:"error,omitempty"` // why it was rejected
}

type doctorRegistry struct {
	Addr        string `json:"addr"`
	From        string `json:"from"` // "given", "this machine", "cached", "mDNS"
	Name        string `json:"name"` // the name its key is pinned under
	Fingerprint string `json:"fingerprint,omitempty"`
	Pin         string `json:"pin,omitempty"` // "pinned", "new", "changed", "none" (no registry: nothing pinned)
	Answered    bool   `json:"answered"`
	AfterMS     int64  `json:"after_ms"`
	Groups      int    `json:"groups"`
	Same        bool   `json:"same,omitempty"` // the same registry as one above (same key): not asked twice
	Error       string `json:"error,omitempty"`
}

type doctorCache struct {
	AgeMS      int64 `json:"age_ms"`
	Registries int   `json:"registries"`
	Groups     int   `json:"groups"`
	Used       bool  `json:"used"` // no registry answered: the cached listing stood in
}

type doctorGroup struct {
	Name        string   `json:"name"`
	UUID        string   `json:"uuid"`
	Addrs       []string `json:"addrs"`
	Fingerprint string   `json:"fingerprint"`
	OK          bool     `json:"ok"`
	AfterMS     int64    `json:"after_ms"`
	Error       string   `json:"error,omitempty"`
	// At is each address asked alone: for a lone daemon's group, every
	// one listed (by any registry), and, when none of them answers, the
	// daemon's port at each registry's host, which no registry lists
	// (listed false); for a cell's group, each member (Member) at every
	// address listed for it, its first maxMemberAddrs.
	At []doctorAddr `json:"at,omitempty"`
}

// doctorAddr is a daemon's address asked alone.
type doctorAddr struct {
	// Member is the key of the cell's member asked, for a cell's group.
	Member string `json:"member,omitempty"`
	Addr   string `json:"addr"`
	Listed bool   `json:"listed"`
	OK     bool   `json:"ok"` // it answered, with the key listed
	Error  string `json:"error,omitempty"`
}

func (d *doctor) say(format string, args ...any) {
	if !d.s.flags.json {
		// Advice quotes what registries listed and peers said.
		fmt.Fprintf(shownWriter{d.s.env.Stdout}, format+"\n", args...)
	}
}

func (d *doctor) table(rows [][]string) {
	if d.s.flags.json {
		return
	}
	for i := range rows {
		rows[i][0] = "  " + rows[i][0]
	}
	writeTable(d.s.env.Stdout, rows)
}

// adviseMDNS adds advice about mDNS, which matters only when no registry
// is given.
func (d *doctor) adviseMDNS(format string, args ...any) {
	if len(d.s.given()) == 0 {
		d.advise(format, args...)
	}
}

// advise adds advice once: the same finding on several interfaces or
// registries is one thing to do. Each piece of advice is one line, and
// its text arguments (addresses a registry listed, errors) are shown as
// such (shown).
func (d *doctor) advise(format string, args ...any) {
	for i, v := range args {
		switch v := v.(type) {
		case string:
			args[i] = shown(v)
		case error:
			args[i] = shown(v.Error())
		}
	}
	a := fmt.Sprintf(format, args...)
	for _, have := range d.report.Advice {
		if have == a {
			return
		}
	}
	d.report.Advice = append(d.report.Advice, a)
}

func (d *doctor) run(ctx context.Context, wait time.Duration) int {
	d.say("you: %s", d.report.You)
	// A user who names the registries (a server's, over the Internet or a
	// VPN) finds none over mDNS, and the commands do not look there: no
	// query is sent unless --iface asks for the check. Until session 23
	// doctor multicast on every interface whatever --registry said, which
	// a headless server's operator does not expect.
	if given := d.s.given(); len(given) > 0 && len(d.s.flags.ifaces) == 0 {
		d.report.MDNSUnchecked = true
		d.say("\nmDNS: not checked, no query sent: the registries are given (%s); --iface NAME checks it on that interface", strings.Join(given, ", "))
	} else {
		d.mdns(ctx, wait)
	}
	l, code := d.registries(ctx)
	if l != nil {
		if c := d.daemons(ctx, l); c != ExitOK {
			code = c
		}
	}
	d.finish(code)
	return code
}

// mdns reports the interfaces and every answer mDNS gives in wait.
func (d *doctor) mdns(ctx context.Context, wait time.Duration) {
	s := d.s
	if err := s.env.startBrowse("doctor"); err != nil {
		d.say("\nmDNS: %v", err)
		return
	}
	reports, answers, err := discovery.Diagnose(ctx, discovery.BrowseConfig{
		Interfaces: s.flags.ifaces,
		Verify: func(ctx context.Context, r discovery.Advertised, addr netip.AddrPort) error {
			_, err := checkAdvertised(ctx, s.client, s.kh, r, addr)
			return err
		},
	}, wait)
	d.say("\ninterfaces for mDNS (listened %v):", wait)
	if given := s.given(); len(given) > 0 {
		d.say("  (not needed: the registries are given, %s)", strings.Join(given, ", "))
	}
	rows := [][]string{{"INTERFACE", "USED", "ADDRESSES", "MULTICAST", "QUERIES", "RESPONSES"}}
	usable := false
	for _, r := range reports {
		j := doctorIface{Name: r.Name, Used: r.Used, Reason: r.Reason, Joined: r.Joined, Queries: r.Queries, Responses: r.Responses}
		for _, a := range r.Addrs {
			j.Addrs = append(j.Addrs, a.String())
		}
		if !r.Used {
			d.report.Interfaces = append(d.report.Interfaces, j)
			rows = append(rows, []string{r.Name, "no: " + r.Reason, strings.Join(j.Addrs, ", "), "", "", ""})
			continue
		}
		usable = true
		multicast, queries := "joined", fmt.Sprint(r.Queries)
		if r.JoinErr != nil {
			j.JoinError = r.JoinErr.Error()
			multicast = "NOT JOINED: " + plainErr(errors.Unwrap(r.JoinErr))
			d.adviseMDNS("mDNS cannot hear announcements on %s (%v): %s", r.Name, r.JoinErr, adviceOf(r.JoinErr))
		}
		if r.SendErr != nil {
			j.SendError = r.SendErr.Error()
			queries = fmt.Sprintf("%d, FAILING: %s", r.Queries, plainErr(errors.Unwrap(r.SendErr)))
			d.adviseMDNS("mDNS queries cannot be sent on %s (%v): %s", r.Name, r.SendErr, adviceOf(r.SendErr))
		}
		d.report.Interfaces = append(d.report.Interfaces, j)
		rows = append(rows, []string{r.Name, "yes", strings.Join(j.Addrs, ", "), multicast, queries, fmt.Sprint(r.Responses)})
	}
	d.table(rows)
	if !usable {
		if err != nil {
			d.say("  none usable: %v", err)
		}
		d.adviseMDNS("no interface can be used for mDNS (up, multicast-capable, with an IPv4 address), so registries cannot be found on the LAN: connect to it, or give --registry HOST:PORT")
		return
	}

	d.say("\nmDNS answers for %s:", discovery.Service)
	if len(answers) == 0 {
		d.say("  none")
		d.adviseSilence(reports)
		return
	}
	rows = [][]string{{"AFTER", "INSTANCE", "ADDRESS", "KEY", "VIA", "PIN", "VERDICT"}}
	unanswered := make(map[string][]string) // instance -> "ADDR via IFACE" that answered mDNS but not QUIC
	var order []string
	for _, a := range answers {
		if a.Err != nil && onLinkOf(a) && (errors.Is(a.Err, client.ErrUnreachable) || errors.Is(a.Err, context.DeadlineExceeded)) {
			if unanswered[a.Registry.Instance] == nil {
				order = append(order, a.Registry.Instance)
			}
			unanswered[a.Registry.Instance] = append(unanswered[a.Registry.Instance], a.Addr.String()+" via "+a.Registry.Iface)
		}
	}
	// One piece of advice per registry, however many interfaces it was
	// heard on.
	for _, inst := range order {
		d.adviseMDNS("%q answered mDNS but not QUIC (at %s): a firewall on its host may drop its UDP port; allow it", inst, strings.Join(unanswered[inst], ", "))
	}
	for _, a := range answers {
		j := doctorAnswer{Instance: a.Registry.Instance, Addr: a.Addr.String(), Fingerprint: a.Registry.Fingerprint,
			Iface: a.Registry.Iface, AfterMS: a.After.Milliseconds(), Pin: "new"}
		if fp, err := wire.ParseFingerprint(a.Registry.Fingerprint); err == nil {
			if pinned, ok, _ := s.kh.Lookup(mdnsPinPrefix + a.Registry.Instance); ok {
				j.Pin = "pinned"
				if pinned != fp {
					j.Pin = "changed"
				}
			}
		}
		verdict := "verified"
		if a.Err != nil {
			j.Error = a.Err.Error()
			verdict = "REJECTED: " + d.adviseAnswer(a)
		}
		d.report.MDNS = append(d.report.MDNS, j)
		rows = append(rows, []string{a.After.Round(time.Millisecond).String(), a.Registry.Instance, a.Addr.String(),
			shortText(a.Registry.Fingerprint), a.Registry.Iface, j.Pin, verdict})
	}
	d.table(rows)
}

// adviseSilence explains an mDNS that heard no registry, from what the
// sockets met: problems with the sockets were advised already.
func (d *doctor) adviseSilence(reports []discovery.InterfaceReport) {
	var fine, heard []string
	for _, r := range reports {
		if !r.Used || r.SendErr != nil {
			continue
		}
		fine = append(fine, r.Name)
		if r.Responses > 0 {
			heard = append(heard, r.Name)
		}
	}
	switch {
	case len(fine) == 0:
		// The queries could not be sent: advised with the interfaces.
	case len(heard) > 0:
		d.adviseMDNS("other mDNS responders answered on %s, but no huddle registry: is one running on this LAN (huddle up, huddle registry)? if it is, it may listen on loopback only (its log says so) or not advertise (--no-mdns)", strings.Join(heard, ", "))
	default:
		d.adviseMDNS("queries went out on %s and nothing answered: is a registry running on this LAN (huddle up, huddle registry)? multicast may be filtered between hosts (Wi-Fi client isolation, VPNs, container networks); --registry HOST:PORT works without it", strings.Join(fine, ", "))
	}
}

// adviseAnswer explains a rejected mDNS answer, advises what to do, and
// returns the short verdict.
func (d *doctor) adviseAnswer(a discovery.Answer) string {
	var ce *identity.ChangedError
	var mm *identity.MismatchError
	switch {
	case errors.As(a.Err, &ce):
		d.adviseMDNS("the registry advertised as %q presents another key than the one pinned for that name: if it was reinstalled, run: %s", a.Registry.Instance, ce.ForgetCommand())
		return "KEY CHANGED (pinned " + ce.Pinned.Short() + ")"
	case errors.As(a.Err, &mm):
		d.adviseMDNS("%s answered mDNS with a key its QUIC handshake does not show (%s advertised, %s presented): a stale answer or a spoofer; it is ignored", a.Addr, mm.Want.Short(), mm.Got.Short())
		return "advertised key not presented"
	case errors.Is(a.Err, discovery.ErrBadAnswer):
		return "malformed: " + a.Err.Error()
	case errors.Is(a.Err, client.ErrUnreachable), errors.Is(a.Err, context.DeadlineExceeded):
		if !onLinkOf(a) {
			d.adviseMDNS("%q advertises %s, which is not on a subnet of %s: it advertises an address unreachable from here (give it a LAN address to listen on)", a.Registry.Instance, a.Addr, a.Registry.Iface)
			return "no QUIC answer (address not on this LAN)"
		}
		return "no QUIC answer" // advised once per registry by mdns
	}
	return plainErr(a.Err)
}

// onLinkOf reports whether a's address is on a subnet of the interface it
// answered on.
func onLinkOf(a discovery.Answer) bool {
	for i, addr := range a.Registry.Addrs {
		if addr == a.Addr {
			return i < a.Registry.OnLink
		}
	}
	return false
}

// registries asks every registry as other commands would, and reports each.
func (d *doctor) registries(ctx context.Context) (*listing, int) {
	s := d.s
	d.say("\nregistries:")
	lctx, cancel := context.WithTimeout(ctx, s.flags.timeout)
	defer cancel()
	cache, _ := loadListCache(s.home, scopeOf(s.given()))
	l, err := s.listing(lctx)
	var reports []registryReport
	var nre *noRegistryError
	var re *refusalError
	switch {
	case err == nil:
		reports = l.reports
	case errors.As(err, &nre):
		reports = nre.reports
	case errors.As(err, &re):
		reports = re.reports
	}
	rows := [][]string{{"REGISTRY", "FROM", "KEY", "PIN", "ANSWER", "GROUPS"}}
	code := ExitOK
	for _, r := range reports {
		if r.addr == "" {
			continue // browsing failed: the interfaces above say why
		}
		j := doctorRegistry{Addr: r.addr, From: r.from, Name: r.name, Pin: r.pin, Answered: r.err == nil, AfterMS: r.after.Milliseconds(), Groups: r.groups, Same: r.same}
		if !r.fp.IsZero() {
			j.Fingerprint = r.fp.String()
		}
		answer := fmt.Sprintf("in %v", r.after.Round(time.Millisecond))
		if r.same {
			answer += " (the same registry as above)"
		}
		if r.err != nil {
			j.Error = r.err.Error()
			answer = "NO: " + d.adviseRegistry(r)
			if r.pin == "changed" {
				code = ExitRefused
			}
		}
		d.report.Registries = append(d.report.Registries, j)
		key := ""
		if !r.fp.IsZero() {
			key = r.fp.Short()
		}
		groups := fmt.Sprint(r.groups)
		if r.err != nil {
			groups = ""
		}
		rows = append(rows, []string{r.addr, r.from, key, r.pin, answer, groups})
	}
	if len(reports) == 0 {
		d.say("  none found: nothing answers at %s, and no registry answered over mDNS", defaultRegistry)
	} else {
		d.table(rows)
	}
	if cache != nil {
		dc := &doctorCache{AgeMS: time.Since(cache.Saved).Milliseconds(), Registries: len(cache.Registries), Groups: len(cache.Groups), Used: l != nil && l.cached != nil}
		d.report.Cache = dc
		used := ""
		if dc.Used {
			used = "; standing in, as no registry answered"
		}
		d.say("  cached listing: %s from %s, %v old%s", count(uint64(dc.Groups), "group", "groups"), count(uint64(dc.Registries), "registry", "registries"), time.Since(cache.Saved).Round(time.Second), used)
	}
	if err != nil {
		if re != nil {
			return nil, ExitRefused // the registries' rows advised already
		}
		if nre == nil {
			msg, _ := explain(err)
			d.say("  %s", msg)
		}
		if len(s.given()) == 0 && len(reports) == 0 {
			d.advise("no registry was found: start one (huddle up, or huddle registry) on this machine or the LAN, or give its address with --registry HOST:PORT")
		}
		return nil, ExitUnreachable
	}
	if l.cached != nil {
		code = ExitUnreachable
	}
	return l, code
}

// adviseRegistry explains a registry that did not answer, advises what to
// do, and returns the short verdict.
func (d *doctor) adviseRegistry(r registryReport) string {
	var ce *identity.ChangedError
	switch {
	case errors.As(r.err, &ce):
		d.advise("the registry at %s presents another key than the one pinned for %s: someone may be impersonating it; if it was reinstalled, run: %s", r.addr, ce.Name, ce.ForgetCommand())
		return "KEY CHANGED (pinned " + ce.Pinned.Short() + ", presents " + ce.Presented.Short() + ")"
	case r.from == fromLocal:
		return "no registry runs on this machine"
	case isNotRegistry(r.err):
		d.advise("%s answers, but is no registry (a group daemon?): give --registry a registry's address: huddle up prints it (\"huddle registry listening on ...\"); port 7373 unless told otherwise", r.addr)
		return "not a registry"
	case errors.Is(r.err, client.ErrUnreachable), errors.Is(r.err, context.DeadlineExceeded):
		if words, noRoute := unreachableWords(r.err, r.after); noRoute {
			// The path to it fails, whether or not it runs: said in
			// words (--json's error has the network's own).
			d.advise("the registry at %s cannot be reached from this machine: %s", r.addr, words)
			return "no route"
		}
		switch r.from {
		case fromGiven:
			d.advise("the registry at %s does not answer: is it running, and does its host let UDP port %s in?", r.addr, portOf(r.addr))
		case fromCached:
			d.advise("the registry at %s answered last time, not now: it may have stopped or moved (other commands ask it for %v at most)", r.addr, straggle)
		}
		return "no answer"
	}
	return plainErr(r.err)
}

func portOf(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return fmt.Sprint(ap.Port())
	}
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return fmt.Sprint(wire.DefaultRegistryPort)
}

// probe asks e's daemon, at addr alone, for e's group's info within the
// command's timeout: nil if it answers with e's key.
func (d *doctor) probe(ctx context.Context, e wire.GroupEntry, addr string) error {
	one := wire.GroupEntry{Group: e.Group, Name: e.Name, Fingerprint: e.Fingerprint, Addrs: []string{addr}}
	g, err := d.s.client.Group(one)
	if err != nil {
		return err
	}
	defer g.Close()
	gctx, cancel := context.WithTimeout(ctx, d.s.flags.timeout)
	defer cancel()
	_, err = g.Info(gctx)
	return err
}

// probeAll asks e's daemon at each of addrs alone, at once, and returns
// what each answered, in order.
func (d *doctor) probeAll(ctx context.Context, e wire.GroupEntry, addrs []string, listed bool) []doctorAddr {
	out := make([]doctorAddr, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() {
			out[i] = doctorAddr{Addr: a, Listed: listed, OK: true}
			if err := d.probe(ctx, e, a); err != nil {
				out[i].OK, out[i].Error = false, err.Error()
			}
		})
	}
	wg.Wait()
	return out
}

// addrsOf returns every address the registries list g's daemon at: its
// entry's, then those other registries list for its key (the commands
// dial them all), each once.
func addrsOf(g client.ListedGroup) []string {
	addrs := slices.Clone(g.Addrs)
	for _, a := range g.MemberAddrs[g.Fingerprint] {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// unlistedAddrs returns where else g's daemon may answer when it answers
// at none of listed: the daemon's port at the host of each registry that
// lists g and answered, as a daemon beside its registry would, less the
// addresses listed. A daemon that registers an address unreachable from
// here (an interface's the kernel chose, a container's) is often
// reachable so. Only the hosts of g's own registries are asked, and at
// most maxUnlistedPorts ports (the first listed): a rogue registry that
// listed groups at many ports had doctor ask every other registry's host
// at each of them, a port scan of hosts it does not run (until session 16).
func unlistedAddrs(l *listing, g client.ListedGroup, listed []string) []string {
	var ports []string
	for _, a := range listed {
		_, port, err := net.SplitHostPort(a)
		if err == nil && !slices.Contains(ports, port) && len(ports) < maxUnlistedPorts {
			ports = append(ports, port)
		}
	}
	var out []string
	for _, r := range l.reports {
		if r.err != nil || r.same || !slices.Contains(g.ListedBy, r.fp) {
			continue
		}
		host, _, err := net.SplitHostPort(r.addr)
		if err != nil {
			continue
		}
		for _, port := range ports {
			if c := net.JoinHostPort(host, port); !slices.Contains(listed, c) && !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// maxUnlistedPorts bounds the ports of a group's daemon doctor asks at its
// registries' hosts (unlistedAddrs): a daemon listens at one, or a few.
const maxUnlistedPorts = 2

// groupCheck is what doctor learnt of a group's daemon (checkGroup).
type groupCheck struct {
	listed []string      // every address listed (addrsOf)
	at     []doctorAddr  // each listed address asked alone (a lone daemon's; a cell's members', memberAddrs)
	more   []doctorAddr  // its port at its registries' hosts, when it answered at none
	err    error         // as the commands reach it
	after  time.Duration // until it answered, or failed
}

// doctorParallel bounds the groups doctor checks at once.
const doctorParallel = 8

// doctorMaxGroups bounds the groups doctor checks: the groups the user
// joined first, then the others, in the listing's order. Each check may
// take the command's timeout twice, doctorParallel at a time: a rogue
// registry listing thousands of groups at addresses that never answer had
// doctor run for hours (until session 17).
const doctorMaxGroups = 64

// checked returns the groups of l doctor checks (doctorMaxGroups of them,
// the groups joined first, then the others), in the listing's order, and
// how many it leaves unchecked.
func (d *doctor) checked(l *listing) ([]client.ListedGroup, int) {
	if len(l.groups) <= doctorMaxGroups {
		return l.groups, 0
	}
	take := make([]bool, len(l.groups))
	n := 0
	for _, mine := range []bool{true, false} {
		for i, g := range l.groups {
			if n < doctorMaxGroups && !take[i] && d.s.joined.has(g.GroupEntry) == mine {
				take[i] = true
				n++
			}
		}
	}
	var out []client.ListedGroup
	for i, g := range l.groups {
		if take[i] {
			out = append(out, g)
		}
	}
	return out, len(l.groups) - len(out)
}

// checkGroups checks every group's daemon, doctorParallel at a time, and
// returns what each showed, in order. One after another, a listing of
// many groups whose daemons do not answer (a rogue registry's, or a
// network gone) took the command's timeout twice a group: a hundred
// groups, 17 minutes (until session 16).
func (d *doctor) checkGroups(ctx context.Context, l *listing, groups []client.ListedGroup) []groupCheck {
	checks := make([]groupCheck, len(groups))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(doctorParallel, len(groups)) {
		wg.Go(func() {
			for i := range next {
				checks[i] = d.checkGroup(ctx, l, groups[i])
			}
		})
	}
	for i := range groups {
		next <- i
	}
	close(next)
	wg.Wait()
	return checks
}

// maxMemberAddrs bounds the addresses doctor asks each member of a cell
// at (memberAddrs): a member listens at one, or a few; a registry's entry
// may list 25, and each registry its own.
const maxMemberAddrs = 8

// memberAddrs returns each member of e, a cell's group, at every address
// the registries list it at (client.AddMemberAddrs, then
// ListedGroup.MemberAddrs), its first maxMemberAddrs, in the order of
// e.Replicas.
func memberAddrs(e client.ListedGroup) []doctorAddr {
	at := make(map[wire.Fingerprint][]string)
	client.AddMemberAddrs(at, e.GroupEntry)
	var out []doctorAddr
	for _, r := range e.Replicas {
		addrs := at[r.Fingerprint]
		for _, a := range e.MemberAddrs[r.Fingerprint] {
			if !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
		n := 0
		for _, a := range addrs {
			if a != "" && n < maxMemberAddrs && !slices.ContainsFunc(out, func(o doctorAddr) bool { return o.Member == r.Fingerprint.String() && o.Addr == a }) {
				out = append(out, doctorAddr{Member: r.Fingerprint.String(), Addr: a, Listed: true})
				n++
			}
		}
	}
	return out
}

// probeMembers asks each member of e, a cell's group, at each of its
// addresses alone (memberAddrs), at once, for its view of the cell
// (cell_status, its key pinned), and returns what each answered.
func (d *doctor) probeMembers(ctx context.Context, e client.ListedGroup) []doctorAddr {
	out := memberAddrs(e)
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() {
			fp, err := wire.ParseFingerprint(out[i].Member)
			if err == nil {
				gctx, cancel := context.WithTimeout(ctx, d.s.flags.timeout)
				_, err = d.s.client.CellStatus(gctx, out[i].Addr, fp)
				cancel()
			}
			out[i].OK = err == nil
			if err != nil {
				out[i].Error = err.Error()
			}
		})
	}
	wg.Wait()
	return out
}

// checkGroup checks e's daemon as the commands reach it, and, a lone
// daemon's, at each listed address alone meanwhile; and when it does not
// answer (but not with another key), at its port on its registries'
// hosts (unlistedAddrs).
func (d *doctor) checkGroup(ctx context.Context, l *listing, e client.ListedGroup) groupCheck {
	c := groupCheck{listed: addrsOf(e)}
	start := time.Now()
	// Each address alone, meanwhile: a lone daemon's, or each member's of
	// a cell's group.
	var wg sync.WaitGroup
	if len(e.Replicas) == 0 {
		wg.Go(func() { c.at = d.probeAll(ctx, e.GroupEntry, c.listed, true) })
	} else {
		wg.Go(func() { c.at = d.probeMembers(ctx, e) })
	}
	// As the commands reach it: every address listed (a cell's group,
	// through its members).
	g, err := d.s.client.GroupListed(e)
	if err == nil {
		gctx, cancel := context.WithTimeout(ctx, d.s.flags.timeout)
		_, err = g.Info(gctx)
		cancel()
		g.Close()
	}
	c.err, c.after = err, time.Since(start)
	wg.Wait()
	var mm *identity.MismatchError
	if err != nil && !errors.As(err, &mm) && len(e.Replicas) == 0 {
		c.more = d.probeAll(ctx, e.GroupEntry, unlistedAddrs(l, e, c.listed), false)
	}
	return c
}

// daemons checks every listed group's daemon (doctorMaxGroups of them):
// as the commands reach it, then at each address alone (a lone daemon's
// group; each member's of a cell's group), so that an address listed
// where it does not answer is said, and, when a lone daemon answers at
// none, an address no registry lists where it does. It only looked at
// the addresses listed, together: a dead one beside a live one was "ok",
// and a daemon reachable at its registry's host but registered at an
// address unreachable from here was one of three guesses; and a cell's
// group was "ok" while one of its members answered at none of its
// addresses, or not at one of them (until session 17).
func (d *doctor) daemons(ctx context.Context, l *listing) int {
	if len(l.groups) == 0 {
		d.say("\ngroup daemons: no group is registered")
		return ExitOK
	}
	d.say("\ngroup daemons:")
	rows := [][]string{{"GROUP", "ADDRESS", "DAEMON", "ANSWER"}}
	code := ExitOK
	groups, unchecked := d.checked(l)
	d.report.GroupsUnchecked = unchecked
	checks := d.checkGroups(ctx, l, groups)
	for i, e := range groups {
		c := checks[i]
		listed, at, err := c.listed, c.at, c.err
		j := doctorGroup{Name: e.Name, UUID: e.Group.String(), Addrs: e.Addrs, Fingerprint: e.Fingerprint.String()}
		j.AfterMS = c.after.Milliseconds()
		answer := fmt.Sprintf("ok in %v", c.after.Round(time.Millisecond))
		var live, dead []string
		for _, a := range at {
			switch {
			case a.Member != "":
			case a.OK:
				live = append(live, a.Addr)
			default:
				dead = append(dead, a.Addr)
			}
		}
		if len(e.Replicas) > 0 && d.adviseMembers(e, at, &answer) {
			code = ExitUnreachable
		}
		var mm *identity.MismatchError
		switch {
		case err == nil && len(dead) > 0:
			// Reached, but not at every address listed: a client that
			// can reach only those cannot reach the group.
			answer += ", NOT at " + strings.Join(dead, ",")
			d.advise("group %q: its daemon answers at %s but not at %s, which its registries list too: the commands reach it (they try every address listed), but a client that can reach only %s cannot; if that address is stale or unreachable from the clients, take it out of the daemon's --advertise",
				e.Name, strings.Join(live, ","), strings.Join(dead, ","), strings.Join(dead, ","))
		case err == nil:
		case errors.As(err, &mm):
			answer = "WRONG KEY"
			d.advise("group %q: the daemon at %s has another key than its registries list: a stale listing (wait one lease) or an impostor", e.Name, strings.Join(listed, ","))
		default:
			answer = "NO: " + withoutGoText(err)
			var found []string
			at = append(at, c.more...)
			for _, a := range c.more {
				if a.OK {
					found = append(found, a.Addr)
				}
			}
			if len(found) > 0 {
				answer += "; answers at " + strings.Join(found, ",") + ", NOT LISTED"
				d.advise("group %q: its daemon does not answer at %s, the address it registered, but answers at %s, which no registry lists: it registers an address unreachable from here; give the daemon --advertise with an address its clients reach (%s from here), or --listen one IP of its host",
					e.Name, strings.Join(listed, ","), strings.Join(found, ","), found[0])
				break
			}
			// Likeliest first: a daemon killed (or its host gone) is listed
			// until its lease lapses.
			lapses := shownMS(e.ExpiresMS).Round(time.Second)
			d.advise("group %q: its daemon registered %s but does not answer there: it may have stopped without deregistering (killed, crashed, or its host down: its registries list it until its lease lapses, in %v), register an address unreachable from here (set --advertise on the daemon), or a firewall drops UDP", e.Name, strings.Join(listed, ","), lapses)
		}
		if err != nil || len(dead) > 0 {
			code = ExitUnreachable
		}
		if err != nil {
			j.Error = err.Error()
		} else {
			j.OK = true
		}
		j.At = at
		d.report.Groups = append(d.report.Groups, j)
		rows = append(rows, []string{e.Name, strings.Join(listed, ","), e.Fingerprint.Short(), answer})
	}
	d.table(rows)
	if unchecked > 0 {
		d.say("  and %s not checked (doctor checks %d at most, the groups you joined first)", count(uint64(unchecked), "more group", "more groups"), doctorMaxGroups)
	}
	return code
}

// adviseMembers says, of e, a cell's group, each member that did not
// answer at an address listed for it (at, probeMembers'), appends it to
// answer, and reports whether any did not.
func (d *doctor) adviseMembers(e client.ListedGroup, at []doctorAddr, answer *string) bool {
	bad := false
	for _, r := range e.Replicas {
		var live, dead []string
		for _, a := range at {
			if a.Member != r.Fingerprint.String() {
				continue
			}
			if a.OK {
				live = append(live, a.Addr)
			} else {
				dead = append(dead, a.Addr)
			}
		}
		switch {
		case len(dead) == 0:
			continue
		case len(live) == 0:
			*answer += fmt.Sprintf(", member %s answers at none of %s", r.Fingerprint.Short(), strings.Join(dead, ","))
			d.advise("group %q: its cell's member %s answers at none of %s, the addresses listed for it: it may be down, or cut off from here (huddle cell status %s shows the cell's view of it); the group is served while a majority of its members runs",
				e.Name, r.Fingerprint.Short(), strings.Join(dead, ","), e.Group.String())
		default:
			*answer += fmt.Sprintf(", member %s NOT at %s", r.Fingerprint.Short(), strings.Join(dead, ","))
			d.advise("group %q: its cell's member %s answers at %s but not at %s, which its registries list too: a client that can reach it only there cannot; if that address is stale or unreachable from the clients, take it out of the member's --advertise",
				e.Name, r.Fingerprint.Short(), strings.Join(live, ","), strings.Join(dead, ","))
		}
		bad = true
	}
	return bad
}

// finish says what to fix, or that all is good, which it is only when
// every check passed: a check that failed with no advice of its own (a
// registry's error the doctor has no words for) printed "all good" above
// exit 3 until session 21.
func (d *doctor) finish(code int) {
	if len(d.report.Advice) == 0 {
		if code == ExitOK {
			d.say("\nall good")
		} else {
			d.say("\nnot all good: see the NO above")
		}
		return
	}
	d.say("\nadvice:")
	for _, a := range d.report.Advice {
		d.say("  - %s", a)
	}
}

// adviceOf returns a socket error's advice.
func adviceOf(err error) string {
	var se *discovery.SocketError
	if errors.As(err, &se) {
		return se.Advice()
	}
	return "give the registry's address explicitly (--registry HOST:PORT)"
}

// shortText shortens a fingerprint's text form for display, leaving
// anything unparseable as it is.
func shortText(s string) string {
	if fp, err := wire.ParseFingerprint(s); err == nil {
		return fp.Short()
	}
	return s
}
