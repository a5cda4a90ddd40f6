// Package registry is huddle's registry daemon: it lists the groups that
// group daemons host, each under a lease they renew, and answers users who
// ask for the list (PROTOCOL.md: register, renew, deregister, list). It
// can advertise itself over mDNS so that daemons and users on a LAN find it
// with no configuration. It serves through the shared QUIC machinery of
// package server, and never imports the group daemon.
//
// The registry's concerns, by file: its configuration, lifecycle and
// operations (registry.go), its lease table (leases.go), and its telemetry
// (telemetry.go).
//
//	r, err := registry.New(cfg) // validates cfg; no I/O
//	err = r.Listen()            // optional: loads the key, binds the socket
//	err = r.Serve(ctx)          // blocks until ctx ends or Close is called
package registry

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/daemon/internal/lifecycle"
	"github.com/huddle-chat/huddle/daemon/internal/statedir"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/metrics"
	"github.com/huddle-chat/huddle/wire"
)

// Defaults of Config.
const (
	DefaultListen    = ":7373" // UDP 7373 is the registry's port (wire.DefaultRegistryPort)
	DefaultLeaseTTL  = 15 * time.Second
	DefaultMaxGroups = 4096
	// DefaultMaxGroupsPerKey and DefaultMaxGroupsPerAddr are the most
	// groups one key, and one source address (an IPv4 address or an IPv6
	// /64), may have listed at once: a quarter of the registry each.
	DefaultMaxGroupsPerKey  = 1024
	DefaultMaxGroupsPerAddr = 1024
)

// Config configures a registry Daemon. The zero value of each field but
// StateDir means its default.
type Config struct {
	// Listen is the UDP address to listen on. Default ":7373".
	Listen string
	// StateDir holds the registry's key (identity.KeyFile), created on first
	// use, so its fingerprint survives restarts. Required.
	StateDir string
	// LeaseTTL is how long a registration lasts without a renew. Default 15 s.
	LeaseTTL time.Duration
	// MaxGroups is the most groups listed at once; registering one more
	// gets CodeUnavailable. Default 4096.
	MaxGroups int
	// MaxGroupsPerKey is the most groups one key may have listed at once;
	// registering one more gets CodeUnavailable. Default 1024.
	MaxGroupsPerKey int
	// MaxGroupsPerAddr is the most groups registered from one source
	// address (an IPv4 address, or an IPv6 /64) listed at once; one more
	// gets CodeUnavailable. Default 1024.
	MaxGroupsPerAddr int
	// Server holds the QUIC server's limits and deadlines.
	Server server.Config
	// MDNS advertises the registry over mDNS (service _huddle._udp) on
	// Interfaces, so daemons and users on the LAN find it with no
	// configuration. Off by default in this package; huddle registry and
	// huddle up turn it on unless --no-mdns.
	MDNS bool
	// Interfaces are the interfaces to advertise on. Default: every up,
	// multicast-capable interface (see package discovery).
	Interfaces []string
	// Instance is the readable mDNS instance name. Default "huddle registry
	// on HOSTNAME".
	Instance string
	// Version is the huddle version advertised in TXT. Default "dev".
	Version string
	// Metrics, if not nil, receives the registry's operation timings,
	// registrations and expiries, and is given collectors for its
	// connections and leases.
	Metrics *metrics.Metrics
	// Logger receives registrations, expiries and errors. Default: discard.
	Logger *slog.Logger
	// Now is the clock of leases. Default time.Now.
	Now func() time.Time
}

// Validate reports whether c is usable. Its errors wrap ErrInvalidConfig.
func (c Config) Validate() error {
	switch {
	case c.StateDir == "":
		return fmt.Errorf("%w: registry StateDir is required", ErrInvalidConfig)
	case c.LeaseTTL < 0:
		return fmt.Errorf("%w: LeaseTTL %v is negative", ErrInvalidConfig, c.LeaseTTL)
	case c.MaxGroups < 0, c.MaxGroupsPerKey < 0, c.MaxGroupsPerAddr < 0:
		return fmt.Errorf("%w: MaxGroups %d, MaxGroupsPerKey %d or MaxGroupsPerAddr %d is negative",
			ErrInvalidConfig, c.MaxGroups, c.MaxGroupsPerKey, c.MaxGroupsPerAddr)
	}
	return c.Server.Validate()
}

func (c Config) withDefaults() Config {
	c.Listen = cmp.Or(c.Listen, DefaultListen)
	c.LeaseTTL = cmp.Or(c.LeaseTTL, DefaultLeaseTTL)
	c.MaxGroups = cmp.Or(c.MaxGroups, DefaultMaxGroups)
	c.MaxGroupsPerKey = cmp.Or(c.MaxGroupsPerKey, DefaultMaxGroupsPerKey)
	c.MaxGroupsPerAddr = cmp.Or(c.MaxGroupsPerAddr, DefaultMaxGroupsPerAddr)
	c.Server = c.Server.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Daemon is a registry: it lists the groups group daemons host. A daemon registers each
// group it hosts and renews the lease every third of the TTL; a group whose
// lease lapses vanishes from the list.
//
// A group's UUID belongs to the key (fingerprint) that registered it, for as
// long as its lease is alive: another key that registers, renews or
// deregisters it gets CodeUnauthorized. Once the lease lapses (or the group
// is deregistered) the UUID is free, and any key may register it. Leases
// live in memory only: a restarted registry has a new epoch and no leases,
// and daemons register again when a renew fails with CodeEpochMismatch.
type Daemon struct {
	cfg   Config
	epoch uint64
	srv   *server.Server
	life  *lifecycle.Lifecycle

	mu     sync.Mutex
	id     *identity.Identity // set by Listen
	lock   *statedir.Held     // the state directory's, held from Listen to Close
	leases *leaseTable
	// awake is when the registry last looked at its leases' clock
	// (resumedLocked): a sweep, a listing, or a call that finds a lease.
	awake time.Time

	// loadKey loads or creates the key in the state directory
	// (identity.LoadOrCreate); tests make it hang, as on a disk that does
	// not answer.
	loadKey func(dir string) (*identity.Identity, error)
}

// New returns a registry for cfg. It does no I/O; Listen or Serve load the
// key and bind the socket. It returns cfg.Validate's error.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &Daemon{
		cfg:     cfg,
		epoch:   newEpoch(),
		life:    lifecycle.New(),
		leases:  newLeaseTable(),
		loadKey: identity.LoadOrCreate,
	}
	r.srv = server.New(cfg.Server, server.Setup{Listen: cfg.Listen, Role: "registry", Metrics: cfg.Metrics, Logger: cfg.Logger, Now: cfg.Now}, r.handle)
	cfg.Metrics.Registry(r.leaseCount)
	return r, nil
}

// Bind binds the UDP socket and writes nothing, so that a process running
// several daemons (huddle up) finds a port of any of them taken before one
// has created its state directory. Listen binds it if Bind did not. It
// returns ErrClosed after Close, and socket errors.
func (r *Daemon) Bind() error {
	if r.life.IsClosed() {
		return ErrClosed
	}
	if err := r.srv.Bind(); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

// Listen binds the UDP socket, then loads (or creates) the registry's key in
// StateDir, so Addr and Fingerprint are known before Serve. Calling it again
// does nothing. It returns ErrClosed after Close, and identity or socket
// errors.
//
// Close does not wait for it past lifecycle.Wait (3 s): on a disk that does
// not answer, Listen returns ErrClosed once Close begins, and the state
// directory stays locked until the key's read returns (releaseLoaded).
func (r *Daemon) Listen() error {
	if err := r.life.Load(r.listen); err != nil {
		if errors.Is(err, ErrClosed) {
			return fmt.Errorf("registry: %w", err)
		}
		return err
	}
	return nil
}

// ListenContext is Listen, given up when ctx ends: the registry is closed
// then (Close), and it returns ErrClosed. huddle registry and huddle up call
// it, so that SIGTERM stops a registry starting on a disk that does not
// answer.
func (r *Daemon) ListenContext(ctx context.Context) error {
	return lifecycle.ListenUntil(ctx, r.Listen, r.Close)
}

// listen is Listen's loading, which lifecycle.Load runs.
func (r *Daemon) listen() error {
	if r.life.IsClosed() {
		return ErrClosed
	}
	// The socket first: a port in use refuses the registry before it has
	// written anything (state directory, key).
	if err := r.srv.Bind(); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	r.mu.Lock()
	id := r.id
	if r.lock == nil {
		l, err := statedir.Lock(r.cfg.StateDir)
		if err != nil {
			r.mu.Unlock()
			return fmt.Errorf("registry: %w", err)
		}
		r.lock = l
	}
	r.mu.Unlock()
	if id == nil {
		var err error
		if id, err = r.loadKey(r.cfg.StateDir); err != nil {
			r.mu.Lock()
			r.lock.Release() // a registry that did not start holds nothing
			r.lock = nil
			r.mu.Unlock()
			return fmt.Errorf("registry: %w", err)
		}
		r.mu.Lock()
		r.id = id
		r.mu.Unlock()
	}
	if err := r.srv.Listen(id); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

// Serve listens (if Listen was not called) and serves until ctx ends or
// Close is called; then it shuts down as Close does and returns nil once
// everything has stopped. It returns ErrClosed after Close, ErrServing if
// already serving, and Listen's errors.
func (r *Daemon) Serve(ctx context.Context) error {
	// ctx ending while the key loads (which a disk that does not answer
	// holds for ever) stops the registry too.
	if err := r.ListenContext(ctx); ctx.Err() != nil && (err == nil || errors.Is(err, ErrClosed)) {
		r.Close()
		r.cfg.Logger.Info("registry stopped before it started")
		return nil
	} else if err != nil {
		return err
	}
	loops := []lifecycle.Loop{{Name: "lease sweep", Run: r.sweepLoop}}
	if r.cfg.MDNS {
		loops = append(loops, lifecycle.Loop{Name: "mDNS advertiser", Run: r.advertiseLoop})
	}
	if err := r.life.Begin(loops...); err != nil {
		return err
	}
	if err := r.srv.Start(); err != nil {
		r.Close()
		return err
	}
	r.cfg.Logger.Info("registry serving", "addr", r.Addr().String(), "fingerprint", r.Fingerprint().String(), "epoch", r.epoch)
	r.life.Wait(ctx, r.Close)
	r.cfg.Logger.Info("registry stopped")
	return nil
}

// Close stops the registry (see the package comment for the order) and
// waits for every goroutine it started. It is safe to call more than once;
// every call returns nil once shutdown has finished.
func (r *Daemon) Close() error {
	if left, first := r.life.StopLoads(r.releaseLoaded); left {
		if first {
			r.cfg.Logger.Error("the state directory's loading did not return (a disk that does not answer?): stopping without it; what it holds (the state directory's lock) is released when it returns", "waited", lifecycle.Wait)
		}
		r.life.Close(r.srv.Close)
		return nil
	}
	if left := r.life.Close(r.srv.Close); left != nil {
		// Its loops use no file (the machine is overloaded, or one is
		// stuck): the state directory is released once they have
		// returned, not before. Until session 21 it was released at
		// once, and a registry restarted on it in this process ran
		// beside the old one's mDNS advertiser, which still answered
		// for the registry's name with the old port; now that restart
		// is refused (state directory in use) until the advertiser has
		// stopped.
		r.cfg.Logger.Error("the registry's own goroutines did not stop in time (none waits on the disk: the machine overloaded?): stopping without them; the state directory is released once they have",
			"running", left, "waited", r.life.Bound())
		go func() {
			<-r.life.Stopped()
			r.releaseLoaded()
		}()
		return nil
	}
	r.releaseLoaded()
	return nil
}

// releaseLoaded releases the state directory's lock; Close calls it, or,
// when it went on without a Listen stuck in the disk (lifecycle's
// StopLoads), that Listen once it returns.
func (r *Daemon) releaseLoaded() {
	r.mu.Lock()
	r.lock.Release()
	r.lock = nil
	r.mu.Unlock()
}

// Addr returns the address the registry listens on, or nil before it does.
func (r *Daemon) Addr() net.Addr { return r.srv.Addr() }

// Fingerprint returns the registry's fingerprint (what clients pin), or
// zero before Listen.
func (r *Daemon) Fingerprint() wire.Fingerprint {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.id == nil {
		return wire.Fingerprint{}
	}
	return r.id.Fingerprint()
}

func (r *Daemon) handle(ctx context.Context, c *server.Call) error {
	switch c.Op() {
	case wire.OpRegister:
		return r.register(c)
	case wire.OpRenew:
		return r.renew(c)
	case wire.OpDeregister:
		return r.deregister(c)
	case wire.OpList:
		return r.list(c)
	}
	return fmt.Errorf("%w: %v", wire.ErrUnsupported, c.Op())
}

func (r *Daemon) lease() wire.Lease {
	return wire.Lease{Epoch: r.epoch, TTLMS: uint64(r.cfg.LeaseTTL.Milliseconds())}
}

func (r *Daemon) register(c *server.Call) error {
	var req wire.Register
	if err := c.Decode(&req); err != nil {
		return err
	}
	addrs := req.Addrs
	if len(addrs) == 0 {
		a, err := sourceAddr(c.Remote(), req.Port)
		if err != nil {
			return fmt.Errorf("register group %s: %w", req.Group, err)
		}
		addrs = []string{a}
	}
	now := r.cfg.Now()
	from := server.Source(c.Remote())
	r.mu.Lock()
	l, ok := r.leaseLocked(req.Group, now)
	if ok && !l.heldBy(c.Peer()) {
		r.mu.Unlock()
		return fmt.Errorf("register group %s: %w: another key holds its lease", req.Group, wire.ErrUnauthorized)
	}
	owner := c.Peer()
	if ok {
		owner = l.owner
	}
	if err := r.roomLocked(ok, l, owner, from, now); err != nil {
		r.mu.Unlock()
		return fmt.Errorf("register group %s: %w", req.Group, err)
	}
	nl := &lease{
		entry: wire.GroupEntry{
			Group:       req.Group,
			Name:        req.Name,
			Addrs:       addrs,
			Fingerprint: c.Peer(),
			Members:     req.Members,
			LastSeq:     req.LastSeq,
		},
		expires:  now.Add(r.cfg.LeaseTTL),
		from:     from,
		owner:    owner,
		logEpoch: req.LogEpoch,
	}
	var prev *lease
	if ok {
		prev = l
	}
	if err := replicated(nl, prev, &req, c.Peer()); err != nil {
		r.mu.Unlock()
		return fmt.Errorf("register group %s: %w", req.Group, err)
	}
	keepCounts(nl, prev, c.Peer())
	// A cell's entry lists its leader's --cell-peer address instead.
	nl.thisHost = len(req.Addrs) == 0 && len(req.Replicas) == 0 && loopback(c.Remote())
	r.leases.put(nl)
	listed := nl.entry
	r.mu.Unlock()
	if !ok {
		r.cfg.Metrics.Registered()
		r.cfg.Logger.Info("group registered", "group", req.Name, "uuid", req.Group, "fingerprint", c.Peer().Short(), "addrs", addrs, "log_epoch", req.LogEpoch)
	} else {
		r.cfg.Logger.Debug("group registered again", "group", req.Name, "uuid", req.Group, "by", c.Peer().Short(), "members", listed.Members, "last_seq", listed.LastSeq, "log_epoch", req.LogEpoch)
	}
	return c.Result(r.lease())
}

// roomLocked says whether a registration by key from address from fits
// the registry's limits: in all, per key and per address. held says the
// registration replaces old, a lease the key holds already (which frees
// its place, unless it moves to another address). Over a limit, it sweeps
// lapsed leases once before refusing. r.mu is held.
func (r *Daemon) roomLocked(held bool, old *lease, key wire.Fingerprint, from netip.Prefix, now time.Time) error {
	check := func() error {
		t := r.leases
		switch {
		case !held && t.len() >= r.cfg.MaxGroups:
			return fmt.Errorf("%w: the registry lists %d groups, its limit", wire.ErrUnavailable, r.cfg.MaxGroups)
		case !held && t.byKey[key] >= r.cfg.MaxGroupsPerKey:
			return fmt.Errorf("%w: your key has %d groups listed, the registry's limit per key", wire.ErrUnavailable, r.cfg.MaxGroupsPerKey)
		case (!held || old.from != from) && t.byAddr[from] >= r.cfg.MaxGroupsPerAddr:
			return fmt.Errorf("%w: your address has %d groups listed, the registry's limit per address", wire.ErrUnavailable, r.cfg.MaxGroupsPerAddr)
		}
		return nil
	}
	if check() == nil {
		return nil
	}
	r.sweepLocked(now)
	return check()
}

// sourceAddr is the address a registration without addresses lists: the
// connection's source IP with the registered port.
func sourceAddr(remote net.Addr, port uint16) (string, error) {
	ua, ok := remote.(*net.UDPAddr)
	if !ok {
		return "", fmt.Errorf("%w: no source address to list", wire.ErrBadRequest)
	}
	ip := ua.AddrPort().Addr().Unmap()
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port))), nil
}

func (r *Daemon) renew(c *server.Call) error {
	var req wire.Renew
	if err := c.Decode(&req); err != nil {
		return err
	}
	if req.Epoch != r.epoch {
		return &wire.Error{Code: wire.CodeEpochMismatch, Epoch: r.epoch,
			Message: fmt.Sprintf("renew group %s: the registry restarted (epoch %d): register again", req.Group, r.epoch)}
	}
	now := r.cfg.Now()
	r.mu.Lock()
	l, ok := r.leaseLocked(req.Group, now)
	switch {
	case !ok:
		r.mu.Unlock()
		return fmt.Errorf("renew group %s: %w: no lease (it lapsed): register again", req.Group, wire.ErrNotFound)
	case !l.heldBy(c.Peer()):
		r.mu.Unlock()
		return fmt.Errorf("renew group %s: %w: another key holds its lease", req.Group, wire.ErrUnauthorized)
	}
	l.expires = now.Add(r.cfg.LeaseTTL)
	// A renew continues the lease a registration began, by a daemon
	// whose log keeps its epoch while it runs: a last_seq lower than
	// listed is a lagging member's, or a renew another overtook, never a
	// new history (a daemon that lost its history restarted, and
	// registers). Only the leader's word counts a cell's members.
	l.entry.LastSeq = max(l.entry.LastSeq, req.LastSeq)
	if l.replicas == nil || leads(l.entry.Replicas, c.Peer()) {
		l.entry.Members = req.Members
	}
	name := l.entry.Name
	r.mu.Unlock()
	r.cfg.Logger.Debug("lease renewed", "group", name, "uuid", req.Group, "by", c.Peer().Short(), "members", req.Members, "last_seq", req.LastSeq)
	return c.Result(r.lease())
}

func (r *Daemon) deregister(c *server.Call) error {
	var req wire.Deregister
	if err := c.Decode(&req); err != nil {
		return err
	}
	now := r.cfg.Now()
	r.mu.Lock()
	l, ok := r.leaseLocked(req.Group, now)
	if ok && !l.heldBy(c.Peer()) {
		r.mu.Unlock()
		return fmt.Errorf("deregister group %s: %w: another key holds its lease", req.Group, wire.ErrUnauthorized)
	}
	if ok {
		if kept := l.without(c.Peer()); kept != nil {
			// Another replica of the cell still holds the group.
			r.leases.put(kept)
			r.mu.Unlock()
			r.cfg.Logger.Info("replica deregistered; the group stays listed for the others", "group", l.entry.Name, "uuid", req.Group, "fingerprint", c.Peer().Short())
			return c.Result(struct{}{})
		}
		r.leases.remove(l)
	}
	r.mu.Unlock()
	if ok {
		r.cfg.Logger.Info("group deregistered", "group", l.entry.Name, "uuid", req.Group, "fingerprint", c.Peer().Short())
	}
	return c.Result(struct{}{})
}

func (r *Daemon) list(c *server.Call) error {
	var req wire.List
	if err := c.Decode(&req); err != nil {
		return err
	}
	// A page and its frame, in reply memory (call.need).
	if err := c.Need(listPageReply); err != nil {
		return err
	}
	now := r.cfg.Now()
	r.mu.Lock()
	// A list read first on resuming, before the renewals queued behind it,
	// judges the leases by the registry's running time, as the sweep does.
	r.resumedLocked(now)
	entries, next, err := r.leases.page(req.After, now)
	if at, ok := hostAddrAsked(c); ok {
		for i := range entries {
			if l := r.leases.byID[entries[i].Group]; l != nil && l.thisHost {
				entries[i].Addrs = atHostAddr(entries[i].Addrs, at)
			}
		}
	}
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("list: %w: %v", wire.ErrBadRequest, err)
	}
	return c.Result(wire.Groups{Epoch: r.epoch, Groups: entries, Next: next})
}

// hostAddrAsked returns the address of this host that a client on another
// host reached the registry at (the destination of its packets, which
// quic-go reads from each packet's metadata on a socket bound to every
// address), if it is one a daemon of this host could be reached at too;
// false for a client on this host, or when the address is not known.
func hostAddrAsked(c *server.Call) (netip.Addr, bool) {
	if _, ok := c.Remote().(*net.UDPAddr); !ok || loopback(c.Remote()) {
		return netip.Addr{}, false
	}
	local, ok := c.Conn().LocalAddr().(*net.UDPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	at := local.AddrPort().Addr().Unmap()
	if !at.IsValid() || at.IsUnspecified() || at.IsLoopback() || at.IsLinkLocalUnicast() || at.Zone() != "" {
		return netip.Addr{}, false
	}
	return at, true
}

// loopback reports whether a is a UDP address on this host's loopback.
func loopback(a net.Addr) bool {
	ua, ok := a.(*net.UDPAddr)
	return ok && ua.AddrPort().Addr().Unmap().IsLoopback()
}

// atHostAddr returns addrs (a daemon of this host's loopback addresses)
// with their host replaced by at, their ports kept.
func atHostAddr(addrs []string, at netip.Addr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			out = append(out, a)
			continue
		}
		out = append(out, netip.AddrPortFrom(at, ap.Port()).String())
	}
	return out
}

// sweepLoop drops lapsed leases periodically, so they are logged and freed
// even when nobody lists. It ticks often (sweepEvery) so that a tick much
// later than that tells the registry it was not running (resumedLocked).
func (r *Daemon) sweepLoop() {
	t := time.NewTicker(r.sweepEvery())
	defer t.Stop()
	for {
		select {
		case <-r.life.Ctx().Done():
			return
		case <-t.C:
			r.mu.Lock()
			r.sweepLocked(r.cfg.Now())
			r.mu.Unlock()
		}
	}
}

// sweepEvery is the period of sweepLoop: a tenth of the TTL.
func (r *Daemon) sweepEvery() time.Duration { return max(r.cfg.LeaseTTL/10, 10*time.Millisecond) }

// resumedLocked moves every lease's expiry on by the time the registry
// itself was not running, as seen at now: the time since it last looked
// (awake), less one sweep period, when that is more than two sweep periods
// (sweepLoop looks every period while the registry runs). A registry
// descheduled or stopped for a while (a loaded machine, SIGSTOP) would
// otherwise drop, on resuming, the leases whose renewals wait unread in its
// socket: with a 3 s TTL renewed every second, a 2.5 s pause of the
// registry alone lapsed every lease (e2e TestLANRegistries). A daemon that
// stopped renewing still lapses one TTL of the registry's running time
// after its last renewal. r.mu is held.
func (r *Daemon) resumedLocked(now time.Time) {
	every := r.sweepEvery()
	if gap := now.Sub(r.awake); !r.awake.IsZero() && gap > 2*every {
		for _, l := range r.leases.byID {
			l.expires = l.expires.Add(gap - every)
		}
	}
	r.awake = now
}

func (r *Daemon) sweepLocked(now time.Time) {
	r.resumedLocked(now)
	for _, l := range r.leases.byID {
		if !now.Before(l.expires) {
			r.expireLocked(l)
		}
	}
}

// leaseLocked returns group's lease if it is alive at now. A lease found
// lapsed is dropped (and logged) here rather than left for the sweep, so
// that its group is free at once. r.mu is held.
func (r *Daemon) leaseLocked(group wire.UUID, now time.Time) (*lease, bool) {
	r.resumedLocked(now)
	l, ok := r.leases.byID[group]
	if ok && !now.Before(l.expires) {
		r.expireLocked(l)
		return nil, false
	}
	return l, ok
}

// expireLocked drops a lapsed lease. r.mu is held.
func (r *Daemon) expireLocked(l *lease) {
	r.leases.remove(l)
	r.cfg.Metrics.LeaseExpired()
	r.cfg.Logger.Info("group lease expired", "group", l.entry.Name, "uuid", l.entry.Group, "fingerprint", l.entry.Fingerprint.Short())
}

// advertiseLoop advertises the registry over mDNS until the registry
// closes. A registry that cannot advertise (no multicast-capable interface)
// still serves clients that know its address, so failure is logged, not
// fatal; the advertiser keeps rescanning for interfaces that come up.
func (r *Daemon) advertiseLoop() {
	ua, _ := r.Addr().(*net.UDPAddr)
	if ua == nil {
		return
	}
	listen, _ := netip.AddrFromSlice(ua.IP)
	a, err := discovery.NewAdvertiser(discovery.AdvertiserConfig{
		Instance:    r.cfg.Instance,
		Port:        ua.Port,
		Listen:      listen.Unmap(),
		Fingerprint: r.Fingerprint().String(),
		Version:     r.cfg.Version,
		Interfaces:  r.cfg.Interfaces,
		Logger:      r.cfg.Logger.With("from", "mdns"),
	})
	if err != nil {
		r.cfg.Logger.Error("mDNS advertising disabled", "err", err)
		return
	}
	if err := a.Serve(r.life.Ctx()); err != nil {
		r.cfg.Logger.Error("mDNS advertising stopped", "err", err)
	}
}

// replicated fills l, a registration by key, for a group replicated by a
// cell (req.Replicas): the group is listed once, with every replica, and
// its addresses and fingerprint are its leader's (a replica's while none
// is known), so that a client that knows nothing of cells dials the
// leader. Every replica's key may then register and renew it. The
// registering key must be one of the replicas. prev is the lease it
// replaces, if any: a registration that names no leader (its member knows
// of none: an election, or it is cut off from the others) keeps the leader
// prev named, if that one is still a replica, rather than erase what
// another member reported (keepCounts decides the counts). The leader
// named is listed only if it registered the group itself.
func replicated(l, prev *lease, req *wire.Register, key wire.Fingerprint) error {
	if len(req.Replicas) == 0 {
		return nil
	}
	l.replicas = make(map[wire.Fingerprint]bool, len(req.Replicas))
	for _, rp := range req.Replicas {
		l.replicas[rp.Fingerprint] = true
	}
	if !l.replicas[key] {
		return fmt.Errorf("%w: the replicas listed do not include the registering daemon's key", wire.ErrBadRequest)
	}
	l.holders = map[wire.Fingerprint]bool{key: true}
	if prev != nil {
		for fp := range prev.holders {
			if l.replicas[fp] {
				l.holders[fp] = true
			}
		}
	}
	rs := req.Replicas
	if !slices.ContainsFunc(rs, func(rp wire.Replica) bool { return rp.Leader }) && prev != nil {
		if i := slices.IndexFunc(prev.entry.Replicas, func(rp wire.Replica) bool { return rp.Leader }); i >= 0 {
			was := prev.entry.Replicas[i].Fingerprint
			if l.replicas[was] {
				rs = slices.Clone(rs)
				for j := range rs {
					rs[j].Leader = rs[j].Fingerprint == was
				}
			}
		}
	}
	// A leader is listed only once its own key registered the group (it
	// holds it): were a registration's word enough, any key could list
	// a group under any daemon's address and key.
	if i := slices.IndexFunc(rs, func(rp wire.Replica) bool { return rp.Leader }); i >= 0 && !l.holders[rs[i].Fingerprint] {
		rs = slices.Clone(rs)
		rs[i].Leader = false
	}
	l.entry.Replicas = rs
	for _, rp := range rs {
		if rp.Leader {
			l.entry.Addrs, l.entry.Fingerprint = []string{rp.Addr}, rp.Fingerprint
		}
	}
	return nil
}

// leads reports whether key is the leader rs mark.
func leads(rs []wire.Replica, key wire.Fingerprint) bool {
	return slices.ContainsFunc(rs, func(rp wire.Replica) bool { return rp.Leader && rp.Fingerprint == key })
}

// keepCounts applies to l, a registration by key replacing prev (if any),
// the rule of a group's listed counts (PROTOCOL.md §7.1, §13): while the
// registrations name one log epoch, last_seq never goes back (a member of
// a cell that lags, a leader just elected that has not yet applied all
// its predecessor listed, a registration overtaken by a later one); and a
// cell's member that does not lead lists the leader's member count, not
// its own. A registration naming another log epoch than prev's starts
// the counts afresh: the group's history was lost (a daemon keeping it in
// memory restarted), and its sequence numbers start again. One that names
// no epoch (daemons before session 21) is taken as given, as then, unless
// a cell's member that does not lead sends it: it keeps the listed epoch.
func keepCounts(l, prev *lease, key wire.Fingerprint) {
	if prev == nil {
		return
	}
	known := l.logEpoch != 0 && prev.logEpoch != 0
	if known && l.logEpoch != prev.logEpoch {
		return
	}
	follower := l.replicas != nil && !leads(l.entry.Replicas, key)
	if follower {
		l.entry.Members = prev.entry.Members
		if l.logEpoch == 0 {
			// A member before session 21 says none: the epoch listed
			// stands (it forgot it, and the next leader's registration
			// in it set last_seq lower than listed: an upgrade's cell).
			l.logEpoch = prev.logEpoch
		}
	}
	if known || follower {
		l.entry.LastSeq = max(prev.entry.LastSeq, l.entry.LastSeq)
	}
}

// without returns l as listed once key, one of its holders, deregistered
// it, or nil if no other replica holds it (or it is not a cell's group):
// the group stays listed while another member of its cell runs. If key
// led, the listing names no leader (and lists a holder's address) until
// a member registers the next.
func (l *lease) without(key wire.Fingerprint) *lease {
	if l.replicas == nil {
		return nil
	}
	kept := *l
	kept.holders = make(map[wire.Fingerprint]bool, len(l.holders))
	for fp := range l.holders {
		if fp != key {
			kept.holders[fp] = true
		}
	}
	if len(kept.holders) == 0 {
		return nil
	}
	if l.entry.Fingerprint == key {
		rs := slices.Clone(l.entry.Replicas)
		for i := range rs {
			rs[i].Leader = false
		}
		kept.entry.Replicas = rs
		for _, rp := range rs {
			if kept.holders[rp.Fingerprint] {
				kept.entry.Addrs, kept.entry.Fingerprint = []string{rp.Addr}, rp.Fingerprint
				break
			}
		}
	}
	return &kept
}

// newEpoch returns a random nonzero epoch.
func newEpoch() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
		if e := binary.BigEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}

// Memory returns the most memory a registry with this configuration may
// use: what its peers can make it hold (its leases are within the
// process's base).
func (c Config) Memory() server.Memory { return c.Server.Memory(0) }
