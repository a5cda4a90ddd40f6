package client

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// Registry is a handle on one registry. Its methods are safe for concurrent
// use.
type Registry struct {
	addr   string
	p      *peer
	closed atomic.Bool
}

// Registry connects to the registry at addr ("host:port", or "host" for the
// default port 7373). If pin is not zero the registry must present that
// fingerprint. Otherwise the Client's KnownHosts decides: a registry seen
// before must present the fingerprint pinned then (an *identity.ChangedError
// says otherwise), and a new one is pinned now (or, if the file holds all
// the addresses it may, identity.MaxAddressPins, used unpinned, said on
// the Config's Logger at warn level). Without KnownHosts any registry is
// accepted.
//
// A key refused under one address (an *identity.ChangedError) is refused
// under every other while that address pins another key (until the user
// runs the huddle forget-registry the refusal names; the error wraps that
// *identity.ChangedError), and a pin the Client made of it on first use
// under another address is taken back: a registry that answers under two
// names, one pinned to its old key, was otherwise trusted under the other,
// pinned there for every later run, whichever answered first.
//
// It returns an error matching ErrUnreachable if no connection could be
// made, and an *identity.MismatchError if the registry presented another
// key than pin.
func (c *Client) Registry(ctx context.Context, addr string, pin Fingerprint) (*Registry, error) {
	kh := c.cfg.KnownHosts
	pinnedByFile := false
	if pin.IsZero() && kh != nil {
		known, ok, err := kh.Lookup(addr)
		if err != nil {
			return nil, err
		}
		if ok {
			pin, pinnedByFile = known, true
		}
	}
	if !pin.IsZero() {
		p, err := c.registryPeer(addr, pin)
		if err != nil {
			return nil, err
		}
		if _, err := p.get(ctx); err != nil {
			c.release(p)
			var mm *identity.MismatchError
			if errors.As(err, &mm) && pinnedByFile {
				ce := &identity.ChangedError{Name: addr, Pinned: mm.Want, Presented: mm.Got, File: kh.Path()}
				c.pins.refuse(ctx, kh, ce, c.cfg.Logger)
				return nil, ce
			}
			return nil, fmt.Errorf("registry %s: %w", wire.Shown(addr), err)
		}
		return &Registry{addr: addr, p: p}, nil
	}

	// First use: accept what the registry presents, then pin it.
	var seen Fingerprint
	first, err := c.peer([]string{addr}, Fingerprint{}, func(fp Fingerprint) error {
		seen = fp
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := first.get(ctx); err != nil {
		return nil, fmt.Errorf("registry %s: %w", wire.Shown(addr), err)
	}
	first.close()
	if kh != nil {
		if err := c.pins.pin(ctx, kh, addr, seen, c.cfg.Logger); err != nil {
			return nil, err
		}
	}
	return c.Registry(ctx, addr, seen)
}

// pinsSeen is what a Client's trust on first use of registries (Registry)
// knows: the keys it refused under an address pinned to another (the first
// maxRefusedKeys of them), and the pins it made.
type pinsSeen struct {
	mu      sync.Mutex
	refused map[Fingerprint]*identity.ChangedError // by the key refused
	made    map[string]Fingerprint                 // the addresses pinned on first use
}

// pin pins fp under addr, new to kh, unless fp was refused under an
// address that still pins another key (an error wrapping that refusal):
// once the user accepted the change there (huddle forget-registry, the
// command the refusal names, or a pin of fp), the refusal is over, here
// and there. A full file pins nothing: the registry is used unpinned,
// said on log.
func (ps *pinsSeen) pin(ctx context.Context, kh *identity.KnownHosts, addr string, fp Fingerprint, log *slog.Logger) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ce := ps.refused[fp]; ce != nil {
		now, ok, err := kh.Lookup(ce.Name)
		if err != nil {
			return err
		}
		if ok && now != fp {
			return fmt.Errorf("registry %s presents the key refused at %s: %w", wire.Shown(addr), wire.Shown(ce.Name), ce)
		}
		delete(ps.refused, fp)
	}
	switch err := kh.Check(ctx, addr, fp); {
	case errors.Is(err, identity.ErrPinsFull):
		// Used unpinned, as on first use: the file drops none of the
		// user's pins to make room.
		log.Warn("registry used but not pinned: known_registries holds all the addresses it may; drop pins you no longer use with huddle forget-registry ADDRESS",
			"registry", addr, "fingerprint", fp.Short(), "file", kh.Path())
	case err != nil:
		return err
	default:
		if ps.made == nil {
			ps.made = make(map[string]Fingerprint)
		}
		ps.made[addr] = fp
	}
	return nil
}

// maxRefusedKeys bounds the refused keys a Client remembers. Whoever
// answers at a pinned address (a rogue registry where the user's was)
// presents a key of its own at each handshake for free, and huddle web
// asks every few seconds for days: each was remembered, the map grew
// without end. Past the bound a refused key is still refused where it was
// presented, and its first-use pins elsewhere taken back; only later
// first uses elsewhere do not know it (a rogue presenting a thousand keys
// can present a fresh one at the other address anyway).
const maxRefusedKeys = 1024

// refuse notes ce's key as refused, and takes back the pins of it made
// under other addresses: those still pinning it, not one made since by
// another process (the user's, after forgetting ours). The caller's
// context ending does not stop it (a pin of a key refused elsewhere would
// stay): each is bounded by the lock's own wait.
func (ps *pinsSeen) refuse(ctx context.Context, kh *identity.KnownHosts, ce *identity.ChangedError, log *slog.Logger) {
	ctx = context.WithoutCancel(ctx)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.refused == nil {
		ps.refused = make(map[Fingerprint]*identity.ChangedError)
	}
	if ps.refused[ce.Presented] == nil && len(ps.refused) < maxRefusedKeys {
		ps.refused[ce.Presented] = ce
	}
	for addr, fp := range ps.made {
		if fp == ce.Presented {
			if _, err := kh.ForgetPin(ctx, addr, fp); err != nil {
				log.Error("could not take back the pin of a registry key refused under another address",
					"registry", addr, "fingerprint", fp.Short(), "refused at", ce.Name, "err", err)
			}
			delete(ps.made, addr)
		}
	}
}

// Close releases the handle. The connection to the registry closes with
// the last handle on the same address and key (Client.Registry returns
// handles that share one), so a program that drops a registry (one
// discovery says is gone) holds nothing of it; the Client's Close closes
// every connection anyway. Calls on a closed handle, and on the Groups
// made from it when they ask where their daemon went, return ErrClosed.
// Close is safe twice.
func (r *Registry) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.p.c.release(r.p)
	}
	return nil
}

// Addr returns the address the registry was opened with.
func (r *Registry) Addr() string { return r.addr }

// Fingerprint returns the registry's fingerprint (pinned).
func (r *Registry) Fingerprint() Fingerprint { return r.p.pin }

// GroupEntry is one group of a registry's listing: its UUID and name, the
// addresses and fingerprint of the daemon that hosts it, its counters as
// the daemon last reported them, and the milliseconds left on its lease.
type GroupEntry = wire.GroupEntry

// Listing is a registry's list of groups.
type Listing struct {
	// Epoch is the registry's epoch, new at each start of it.
	Epoch  uint64
	Groups []GroupEntry // sorted by name, then UUID
	// Skipped counts the entries left out of Groups because an address
	// of theirs (the daemon's or a replica's) is not host:port, or their
	// replicas name one key twice (wire.SkippedEntry: a registry of
	// before session 12, or 23, lists what anyone registered); FirstSkipped is the first of them, for a
	// program to say which and why. Only the count and the first are
	// kept: a rogue registry may send pages of them.
	Skipped      int
	FirstSkipped *wire.SkippedEntry
}

// SkippedError says which entries the listing left out (Skipped), for a
// program to report once: nil if none. The entry's name and address are
// a registry's word, shown through wire.Shown.
func (l Listing) SkippedError() error {
	if l.Skipped == 0 || l.FirstSkipped == nil {
		return nil
	}
	e := l.FirstSkipped
	return fmt.Errorf("%d %s left out: listed at an address that is not host:port, which no registry of session 12 or later takes, or naming one key as two replicas, which none of session 23 or later takes (the first, %s %q: %s)",
		l.Skipped, map[bool]string{true: "group", false: "groups"}[l.Skipped == 1], e.Group, wire.Shown(e.Name), wire.Shown(e.Err.Error()))
}

// Registration is what a group daemon tells a registry about one of its
// groups (Register). The daemon's fingerprint is the one its client
// presents, never a field.
type Registration struct {
	Group UUID   // the group's UUID, which this key then owns at the registry
	Name  string // its name
	// Addrs are the "host:port" addresses clients should dial; when empty
	// the registry lists the connection's source address with Port.
	Addrs   []string
	Port    uint16
	Members uint64 // the group's member count, for the listing
	LastSeq uint64 // its last sequence number, for the listing
	// Replicas, for a group replicated by a cell, are the cell's members,
	// the leader marked; the registry lists the group once, and any
	// replica's key may renew it (PROTOCOL.md §13).
	Replicas []Replica
	// LogEpoch is the epoch of the group's log, which LastSeq counts in:
	// the registry keeps the listed last sequence number from going back
	// while registrations name the same epoch. Zero: not said.
	LogEpoch uint64
}

// Renewal extends a registration's lease (Renew). Epoch is the registry's
// epoch from the Lease being renewed.
type Renewal struct {
	Group   UUID   // the group registered
	Epoch   uint64 // the registry's epoch, from the Lease
	Members uint64 // the group's member count now
	LastSeq uint64 // its last sequence number now
}

// Lease is a registry's answer to Register and Renew: its epoch, and how
// long the listing lasts without a renewal (renew every third of it).
type Lease struct {
	Epoch uint64        // the registry's epoch: Renew with it
	TTL   time.Duration // how long the listing lasts unrenewed
}

func leaseFrom(l wire.Lease) Lease { return Lease{Epoch: l.Epoch, TTL: ms(l.TTLMS)} }

// Register lists a group and starts its lease. The fingerprint listed is
// this client's. Errors: ErrUnauthorized (another key owns the UUID),
// ErrUnavailable (the registry is full), ErrBadRequest, ErrTooLarge.
func (r *Registry) Register(ctx context.Context, reg Registration) (Lease, error) {
	if r.closed.Load() {
		return Lease{}, r.fail("register", ErrClosed)
	}
	var l wire.Lease
	if err := r.p.single(ctx, wire.OpRegister, wire.Register(reg), &l); err != nil {
		return Lease{}, r.fail("register", err)
	}
	return leaseFrom(l), nil
}

// Renew extends a lease. Errors: ErrEpochMismatch (the registry restarted)
// and ErrNotFound (the lease lapsed) both mean: Register again;
// ErrUnauthorized (another key owns the UUID).
func (r *Registry) Renew(ctx context.Context, rn Renewal) (Lease, error) {
	if r.closed.Load() {
		return Lease{}, r.fail("renew", ErrClosed)
	}
	var l wire.Lease
	if err := r.p.single(ctx, wire.OpRenew, wire.Renew(rn), &l); err != nil {
		return Lease{}, r.fail("renew", err)
	}
	return leaseFrom(l), nil
}

// Deregister removes a group at once. Removing an unlisted group succeeds.
// Errors: ErrUnauthorized (another key owns the UUID).
func (r *Registry) Deregister(ctx context.Context, group UUID) error {
	if r.closed.Load() {
		return r.fail("deregister", ErrClosed)
	}
	var res struct{}
	if err := r.p.single(ctx, wire.OpDeregister, wire.Deregister{Group: group}, &res); err != nil {
		return r.fail("deregister", err)
	}
	return nil
}

// fail names the operation in an error of the client's own; a server's
// error names it already. The registry's address is in the error (an
// unreachable one says it) or the caller's context.
func (r *Registry) fail(op string, err error) error {
	if serverSaid(err) {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Bounds on a listing, against a registry that would page forever.
const (
	maxListed    = 1 << 16 // groups in one listing
	maxListPages = 4096
	// maxListedBytes bounds what one registry's listing makes the client
	// hold (listedBytes of its entries): 65,536 groups of an honest
	// registry take 10-30 MiB, and the most each entry may hold (names,
	// 16 addresses, 9 replicas) would be 140 MiB.
	maxListedBytes = 64 << 20
)

// listedBytes is about what e holds in memory.
func listedBytes(e *wire.GroupEntry) int {
	n := 128 + len(e.Name)
	for _, a := range e.Addrs {
		n += 16 + len(a)
	}
	for _, r := range e.Replicas {
		n += 64 + len(r.Addr)
	}
	return n
}

// List returns every group whose lease is alive, sorted by name, reading
// the registry's listing page by page (PROTOCOL.md §7.4). If the registry restarts while the pages are read (its epoch
// changes), the listing starts over, once. Errors: those of a call, and
// ErrProtocol for a registry whose pages go backwards, that lists more
// than 65,536 groups or 64 MiB of them, or an entry larger than a
// registration may be (a name over 64 bytes, more than 16 addresses...).
// An entry whose address is not host:port is left out and counted
// (Listing.Skipped), the rest listed.
func (r *Registry) List(ctx context.Context) (Listing, error) {
	return r.ListWithin(ctx, nil)
}

// ListWithin is List for a program that bounds what several registries'
// listings make it hold together: before it keeps each page's entries it
// calls room with the bytes the listing would then hold (about what its
// entries take in memory, as List's own 64 MiB bound counts them), and an
// error room returns ends the listing with that error. A listing that
// starts over counts from 0 again. room nil is List.
func (r *Registry) ListWithin(ctx context.Context, room func(bytes int) error) (Listing, error) {
	if r.closed.Load() {
		return Listing{}, r.fail("list", ErrClosed)
	}
	for restarts := 0; ; restarts++ {
		all, err := r.list(ctx, room)
		if errors.Is(err, errListRestarted) && restarts == 0 {
			continue
		}
		if err != nil {
			return Listing{}, r.fail("list", err)
		}
		return all, nil
	}
}

var errListRestarted = errors.New("the registry restarted while its listing was read")

func (r *Registry) list(ctx context.Context, room func(int) error) (Listing, error) {
	var all Listing
	var after []byte
	held := 0 // listedBytes of all.Groups
	for pages := 0; ; pages++ {
		var g wire.Groups
		if err := r.p.single(ctx, wire.OpList, wire.List{After: after}, &g); err != nil {
			return Listing{}, err
		}
		switch {
		case pages == 0:
			all.Epoch = g.Epoch
		case g.Epoch != all.Epoch:
			return Listing{}, errListRestarted
		}
		page := held
		for i := range g.Groups {
			page += listedBytes(&g.Groups[i])
		}
		if room != nil {
			if err := room(page); err != nil {
				return Listing{}, err
			}
		}
		if len(g.Skipped) > 0 && all.FirstSkipped == nil {
			first := g.Skipped[0] // a copy: the page's others are not held
			all.FirstSkipped = &first
		}
		all.Skipped += len(g.Skipped)
		for _, e := range g.Groups {
			if n := len(all.Groups); n > 0 && listedOrder(&all.Groups[n-1], &e) >= 0 {
				return Listing{}, fmt.Errorf("group %s is not after %s in name order: %w", e.Group, all.Groups[n-1].Group, ErrProtocol)
			}
			if held += listedBytes(&e); held > maxListedBytes {
				return Listing{}, fmt.Errorf("a listing of more than %d MiB: %w", maxListedBytes>>20, ErrProtocol)
			}
			all.Groups = append(all.Groups, e)
		}
		if len(g.Next) == 0 {
			return all, nil
		}
		// Entries skipped count as listed: held or not, each was read,
		// and pages of nothing but them read as long as a registry sent
		// them otherwise (up to maxListPages whole frames).
		if len(g.Groups)+len(g.Skipped) == 0 || pages+1 >= maxListPages || len(all.Groups)+all.Skipped > maxListed {
			return Listing{}, fmt.Errorf("a listing of more than %d groups or %d pages, or an empty page with more to come: %w", maxListed, maxListPages, ErrProtocol)
		}
		after = g.Next
	}
}

// listedOrder compares two entries in the order of a listing: by name,
// then UUID.
func listedOrder(a, b *wire.GroupEntry) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), bytes.Compare(a.Group[:], b.Group[:]))
}
