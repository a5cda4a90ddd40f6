package discovery

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/mdns"
)

// Defaults for BrowseConfig's zero fields.
const (
	DefaultQueryInterval = time.Second
	DefaultVerifyTimeout = 3 * time.Second
	DefaultRetryAfter    = 5 * time.Second

	firstQueryWait = 100 * time.Millisecond // pause after the first query, doubled up to QueryInterval
	maxListen      = 250 * time.Millisecond // how long one query listens for answers
	recheckOK      = 30 * time.Second       // how long a verified answer is trusted before it is verified again
)

// Registry is one registry as advertised over mDNS.
type Registry struct {
	Instance    string           // instance name, such as "huddle registry on box"
	Host        string           // host name from the SRV record, such as "box.local."
	Addrs       []netip.AddrPort // addresses, those on a subnet of Iface first
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
	Verify func(ctx context.Context, r Registry, addr netip.AddrPort) error

	// VerifyTimeout bounds each Verify call. Default: DefaultVerifyTimeout.
	VerifyTimeout time.Duration

	// RetryAfter is how long an answer that failed verification is ignored
	// before it is verified again. Default: DefaultRetryAfter.
	RetryAfter time.Duration

	// RescanInterval is how often Browse re-reads the interfaces to query
	// on new ones. Default: DefaultRescanInterval.
	RescanInterval time.Duration

	// Logger receives logs, including why answers were rejected.
	// Default: discard.
	Logger *slog.Logger
}

func (cfg BrowseConfig) withDefaults() (BrowseConfig, error) {
	if cfg.Verify == nil {
		return cfg, fmt.Errorf("%w: Verify is required", ErrInvalidConfig)
	}
	if cfg.QueryInterval < 0 || cfg.VerifyTimeout < 0 || cfg.RetryAfter < 0 || cfg.RescanInterval < 0 {
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
	cfg.Logger = orDiscard(cfg.Logger)
	return cfg, nil
}

// Find browses until an answer verifies and returns it with the address
// that verified. Answers whose Verify fails are logged and skipped. When ctx
// ends first, the error wraps ErrNotFound and ctx's error, and mentions the
// last rejection. Errors wrapping ErrInvalidConfig or ErrNoInterface are
// returned before any query.
func Find(ctx context.Context, cfg BrowseConfig) (Registry, netip.AddrPort, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Registry{}, netip.AddrPort{}, err
	}
	type result struct {
		r    Registry
		addr netip.AddrPort
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	found := make(chan result, 1)
	v := newVerifier(ctx, cfg, func(r Registry, addr netip.AddrPort) {
		select {
		case found <- result{r, addr}:
			cancel()
		default:
		}
	})
	err = browse(ctx, cfg, v.consider)
	v.wait()
	select {
	case res := <-found:
		return res.r, res.addr, nil
	default:
	}
	if err != nil {
		return Registry{}, netip.AddrPort{}, err
	}
	if last := v.lastError(); last != nil {
		return Registry{}, netip.AddrPort{}, fmt.Errorf("%w: %w (last answer rejected: %v)", ErrNotFound, context.Cause(ctx), last)
	}
	return Registry{}, netip.AddrPort{}, fmt.Errorf("%w: %w (no answer)", ErrNotFound, context.Cause(ctx))
}

// Browse queries until ctx ends, calling found for every registry (by
// instance name) the first time one of its answers verifies, and again
// whenever it verifies with another address or fingerprint (a registry that
// moved or restarted with a new key). Calls to found are serialized; a slow
// found delays the following ones. Browse returns nil when ctx ends, or an
// error wrapping ErrInvalidConfig or ErrNoInterface at once.
func Browse(ctx context.Context, cfg BrowseConfig, found func(Registry, netip.AddrPort)) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	var (
		mu   sync.Mutex
		last = make(map[string]string) // instance -> addr|fingerprint reported
	)
	v := newVerifier(ctx, cfg, func(r Registry, addr netip.AddrPort) {
		mu.Lock()
		defer mu.Unlock()
		id := addr.String() + "|" + r.Fingerprint
		if last[r.Instance] == id {
			return
		}
		last[r.Instance] = id
		found(r, addr)
	})
	err = browse(ctx, cfg, v.consider)
	v.wait()
	return err
}

// Answer is one mDNS answer seen by Diagnose.
type Answer struct {
	Registry Registry
	Addr     netip.AddrPort // the address that verified, or the first one tried
	After    time.Duration  // from the start of Diagnose to the answer's arrival
	Err      error          // nil if verified; why not otherwise (wrapping ErrBadAnswer for malformed answers)
}

// Diagnose browses for wait (or until ctx ends) and returns the interface
// reports and every distinct answer seen, each verified once, in the order
// they arrived. It returns an error wrapping ErrInvalidConfig or
// ErrNoInterface (with the reports) when it cannot browse at all.
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
	)
	err = browse(ctx, cfg, func(r Registry, bad error) {
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Verify outlives wait, bounded by VerifyTimeout: an answer
			// that came at the last moment still gets its verdict.
			addr, err := verifyAny(context.WithoutCancel(ctx), cfg, r)
			mu.Lock()
			a.Err = err
			if err == nil {
				a.Addr = addr
			}
			mu.Unlock()
		}()
	})
	wg.Wait()
	out := make([]Answer, len(answers))
	for i, a := range answers {
		out[i] = *a
	}
	return reports, out, err
}

// browse runs one query loop per selected interface until ctx ends,
// calling consider (from several goroutines) with each answer, or with a
// non-nil error for an answer that cannot be a registry.
func browse(ctx context.Context, cfg BrowseConfig, consider func(Registry, error)) error {
	cands, _, err := selectInterfaces(cfg.Interfaces)
	if err != nil {
		return err
	}
	std := stdLogger(cfg.Logger)
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
			k := c.iface.Name + fmt.Sprint(c.prefixes)
			keep[k] = true
			if loops[k] != nil {
				continue
			}
			lctx, stop := context.WithCancel(ctx)
			loops[k] = stop
			wg.Add(1)
			go func() {
				defer wg.Done()
				queryLoop(lctx, cfg, c, std, consider)
			}()
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
				cfg.Logger.Warn("discovery: rescan interfaces", "err", err)
				continue
			}
			update(cands)
		}
	}
}

// queryLoop queries on one interface until ctx ends. Each query listens
// for at most maxListen; the next one goes after the current pause.
//
// hashicorp/mdns's QueryContext returns only when its timeout has passed,
// even after ctx ends (cancelling just closes its sockets). So the loop does
// not wait for the query in flight when ctx ends: that goroutine ends on its
// own within maxListen, sending nothing more. Waiting for it would make Find
// slower by up to maxListen every time.
func queryLoop(ctx context.Context, cfg BrowseConfig, c candidate, std *log.Logger, consider func(Registry, error)) {
	// hashicorp/mdns sends without blocking and drops entries nobody takes,
	// so the channel is buffered and drained by its own goroutine. It is
	// never closed: a query still running might send on it.
	entries := make(chan *mdns.ServiceEntry, 64)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case e := <-entries:
				r, err := toRegistry(e, c)
				cfg.Logger.Debug("discovery: answer", "iface", c.iface.Name, "instance", r.Instance, "addrs", r.Addrs, "fp", r.Fingerprint)
				consider(r, err)
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { <-drained }()

	pause := firstQueryWait
	for ctx.Err() == nil {
		listen := min(pause, maxListen)
		params := &mdns.QueryParam{
			Service:     Service,
			Domain:      "local",
			Timeout:     listen,
			Interface:   &c.iface,
			Entries:     entries,
			DisableIPv6: true, // an IPv6 send error would fail the whole query
			Logger:      std,
		}
		qdone := make(chan error, 1)
		go func() { qdone <- mdns.QueryContext(ctx, params) }()
		rest := pause - listen
		select {
		case err := <-qdone:
			if err != nil {
				cfg.Logger.Debug("discovery: mDNS query failed", "iface", c.iface.Name, "err", err)
				rest = pause
			}
		case <-ctx.Done():
			return
		}
		if rest > 0 {
			t := time.NewTimer(rest)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		pause = min(2*pause, cfg.QueryInterval)
	}
}

// toRegistry converts a hashicorp/mdns entry heard on c. The error, wrapping
// ErrBadAnswer, says why the answer cannot be a registry.
func toRegistry(e *mdns.ServiceEntry, c candidate) (Registry, error) {
	r := Registry{
		Instance: instanceName(e.Name),
		Host:     e.Host,
		Iface:    c.iface.Name,
	}
	for _, f := range e.InfoFields {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "v":
			r.Version = v
		case "proto":
			r.Proto = v
		case "fp":
			r.Fingerprint = v
		}
	}
	var addrs []netip.Addr
	if a, ok := netip.AddrFromSlice(e.AddrV4); ok {
		addrs = append(addrs, a.Unmap())
	}
	if e.AddrV6IPAddr != nil {
		if a, ok := netip.AddrFromSlice(e.AddrV6IPAddr.IP); ok && a.Is6() && !a.Is4In6() {
			if a.IsLinkLocalUnicast() {
				a = a.WithZone(c.iface.Name)
			}
			addrs = append(addrs, a)
		}
	}
	// On-link addresses first: they are the ones this interface can reach.
	slices.SortStableFunc(addrs, func(x, y netip.Addr) int {
		switch ox, oy := c.onLink(x), c.onLink(y); {
		case ox && !oy:
			return -1
		case oy && !ox:
			return 1
		}
		return 0
	})
	for _, a := range addrs {
		r.Addrs = append(r.Addrs, netip.AddrPortFrom(a, uint16(e.Port)))
	}
	switch {
	case r.Fingerprint == "":
		return r, fmt.Errorf("%w: %q has no fp= in its TXT record", ErrBadAnswer, r.Instance)
	case r.Proto != "" && r.Proto != Proto:
		return r, fmt.Errorf("%w: %q speaks %q, not %q", ErrBadAnswer, r.Instance, r.Proto, Proto)
	case len(r.Addrs) == 0 || e.Port <= 0 || e.Port > 65535:
		return r, fmt.Errorf("%w: %q has no usable address", ErrBadAnswer, r.Instance)
	}
	return r, nil
}

// instanceName strips the service and domain from an instance's DNS name
// and undoes miekg/dns's presentation escapes ("\ " and "\DDD").
func instanceName(name string) string {
	name = strings.TrimSuffix(name, "."+Service+".local.")
	if !strings.Contains(name, `\`) {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] != '\\' || i+1 >= len(name) {
			b.WriteByte(name[i])
			continue
		}
		if i+3 < len(name) {
			if n, err := strconv.Atoi(name[i+1 : i+4]); err == nil && n < 256 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(name[i+1])
		i++
	}
	return b.String()
}

func answerKey(r Registry) string {
	return fmt.Sprint(r.Iface, "|", r.Instance, "|", r.Fingerprint, "|", r.Addrs)
}

// verifyAny calls Verify on r's addresses in order and returns the first
// that succeeds, or the joined errors.
func verifyAny(ctx context.Context, cfg BrowseConfig, r Registry) (netip.AddrPort, error) {
	var errs []error
	for _, addr := range r.Addrs {
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
	ok  func(Registry, netip.AddrPort)
	ctx context.Context

	mu      sync.Mutex
	state   map[string]*vstate
	lastErr error
	wg      sync.WaitGroup
}

type vstate struct {
	busy  bool
	until time.Time // verdict good until then
}

// newVerifier returns a verifier whose Verify calls end with ctx.
func newVerifier(ctx context.Context, cfg BrowseConfig, ok func(Registry, netip.AddrPort)) *verifier {
	return &verifier{ctx: ctx, cfg: cfg, ok: ok, state: make(map[string]*vstate)}
}

// consider is browse's callback. Verification runs on its own goroutine so
// one slow or spoofed answer does not hold up the others.
func (v *verifier) consider(r Registry, bad error) {
	if bad != nil {
		v.reject(r, bad, "malformed answer")
		return
	}
	k := answerKey(r)
	now := time.Now()
	v.mu.Lock()
	s := v.state[k]
	if s == nil {
		s = &vstate{}
		v.state[k] = s
	}
	if s.busy || now.Before(s.until) {
		v.mu.Unlock()
		return
	}
	s.busy = true
	v.wg.Add(1)
	v.mu.Unlock()

	go func() {
		defer v.wg.Done()
		addr, err := verifyAny(v.ctx, v.cfg, r)
		v.mu.Lock()
		s.busy = false
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

func (v *verifier) reject(r Registry, err error, why string) {
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
