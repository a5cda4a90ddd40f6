package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/wire"
)

// Registration timing.
const (
	// registryCallTimeout bounds one call to the registry.
	registryCallTimeout = 5 * time.Second
	// deregisterTimeout bounds deregistering every group on Close.
	deregisterTimeout = 2 * time.Second
	// retryMin and retryMax bound the backoff between failed attempts.
	retryMin = 250 * time.Millisecond
	retryMax = 5 * time.Second
	// renewFallback is the renew period until a lease says its TTL.
	renewFallback = 5 * time.Second
)

// registrar keeps the daemon's groups registered with one registry.
type registrar struct {
	d    *GroupDaemon
	cl   *client.Client
	addr string           // the registry's address; empty until discovered
	pin  wire.Fingerprint // its key, if known
	reg  *client.Registry // nil until the registry was reached

	epochs  map[wire.UUID]uint64 // the registry epoch each group's lease is in; absent: not registered
	current uint64               // the registry's epoch as last seen
	ttl     time.Duration
	failing bool  // the last attempt failed; logged once per change
	lastErr error // what it failed with
}

// registerLoop registers every group, renews the leases every third of
// their TTL, registers again at once when the registry restarted (epoch
// mismatch) or forgot a lease (not found), retries failures with capped
// backoff, and deregisters every group when the daemon closes. With
// Discover and no Registry address it follows the registry mDNS finds: a
// registry found anew (moved, or restarted with another key) gets every
// group registered at once.
func (d *GroupDaemon) registerLoop() {
	log := d.cfg.Logger
	cl, err := client.New(client.Config{Identity: d.id, Logger: log, DialTimeout: registryCallTimeout})
	if err != nil {
		log.Error("registration disabled", "err", err)
		return
	}
	defer cl.Close()
	r := &registrar{d: d, cl: cl, addr: d.cfg.Registry, pin: d.cfg.RegistryFingerprint, epochs: make(map[wire.UUID]uint64)}
	ctx := d.life.ctx
	var found <-chan registryTarget
	if d.cfg.Registry == "" {
		targets := make(chan registryTarget, 1)
		found = targets
		done := make(chan struct{})
		go func() {
			defer close(done)
			d.browse(ctx, cl, targets)
		}()
		defer func() { <-done }()
	}
	delay := time.Duration(0)
	backoff := retryMin
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var tick <-chan time.Time
		if r.addr != "" {
			timer.Reset(delay)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			r.deregisterAll()
			return
		case t := <-found:
			if t.addr == r.addr && t.pin == r.pin {
				continue
			}
			log.Info("registry found over mDNS; registering there", "registry", t.addr, "fingerprint", t.pin.Short())
			r.addr, r.pin, r.reg = t.addr, t.pin, nil
			clear(r.epochs)
			d.registered.Store(false)
			delay, backoff = 0, retryMin
			continue
		case <-tick:
		}
		if err := r.refresh(ctx); err != nil {
			if ctx.Err() != nil {
				continue // closing: the select above deregisters
			}
			r.failed(err)
			delay, backoff = backoff, min(backoff*2, retryMax)
			continue
		}
		r.succeeded()
		delay, backoff = r.renewEvery(), retryMin
	}
}

// registryTarget is a registry found over mDNS and verified by a handshake.
type registryTarget struct {
	addr string
	pin  wire.Fingerprint
}

// browse reports every registry mDNS finds (and finds again when it moves
// or changes key) on targets, keeping only the newest, until ctx ends. When
// browsing cannot run at all (no multicast-capable interface yet: a daemon
// may start before the network) it says so once and tries again every
// browseRetry.
func (d *GroupDaemon) browse(ctx context.Context, cl *client.Client, targets chan registryTarget) {
	cfg := discovery.BrowseConfig{
		Interfaces: d.cfg.Interfaces,
		Logger:     d.cfg.Logger.With("from", "mdns"),
		Verify: func(ctx context.Context, reg discovery.Registry, addr netip.AddrPort) error {
			fp, err := wire.ParseFingerprint(reg.Fingerprint)
			if err != nil {
				return err
			}
			_, err = cl.Registry(ctx, addr.String(), fp)
			d.cfg.Metrics.DiscoveryAnswer(err == nil)
			return err
		},
	}
	found := func(reg discovery.Registry, addr netip.AddrPort) {
		fp, err := wire.ParseFingerprint(reg.Fingerprint)
		if err != nil {
			return
		}
		select { // keep only the newest finding
		case <-targets:
		default:
		}
		targets <- registryTarget{addr: addr.String(), pin: fp}
	}
	logged := false
	for {
		err := discovery.Browse(ctx, cfg, found)
		if ctx.Err() != nil {
			return
		}
		if !logged {
			d.cfg.Logger.Warn("cannot look for the registry over mDNS; retrying (or give its address)", "every", browseRetry, "err", err)
			logged = true
		}
		if !sleepCtx(ctx, browseRetry) {
			return
		}
	}
}

// browseRetry is how long a daemon waits before trying to browse again
// after browsing could not run.
const browseRetry = 10 * time.Second

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

func (r *registrar) renewEvery() time.Duration {
	if r.ttl <= 0 {
		return renewFallback
	}
	return max(r.ttl/3, 10*time.Millisecond)
}

// refresh renews every group's lease, registering those without one.
func (r *registrar) refresh(ctx context.Context) error {
	if r.reg == nil {
		cctx, cancel := context.WithTimeout(ctx, registryCallTimeout)
		reg, err := r.cl.Registry(cctx, r.addr, r.pin)
		cancel()
		if err != nil {
			return err
		}
		r.reg = reg
	}
	// If the registry's epoch changes during a pass (it restarted), groups
	// renewed earlier in the pass hold leases of the old epoch that the new
	// registry never had: a second pass registers them at once.
	for range 2 {
		before := r.current
		for _, g := range r.d.order {
			if err := r.refreshGroup(ctx, g); err != nil {
				return err
			}
		}
		if r.current == before {
			break
		}
	}
	return nil
}

func (r *registrar) refreshGroup(ctx context.Context, g *group) error {
	ctx, cancel := context.WithTimeout(ctx, registryCallTimeout)
	defer cancel()
	members, last := uint64(g.memberCount()), g.log.Stats().Last
	if epoch, ok := r.epochs[g.id]; ok && epoch == r.current {
		lease, err := r.reg.Renew(ctx, wire.Renew{Group: g.id, Epoch: epoch, Members: members, LastSeq: last})
		if err == nil {
			r.ttl = time.Duration(lease.TTLMS) * time.Millisecond
			return nil
		}
		if !errors.Is(err, wire.ErrEpochMismatch) && !errors.Is(err, wire.ErrNotFound) {
			return err
		}
		// The registry restarted or the lease lapsed: register again now.
		delete(r.epochs, g.id)
		r.d.cfg.Logger.Info("registry lost the lease; registering again", "registry", r.addr, "group", g.name, "uuid", g.id, "reason", err)
	}
	lease, err := r.reg.Register(ctx, r.registration(g, members, last))
	if err != nil {
		return err
	}
	r.epochs[g.id] = lease.Epoch
	r.current = lease.Epoch
	r.ttl = time.Duration(lease.TTLMS) * time.Millisecond
	r.d.cfg.Logger.Info("group registered", "registry", r.addr, "group", g.name, "uuid", g.id, "registry_epoch", lease.Epoch, "ttl", r.ttl)
	return nil
}

// registration is what the daemon registers for g: the advertised
// addresses, or only the bound port.
func (r *registrar) registration(g *group, members, last uint64) wire.Register {
	reg := wire.Register{Group: g.id, Name: g.name, Addrs: r.d.cfg.Advertise, Members: members, LastSeq: last}
	if len(reg.Addrs) == 0 {
		if ua, ok := r.d.Addr().(*net.UDPAddr); ok {
			reg.Port = uint16(ua.Port)
		}
	}
	return reg
}

func (r *registrar) failed(err error) {
	if !r.failing || errors.Is(err, wire.ErrUnauthorized) != errors.Is(r.lastErr, wire.ErrUnauthorized) {
		r.d.cfg.Logger.Warn("registration failing; retrying", "registry", r.addr, "err", err)
	}
	r.failing, r.lastErr = true, err
	r.d.registered.Store(false)
}

func (r *registrar) succeeded() {
	if r.failing {
		r.d.cfg.Logger.Info("registration working again", "registry", r.addr)
	}
	r.failing, r.lastErr = false, nil
	r.d.registered.Store(true)
}

// deregisterAll removes every registered group from the registry, bounded
// by deregisterTimeout: a daemon that stops is unlisted at once rather than
// when its leases lapse.
func (r *registrar) deregisterAll() {
	if r.reg == nil || len(r.epochs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), deregisterTimeout)
	defer cancel()
	for _, g := range r.d.order {
		if _, ok := r.epochs[g.id]; !ok {
			continue
		}
		if err := r.reg.Deregister(ctx, g.id); err != nil {
			r.d.cfg.Logger.Warn("deregister failed; the lease will lapse", "registry", r.addr, "group", g.name, "err", err)
			continue
		}
		r.d.cfg.Logger.Info("group deregistered", "registry", r.addr, "group", g.name, "uuid", g.id)
	}
}
