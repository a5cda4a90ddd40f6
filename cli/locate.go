package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// How long a client verb looks for registries. None is a promise of speed:
// they bound how long a verb waits for registries that may not exist.
const (
	// discoverTimeout bounds browsing mDNS when no registry has answered.
	discoverTimeout = 3 * time.Second
	// localTimeout bounds asking this machine's registry (127.0.0.1:7373),
	// which may well not run.
	localTimeout = time.Second
	// browseAtLeast is how long answers to mDNS queries are waited for
	// before the listing may be complete: on a LAN they come within a few
	// milliseconds of the first query, and every registry that answered by
	// then is waited for: from the start of the handshake that verifies
	// its answer until it is asked (or its verification fails), so a
	// registry new to the cached listing is not left out because a cached
	// one answered first. Registries cached from the last run are asked
	// directly meanwhile; their handshakes take longer than this. An
	// answer that never gets through (a bogus one) costs at most straggle.
	browseAtLeast = 15 * time.Millisecond
	// straggle is how long, after the first registry answered, the others
	// still being asked are waited for. One that is down costs at most
	// this.
	straggle = 250 * time.Millisecond
)

// Where a client verb learned of a registry.
const (
	fromGiven  = "given"        // --registry or HUDDLE_REGISTRY
	fromLocal  = "this machine" // 127.0.0.1:7373, where huddle up runs
	fromCached = "cached"       // answered last time (the cached listing)
	fromMDNS   = "mDNS"
)

// pinNone is the pin of a server asked as a registry that answered as
// none (a group daemon's address given as --registry): no key is pinned
// for it.
const pinNone = "none"

// registryReport is what one registry a client verb asked did.
type registryReport struct {
	from   string           // one of the from constants
	name   string           // the name its key is pinned under: its address, or mdns:INSTANCE
	addr   string           // where it was asked
	iface  string           // for mDNS: the interface it answered on
	fp     wire.Fingerprint // the key it presented; zero if never reached
	groups int              // groups it listed
	err    error            // nil if it answered
	pin    string           // "pinned", "new" (pinned now), "changed" (refused), pinNone, or "" (not pinned by name)
	after  time.Duration    // from the start to its answer or failure
	same   bool             // the same registry (key) as an earlier report: not asked again
}

// listing is what a client verb knows of the groups: the merge of every
// registry that answered, or, when none did, the cached listing.
type listing struct {
	groups  []client.ListedGroup
	regs    client.Registries // the registries that answered
	reports []registryReport  // every registry tried, in the order they settled
	cached  *listCache        // the cache that stood in, when no registry answered
}

// registryAnswer is one registry's outcome, sent to gather's loop.
type registryAnswer struct {
	registryReport
	reg      *client.Registry
	list     client.Listing
	expected bool // counted among the registries the listing waits for
}

// gatherer collects the registries of one listing.
type gatherer struct {
	s        *session
	start    time.Time
	answers  chan registryAnswer
	inflight atomic.Int32 // expected sources not yet settled
	optional atomic.Int32 // other sources not yet settled (this machine's registry)
	browsing atomic.Bool  // mDNS browsing runs
	wg       sync.WaitGroup

	mu       sync.Mutex
	claimed  map[wire.Fingerprint]bool // keys being asked or answered, so each is asked once
	refusals map[string]bool           // names whose changed key was reported
	pending  map[string]registryReport // expected registries not yet answered, by source and address
	// held counts, by key not yet claimed, the mDNS answers being verified
	// (or verified, their registry about to be asked): awaited like the
	// registries in flight (see browseAtLeast), and named by late when
	// the run stops before they are asked.
	held map[wire.Fingerprint]*heldAnswer
	wake chan struct{} // the last hold ended without an ask: the loop may be done
}

// listing asks every registry the session knows and merges what they list
// (once per session). With --registry or HUDDLE_REGISTRY (each a list),
// those registries are asked, and nothing else; otherwise this machine's,
// those the cached listing names, and every one mDNS finds. A registry
// whose key changed is refused wherever it answers (it is not trusted
// under another name in the same run), and the command stops with its
// *identity.ChangedError, whatever else answered. When no registry
// answers, the cached listing of the same
// registries stands in, with its age said on stderr; without one the
// error says what each registry did.
func (s *session) listing(ctx context.Context) (*listing, error) {
	if s.listed != nil {
		return s.listed, nil
	}
	l, err := s.gather(ctx)
	if err != nil {
		return nil, err
	}
	s.listed = l
	return l, nil
}

func (s *session) gather(outer context.Context) (*listing, error) {
	ctx, cancel := context.WithCancel(outer)
	defer cancel()
	g := &gatherer{s: s, start: time.Now(), answers: make(chan registryAnswer, 16), claimed: make(map[wire.Fingerprint]bool), refusals: make(map[string]bool), pending: make(map[string]registryReport),
		held: make(map[wire.Fingerprint]*heldAnswer), wake: make(chan struct{}, 1)}
	defer g.wg.Wait() // after cancel: every source has ended when gather returns

	given := s.given()
	cache, cacheErr := loadListCache(s.home, scopeOf(given))
	if cacheErr != nil {
		fmt.Fprintf(s.env.Stderr, "huddle %s: warning: ignoring the cached listing: %v\n", s.verb, cacheErr)
	}
	browsing := false
	if len(given) > 0 {
		for _, addr := range given {
			g.ask(ctx, registryReport{from: fromGiven, name: addr, addr: addr}, wire.Fingerprint{}, true, 0)
		}
	} else {
		if cache != nil {
			for _, r := range cache.Registries {
				if g.claim(r.Fingerprint) {
					g.ask(ctx, registryReport{from: fromCached, name: r.Name, addr: r.Addr, iface: r.Iface}, r.Fingerprint, true, 0)
				}
			}
		}
		g.ask(ctx, registryReport{from: fromLocal, name: defaultRegistry, addr: defaultRegistry}, wire.Fingerprint{}, false, localTimeout)
		browsing = true
		g.browsing.Store(true)
		bctx, stopBrowse := context.WithTimeout(ctx, discoverTimeout)
		defer stopBrowse()
		g.wg.Go(func() { g.browse(bctx) })
	}

	var (
		answered []registryAnswer
		reports  []registryReport
		refused  = make(map[wire.Fingerprint]*identity.ChangedError)
		first    time.Time
		timer    = time.NewTimer(time.Hour)
	)
	defer timer.Stop()
	for {
		elapsed := time.Since(g.start)
		var wake time.Duration // from now; 0: none
		if !first.IsZero() {
			if time.Since(first) >= straggle || g.inflight.Load() == 0 && !g.holding() && (!browsing || elapsed >= browseAtLeast) {
				break
			}
			wake = straggle - time.Since(first)
			if browsing && elapsed < browseAtLeast {
				wake = min(wake, browseAtLeast-elapsed)
			}
		} else {
			if g.inflight.Load() == 0 && g.optional.Load() == 0 && (!g.browsing.Load() || elapsed >= discoverTimeout) {
				return g.fallback(ctx, reports, cache, refused)
			}
			if g.browsing.Load() {
				wake = max(discoverTimeout-elapsed, time.Millisecond)
			}
		}
		if wake > 0 {
			timer.Reset(wake)
		}
		select {
		case a := <-g.answers:
			if a.err == errBrowseEnded {
				continue
			}
			if a.expected {
				g.settle(a.registryReport)
			} else if a.from == fromLocal {
				g.optional.Add(-1)
			}
			a.after = time.Since(g.start)
			var ce *identity.ChangedError
			if errors.As(a.err, &ce) {
				refused[ce.Presented] = ce
				a.pin = "changed"
			}
			if a.err == nil {
				g.claim(a.fp) // found over mDNS too, it is not asked again
				g.unhold(a.fp, true)
				if hasKey(answered, a.fp) {
					a.same = true
				} else {
					answered = append(answered, a)
					if first.IsZero() {
						first = time.Now()
					}
				}
			}
			reports = append(reports, a.registryReport)
		case <-timer.C:
		case <-g.wake:
		case <-ctx.Done():
			if first.IsZero() {
				return g.fallback(ctx, reports, cache, refused)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	reports = append(reports, g.late()...)
	cancel()

	// A key refused under one name is refused under every other: it must not
	// be trusted on first use under another name (an address, an mDNS
	// name) in the same run, so nothing is pinned before this. (ask pinned
	// each new name as its registry answered, so such a key stayed pinned
	// under the other name, trusted the next time.) And the command stops,
	// ssh-style, whatever else answered.
	if ce := firstRefusal(refused); ce != nil {
		return nil, &refusalError{ChangedError: ce, reports: reports}
	}
	// Every name that answered under a key new to it, a key answering
	// under another name too included.
	var unpinned, unpinnedAddrs []string
	dropped := make(map[string]bool) // mDNS names that could not be pinned: not used
	var failed []notPinned           // and why
	for i, r := range reports {
		if r.err != nil || r.pin != "new" || s.looking {
			continue
		}
		if !strings.HasPrefix(r.name, mdnsPinPrefix) {
			// An address: pinned; used unpinned if the file holds all the
			// addresses it may; or, if another process pinned another key
			// for it meanwhile, refused.
			var ce *identity.ChangedError
			switch err := s.kh.Check(outer, r.name, r.fp); {
			case errors.As(err, &ce):
				return nil, &refusalError{ChangedError: ce, reports: reports}
			case errors.Is(err, identity.ErrPinsFull):
				unpinnedAddrs = append(unpinnedAddrs, r.name)
			case err != nil:
				return nil, fmt.Errorf("pin registry %s: %w", r.name, err)
			}
		} else if pinned, err := pinFound(outer, s.kh, r.name, r.fp); err != nil {
			// Not used (its key was checked against its advertisement
			// only): said, and why, rather than left out unsaid.
			dropped[r.name] = true
			reports[i].err, reports[i].pin = fmt.Errorf("not used: its key could not be pinned: %w", err), ""
			failed = addNotPinned(failed, r.name, err)
		} else if !pinned {
			unpinned = append(unpinned, r.name)
		}
	}
	if len(unpinnedAddrs) > 0 {
		fmt.Fprintf(s.env.Stderr, "huddle %s: warning: %s\n", s.verb, addressPinsFullWarning(s.kh.Path(), unpinnedAddrs))
	}
	l := &listing{}
	var parts []client.RegistryListing
	for _, a := range answered {
		if dropped[a.name] {
			continue
		}
		parts = append(parts, client.RegistryListing{Registry: a.reg, Listing: a.list})
		l.regs = append(l.regs, a.reg)
		// Said once a run: entries a registry of before session 12 took
		// from anyone (the rest of its listing is used).
		if err := a.list.SkippedError(); err != nil {
			fmt.Fprintf(s.env.Stderr, "huddle %s: warning: registry %s: %v\n", s.verb, shown(a.name), err)
		}
	}
	if len(unpinned) > 0 {
		fmt.Fprintf(s.env.Stderr, "huddle %s: warning: %s\n", s.verb, pinsFullWarning(s.kh.Path(), unpinned))
	}
	if len(parts) > 0 {
		// Without another registry, no registry answered: that error (or
		// the cached listing's warning) says what each did, this too.
		for _, n := range failed {
			fmt.Fprintf(s.env.Stderr, "huddle %s: warning: %s\n", s.verb, n.warning())
		}
	}
	l.reports = reports
	if len(parts) == 0 {
		return g.fallback(outer, reports, cache, refused)
	}
	l.groups = client.Merge(parts)
	if s.looking {
		return l, nil
	}
	if err := saveListCache(s.home, scopeOf(given), l); err != nil {
		fmt.Fprintf(s.env.Stderr, "huddle %s: warning: cannot cache the listing: %v\n", s.verb, err)
	}
	return l, nil
}

// refusalError stops a command because a registry's key changed; it is
// the *identity.ChangedError (errors.As finds it), with what every registry
// asked did, for huddle doctor.
type refusalError struct {
	*identity.ChangedError
	reports []registryReport
}

func (e *refusalError) Unwrap() error { return e.ChangedError }

// firstRefusal returns the refusal of the first name in order, if any.
func firstRefusal(refused map[wire.Fingerprint]*identity.ChangedError) *identity.ChangedError {
	var first *identity.ChangedError
	for _, ce := range refused {
		if first == nil || ce.Name < first.Name {
			first = ce
		}
	}
	return first
}

// hasKey reports whether a registry of key fp is among as.
func hasKey(as []registryAnswer, fp wire.Fingerprint) bool {
	for _, a := range as {
		if a.fp == fp {
			return true
		}
	}
	return false
}

// given returns the registries the user named: --registry (repeatable,
// each a comma-separated list), else $HUDDLE_REGISTRY (a comma-separated
// list).
func (s *session) given() []string {
	if len(s.flags.registries) > 0 {
		return s.flags.registries
	}
	var out []string
	for _, a := range strings.Split(s.env.Getenv("HUDDLE_REGISTRY"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// claimRefusal reports whether name's changed key was not yet reported,
// and marks it.
func (g *gatherer) claimRefusal(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refusals[name] {
		return false
	}
	g.refusals[name] = true
	return true
}

// claim reports whether fp was not yet being asked, and marks it.
func (g *gatherer) claim(fp wire.Fingerprint) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.claimed[fp] {
		return false
	}
	g.claimed[fp] = true
	return true
}

// hold counts an mDNS answer of key fp as awaited from the start of its
// verification, unless fp is being asked or answered already, and reports
// whether it did. The hold lasts until fp is asked (browse's found
// callback), answers under another name (gather's loop), or this
// verification fails (unhold); one verified but never asked (Browse
// reports at most MaxRegistries) lasts until gather ends, straggle after
// the first answer at most.
//
// rep is the registry as its first answer held names it, for late.
func (g *gatherer) hold(fp wire.Fingerprint, rep registryReport) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.claimed[fp] {
		return false
	}
	if h := g.held[fp]; h != nil {
		h.n++
	} else {
		g.held[fp] = &heldAnswer{n: 1, rep: rep}
	}
	return true
}

// heldAnswer is a key's mDNS answers held (gatherer.hold): how many, and
// the registry the first names.
type heldAnswer struct {
	n   int
	rep registryReport
}

// unhold ends one hold of fp, or all of them, and wakes gather's loop when
// none is left.
func (g *gatherer) unhold(fp wire.Fingerprint, all bool) {
	g.mu.Lock()
	h, ok := g.held[fp]
	if !ok {
		g.mu.Unlock()
		return
	}
	if all || h.n <= 1 {
		delete(g.held, fp)
	} else {
		h.n--
	}
	none := len(g.held) == 0
	g.mu.Unlock()
	if none {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
}

// holding reports whether an mDNS answer is held (awaited).
func (g *gatherer) holding() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held) > 0
}

// ask asks one registry for its listing on a goroutine of its own. The
// key it must present is pin if not zero (a cached or advertised key), else
// the one known_registries holds for its name (an address), else any (on
// first use: a.pin says "new", and gather pins it once it knows that no
// other answer refused that key). A registry presenting another key than
// the one pinned for its address answers a *identity.ChangedError. An
// expected registry is waited for.
func (g *gatherer) ask(ctx context.Context, rep registryReport, pin wire.Fingerprint, expected bool, timeout time.Duration) {
	if expected {
		g.inflight.Add(1)
		g.mu.Lock()
		g.pending[rep.from+" "+rep.addr] = rep
		g.mu.Unlock()
	} else {
		g.optional.Add(1) // counted down when the loop takes the answer
	}
	g.wg.Go(func() {
		// The answer goes to gather on ctx; only the asking is bounded by
		// timeout. Both were ctx, so an answer that timeout ended (this
		// machine's registry, not running) met a select with its ctx done
		// too, and was dropped half the time: gather then waited for it
		// until the command's --timeout, and said "none was found" where
		// another run said this machine's registry did not answer (until
		// session 22).
		qctx := ctx
		if timeout > 0 {
			var cancel context.CancelFunc
			qctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		a := registryAnswer{registryReport: rep, expected: expected}
		byName := !strings.HasPrefix(rep.name, mdnsPinPrefix)
		var pinned wire.Fingerprint
		if byName {
			if known, ok, err := g.s.kh.Lookup(rep.name); err != nil {
				a.err = err
			} else if ok {
				pinned, a.pin = known, "pinned"
			} else {
				a.pin = "new"
			}
		}
		want := pin
		if want.IsZero() {
			want = pinned
		}
		if a.err == nil {
			a.reg, a.err = g.s.client.Registry(qctx, rep.addr, want)
		}
		var mm *identity.MismatchError
		var ce *identity.ChangedError
		switch {
		case a.err == nil:
			// A new name is pinned by gather, once no answer refused this
			// key under another name.
			a.fp = a.reg.Fingerprint()
			a.list, a.err = a.reg.List(qctx)
			a.groups = len(a.list.Groups)
			if isNotRegistry(a.err) {
				// Its key is no registry's: nothing is pinned for it, nor
				// would be. huddle doctor showed it as a "new" pin
				// (until session 22), as if it were one to trust.
				a.pin = pinNone
			}
		case errors.As(a.err, &ce):
			a.fp = ce.Presented
		case errors.As(a.err, &mm):
			a.fp = mm.Got
			if !pinned.IsZero() && mm.Got != pinned {
				a.err = &identity.ChangedError{Name: rep.name, Pinned: pinned, Presented: mm.Got, File: g.s.kh.Path()}
			}
		}
		select {
		case g.answers <- a:
		case <-ctx.Done(): // gather is over; late reports what never answered
		}
	})
}

// settle marks an expected registry as no longer awaited.
func (g *gatherer) settle(rep registryReport) {
	g.inflight.Add(-1)
	g.mu.Lock()
	delete(g.pending, rep.from+" "+rep.addr)
	g.mu.Unlock()
}

// late returns a report for every expected registry that has not
// answered, and for every registry found over mDNS whose answer was still
// being checked (held: the handshake verifying its key, or its ask about
// to start). Those were said nowhere (until session 17): the run said
// which registries it heard, not the one it found and stopped waiting
// for, and at load a registry found over mDNS was left out of a run
// without a word.
func (g *gatherer) late() []registryReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []registryReport
	took := time.Since(g.start)
	for _, rep := range g.pending {
		rep.err = fmt.Errorf("%w: no answer within %v", client.ErrUnreachable, took.Round(time.Millisecond))
		rep.after = took
		out = append(out, rep)
	}
	for fp, h := range g.held {
		if g.claimed[fp] {
			continue // asked: pending above, or answered
		}
		rep := h.rep
		rep.err = fmt.Errorf("%w: its mDNS answer still being checked after %v", client.ErrUnreachable, took.Round(time.Millisecond))
		rep.after = took
		out = append(out, rep)
	}
	slices.SortFunc(out, func(a, b registryReport) int { return strings.Compare(a.name+" "+a.addr, b.name+" "+b.addr) })
	return out
}

// mdnsPinPrefix starts the names registries found over mDNS are pinned
// under in known_registries (which keeps at most
// identity.MaxDiscoveredPins of them).
const mdnsPinPrefix = identity.DiscoveredPrefix

// pinFound pins fp under name, a registry found over mDNS whose key matched
// its advertisement (and any pin of its name). It reports false, and no
// error, when known_registries holds all the pins of such registries it
// may (identity.ErrPinsFull): the registry is used unpinned, trusted on
// first use again the next time, as the file drops none of the user's
// pins to make room for names anyone on the LAN can advertise. Any other
// error means: do not use it.
func pinFound(ctx context.Context, kh *identity.KnownHosts, name string, fp wire.Fingerprint) (bool, error) {
	err := kh.Check(ctx, name, fp)
	if errors.Is(err, identity.ErrPinsFull) {
		return false, nil
	}
	return err == nil, err
}

// notPinned is the registries found over mDNS whose keys could not be
// pinned for one cause, err: they are not used.
type notPinned struct {
	names []string
	err   error
}

// addNotPinned adds name, not pinned because of err, to ns: to the entry
// of the same cause if there is one (one warning per cause).
func addNotPinned(ns []notPinned, name string, err error) []notPinned {
	for i := range ns {
		if ns[i].err.Error() == err.Error() {
			ns[i].names = append(ns[i].names, name)
			return ns
		}
	}
	return append(ns, notPinned{[]string{name}, err})
}

// warning says that n's registries are not used, why, and what to do.
// (identity.ErrPinsLocked: another huddle process holds known_registries'
// lock; the error names the file, and says that a command stopped with ^Z
// holds it.) The names are the advertisers', shown as any name a peer chose.
func (n notPinned) warning() string {
	list := make([]string, len(n.names))
	for i, name := range n.names {
		list[i] = shown(name)
	}
	w := fmt.Sprintf("%s, found over mDNS, %s not used: %s could not be pinned: %s", strings.Join(list, ", "),
		map[bool]string{true: "is", false: "are"}[len(list) == 1], map[bool]string{true: "its key", false: "their keys"}[len(list) == 1], withoutGoText(n.err))
	if errors.Is(n.err, identity.ErrPinsLocked) {
		w += "; run the command again once the lock is free"
	}
	return w
}

// pinsFullWarning says that the registries found over mDNS named are used
// unpinned, known_registries (at path) being full, and what to do. The
// names are the advertisers' (anyone's on the LAN), shown as any name a
// peer chose: until session 19 discovery refused control characters in
// them, not format characters, and a U+202E in one turned the rest of the
// warning around.
func pinsFullWarning(path string, names []string) string {
	list := make([]string, len(names))
	for i, n := range names {
		list[i] = shown(n)
	}
	return fmt.Sprintf("%s holds %d registries found over mDNS, its most, so %s %s used but not pinned: trusted on first use again each time, "+
		"its key checked only against the fingerprint its advertisement carries. No pin is dropped to make room (anyone on the LAN can advertise names). "+
		"Drop pins of registries you no longer use with: huddle forget-registry NAME (NAME as the file lists it, quoted)",
		path, identity.MaxDiscoveredPins, strings.Join(list, ", "), map[bool]string{true: "is", false: "are"}[len(names) == 1])
}

// addressPinsFullWarning says that the registries at the addresses named
// are used unpinned, known_registries (at path) holding all the addresses
// it may, and what to do.
func addressPinsFullWarning(path string, addrs []string) string {
	return fmt.Sprintf("%s holds %d registry addresses, its most, so %s %s used but not pinned: trusted on first use again each time. "+
		"No pin is dropped to make room (a pin you rely on stays until you remove it). "+
		"Drop pins of registries you no longer use with: huddle forget-registry ADDRESS (as the file lists it)",
		path, identity.MaxAddressPins, strings.Join(addrs, ", "), map[bool]string{true: "is", false: "are"}[len(addrs) == 1])
}

// browse asks every registry mDNS finds, once per key, until ctx ends.
// When browsing cannot run (no usable interface), that is reported as an
// answer that says why.
func (g *gatherer) browse(ctx context.Context) {
	s := g.s
	defer func() {
		g.browsing.Store(false)
		select { // wake the loop: it may be waiting for browsing to end
		case g.answers <- registryAnswer{registryReport: registryReport{from: fromMDNS, err: errBrowseEnded}}:
		case <-ctx.Done():
		}
	}()
	err := s.env.startBrowse(s.verb)
	if err == nil {
		err = g.browseMDNS(ctx)
	}
	if err != nil {
		select {
		case g.answers <- registryAnswer{registryReport: registryReport{from: fromMDNS, err: fmt.Errorf("cannot browse: %w", err)}}:
		case <-ctx.Done():
		}
	}
}

// browseMDNS is browse's mDNS: it returns when ctx ends, or at once if
// browsing cannot run.
func (g *gatherer) browseMDNS(ctx context.Context) error {
	s := g.s
	// No Gone: browsing lasts discoverTimeout (3 s), and Browse forgets a
	// registry only after it has not verified for ForgetAfter (2 min).
	return discovery.Browse(ctx, discovery.BrowseConfig{
		Interfaces: s.flags.ifaces,
		Verify: func(ctx context.Context, r discovery.Advertised, addr netip.AddrPort) error {
			fp, perr := wire.ParseFingerprint(r.Fingerprint)
			held := perr == nil && g.hold(fp, registryReport{from: fromMDNS, name: mdnsPinPrefix + r.Instance, addr: addr.String(), iface: r.Iface})
			if s.env.beforeVerify != nil {
				s.env.beforeVerify(g, r.Fingerprint)
			}
			_, err := checkAdvertised(ctx, s.client, s.kh, r, addr)
			if held && err != nil {
				g.unhold(fp, false)
			}
			var ce *identity.ChangedError
			if errors.As(err, &ce) && g.claimRefusal(ce.Name) {
				// Not an answer to wait for, but a key to refuse everywhere.
				a := registryAnswer{registryReport: registryReport{from: fromMDNS, name: ce.Name, addr: addr.String(), iface: r.Iface, fp: ce.Presented, err: err}}
				select {
				case g.answers <- a:
				case <-ctx.Done():
				}
			}
			return err
		},
	}, func(r discovery.Advertised, addr netip.AddrPort) {
		fp, err := wire.ParseFingerprint(r.Fingerprint)
		if err != nil {
			return
		}
		// The hold its verification took ends once it is asked (counted in
		// flight), or now if it is asked already.
		defer g.unhold(fp, true)
		if !g.claim(fp) {
			return
		}
		rep := registryReport{from: fromMDNS, name: mdnsPinPrefix + r.Instance, addr: addr.String(), iface: r.Iface}
		rep.pin = "new"
		if _, ok, _ := s.kh.Lookup(rep.name); ok {
			rep.pin = "pinned"
		}
		g.ask(ctx, rep, fp, true, 0)
	})
}

// errBrowseEnded marks the answer that only says browsing has ended.
var errBrowseEnded = errors.New("browsing ended")

// checkAdvertised checks an mDNS answer: the registry at addr must present
// the fingerprint its TXT record claims, and that must be the one pinned
// for its instance name, if any (a *identity.ChangedError otherwise). It
// pins nothing: a new name is pinned once the whole listing is known to
// hold no refused key. It returns the registry handle.
func checkAdvertised(ctx context.Context, c *client.Client, kh *identity.KnownHosts, r discovery.Advertised, addr netip.AddrPort) (*client.Registry, error) {
	fp, err := wire.ParseFingerprint(r.Fingerprint)
	if err != nil {
		return nil, err
	}
	name := mdnsPinPrefix + r.Instance
	if pinned, ok, err := kh.Lookup(name); err != nil {
		return nil, err
	} else if ok && pinned != fp {
		return nil, &identity.ChangedError{Name: name, Pinned: pinned, Presented: fp, File: kh.Path()}
	}
	return c.Registry(ctx, addr.String(), fp)
}

// fallback is gather's answer when no registry answered: the cached
// listing of the same registries, said with its age on stderr, or an error
// that says what each registry did.
func (g *gatherer) fallback(ctx context.Context, reports []registryReport, cache *listCache, refused map[wire.Fingerprint]*identity.ChangedError) (*listing, error) {
	s := g.s
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil, ctx.Err()
	}
	// A key change stops the command, ssh-style: the cached listing stands
	// in for registries that are away, not for one that changed its key.
	if ce := firstRefusal(refused); ce != nil {
		return nil, &refusalError{ChangedError: ce, reports: reports}
	}
	timedOut := ctx.Err() != nil
	if timedOut {
		reports = append(reports, g.late()...)
	}
	if cache != nil {
		age := time.Since(cache.Saved).Round(time.Second)
		fmt.Fprintf(s.env.Stderr, "huddle %s: warning: no registry answered; using the listing cached %v ago (%s)\n", s.verb, age, summarize(reports))
		return &listing{groups: cache.groups(), reports: reports, cached: cache}, nil
	}
	return nil, &noRegistryError{reports: reports, given: len(s.given()) > 0, timedOut: timedOut}
}

// noRegistryError says that no registry answered, and what each did.
type noRegistryError struct {
	reports  []registryReport
	given    bool
	timedOut bool // the command's --timeout ended the wait
}

func (e *noRegistryError) Error() string {
	// A registry found whose key could not be pinned, the file's lock held
	// by another process, answered: it is that process the user must see to.
	locked := slices.ContainsFunc(e.reports, func(r registryReport) bool { return errors.Is(r.err, identity.ErrPinsLocked) })
	var b strings.Builder
	if locked {
		b.WriteString("no registry could be used:")
	} else {
		b.WriteString("no registry answered:")
	}
	for _, line := range strings.Split(summarize(e.reports), "; ") {
		b.WriteString("\n  " + line)
	}
	switch {
	case locked:
		b.WriteString("\n  another huddle process holds known_registries' lock: resume it (fg) or end it, then run this again")
	case e.given && e.allNoRoute():
		// Whether it runs is not the question: the path to it is.
		b.WriteString("\n  " + e.rawHint())
	case e.given && !e.allNotRegistries():
		b.WriteString("\n  is it running (huddle up, huddle registry), and does its host let UDP in? (" + e.rawHint() + ")")
	case e.given:
		b.WriteString("\n  give --registry a registry's address: huddle up prints it (\"huddle registry listening on ...\"); port 7373 unless told otherwise")
	default:
		// None given and none answered: most often nothing was started yet.
		b.WriteString("\n  start one on this machine with 'huddle up' (make run in huddle's source), or")
		b.WriteString("\n  give the registry's address with --registry HOST:PORT (or HUDDLE_REGISTRY); 'huddle doctor' explains what discovery saw")
	}
	if e.timedOut {
		b.WriteString(" (raise --timeout for slow links)")
	}
	return b.String()
}

func (e *noRegistryError) Unwrap() error { return client.ErrUnreachable }

// rawHint names the command that shows each registry's error as the
// network gave it (the lines above say it in words).
func (e *noRegistryError) rawHint() string {
	addr := "ADDR"
	if len(e.reports) == 1 && e.reports[0].addr != "" {
		addr = shellWord(e.reports[0].addr)
	}
	return "huddle doctor --registry " + addr + " --json shows each registry's error as the network gave it"
}

// allNoRoute reports whether every registry asked failed on the path to
// it (unreachableWords' noRoute): no route, a name that does not resolve.
func (e *noRegistryError) allNoRoute() bool {
	for _, r := range e.reports {
		if _, noRoute := unreachableWords(r.err, r.after); !noRoute {
			return false
		}
	}
	return len(e.reports) > 0
}

// allNotRegistries reports whether every server asked answered as no
// registry does (a group daemon's address given as --registry).
func (e *noRegistryError) allNotRegistries() bool {
	for _, r := range e.reports {
		if !isNotRegistry(r.err) {
			return false
		}
	}
	return len(e.reports) > 0
}

// summarize says in one line what each registry tried did.
func summarize(reports []registryReport) string {
	if len(reports) == 0 {
		return "none was found (nothing answers at " + defaultRegistry + ", and none answered over mDNS)"
	}
	var parts []string
	for _, r := range reports {
		what := "answered"
		if r.err != nil {
			what = r.failure()
		}
		if r.addr == "" {
			parts = append(parts, fmt.Sprintf("%s: %s", r.from, what))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (%s): %s", r.addr, r.from, what))
	}
	return strings.Join(parts, "; ")
}

// failure says for people why r's registry could not be used: as its
// error says it, without the address the line names already ("127.0.0.1:7373
// (this machine): registry 127.0.0.1:7373: server unreachable:
// 127.0.0.1:7373" until session 21), and, for a server that answered
// but is no registry (a group daemon's address given as --registry), so,
// with where a registry listens: it was "unsupported operation: list",
// then "is it running?", of a server that was.
//
// A dial's failure is said in words (unreachableWords): QUIC's own text
// ("INTERNAL_ERROR (local): write udp [::]:43497->10.0.0.9:7373: sendmsg:
// network is unreachable") was the line until session 22. huddle doctor
// --json keeps that text, in each registry's error.
func (r registryReport) failure() string {
	if isNotRegistry(r.err) {
		return "answers, but is no registry (a group daemon?)"
	}
	if words, _ := unreachableWords(r.err, r.after); words != "" {
		return words
	}
	what := withoutGoText(r.err)
	if r.addr != "" {
		shown := wire.Shown(r.addr)
		what = strings.TrimPrefix(what, "registry "+shown+": ")
		what = strings.Replace(what, client.ErrUnreachable.Error()+": "+shown, client.ErrUnreachable.Error(), 1)
	}
	return what
}

// unreachableWords says in plain words why a server could not be reached,
// from err, a dial's or a call's error, after the time it took: nothing
// answered within it, or the network's refusal to carry the packets (no
// route, a port closed, a local firewall), or a host name that does not
// resolve. It returns "" for any other error. noRoute reports whether the
// cause lies in the path to the address (the route, the name), not in the
// server: whether it runs is then not the question.
//
// The network's refusals reach here as text only: quic-go closes the
// connection with an INTERNAL_ERROR that carries the socket's error as its
// message, not as an error to match.
func unreachableWords(err error, after time.Duration) (words string, noRoute bool) {
	if err == nil {
		return "", false
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		if dns.IsNotFound {
			return fmt.Sprintf("its host name %q does not resolve (no such host): check the name", shown(dns.Name)), true
		}
		return fmt.Sprintf("its host name %q could not be looked up (no name server answered): check this machine's network connection", shown(dns.Name)), true
	}
	if !errors.Is(err, client.ErrUnreachable) && !errors.Is(err, context.DeadlineExceeded) {
		return "", false
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "network is unreachable"):
		return "this machine has no route to that network (network unreachable): check the address, and this machine's network connection", true
	case strings.Contains(msg, "no route to host"):
		return "its host cannot be reached from this machine (no route to host): check the address, and that the host is up", true
	case strings.Contains(msg, "connection refused"):
		return "nothing listens at that port (connection refused)", false
	case strings.Contains(msg, "operation not permitted"), strings.Contains(msg, "permission denied"):
		return "this machine would not send there (operation not permitted: a local firewall?)", true
	}
	var timeout interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &timeout) && timeout.Timeout() {
		return fmt.Sprintf("nothing answered in %v", after.Round(100*time.Millisecond)), false
	}
	return "", false
}

// isNotRegistry reports whether err is the answer of a server that is no
// registry to a registry's request: a group daemon refuses list as
// unsupported.
func isNotRegistry(err error) bool {
	var we *wire.Error
	return errors.As(err, &we) && we.Code == wire.CodeUnsupported
}

// where names the registries that answered, for people.
func (l *listing) where() string {
	if l.cached != nil {
		return fmt.Sprintf("the registries cached %v ago", time.Since(l.cached.Saved).Round(time.Second))
	}
	var names []string
	for _, r := range l.reports {
		if r.err == nil && !r.same {
			names = append(names, fmt.Sprintf("%s (%s)", r.addr, r.fp.Short()))
		}
	}
	if len(names) == 0 {
		return "no registry"
	}
	return strings.Join(names, ", ")
}

// failed says, for each registry that was expected to answer and did not,
// where it is and why (this machine's registry, which may well not run, is
// left out).
func (l *listing) failed() []string {
	var out []string
	for _, r := range l.reports {
		if r.err != nil && r.from != fromLocal && r.addr != "" {
			out = append(out, fmt.Sprintf("%s (%s): %s", r.addr, r.from, r.failure()))
		}
	}
	return out
}
