package client

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/huddle-chat/huddle/wire"
)

// Registries is a set of registries asked together, so that none of them is
// a single point of failure: List asks them all at once, Merge combines
// what they answered, and a Group made from the set asks each of them where
// its daemon went when it cannot be reached.
type Registries []*Registry

// RegistryListing is one registry's answer to List: its listing, or why it
// gave none.
type RegistryListing struct {
	Registry *Registry // the registry asked
	Listing  Listing   // valid when Err is nil
	Err      error     // why it gave no listing (ErrUnreachable...)
}

// ListedGroup is one group of a merged listing.
type ListedGroup struct {
	GroupEntry
	// ListedBy are the fingerprints of the registries that list the group
	// under this daemon fingerprint, in the order they were asked.
	ListedBy []Fingerprint
	// OtherNames are the names other registries list the group under (its
	// UUID and daemon key, or set of replicas), besides Name, in the order
	// found: each is a registry's word, as Name is. A program resolving a
	// name takes them as the group's too: a rogue registry renaming a group
	// (its entry's lease the longest, Name is its name) and listing one of
	// its own under the real name otherwise made that one the name's only
	// group, no duplicate to tell.
	OtherNames []string
	// MemberAddrs, for a group replicated by a cell, are the addresses
	// the registries list each member's key at (as a replica, or as the
	// leader), the entry's own first, then the other registries' in the
	// order they were asked. A handle made with GroupListed dials a
	// member at each of them in turn. Why: every registry's word on where
	// the members are is a registry's word, and a rogue registry listing
	// the real members' keys at addresses of its own, its lease the
	// longest, had the merged entry name only those: the keys are
	// checked, so the group is not impersonated, but it was not reached
	// at all (until session 15).
	MemberAddrs map[Fingerprint][]string
}

// List asks every registry of the set at once and returns their answers
// in the set's order. It returns when every registry answered or failed,
// each bounded by ctx.
func (rs Registries) List(ctx context.Context) []RegistryListing {
	out := make([]RegistryListing, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		out[i].Registry = r
		wg.Go(func() { out[i].Listing, out[i].Err = r.List(ctx) })
	}
	wg.Wait()
	return out
}

// ErrNoListing is returned by Listed when no registry of a set answered. It
// is joined with every registry's error.
var ErrNoListing = errors.New("no registry answered")

// Listed returns the merge of the answers that succeeded (see Merge), or,
// when none did, an error wrapping ErrNoListing joined with each registry's
// error (so errors.Is finds ErrUnreachable or an *identity.ChangedError).
func Listed(answers []RegistryListing) ([]ListedGroup, error) {
	var errs []error
	ok := false
	for _, a := range answers {
		if a.Err != nil {
			errs = append(errs, fmt.Errorf("registry %s: %w", wire.Shown(a.Registry.Addr()), a.Err))
			continue
		}
		ok = true
	}
	if !ok {
		return nil, allOf(append([]error{ErrNoListing}, errs...))
	}
	return Merge(answers), nil
}

// Merge combines the listings of several registries into one entry per
// group UUID and daemon fingerprint. The same UUID under two fingerprints
// stays two entries: a group's identity is both (someone else may register
// its UUID elsewhere), and a client choosing between them must say so.
// Of one group's entries, the one with the most time left on its lease (the
// latest renewed) gives the counters and the first addresses; the others'
// addresses follow. A group replicated by a cell is one entry per UUID and
// set of replicas, whichever leader each registry names: the entry with
// the most time left is taken whole. The names the others give a group,
// if not its entry's, are its OtherNames. Failed answers are skipped, and
// a registry's entries of a group after its first.
// Groups come sorted by name, then UUID, then fingerprint.
func Merge(answers []RegistryListing) []ListedGroup {
	type key struct {
		group UUID
		fp    Fingerprint
		// cell: fp names a set of replicas (ReplicaSet), not a daemon.
		// A listing may claim any key for a group of one daemon, the
		// hash of a real cell's replicas among them: the two were taken
		// for one group, and a rogue registry listing so, its lease the
		// longer, had the real cell's entry merged into its own, whose
		// member addresses were never made (a panic) until session 15.
		cell bool
	}
	byKey := make(map[key]*ListedGroup)
	var out []*ListedGroup
	names := make(map[*ListedGroup][]string) // every name each is listed under
	for _, a := range answers {
		if a.Err != nil {
			continue
		}
		from := a.Registry.Fingerprint()
		listed := make(map[key]bool) // by this registry
		for _, e := range a.Listing.Groups {
			k := key{group: e.Group, fp: e.Fingerprint}
			if len(e.Replicas) > 0 {
				// A cell's group: the registries may name different
				// leaders; entries with the same replicas are one group.
				k.fp, k.cell = ReplicaSet(e.Replicas), true
			}
			if listed[k] {
				// A registry lists a group once. A rogue one listing a
				// real group again and again, 16 new addresses each time
				// (a page holds thousands), put them all before the real
				// ones (each dialed for up to 5 s in turn), had the
				// union compare each with all the others, and gave the
				// group a name per entry.
				continue
			}
			listed[k] = true
			g := byKey[k]
			switch {
			case g == nil:
				g = &ListedGroup{GroupEntry: e}
				g.Addrs = slices.Clone(e.Addrs)
				byKey[k] = g
				out = append(out, g)
				if len(e.Replicas) > 0 {
					g.MemberAddrs = make(map[Fingerprint][]string)
					AddMemberAddrs(g.MemberAddrs, e)
				}
			case len(e.Replicas) > 0:
				// The latest registration's view of the leader, whole:
				// one leader's addresses never go with another's key.
				// Every registry's addresses of each member are kept
				// beside it, the latest's first.
				if e.ExpiresMS > g.ExpiresMS {
					g.GroupEntry = e
					g.Addrs = slices.Clone(e.Addrs)
					at := make(map[Fingerprint][]string)
					AddMemberAddrs(at, e)
					for fp, addrs := range g.MemberAddrs {
						at[fp] = unionAddrs(at[fp], addrs)
					}
					g.MemberAddrs = at
				} else {
					AddMemberAddrs(g.MemberAddrs, e)
				}
			default:
				addrs := g.Addrs
				if e.ExpiresMS > g.ExpiresMS {
					addrs = e.Addrs
					g.GroupEntry = e
				}
				g.Addrs = unionAddrs(addrs, g.Addrs, e.Addrs)
			}
			if !slices.Contains(g.ListedBy, from) {
				g.ListedBy = append(g.ListedBy, from)
			}
			if !slices.Contains(names[g], e.Name) {
				names[g] = append(names[g], e.Name)
			}
		}
	}
	for _, g := range out {
		if ns := names[g]; len(ns) > 1 {
			g.OtherNames = slices.DeleteFunc(ns, func(n string) bool { return n == g.Name })
		}
	}
	slices.SortFunc(out, func(a, b *ListedGroup) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), bytes.Compare(a.Group[:], b.Group[:]), bytes.Compare(a.Fingerprint[:], b.Fingerprint[:]))
	})
	groups := make([]ListedGroup, len(out))
	for i, g := range out {
		groups[i] = *g
	}
	return groups
}

// unionAddrs returns first's addresses, then the others' not yet listed.
func unionAddrs(first []string, more ...[]string) []string {
	out := slices.Clone(first)
	for _, m := range more {
		for _, a := range m {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// AddMemberAddrs adds to at the addresses e, a cell's group's entry,
// lists each member at: the leader's (e.Addrs, under e.Fingerprint), then
// each replica's (Replica.Addr), each once, after those at holds. A
// registry's entry holds at most 16 + 9 addresses (wire's bounds), so
// each member's list grows by at most 25 per entry. Merge gathers
// ListedGroup.MemberAddrs with it; a program that merges listings its own
// way (huddle web) gathers them with it too, so that both dial a member,
// and ask it for the cell's members (CellMembers), at the same addresses.
func AddMemberAddrs(at map[Fingerprint][]string, e GroupEntry) {
	at[e.Fingerprint] = unionAddrs(at[e.Fingerprint], e.Addrs)
	for _, r := range e.Replicas {
		at[r.Fingerprint] = unionAddrs(at[r.Fingerprint], []string{r.Addr})
	}
}

// Group returns a handle on a group listed by the set: like Client.Group,
// and when its daemon cannot be reached, long-lived calls (Watch) ask the
// set's registries, in order, for the daemon's current addresses.
// Errors: ErrBadRequest (no registry, or the entry has no fingerprint),
// ErrClosed.
func (rs Registries) Group(e GroupEntry) (*Group, error) {
	return rs.GroupListed(ListedGroup{GroupEntry: e})
}

// GroupListed returns a handle on a group of a merged listing, as Group
// does for its entry; a replicated group's members are dialled at every
// address a registry lists them at (MemberAddrs), each in turn, passing
// over one where another key answers. Errors: as Group's.
func (rs Registries) GroupListed(lg ListedGroup) (*Group, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("group %s: no registry: %w", lg.Group, ErrBadRequest)
	}
	g, err := rs[0].p.c.GroupListed(lg)
	if err != nil {
		return nil, err
	}
	g.regs = slices.Clone(rs)
	return g, nil
}

// ServedBy reports whether the daemon whose key is fp serves e's group as
// listed: it is e's daemon, or one of its replicas. A cell's group is
// listed under its leader's key, which changes with the leadership: a
// group joined through one member is the group joined while another
// leads, and a user naming any member's key names the group.
func ServedBy(e GroupEntry, fp Fingerprint) bool {
	return e.Fingerprint == fp || slices.ContainsFunc(e.Replicas, func(r Replica) bool { return r.Fingerprint == fp })
}

// ReplicaSet names a set of replicas by their keys, whatever their order
// and whichever leads: Merge files a cell's group under its UUID and this
// (apart from groups of one daemon, whose keys share its space), so that
// registries naming different leaders of one cell list one group. A
// program keeping its own view of several registries' listings (huddle
// web) names cells by it to agree with Merge.
func ReplicaSet(rs []Replica) Fingerprint {
	fps := make([]Fingerprint, len(rs))
	for i, r := range rs {
		fps[i] = r.Fingerprint
	}
	slices.SortFunc(fps, func(a, b Fingerprint) int { return bytes.Compare(a[:], b[:]) })
	h := sha256.New()
	for _, fp := range fps {
		h.Write(fp[:])
	}
	var out Fingerprint
	copy(out[:], h.Sum(nil))
	return out
}

// TrustedCell returns the entry of a cell's group that names, of the
// listings es (of one UUID), only the members whose keys are in keys: the
// replica set a program recorded for the group when the user joined it,
// and kept since from the members' own word (huddle's joined file). Its
// replicas are every listing's members of the set (each once, at the
// address its first listing names), in the reference order; its leader
// (Fingerprint, Addrs) the first listing's whose leader is in the set,
// else the first member found, marked leader by none. The other fields
// are those of that listing. It reports false if no listing names a
// member of the set.
//
// Why: a registry's word on a cell's members is a registry's word. A
// rogue registry listing the group's UUID with a set of one real member's
// key and one of its own (its leader) counted as the group joined, and
// had the client send there; and the members a cell's operator added
// since the join were another key's, the group refused, until the user
// took one (huddle join --daemon).
func TrustedCell(es []GroupEntry, keys []Fingerprint) (GroupEntry, bool) {
	trusted := func(fp Fingerprint) bool { return slices.Contains(keys, fp) }
	var rs []Replica
	led, named := -1, -1
	for i, e := range es {
		for _, r := range e.Replicas {
			if trusted(r.Fingerprint) && !slices.ContainsFunc(rs, func(o Replica) bool { return o.Fingerprint == r.Fingerprint }) {
				rs = append(rs, Replica{Addr: r.Addr, Fingerprint: r.Fingerprint})
			}
		}
		if named < 0 && len(rs) > 0 {
			named = i
		}
		if led < 0 && trusted(e.Fingerprint) {
			led = i
		}
	}
	if len(rs) == 0 {
		return GroupEntry{}, false
	}
	slices.SortFunc(rs, func(a, b Replica) int { return bytes.Compare(a.Fingerprint[:], b.Fingerprint[:]) })
	if led >= 0 {
		out := es[led]
		for i := range rs {
			rs[i].Leader = rs[i].Fingerprint == out.Fingerprint &&
				slices.ContainsFunc(out.Replicas, func(r Replica) bool { return r.Fingerprint == out.Fingerprint && r.Leader })
		}
		out.Replicas = rs
		return out, true
	}
	out := es[named]
	i := slices.IndexFunc(rs, func(r Replica) bool { return ServedBy(out, r.Fingerprint) })
	out.Fingerprint, out.Addrs, out.Replicas = rs[i].Fingerprint, []string{rs[i].Addr}, rs
	return out, true
}
