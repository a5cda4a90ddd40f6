package groupd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// Registration timing.
const (
	// registryCallTimeout bounds one call to a registry.
	registryCallTimeout = 5 * time.Second
	// deregisterTimeout bounds deregistering every group on Close, which
	// waits that long, and lifecycle.Wait more, for the registration loop
	// to stop (lifecycle.Loop's Stopping).
	deregisterTimeout = 2 * time.Second
	// retryMin and retryMax bound the backoff between failed attempts; a
	// registry that comes back is registered with again within one
	// renewal period, as the backoff never exceeds it.
	retryMin = 250 * time.Millisecond
	retryMax = 5 * time.Second
	// renewFallback is the renew period until a lease says its TTL.
	renewFallback = 5 * time.Second
	// discoveredRenewMin is the shortest renewal period for a registry
	// found over mDNS: its lease's TTL is anyone's to choose (one of 1 ms
	// had every group renewed every 10 ms, at each of the registries one
	// advertiser can run), where a configured registry's is its
	// operator's. A lease of at least 1.5 s is renewed every third of it.
	discoveredRenewMin = 500 * time.Millisecond
	// refusedRetry is how long a group a registry refused (full, or its
	// UUID held by another key) waits before it is offered again.
	refusedRetry = 30 * time.Second
	// keyWarnEvery is how often a registry that presents a key the daemon
	// refuses is warned about again.
	keyWarnEvery = time.Minute
	// browseRetry is how long a daemon waits before trying to browse again
	// after browsing could not run.
	browseRetry = 10 * time.Second
	// countsEvery is the least time from the start of one pass over a
	// registry to the start of an early renewal for changed counts
	// (countsChanged), and countsDuty bounds their share of the
	// registrar's time: an early renewal waits at least countsDuty times
	// the last pass's length. A join or a send is listed within about
	// countsEvery, and a daemon whose groups all change all the time
	// renews each at most twice a second, however many sends it takes.
	countsEvery = 500 * time.Millisecond
	countsDuty  = 10
)

// RegistrationStatus is what a group daemon knows of its groups' listing at
// one registry.
type RegistrationStatus struct {
	Addr        string           // the address used (the last that answered, for a discovered registry)
	Fingerprint wire.Fingerprint // the registry's key; zero until it was reached
	Discovered  bool             // found over mDNS rather than configured
	Listed      int              // groups with a live lease there
	Refused     map[string]error // groups the registry refused, by name, and why
	Err         error            // why the last attempt failed; nil while it works
	Failures    int              // attempts failed in a row
}

// Registrations returns the state of every registry the daemon registers
// with: those configured, then those discovered, in the order they were
// found.
func (d *Daemon) Registrations() []RegistrationStatus {
	rs := d.regs.Load()
	if rs == nil {
		return nil
	}
	return rs.statuses()
}

// registrations keeps the daemon's groups registered with every registry
// it knows: each configured one (Config.Registries) and, with
// Discover, each one mDNS finds. Every registry has its own registrar: its
// own goroutine, leases, renewals and backoff, so no registry's trouble
// delays another's. A discovered registry is known by its fingerprint
// (its addresses are those it was found at); one that turns out to be a
// configured one, reached at another address, is left to the configured
// registrar.
type registrations struct {
	d  *Daemon
	cl *client.Client

	mu         sync.Mutex
	all        []*registrar
	discovered map[wire.Fingerprint]*registrar
	skipWarned time.Time // when a registry found over the bounds was last warned about
	// live is all as of its last change, for countsChanged, which runs
	// on every send and takes no lock.
	live atomic.Pointer[[]*registrar]

	wg sync.WaitGroup // the registrars
}

// registerLoop runs the registrations until the daemon closes, then
// deregisters every group from every registry that lists it.
func (d *Daemon) registerLoop() {
	log := d.cfg.Logger
	cl, err := client.New(client.Config{Identity: d.id, Logger: log, DialTimeout: registryCallTimeout})
	if err != nil {
		log.Error("registration disabled", "err", err)
		return
	}
	defer cl.Close()
	rs := &registrations{d: d, cl: cl, discovered: make(map[wire.Fingerprint]*registrar)}
	d.regs.Store(rs)
	ctx := d.life.Ctx()
	for _, addr := range d.cfg.Registries {
		rs.start(ctx, newRegistrar(rs, []string{addr}, false))
	}
	if d.cfg.Discover {
		rs.wg.Go(func() { rs.browse(ctx) })
	}
	rs.wg.Wait()
}

func (rs *registrations) start(ctx context.Context, r *registrar) {
	rs.mu.Lock()
	rs.addLocked(ctx, r)
	rs.mu.Unlock()
	rs.wg.Go(r.run)
}

// addLocked gives r its context and lists it among the registrars, in one
// step under rs.mu, so that whoever finds r (learned, which may retire it
// at once) finds it with its cancel set. rs.mu is held.
func (rs *registrations) addLocked(ctx context.Context, r *registrar) {
	r.ctx, r.cancel = context.WithCancel(ctx)
	rs.all = append(rs.all, r)
	rs.publishLocked()
}

// publishLocked makes rs.all what countsChanged sees. rs.mu is held.
func (rs *registrations) publishLocked() {
	all := slices.Clone(rs.all)
	rs.live.Store(&all)
}

func (rs *registrations) statuses() []RegistrationStatus {
	rs.mu.Lock()
	all := slices.Clone(rs.all)
	rs.mu.Unlock()
	out := make([]RegistrationStatus, 0, len(all))
	for _, r := range all {
		if s, ok := r.status(); ok {
			out = append(out, s)
		}
	}
	return out
}

// someListsAll reports whether some registry lists every group: what
// readiness asks.
func (rs *registrations) someListsAll() bool {
	for _, s := range rs.statuses() {
		if s.Err == nil && s.Listed == len(rs.d.order) {
			return true
		}
	}
	return false
}

// Bounds on the registries mDNS finds. Anyone on the LAN can advertise
// any number of registries, each under a key of its own (keys are free) at
// a port of its own, and each found is a registrar: a goroutine, a
// connection, and its groups' leases renewed as often as the registry's
// TTL asks. Places are shared by source address (an IPv4 address or an
// IPv6 /64, as the server's limits count them), so that one host's
// advertisements cannot take them all; configured registries are not
// counted. A place is freed when Browse says its registry is gone (gone).
// The bounds are Browse's own, so that a registry Browse reports finds a
// place here; they are kept here too so that the daemon holds to them
// whatever reports found.
const (
	maxDiscovered        = discovery.MaxRegistries          // registries found over mDNS registered with at once
	maxDiscoveredPerAddr = discovery.MaxRegistriesPerSource // of them at one source address
	maxRegistryAddrs     = 16                               // addresses kept for one registry, the latest first
	discoveredWarnEvery  = time.Minute
)

// found is browse's report of a registry at addr with key fp: a new
// registry gets a registrar, within the bounds above (one over them is
// skipped, warned about at most once a minute); a known one learns the
// address.
func (rs *registrations) found(ctx context.Context, fp wire.Fingerprint, addr string) {
	rs.mu.Lock()
	for _, r := range rs.all {
		if !r.discovered && r.key() == fp {
			rs.mu.Unlock()
			return // a configured registry, reached there already
		}
	}
	if r := rs.discovered[fp]; r != nil {
		rs.mu.Unlock()
		r.addAddr(addr)
		return
	}
	src := addrSource(addr)
	fromSrc := 0
	for _, r := range rs.discovered {
		if r.source == src {
			fromSrc++
		}
	}
	if len(rs.discovered) >= maxDiscovered || fromSrc >= maxDiscoveredPerAddr {
		warn := time.Since(rs.skipWarned) >= discoveredWarnEvery
		if warn {
			rs.skipWarned = time.Now()
		}
		all := len(rs.discovered)
		rs.mu.Unlock()
		if warn {
			rs.d.cfg.Logger.Warn("not registering with a registry found over mDNS: too many found (give the registries' addresses and fingerprints on a LAN you do not trust)",
				"registry", addr, "fingerprint", fp.Short(), "found", all, "max", maxDiscovered, "from_its_address", fromSrc, "max_per_address", maxDiscoveredPerAddr)
		}
		return
	}
	r := newRegistrar(rs, []string{addr}, true)
	r.source = src
	r.pin = fp
	rs.discovered[fp] = r
	rs.addLocked(ctx, r)
	rs.mu.Unlock()
	rs.d.cfg.Logger.Info("registry found over mDNS; registering there too", "registry", addr, "fingerprint", fp.Short())
	// learned may have retired r meanwhile: it then sees its context
	// ended and stops without deregistering.
	rs.wg.Go(r.run)
}

// addrSource is the source address a discovered registry's address counts
// under: its IPv4 address, or its IPv6 /64, as the server counts peers.
func addrSource(addr string) netip.Prefix {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Prefix{}
	}
	return server.Source(net.UDPAddrFromAddrPort(ap))
}

// untrustedKeys refuses, with Config.RegistryFingerprints, the registries
// mDNS finds under other keys, warning once per key, for the first
// maxWarnedKeys keys: answers are anyone's to send, each with a key of its
// own, and the record of keys warned about grew with every one.
type untrustedKeys struct {
	log     *slog.Logger
	trusted []wire.Fingerprint // none: every key is trusted

	mu     sync.Mutex
	warned map[wire.Fingerprint]bool // at most maxWarnedKeys
}

const maxWarnedKeys = 64

// check returns an error if fp, found at addr, is not trusted.
func (u *untrustedKeys) check(fp wire.Fingerprint, addr netip.AddrPort) error {
	if len(u.trusted) == 0 || slices.Contains(u.trusted, fp) {
		return nil
	}
	u.mu.Lock()
	first := !u.warned[fp] && len(u.warned) < maxWarnedKeys
	if first {
		u.warned[fp] = true
	}
	u.mu.Unlock()
	if first {
		u.log.Warn("skipping a registry found over mDNS: its key is not one of the registry fingerprints given", "registry", addr, "fingerprint", fp)
	}
	return fmt.Errorf("key %s is not trusted", fp.Short())
}

// learned is a configured registrar's report that its registry presents
// fp: a discovered registrar for the same key stops (without deregistering:
// the leases are the same ones, now renewed by the configured registrar).
func (rs *registrations) learned(fp wire.Fingerprint) {
	if r := rs.dropDiscovered(fp); r != nil {
		rs.d.cfg.Logger.Info("a registry found over mDNS is one given by address; registering there once", "registry", r.addrNow(), "fingerprint", fp.Short())
		r.retire()
	}
}

// gone is browse's report that the registry found with key fp has not
// verified for a while (discovery.BrowseConfig.ForgetAfter): its registrar
// stops, without deregistering (nobody is there to hear it), and its place
// goes to the next one found. The registry's groups are registered there
// again if it comes back (it is found anew).
func (rs *registrations) gone(fp wire.Fingerprint) {
	if r := rs.dropDiscovered(fp); r != nil {
		rs.d.cfg.Logger.Info("a registry found over mDNS is gone; no longer registering there", "registry", r.addrNow(), "fingerprint", fp.Short())
		r.retire()
	}
}

// dropDiscovered takes the registrar found over mDNS with key fp, if any,
// out of the registrations (freeing its place), and returns it to be
// retired.
func (rs *registrations) dropDiscovered(fp wire.Fingerprint) *registrar {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.discovered[fp]
	if r != nil {
		delete(rs.discovered, fp)
		rs.all = slices.DeleteFunc(rs.all, func(x *registrar) bool { return x == r })
		rs.publishLocked()
	}
	return r
}

// browse reports every registry mDNS finds (and finds again when it
// moves) to found, until ctx ends. When browsing cannot run at all (no
// multicast-capable interface yet: a daemon may start before the network)
// it says so once and tries again every browseRetry.
func (rs *registrations) browse(ctx context.Context) {
	d := rs.d
	untrusted := untrustedKeys{log: d.cfg.Logger, trusted: d.cfg.RegistryFingerprints, warned: make(map[wire.Fingerprint]bool)}
	cfg := discovery.BrowseConfig{
		Interfaces: d.cfg.Interfaces,
		Logger:     d.cfg.Logger.With("from", "mdns"),
		Verify: func(ctx context.Context, reg discovery.Advertised, addr netip.AddrPort) error {
			fp, err := wire.ParseFingerprint(reg.Fingerprint)
			if err != nil {
				return err
			}
			if err := untrusted.check(fp, addr); err != nil {
				return err
			}
			h, err := rs.cl.Registry(ctx, addr.String(), fp)
			d.cfg.Metrics.DiscoveryAnswer(err == nil)
			if err == nil {
				// Browse verifies again every 30 s, and any number of
				// answers: a handle kept would keep a connection to every
				// address verified. The registrar opens its own.
				h.Close()
			}
			return err
		},
	}
	cfg.Gone = func(reg discovery.Advertised) {
		if fp, err := wire.ParseFingerprint(reg.Fingerprint); err == nil {
			rs.gone(fp)
		}
	}
	found := func(reg discovery.Advertised, addr netip.AddrPort) {
		if fp, err := wire.ParseFingerprint(reg.Fingerprint); err == nil {
			rs.found(ctx, fp, addr.String())
		}
	}
	logged := false
	for {
		err := discovery.Browse(ctx, cfg, found)
		if ctx.Err() != nil {
			return
		}
		if !logged {
			d.cfg.Logger.Warn("cannot look for registries over mDNS; retrying (or give their addresses)", "every", browseRetry, "err", err)
			logged = true
		}
		if !sleepCtx(ctx, browseRetry) {
			return
		}
	}
}

// sleepCtx waits for d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// registrar keeps the daemon's groups registered with one registry: it
// registers every group, renews the leases every third of their TTL (from
// the start of one pass over the groups to the start of the next),
// registers again at once when the registry restarted (epoch mismatch) or
// forgot a lease (not found), renews early the leases of groups whose
// counts changed (countsChanged, countsEvery), retries failures with
// capped backoff, and deregisters every group when the daemon closes.
//
// A configured registry given without a trusted fingerprint is pinned to
// the key it first presents (in memory); if it later presents another key
// (reinstalled) the registrar says so loudly and follows it, as documented
// for an unpinned registry. With Config.RegistryFingerprints it
// refuses any other key, warning every keyWarnEvery while that lasts.
type registrar struct {
	rs         *registrations
	discovered bool
	source     netip.Prefix // a discovered registry's source address (addrSource)
	ctx        context.Context
	cancel     context.CancelFunc
	now        chan struct{} // a pending request to refresh at once (refreshNow)
	counts     chan struct{} // a pending request to renew changed counts early (countsChanged)
	// stale is set when a group's counts change, and cleared as a pass
	// begins (before it reads them): a change wakes the registrar once
	// per pass, however many sends it takes.
	stale atomic.Bool

	mu       sync.Mutex // guards retired, addrs, pin and the status fields below
	retired  bool       // stopped for another registrar: no deregistering (set before cancel)
	addrs    []string   // where the registry is: the first that answers is used
	pin      wire.Fingerprint
	addr     string // the address of the handle reg
	listed   int
	refused  map[wire.UUID]refusal
	lastErr  error
	failures int
	reached  bool

	// Owned by run's goroutine.
	reg      *client.Registry // nil until reached, and after a key change
	epochs   map[wire.UUID]uint64
	reported map[wire.UUID]counts // what each group's lease last carried
	// cutShort is a group whose registration the daemon's closing cut
	// short: the registry may have taken it all the same, unanswered, so
	// deregisterAll takes it back too.
	cutShort *group
	current  uint64 // the registry's epoch as last seen
	// dialed is how long the pass under way spent connecting to the
	// registry (zero if it did not connect): the early renewals' duty
	// bound leaves it out (see run).
	dialed   time.Duration
	ttl      time.Duration
	keyWarn  time.Time // when a refused key was last warned about
	wasError string    // the last failure logged, to log each change once
}

// refusal is a group a registry would not list.
type refusal struct {
	err   error
	until time.Time // offered again then
}

func newRegistrar(rs *registrations, addrs []string, discovered bool) *registrar {
	return &registrar{rs: rs, discovered: discovered, addrs: addrs, now: make(chan struct{}, 1), counts: make(chan struct{}, 1),
		epochs: make(map[wire.UUID]uint64), reported: make(map[wire.UUID]counts), refused: make(map[wire.UUID]refusal)}
}

// countsChanged tells the registrations, once they run, that a group's
// member count or last sequence number changed (registrations.countsChanged).
func (d *Daemon) countsChanged() {
	if rs := d.regs.Load(); rs != nil {
		rs.countsChanged()
	}
}

// counts are what a registry lists of a group besides where it is.
type counts struct{ members, last uint64 }

// countsOf returns g's counts now.
func countsOf(g *group) counts {
	return counts{uint64(g.memberCount()), g.log.Stats().Last}
}

// countsChanged tells every registrar that a group's member count or last
// sequence number changed, so that the registries list it within about
// countsEvery rather than at the next renewal (a third of the lease, 5 s
// by default): a user who joins or sends and then lists sees it. It is
// called on every send and membership change, so it takes no lock, and
// a registrar already told is not told again.
func (rs *registrations) countsChanged() {
	all := rs.live.Load()
	if all == nil {
		return
	}
	for _, r := range *all {
		if !r.stale.Load() && !r.stale.Swap(true) {
			select {
			case r.counts <- struct{}{}:
			default:
			}
		}
	}
}

// refreshNow asks every registrar to register the groups again at once
// rather than at the next renewal: a cell's leader changed, and what the
// registries list (the leader flag, the entry's address) is out of date.
// Requests made while one is pending are one.
func (rs *registrations) refreshNow() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range rs.all {
		select {
		case r.now <- struct{}{}:
		default:
		}
	}
}

func (r *registrar) key() wire.Fingerprint {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pin
}

func (r *registrar) addrNow() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.addr != "" {
		return r.addr
	}
	return r.addrs[0]
}

// addAddr adds an address the registry was found at, tried first from now
// on if the registry cannot be reached where it was.
func (r *registrar) addAddr(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.addrs, addr) {
		r.addrs = append([]string{addr}, r.addrs[:min(len(r.addrs), maxRegistryAddrs-1)]...)
	}
}

func (r *registrar) retire() {
	r.mu.Lock()
	r.retired = true
	r.mu.Unlock()
	r.cancel()
}

func (r *registrar) status() (RegistrationStatus, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retired {
		return RegistrationStatus{}, false
	}
	s := RegistrationStatus{Addr: r.addr, Discovered: r.discovered, Listed: r.listed, Err: r.lastErr, Failures: r.failures}
	if s.Addr == "" {
		s.Addr = r.addrs[0]
	}
	if r.reached {
		s.Fingerprint = r.pin
	}
	for id, rf := range r.refused {
		if s.Refused == nil {
			s.Refused = make(map[string]error)
		}
		s.Refused[r.rs.d.groups[id].name] = rf.err
	}
	return s, true
}

func (r *registrar) log() []any {
	return []any{"registry", r.addrNow()}
}

func (r *registrar) run() {
	d := r.rs.d
	backoff := retryMin
	next := time.Now() // the next pass over every group
	// early is when to renew the groups whose counts changed (zero: none
	// changed), and notBefore the earliest time for that (see countsEvery).
	var early, notBefore time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		at := next
		if !early.IsZero() && early.Before(at) {
			at = early
		}
		timer.Reset(time.Until(at))
		all := true
		select {
		case <-r.ctx.Done():
			r.mu.Lock()
			retired := r.retired
			r.mu.Unlock()
			if !retired {
				r.deregisterAll()
			}
			if r.reg != nil {
				// A registrar retired for a registry that is gone holds no
				// connection to it for the rest of the daemon's life.
				r.reg.Close()
			}
			return
		case <-r.counts:
			if early.IsZero() {
				early = later(time.Now(), notBefore)
			}
			continue
		case <-timer.C:
			all = !time.Now().Before(next)
		case <-r.now:
		}
		start := time.Now()
		r.stale.Store(false) // before the pass reads the counts
		r.dialed = 0
		err := r.refresh(all)
		took := time.Since(start)
		// The duty bound measures what renewing costs the registry. An
		// early renewal never connects (refresh), so the time this pass
		// spent connecting is left out: a first pass that waited 3 s for
		// a registry slow to answer held every early renewal back 30 s,
		// and a join and a send went unlisted that long.
		early, notBefore = time.Time{}, start.Add(max(countsEvery, countsDuty*(took-r.dialed)))
		if err != nil {
			if r.ctx.Err() != nil {
				continue // closing: the select above deregisters
			}
			r.failed(err)
			next = time.Now().Add(backoff)
			backoff = min(backoff*2, retryMax, r.renewEvery())
			continue
		}
		if all { // an early renewal may have asked nothing: the status and the schedule stay
			r.succeeded()
			next, backoff = time.Now().Add(renewDelay(r.renewEvery(), took)), retryMin
		}
		d.registered.Store(r.rs.someListsAll())
	}
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}

// renewDelay is the wait before the next pass after one that took took:
// passes begin every third of the TTL, one start to the next. Waiting a
// third after each pass ended instead stretched the time between a
// lease's renewals, as the registry sees them, by the pass's length (its
// round trips, one per group): with a 3 s lease at load 26, past the TTL.
func renewDelay(every, took time.Duration) time.Duration { return max(every-took, 0) }

func (r *registrar) renewEvery() time.Duration {
	if r.ttl <= 0 {
		return renewFallback
	}
	every := max(r.ttl/3, 10*time.Millisecond)
	if r.discovered {
		every = max(every, discoveredRenewMin)
	}
	return every
}

// connect opens the handle on the registry, trying its addresses in order.
func (r *registrar) connect() error {
	r.mu.Lock()
	addrs, pin := slices.Clone(r.addrs), r.pin
	r.mu.Unlock()
	var errs []error
	for _, addr := range addrs {
		if slow := r.rs.d.cfg.slowRegistryDial; slow != nil {
			slow()
		}
		ctx, cancel := context.WithTimeout(r.ctx, registryCallTimeout)
		reg, err := r.rs.cl.Registry(ctx, addr, pin)
		cancel()
		if err != nil {
			errs = append(errs, err)
			var mm *identity.MismatchError
			if errors.As(err, &mm) {
				return err // a key question, not a reachability one: handled by failed
			}
			continue
		}
		fp := reg.Fingerprint()
		if trusted := r.rs.d.cfg.RegistryFingerprints; len(trusted) > 0 && !slices.Contains(trusted, fp) {
			return &identity.MismatchError{Want: trusted[0], Got: fp}
		}
		r.mu.Lock()
		r.pin, r.addr, r.reached = fp, addr, true
		r.mu.Unlock()
		r.reg = reg
		if !r.discovered && pin.IsZero() {
			r.rs.learned(fp)
		}
		return nil
	}
	return errors.Join(errs...)
}

// refresh renews every group's lease, registering those without one; or,
// unless all, renews early only the leases whose group's counts changed
// since they were last sent (countsChanged), of the groups this daemon
// reports: its own, and a cell's it leads (the registry lists the
// leader's counts). A group the registry refuses (full, or its UUID is
// another key's) is remembered and offered again after refusedRetry; the
// others go on. It fails only for what concerns the whole registry: it
// cannot be reached, or presents another key.
func (r *registrar) refresh(all bool) error {
	if r.reg == nil {
		if !all {
			return nil // not reached yet: the next full pass registers every group
		}
		began := time.Now()
		err := r.connect()
		r.dialed = time.Since(began)
		if err != nil {
			return err
		}
	}
	var newlyRefused []string
	renew := func(g *group) error {
		refused, err := r.refreshGroup(g)
		if refused {
			newlyRefused = append(newlyRefused, g.name)
		}
		return err
	}
	if all {
		// If the registry's epoch changes during a pass (it restarted),
		// groups renewed earlier in the pass hold leases of the old epoch
		// that the new registry never had: a second pass registers them
		// at once, and only them (a first contact, whose epoch was not
		// known before the pass, renews nothing it just registered).
		for pass := range 2 {
			before := r.current
			for _, g := range r.rs.d.order {
				if epoch, ok := r.epochs[g.id]; pass > 0 && ok && epoch == r.current {
					continue
				}
				if err := renew(g); err != nil {
					return err
				}
			}
			if r.current == before {
				break
			}
		}
	} else {
		for _, g := range r.rs.d.order {
			if r.countsStale(g) {
				if err := renew(g); err != nil {
					return err
				}
			}
		}
	}
	r.reportRefused(newlyRefused)
	r.mu.Lock()
	r.listed = len(r.epochs)
	r.mu.Unlock()
	return nil
}

// countsStale reports whether g is listed here with counts older than its
// own, and this daemon is the one to report them: g is its own, or a
// cell's it leads (a registry lists the leader's counts).
func (r *registrar) countsStale(g *group) bool {
	if _, listed := r.epochs[g.id]; !listed || r.reported[g.id] == countsOf(g) {
		return false
	}
	return g.cell == nil || g.cell.node.Leading() == nil
}

// refreshGroup renews or registers g. It reports whether the registry
// refused the group just now, and returns an error only for a failure of
// the whole registry.
func (r *registrar) refreshGroup(g *group) (refusedNow bool, err error) {
	ctx, cancel := context.WithTimeout(r.ctx, registryCallTimeout)
	defer cancel()
	if g.cell != nil && !g.cell.node.Serving() {
		// Removed from the cell (the group is the others' to list, and
		// the registry would refuse this daemon's key for it), or still
		// catching up (it serves the group once it votes, and once a
		// start has caught up: cell.Node.Serving). A replica
		// removed takes its registration back, so the listing stops
		// naming it at once; the others keep the group listed.
		if _, ok := r.epochs[g.id]; ok && !g.cell.node.Member() {
			if err := r.reg.Deregister(ctx, g.id); err == nil {
				r.rs.d.cfg.Logger.Info("group deregistered: this daemon left the cell", append(r.log(), "group", g.name, "uuid", g.id)...)
			}
		}
		delete(r.epochs, g.id)
		r.mu.Lock()
		delete(r.refused, g.id)
		r.mu.Unlock()
		return false, nil
	}
	cur := countsOf(g)
	members, last := cur.members, cur.last
	// A cell's group registers again at each renewal: the registration
	// carries the cell's members and its leader, which change.
	if epoch, ok := r.epochs[g.id]; ok && epoch == r.current && g.cell == nil {
		lease, err := r.reg.Renew(ctx, client.Renewal{Group: g.id, Epoch: epoch, Members: members, LastSeq: last})
		if err == nil {
			r.ttl = lease.TTL
			r.reported[g.id] = cur
			return false, nil
		}
		if !errors.Is(err, wire.ErrEpochMismatch) && !errors.Is(err, wire.ErrNotFound) {
			if groupRefusal(err) {
				return r.refuse(g, err), nil
			}
			return false, err
		}
		// The registry restarted or the lease lapsed: register again now.
		delete(r.epochs, g.id)
		r.rs.d.cfg.Logger.Info("registry lost the lease; registering again", append(r.log(), "group", g.name, "uuid", g.id, "reason", err)...)
	}
	r.mu.Lock()
	rf, wasRefused := r.refused[g.id]
	r.mu.Unlock()
	if wasRefused && r.rs.d.cfg.Now().Before(rf.until) {
		return false, nil
	}
	prevEpoch, again := r.epochs[g.id]
	lease, err := r.reg.Register(ctx, r.registration(g, members, last))
	if err != nil {
		delete(r.epochs, g.id)
		if r.ctx.Err() != nil {
			r.cutShort = g
		}
		if groupRefusal(err) {
			return r.refuse(g, err), nil
		}
		return false, err
	}
	if wasRefused {
		r.mu.Lock()
		delete(r.refused, g.id)
		r.mu.Unlock()
	}
	r.epochs[g.id] = lease.Epoch
	r.reported[g.id] = cur
	r.current = lease.Epoch
	r.ttl = lease.TTL
	if again && prevEpoch == lease.Epoch {
		return false, nil // a cell's group, registered again as it is renewed: nothing new to say
	}
	r.rs.d.cfg.Logger.Info("group registered", append(r.log(), "group", g.name, "uuid", g.id, "registry_epoch", lease.Epoch, "ttl", r.ttl)...)
	return false, nil
}

// groupRefusal reports whether err is the registry refusing one group
// rather than failing as a whole.
func groupRefusal(err error) bool {
	if _, wait := client.RetryAfter(err); wait || errors.Is(err, client.ErrShuttingDown) {
		// A registry shutting down refuses everything, for a while: not a
		// refusal of this group (PROTOCOL.md §3).
		return false
	}
	for _, e := range []error{wire.ErrUnavailable, wire.ErrUnauthorized, wire.ErrBadRequest, wire.ErrTooLarge, wire.ErrRateLimited} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// refuse remembers that the registry refused g, and reports whether that
// is news (it was not refused for the same reason before).
func (r *registrar) refuse(g *group, err error) bool {
	delete(r.epochs, g.id)
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, was := r.refused[g.id]
	r.refused[g.id] = refusal{err: err, until: r.rs.d.cfg.Now().Add(refusedRetry)}
	return !was || prev.err.Error() != err.Error()
}

// reportRefused logs, once per pass that refused anything new, every group
// the registry does not list, grouped by reason: each is named (a daemon
// hosting more groups than a registry takes must not lose some quietly).
func (r *registrar) reportRefused(newly []string) {
	if len(newly) == 0 {
		return
	}
	r.mu.Lock()
	byReason := make(map[string][]string)
	for id, rf := range r.refused {
		reason := wire.ToError(rf.err).Code.String()
		byReason[reason] = append(byReason[reason], r.rs.d.groups[id].name)
	}
	r.mu.Unlock()
	for reason, names := range byReason {
		slices.Sort(names)
		r.rs.d.cfg.Logger.Warn("registry refused groups; they are not listed there", append(r.log(),
			"refused", len(names), "of", len(r.rs.d.order), "reason", reason, "groups", strings.Join(names, ","), "retry_in", refusedRetry)...)
	}
}

// registration is what the daemon registers for g: the advertised
// addresses; else the bound address if the daemon listens on one address
// of its host; else only the bound port, which the registry pairs with
// the address the registration comes from. (A daemon bound to one of
// several addresses would otherwise be listed at the one the kernel picks
// to reach the registry, where it does not listen.)
func (r *registrar) registration(g *group, members, last uint64) client.Registration {
	reg := client.Registration{Group: g.id, Name: g.name, Addrs: r.rs.d.cfg.Advertise, Members: members, LastSeq: last, LogEpoch: g.epoch()}
	if g.cell != nil {
		reg.Replicas = r.rs.d.replicaList() // every member registers it; the registry lists it once
	}
	if len(reg.Addrs) == 0 {
		if ua, ok := r.rs.d.Addr().(*net.UDPAddr); ok {
			if ip, ok := netip.AddrFromSlice(ua.IP); ok && !ip.Unmap().IsUnspecified() {
				reg.Addrs = []string{ua.String()}
			} else {
				reg.Port = uint16(ua.Port)
			}
		}
	}
	return reg
}

// failed records a failed attempt and logs it when it differs from the
// last one logged. A registry presenting another key than the one pinned
// is handled as Config documents: loudly, every time.
func (r *registrar) failed(err error) {
	d := r.rs.d
	r.mu.Lock()
	r.lastErr = err
	r.failures++
	r.mu.Unlock()
	d.registered.Store(r.rs.someListsAll())
	var mm *identity.MismatchError
	if errors.As(err, &mm) && r.keyChanged(mm) {
		return
	}
	if msg := err.Error(); msg != r.wasError {
		r.wasError = msg
		d.cfg.Logger.Warn("registration failing; retrying", append(r.log(), "err", err)...)
	}
}

// keyChanged handles a registry that presented mm.Got instead of the key
// pinned for it, and reports whether it logged about it (a discovered
// registry's is logged as any other failure, once).
func (r *registrar) keyChanged(mm *identity.MismatchError) bool {
	log := r.rs.d.cfg.Logger
	switch {
	case len(r.rs.d.cfg.RegistryFingerprints) > 0:
		if now := r.rs.d.cfg.Now(); now.Sub(r.keyWarn) >= keyWarnEvery || now.Before(r.keyWarn) {
			r.keyWarn = now
			log.Error("REGISTRY KEY REFUSED: the registry presents a key that is not one of the registry fingerprints given; not registering there (someone may be impersonating it; if it was reinstalled, give its new fingerprint)",
				append(r.log(), "presented", mm.Got, "trusted", r.rs.d.cfg.RegistryFingerprints)...)
		}
		return true
	case r.discovered:
		// Another registry answers where this one was found: mDNS reports
		// it under its own key, with a registrar of its own. This one keeps
		// its other addresses, if it has any.
		r.mu.Lock()
		if len(r.addrs) > 1 {
			r.addrs = slices.DeleteFunc(r.addrs, func(a string) bool { return a == r.addr })
		}
		r.mu.Unlock()
		return false
	}
	log.Error("REGISTRY KEY CHANGED: the registry now presents another key; following it, as a registry given without --registry-fingerprint is trusted on first use (give --registry-fingerprint to refuse a changed key instead)",
		append(r.log(), "was", mm.Want, "now", mm.Got)...)
	r.mu.Lock()
	r.pin = mm.Got
	r.mu.Unlock()
	if r.reg != nil {
		r.reg.Close()
	}
	r.reg = nil
	clear(r.epochs)
	r.current = 0
	return true
}

func (r *registrar) succeeded() {
	r.mu.Lock()
	failing := r.lastErr != nil
	r.lastErr, r.failures = nil, 0
	r.mu.Unlock()
	if failing {
		r.wasError = ""
		r.rs.d.cfg.Logger.Info("registration working again", r.log()...)
	}
}

// deregisterAll removes every registered group from the registry, bounded
// by deregisterTimeout: a daemon that stops is unlisted at once rather than
// when its leases lapse.
func (r *registrar) deregisterAll() {
	if r.reg == nil || len(r.epochs) == 0 && r.cutShort == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.rs.d.deregisterWait)
	defer cancel()
	for _, g := range r.rs.d.order {
		if _, ok := r.epochs[g.id]; !ok && g != r.cutShort {
			continue
		}
		if err := r.reg.Deregister(ctx, g.id); err != nil {
			r.rs.d.cfg.Logger.Warn("deregister failed; the lease will lapse", append(r.log(), "group", g.name, "err", err)...)
			continue
		}
		r.rs.d.cfg.Logger.Info("group deregistered", append(r.log(), "group", g.name, "uuid", g.id)...)
	}
}
