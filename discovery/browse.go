package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Defaults for BrowseConfig's zero fields.
const (
	DefaultQueryInterval = time.Second
	DefaultVerifyTimeout = 3 * time.Second
	DefaultRetryAfter    = 5 * time.Second

	// DefaultForgetAfter is how long a registry Browse reported may go
	// without verifying before it is forgotten and its place freed: four
	// times recheckOK, the life of its mDNS records (120 s).
	DefaultForgetAfter = 2 * time.Minute

	recheckOK = 30 * time.Second // how long a verified answer is trusted before it is verified again

	// Bounds on what answers make a browser spend: anyone on the link
	// sends them, spoofed or not, each with instance names and addresses
	// of its choosing.
	maxVerifying    = 8   // verifications at once; an answer beyond them is considered when heard again
	maxVerifyAddrs  = 4   // addresses of one answer dialled, those on the interface's subnets first
	maxAnswerStates = 256 // answers remembered (their verdicts); the one due soonest is forgotten for a new one
)

// Advertised is one registry as advertised over mDNS.
type Advertised struct {
	Instance    string           // instance name, such as "huddle registry on box (abcd-efgh)"
	Host        string           // host name from the SRV record, such as "box-abcdefgh.local."
	Addrs       []netip.AddrPort // addresses, those on a subnet of Iface first
	OnLink      int              // how many of Addrs (the first) are on a subnet of Iface
	Fingerprint string           // fp= from TXT (a claim until verified)
	Version     string           // v= from TXT
	Proto       string           // proto= from TXT
	Iface       string           // interface the query was sent and answered on
}

// BrowseConfig configures Find, Browse and Diagnose. Zero fields take the
// defaults documented on them.
type BrowseConfig struct {
	// Interfaces names the interfaces to query on; empty chooses as
	// SelectInterfaces(nil) does.
	Interfaces []string

	// QueryInterval is the longest pause between queries on an interface;
	// the first query goes at once, then the pause doubles from 100 ms up to
	// this. Default: DefaultQueryInterval.
	QueryInterval time.Duration

	// Verify is required. It must check that a registry really listens at
	// addr with r.Fingerprint (a QUIC handshake checking the certificate)
	// and return an error if not. An answer is reported only once Verify
	// succeeded for one of its addresses. It is called from several
	// goroutines at once, with a context bounded by VerifyTimeout.
	Verify func(ctx context.Context, r Advertised, addr netip.AddrPort) error

	// VerifyTimeout bounds each Verify call. Default: DefaultVerifyTimeout.
	VerifyTimeout time.Duration

	// RetryAfter is how long an answer that failed verification is ignored
	// before it is verified again. Default: DefaultRetryAfter.
	RetryAfter time.Duration

	// RescanInterval is how often Browse re-reads the interfaces to query
	// on new ones. Default: DefaultRescanInterval.
	RescanInterval time.Duration

	// ForgetAfter is how long a registry Browse reported may go without
	// verifying before Browse forgets it (calling Gone) and its place goes
	// to the next one found. Default: DefaultForgetAfter.
	ForgetAfter time.Duration

	// Gone, if set, is called by Browse with the last report of a registry
	// it forgot. Find and Diagnose do not call it.
	Gone func(Advertised)

	// Logger receives logs, including why answers were rejected.
	// Default: discard.
	Logger *slog.Logger
}

func (cfg BrowseConfig) withDefaults() (BrowseConfig, error) {
	if cfg.Verify == nil {
		return cfg, fmt.Errorf("%w: Verify is required", ErrInvalidConfig)
	}
	if cfg.QueryInterval < 0 || cfg.VerifyTimeout < 0 || cfg.RetryAfter < 0 || cfg.RescanInterval < 0 || cfg.ForgetAfter < 0 {
		return cfg, fmt.Errorf("%w: negative duration", ErrInvalidConfig)
	}
	if cfg.QueryInterval == 0 {
		cfg.QueryInterval = DefaultQueryInterval
	}
	if cfg.VerifyTimeout == 0 {
		cfg.VerifyTimeout = DefaultVerifyTimeout
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.RescanInterval == 0 {
		cfg.RescanInterval = DefaultRescanInterval
	}
	if cfg.ForgetAfter == 0 {
		cfg.ForgetAfter = DefaultForgetAfter
	}
	cfg.Logger = orDiscard(cfg.Logger)
	return cfg, nil
}

// Find browses until an answer verifies and returns it with the address
// that verified. Answers whose Verify fails are logged and skipped. When ctx
// ends first, the error wraps ErrNotFound and ctx's error, and mentions the
// last rejection. Errors wrapping ErrInvalidConfig or ErrNoInterface are
// returned before any query.
func Find(ctx context.Context, cfg BrowseConfig) (Advertised, netip.AddrPort, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Advertised{}, netip.AddrPort{}, err
	}
	type result struct {
		r    Advertised
		addr netip.AddrPort
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	found := make(chan result, 1)
	v := newVerifier(ctx, cfg, func(r Advertised, addr netip.AddrPort) {
		select {
		case found <- result{r, addr}:
			cancel()
		default:
		}
	})
	err = browse(ctx, cfg, &states{}, v.consider)
	v.wait()
	select {
	case res := <-found:
		return res.r, res.addr, nil
	default:
	}
	if err != nil {
		return Advertised{}, netip.AddrPort{}, err
	}
	if last := v.lastError(); last != nil {
		return Advertised{}, netip.AddrPort{}, fmt.Errorf("%w: %w (last answer rejected: %v)", ErrNotFound, context.Cause(ctx), last)
	}
	return Advertised{}, netip.AddrPort{}, fmt.Errorf("%w: %w (no answer)", ErrNotFound, context.Cause(ctx))
}

// Browse queries until ctx ends, calling found for every registry (by
// fingerprint and interface) the first time one of its answers verifies,
// under the instance name of that answer, and again whenever it verifies
// at another address (a registry that moved); another instance name at the
// same address is not reported. A registry restarted with a new key is a
// new one (its fingerprint is new). Two registries never replace each
// other, even under one instance name. Browse reports at most MaxRegistries
// registries (by fingerprint), MaxRegistriesPerSource of them at one
// source address; one beyond is logged (once a minute), not reported.
//
// A place is held while its registry is there: one that has not verified
// for cfg.ForgetAfter (its answers' or, when none came through, a Verify
// at the address it was last reported at) is forgotten, and cfg.Gone, if
// set, is called with its last report; its place goes to the next one
// found, and it is reported anew if it comes back. A registry that
// verifies is never forgotten for another, however many answers others
// send. Calls to found and Gone are serialized; a slow one delays the
// following ones.
//
// Browse returns nil when ctx ends, or an error wrapping ErrInvalidConfig
// or ErrNoInterface at once.
func Browse(ctx context.Context, cfg BrowseConfig, found func(Advertised, netip.AddrPort)) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	rep := newReporter(cfg.Logger, found)
	rep.gone, rep.forgetAfter = cfg.Gone, cfg.ForgetAfter
	v := newVerifier(ctx, cfg, rep.report)
	var keeper sync.WaitGroup
	kctx, stop := context.WithCancel(ctx)
	keeper.Go(func() { rep.keep(kctx, cfg) })
	err = browse(ctx, cfg, &states{}, v.consider)
	v.wait()
	stop()
	keeper.Wait()
	return err
}

// Bounds on the registries Browse reports, by fingerprint: anyone on the
// link can run any number, each under a key of its own, and each reported
// becomes a daemon's registrar, a registry huddle web polls, a pin. Places
// are shared by source address (an IPv4 address, an IPv6 /64), so that one
// host cannot take them all, and kept while their registry verifies (see
// BrowseConfig.ForgetAfter).
const (
	MaxRegistries          = 32
	MaxRegistriesPerSource = 4
	skipWarnEvery          = time.Minute
)

// reporter calls found for each verified answer Browse should report, and
// gone for each registry reported that has not verified for forgetAfter.
type reporter struct {
	log         *slog.Logger
	found       func(Advertised, netip.AddrPort)
	gone        func(Advertised) // nil: not told
	forgetAfter time.Duration
	now         func() time.Time

	mu     sync.Mutex
	last   map[string]netip.AddrPort // fingerprint|iface -> address reported; at most maxAnswerStates
	keys   map[string]*place         // fingerprint reported -> its place; at most MaxRegistries
	warned time.Time                 // when a registry over the bounds was last logged
}

// place is a registry's place among those Browse reports.
type place struct {
	src  netip.Prefix   // its first address's source: what it counts under
	r    Advertised     // its latest report
	addr netip.AddrPort // and where that verified
	seen time.Time      // when it last verified
}

func newReporter(log *slog.Logger, found func(Advertised, netip.AddrPort)) *reporter {
	return &reporter{log: orDiscard(log), found: found, forgetAfter: DefaultForgetAfter, now: time.Now,
		last: make(map[string]netip.AddrPort), keys: make(map[string]*place)}
}

// report reports r at addr unless it was reported there already, or it is
// a registry over the bounds above. Either way a registry reported already
// is seen now.
func (p *reporter) report(r Advertised, addr netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// By key and interface, not instance name: one key may answer under
	// any number of names (anyone can advertise a registry's key and
	// address, and only the key is verified), and each reported name is
	// a pin in huddle web's known_registries.
	k := r.Fingerprint + "|" + r.Iface
	pl := p.keys[r.Fingerprint]
	if pl != nil {
		pl.seen = p.now()
	}
	if prev, ok := p.last[k]; ok && prev == addr {
		return
	}
	if pl == nil {
		src := source(addr)
		n := 0
		for _, pl := range p.keys {
			if pl.src == src {
				n++
			}
		}
		if len(p.keys) >= MaxRegistries || n >= MaxRegistriesPerSource {
			if now := time.Now(); now.Sub(p.warned) >= skipWarnEvery {
				p.warned = now
				p.log.Warn("discovery: not using a registry: too many found (give the registries' addresses and fingerprints on a LAN you do not trust)",
					"instance", r.Instance, "addr", addr, "found", len(p.keys), "max", MaxRegistries, "from_its_address", n, "max_per_address", MaxRegistriesPerSource)
			}
			return
		}
		pl = &place{src: src, seen: p.now()}
		p.keys[r.Fingerprint] = pl
	}
	pl.r, pl.addr = r, addr
	if _, ok := p.last[k]; !ok && len(p.last) >= maxAnswerStates {
		for old := range p.last { // any one: found is told again at worst
			delete(p.last, old)
			break
		}
	}
	p.last[k] = addr
	p.found(r, addr)
}

// keep checks the places every forgetAfter/8 until ctx ends.
func (p *reporter) keep(ctx context.Context, cfg BrowseConfig) {
	t := time.NewTicker(max(p.forgetAfter/8, time.Millisecond))
	defer t.Stop()
	verify := func(ctx context.Context, r Advertised, addr netip.AddrPort) error {
		ctx, cancel := context.WithTimeout(ctx, cfg.VerifyTimeout)
		defer cancel()
		return cfg.Verify(ctx, r, addr)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.check(ctx, verify)
		}
	}
}

// check verifies, at the address it was last reported at, each registry
// that has not verified for half of forgetAfter (its answers verify every
// recheckOK while they come, but a flood of others' answers may keep them
// from the verifier's turns), all at once (at most MaxRegistries), then
// forgets each that has not verified for forgetAfter and tells gone.
func (p *reporter) check(ctx context.Context, verify func(context.Context, Advertised, netip.AddrPort) error) {
	type due struct {
		fp   string
		r    Advertised
		addr netip.AddrPort
	}
	var dues []due
	p.mu.Lock()
	for fp, pl := range p.keys {
		if p.now().Sub(pl.seen) >= p.forgetAfter/2 {
			dues = append(dues, due{fp, pl.r, pl.addr})
		}
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range dues {
		wg.Go(func() {
			if verify(ctx, d.r, d.addr) != nil {
				return
			}
			p.mu.Lock()
			if pl := p.keys[d.fp]; pl != nil {
				pl.seen = p.now()
			}
			p.mu.Unlock()
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for fp, pl := range p.keys {
		if p.now().Sub(pl.seen) < p.forgetAfter {
			continue
		}
		delete(p.keys, fp)
		for k := range p.last {
			if strings.HasPrefix(k, fp+"|") {
				delete(p.last, k)
			}
		}
		p.log.Info("discovery: a registry has not verified for a while; forgetting it", "instance", pl.r.Instance, "addr", pl.addr, "fp", fp, "for", p.forgetAfter)
		if p.gone != nil {
			p.gone(pl.r)
		}
	}
}

// source is the unit registries are counted by: an IPv4 address, or an
// IPv6 /64, which one host can fill.
func source(a netip.AddrPort) netip.Prefix {
	ip := a.Addr().Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// Answer is one mDNS answer seen by Diagnose.
type Answer struct {
	Registry Advertised
	Addr     netip.AddrPort // the address that verified, or the first one tried
	After    time.Duration  // from the start of Diagnose to the answer's arrival
	Err      error          // nil if verified; why not otherwise (wrapping ErrBadAnswer for malformed answers)
}

// Diagnose browses for wait (or until ctx ends) and returns the interface
// reports, with what its sockets met on each interface used (joined or
// not, queries sent or why not, responses heard), and every distinct answer
// seen, each verified once, in the order they arrived. It returns an error
// wrapping ErrInvalidConfig or ErrNoInterface (with the reports) when it
// cannot browse at all.
func Diagnose(ctx context.Context, cfg BrowseConfig, wait time.Duration) ([]InterfaceReport, []Answer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	reports, err := SelectInterfaces(cfg.Interfaces)
	if err != nil {
		return reports, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	var (
		mu      sync.Mutex
		answers []*Answer
		seen    = make(map[string]bool)
		wg      sync.WaitGroup
		st      states
	)
	err = browse(ctx, cfg, &st, func(r Advertised, bad error) {
		k := answerKey(r)
		mu.Lock()
		defer mu.Unlock()
		if seen[k] {
			return
		}
		seen[k] = true
		a := &Answer{Registry: r, After: time.Since(start), Err: bad}
		if len(r.Addrs) > 0 {
			a.Addr = r.Addrs[0]
		}
		answers = append(answers, a)
		if bad != nil {
			return
		}
		wg.Go(func() {
			// Verify outlives wait, bounded by VerifyTimeout: an answer
			// that came at the last moment still gets its verdict.
			addr, err := verifyAny(context.WithoutCancel(ctx), cfg, r)
			mu.Lock()
			a.Err = err
			if err == nil {
				a.Addr = addr
			}
			mu.Unlock()
		})
	})
	wg.Wait()
	st.fill(reports)
	out := make([]Answer, len(answers))
	for i, a := range answers {
		out[i] = *a
	}
	return reports, out, err
}

func answerKey(r Advertised) string {
	return fmt.Sprint(r.Iface, "|", r.Instance, "|", r.Fingerprint, "|", r.Addrs)
}

// verifyAny calls Verify on r's addresses in order and returns the first
// that succeeds, or the joined errors.
func verifyAny(ctx context.Context, cfg BrowseConfig, r Advertised) (netip.AddrPort, error) {
	var errs []error
	for _, addr := range r.Addrs[:min(len(r.Addrs), maxVerifyAddrs)] {
		vctx, cancel := context.WithTimeout(ctx, cfg.VerifyTimeout)
		err := cfg.Verify(vctx, r, addr)
		cancel()
		if err == nil {
			return addr, nil
		}
		errs = append(errs, fmt.Errorf("verify %s at %s: %w", r.Instance, addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return netip.AddrPort{}, errors.Join(errs...)
}

// verifier verifies each distinct answer once at a time, remembering the
// outcome so the same answer, repeated by every query, is not verified
// again until its verdict is stale.
type verifier struct {
	cfg BrowseConfig
	ok  func(Advertised, netip.AddrPort)
	ctx context.Context

	mu        sync.Mutex
	state     map[string]*vstate // at most maxAnswerStates
	verifying int                // at most maxVerifying
	lastErr   error
	wg        sync.WaitGroup
}

type vstate struct {
	busy  bool
	until time.Time // verdict good until then
}

// newVerifier returns a verifier whose Verify calls end with ctx.
func newVerifier(ctx context.Context, cfg BrowseConfig, ok func(Advertised, netip.AddrPort)) *verifier {
	return &verifier{ctx: ctx, cfg: cfg, ok: ok, state: make(map[string]*vstate)}
}

// consider is browse's callback. Verification runs on its own goroutine so
// one slow or spoofed answer does not hold up the others.
func (v *verifier) consider(r Advertised, bad error) {
	if bad != nil {
		v.reject(r, bad, "malformed answer")
		return
	}
	k := answerKey(r)
	now := time.Now()
	v.mu.Lock()
	if v.verifying >= maxVerifying {
		v.mu.Unlock()
		return // heard again at the next query or announcement
	}
	s := v.state[k]
	if s == nil {
		if len(v.state) >= maxAnswerStates && !v.forgetLocked() {
			v.mu.Unlock()
			return
		}
		s = &vstate{}
		v.state[k] = s
	}
	if s.busy || now.Before(s.until) {
		v.mu.Unlock()
		return
	}
	s.busy = true
	v.verifying++
	v.wg.Add(1)
	v.mu.Unlock()

	go func() {
		defer v.wg.Done()
		addr, err := verifyAny(v.ctx, v.cfg, r)
		v.mu.Lock()
		s.busy = false
		v.verifying--
		if err != nil {
			s.until = time.Now().Add(v.cfg.RetryAfter)
		} else {
			s.until = time.Now().Add(recheckOK)
		}
		v.mu.Unlock()
		if err != nil {
			if v.ctx.Err() == nil {
				v.reject(r, err, "verification failed")
			}
			return
		}
		v.ok(r, addr)
	}()
}

// forgetLocked forgets the answer not being verified whose verdict is due
// soonest, to make room for another, and reports whether there was one.
// v.mu is held.
func (v *verifier) forgetLocked() bool {
	var oldest string
	var due time.Time
	for k, s := range v.state {
		if !s.busy && (oldest == "" || s.until.Before(due)) {
			oldest, due = k, s.until
		}
	}
	if oldest == "" {
		return false
	}
	delete(v.state, oldest)
	return true
}

func (v *verifier) reject(r Advertised, err error, why string) {
	v.mu.Lock()
	v.lastErr = err
	v.mu.Unlock()
	v.cfg.Logger.Info("discovery: skipping registry answer: "+why, "instance", r.Instance, "fp", r.Fingerprint, "addrs", r.Addrs, "iface", r.Iface, "err", err)
}

func (v *verifier) lastError() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.lastErr
}

// wait waits for verifications in flight.
func (v *verifier) wait() { v.wg.Wait() }
