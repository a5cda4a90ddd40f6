package client

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// Registry is a handle on one registry. Its methods are safe for concurrent
// use.
type Registry struct {
	addr string
	p    *peer
}

// Registry connects to the registry at addr ("host:port", or "host" for the
// default port 7373). If pin is not zero the registry must present that
// fingerprint. Otherwise the Client's KnownHosts decides: a registry seen
// before must present the fingerprint pinned then (an *identity.ChangedError
// says otherwise), and a new one is pinned now. Without KnownHosts any
// registry is accepted.
//
// It returns an error matching ErrUnreachable if no connection could be
// made, and an *identity.MismatchError if the registry presented another
// key than pin.
func (c *Client) Registry(ctx context.Context, addr string, pin wire.Fingerprint) (*Registry, error) {
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
		p, err := c.peer([]string{addr}, pin, nil)
		if err != nil {
			return nil, err
		}
		if _, err := p.get(ctx); err != nil {
			var mm *identity.MismatchError
			if errors.As(err, &mm) && pinnedByFile {
				return nil, &identity.ChangedError{Name: addr, Pinned: mm.Want, Presented: mm.Got, File: kh.Path()}
			}
			return nil, fmt.Errorf("registry %s: %w", addr, err)
		}
		return &Registry{addr: addr, p: p}, nil
	}

	// First use: accept what the registry presents, then pin it.
	var seen wire.Fingerprint
	first, err := c.peer([]string{addr}, wire.Fingerprint{}, func(fp wire.Fingerprint) error {
		seen = fp
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := first.get(ctx); err != nil {
		return nil, fmt.Errorf("registry %s: %w", addr, err)
	}
	first.close()
	if kh != nil {
		if err := kh.Check(addr, seen); err != nil {
			return nil, err
		}
	}
	return c.Registry(ctx, addr, seen)
}

// Addr returns the address the registry was opened with.
func (r *Registry) Addr() string { return r.addr }

// Fingerprint returns the registry's fingerprint (pinned).
func (r *Registry) Fingerprint() wire.Fingerprint { return r.p.pin }

// Register lists a group and starts its lease. The fingerprint listed is
// this client's. Errors: ErrUnauthorized (another key owns the UUID),
// ErrUnavailable (the registry is full), ErrBadRequest, ErrTooLarge.
func (r *Registry) Register(ctx context.Context, reg wire.Register) (wire.Lease, error) {
	var l wire.Lease
	err := r.p.single(ctx, wire.OpRegister, reg, &l)
	return l, err
}

// Renew extends a lease. Errors: ErrEpochMismatch (the registry restarted)
// and ErrNotFound (the lease lapsed) both mean: Register again;
// ErrUnauthorized (another key owns the UUID).
func (r *Registry) Renew(ctx context.Context, rn wire.Renew) (wire.Lease, error) {
	var l wire.Lease
	err := r.p.single(ctx, wire.OpRenew, rn, &l)
	return l, err
}

// Deregister removes a group at once. Removing an unlisted group succeeds.
// Errors: ErrUnauthorized (another key owns the UUID).
func (r *Registry) Deregister(ctx context.Context, group wire.UUID) error {
	var res struct{}
	return r.p.single(ctx, wire.OpDeregister, wire.Deregister{Group: group}, &res)
}

// Bounds on a listing, against a registry that would page forever.
const (
	maxListed    = 1 << 16 // groups in one listing
	maxListPages = 4096
)

// List returns every group whose lease is alive, sorted by name, reading
// the registry's listing page by page (PROTOCOL.md §7.4); the result has
// no Next. If the registry restarts while the pages are read (its epoch
// changes), the listing starts over, once. Errors: those of a call, and
// ErrProtocol for a registry whose pages go backwards, or that lists more
// than 65,536 groups.
func (r *Registry) List(ctx context.Context) (wire.Groups, error) {
	for restarts := 0; ; restarts++ {
		all, err := r.list(ctx)
		if errors.Is(err, errListRestarted) && restarts == 0 {
			continue
		}
		return all, err
	}
}

var errListRestarted = errors.New("the registry restarted while its listing was read")

func (r *Registry) list(ctx context.Context) (wire.Groups, error) {
	var all wire.Groups
	var after []byte
	for pages := 0; ; pages++ {
		var g wire.Groups
		if err := r.p.single(ctx, wire.OpList, wire.List{After: after}, &g); err != nil {
			return wire.Groups{}, err
		}
		switch {
		case pages == 0:
			all.Epoch = g.Epoch
		case g.Epoch != all.Epoch:
			return wire.Groups{}, fmt.Errorf("list: %w", errListRestarted)
		}
		for _, e := range g.Groups {
			if n := len(all.Groups); n > 0 && listedOrder(&all.Groups[n-1], &e) >= 0 {
				return wire.Groups{}, fmt.Errorf("list: group %s is not after %s in name order: %w", e.Group, all.Groups[n-1].Group, ErrProtocol)
			}
			all.Groups = append(all.Groups, e)
		}
		if len(g.Next) == 0 {
			return all, nil
		}
		if len(g.Groups) == 0 || pages+1 >= maxListPages || len(all.Groups) > maxListed {
			return wire.Groups{}, fmt.Errorf("list: a listing of more than %d groups or %d pages, or an empty page with more to come: %w", maxListed, maxListPages, ErrProtocol)
		}
		after = g.Next
	}
}

// listedOrder compares two entries in the order of a listing: by name,
// then UUID.
func listedOrder(a, b *wire.GroupEntry) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), bytes.Compare(a.Group[:], b.Group[:]))
}
