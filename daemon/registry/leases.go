package registry

import (
	"bytes"
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"time"
	"unsafe"

	"github.com/huddle-chat/huddle/wire"
)

// The registry's leases, with what bounds them and what pages them.
//
// Registrations are bounded three ways: MaxGroups in all, and
// MaxGroupsPerKey and MaxGroupsPerAddr for any one key and any one source
// address (an IPv4 address or an IPv6 /64, as for connections), so a peer
// that registers groups by the thousand, under any names, can take at most
// a share of the registry. And the listing is paged (PROTOCOL.md §7.4): a
// client reads every page, in name order, so groups whose names sort first
// cannot push others out of a listing cut at one frame, as they could.

// Listing pages: at most listPageEntries entries, and no more once their
// estimated encoding passes listPageBytes. A page is a reply being built:
// the bound keeps what an unread listing holds small (issue 15.2).
const (
	listPageEntries = 1024
	listPageBytes   = 128 << 10
)

// listPageReply bounds a page's reply memory from above: its entries (the
// strings they share with the leases are not copied) and its frame.
var listPageReply = listPageEntries*int(unsafe.Sizeof(wire.GroupEntry{})) + listPageBytes

// lease is one listed group.
type lease struct {
	entry   wire.GroupEntry // ExpiresMS is filled when listed
	expires time.Time
	from    netip.Prefix // the source address that registered it (addrKey)
	// owner is the key that registered the group first: the per-key limit
	// counts the lease against it. For a group replicated by a cell,
	// replicas are the keys of the cell's members, any of which may
	// register, renew and deregister it (PROTOCOL.md §13); nil otherwise.
	owner    wire.Fingerprint
	replicas map[wire.Fingerprint]bool
	// holders are the replicas that registered the group and have not
	// deregistered it since: a replica that stops (deregisters) leaves the
	// group listed while another holds it.
	holders map[wire.Fingerprint]bool
	// thisHost: the group's daemon registered its port alone from a
	// loopback address, so it runs on this registry's host and its entry
	// lists that loopback address; a client that reached the registry at
	// another of the host's addresses is given that one instead (list).
	thisHost bool
	// logEpoch is the epoch of the group's log its latest registration
	// named (0: none named), which the listed last_seq counts in
	// (keepCounts).
	logEpoch uint64
}

// heldBy reports whether key may register, renew or deregister l: its
// owner, or for a cell's group the replicas its latest registration
// named, and only those. The owner of a cell's group keeps no right of
// its own: a member removed from the cell (its key lost, say) that had
// registered the group first could otherwise register it for as long as
// the other members keep the lease alive, listing itself the leader at
// addresses of its choosing between their registrations (until session
// 20).
func (l *lease) heldBy(key wire.Fingerprint) bool {
	if l.replicas != nil {
		return l.replicas[key]
	}
	return key == l.owner
}

// leaseTable holds the live leases, counts them by key and by source
// address, and keeps them in listing order. The registry's mutex guards it.
type leaseTable struct {
	byID   map[wire.UUID]*lease
	byKey  map[wire.Fingerprint]int
	byAddr map[netip.Prefix]int
	// sorted is the leases in listing order (name, then UUID), rebuilt
	// when the set of leases or a name has changed since (sorted == nil);
	// a renew changes neither.
	sorted []*lease
}

func newLeaseTable() *leaseTable {
	return &leaseTable{byID: make(map[wire.UUID]*lease), byKey: make(map[wire.Fingerprint]int), byAddr: make(map[netip.Prefix]int)}
}

func (t *leaseTable) len() int { return len(t.byID) }

// put adds l, or replaces the lease of the same group (which the same key
// holds).
func (t *leaseTable) put(l *lease) {
	if old := t.byID[l.entry.Group]; old != nil {
		t.remove(old)
	}
	t.byID[l.entry.Group] = l
	t.byKey[l.owner]++
	t.byAddr[l.from]++
	t.sorted = nil
}

// remove drops l.
func (t *leaseTable) remove(l *lease) {
	if t.byID[l.entry.Group] != l {
		return
	}
	delete(t.byID, l.entry.Group)
	if t.byKey[l.owner]--; t.byKey[l.owner] <= 0 {
		delete(t.byKey, l.owner)
	}
	if t.byAddr[l.from]--; t.byAddr[l.from] <= 0 {
		delete(t.byAddr, l.from)
	}
	t.sorted = nil
}

// order returns the leases in listing order.
func (t *leaseTable) order() []*lease {
	if t.sorted == nil {
		t.sorted = make([]*lease, 0, len(t.byID))
		for _, l := range t.byID {
			t.sorted = append(t.sorted, l)
		}
		slices.SortFunc(t.sorted, func(a, b *lease) int { return compareListed(a.entry.Name, a.entry.Group, b.entry.Name, b.entry.Group) })
	}
	return t.sorted
}

func compareListed(aName string, aID wire.UUID, bName string, bID wire.UUID) int {
	return cmp.Or(cmp.Compare(aName, bName), bytes.Compare(aID[:], bID[:]))
}

// page returns the live leases after the cursor after (nil: from the
// first), up to a page, as listed at now, and the cursor of the next page
// (nil if this is the last).
func (t *leaseTable) page(after []byte, now time.Time) ([]wire.GroupEntry, []byte, error) {
	name, id, err := parseListCursor(after)
	if err != nil {
		return nil, nil, err
	}
	order := t.order()
	i := 0
	if after != nil {
		i, _ = slices.BinarySearchFunc(order, struct{}{}, func(l *lease, _ struct{}) int {
			if compareListed(l.entry.Name, l.entry.Group, name, id) <= 0 {
				return -1
			}
			return 1
		})
	}
	var entries []wire.GroupEntry
	size := 64
	for ; i < len(order); i++ {
		l := order[i]
		left := l.expires.Sub(now)
		if left <= 0 {
			continue // the sweep will log and drop it
		}
		if size += entrySize(&l.entry); len(entries) > 0 && (size > listPageBytes || len(entries) == listPageEntries) {
			last := entries[len(entries)-1]
			return entries, listCursor(last.Name, last.Group), nil
		}
		e := l.entry
		e.ExpiresMS = uint64(max(1, left.Milliseconds()))
		entries = append(entries, e)
	}
	return entries, nil, nil
}

// entrySize estimates a GroupEntry's encoding from above.
func entrySize(e *wire.GroupEntry) int {
	n := 128 + len(e.Name)
	for _, a := range e.Addrs {
		n += 3 + len(a)
	}
	for _, r := range e.Replicas {
		n += 48 + len(r.Addr)
	}
	return n
}

// A list cursor is the last entry of a page: its group UUID (16 bytes),
// then its name. Clients treat it as opaque bytes.

func listCursor(name string, id wire.UUID) []byte {
	return append(id[:], name...)
}

var errBadCursor = errors.New("list cursor is not one this registry issued")

func parseListCursor(c []byte) (string, wire.UUID, error) {
	// Empty is absent, the first page (PROTOCOL.md §4, §6: a client sends
	// an empty byte string for an empty field); until session 22 an
	// after of h'' was refused as a cursor the registry did not issue.
	if len(c) == 0 {
		return "", wire.UUID{}, nil
	}
	if len(c) <= 16 || len(c) > 16+wire.MaxNameBytes {
		return "", wire.UUID{}, errBadCursor
	}
	return string(c[16:]), wire.UUID(c[:16]), nil
}
