//go:build linux

package conformance

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

// testCellRegistration: §7.1 and §13's rules for a cell's group at the
// registry, from keys of our own standing for a cell's members: the group
// is listed once, under its leader only once the leader's own key
// registered it; any replica's key may register it; a member's
// deregistration leaves it listed for the others; and the refusals of
// replicas no cell has.
func testCellRegistration(t *testing.T, s *single) {
	ctx := ctxT(t)
	a, b, stranger := newPeer(t), newPeer(t), newPeer(t)
	ac := a.mustDial(t, s.registry.addr, s.registry.fp)
	bc := b.mustDial(t, s.registry.addr, s.registry.fp)
	sc := stranger.mustDial(t, s.registry.addr, s.registry.fp)
	g := newUUID()
	const addrA, addrB = "10.0.0.1:7001", "10.0.0.2:7002"
	rep := func(addr string, p *peer, leader bool) cmap {
		r := cmap{1: addr, 2: p.fp[:]}
		if leader {
			r[3] = true
		}
		return r
	}
	register := func(c *conn, addr string, replicas ...any) (cmap, error) {
		return c.call(ctx, 1, cmap{1: g, 2: "cell group", 3: []any{addr}, 5: uint64(1), 6: uint64(7), 7: replicas})
	}
	listed := func() *groupEntry { t.Helper(); return mustListed(t, ac, g) }
	leaderOf := func(e *groupEntry) *replica {
		if i := slices.IndexFunc(e.replicas, func(r replica) bool { return r.leader }); i >= 0 {
			return &e.replicas[i]
		}
		return nil
	}

	// Replicas no cell has.
	var ten []any
	for i := range 10 {
		ten = append(ten, cmap{1: "10.0.1.1:7000", 2: append(bytes.Repeat([]byte{1}, 31), byte(i))})
	}
	ten[0] = rep(addrA, a, false)
	for _, tc := range []struct {
		name     string
		replicas []any
		code     uint64
	}{
		{"replicas without the registering key", []any{rep(addrB, b, false)}, codeBadRequest},
		{"two leaders", []any{rep(addrA, a, true), rep(addrB, b, true)}, codeBadRequest},
		{"a replica without a fingerprint", []any{rep(addrA, a, false), cmap{1: addrB}}, codeBadRequest},
		{"a replica whose address is not host:port", []any{rep(addrA, a, false), rep("10.0.0.2", b, false)}, codeBadRequest},
		{"10 replicas", ten, codeTooLarge},
	} {
		_, err := register(ac, addrA, tc.replicas...)
		wantCode(t, "register with "+tc.name, err, tc.code)
	}
	if e := listed(); e != nil {
		t.Fatalf("listed after refused registrations: %+v", e)
	}

	// A registers first, naming B the leader: B has not registered the
	// group, so no leader is listed yet, and the entry is A's.
	if _, err := register(ac, addrA, rep(addrA, a, false), rep(addrB, b, true)); err != nil {
		t.Fatal(err)
	}
	e := listed()
	if e == nil || e.fp != a.fp || !slices.Equal(e.addrs, []string{addrA}) || len(e.replicas) != 2 || leaderOf(e) != nil {
		t.Fatalf("after A's registration: %+v; want A's entry, two replicas, no leader marked", e)
	}
	// B, a replica, may register it: the entry is the leader's now.
	if _, err := register(bc, addrB, rep(addrA, a, false), rep(addrB, b, true)); err != nil {
		t.Fatal(err)
	}
	e = listed()
	if e == nil || e.fp != b.fp || !slices.Equal(e.addrs, []string{addrB}) || leaderOf(e) == nil || leaderOf(e).fp != b.fp {
		t.Fatalf("after the leader's registration: %+v; want B's entry, B the leader", e)
	}
	// §7.2, §7.3: a renew without an epoch, and a deregister without a
	// group, are bad_request; a renew in another epoch is epoch_mismatch,
	// whoever asks (the epoch is checked first).
	_, err := bc.call(ctx, 2, cmap{1: g})
	wantCode(t, "a renew without an epoch", err, codeBadRequest)
	_, err = bc.call(ctx, 3, cmap{})
	wantCode(t, "a deregister without a group", err, codeBadRequest)
	body, err := bc.call(ctx, 2, cmap{1: g, 2: uint64(1)})
	if err == nil {
		t.Fatalf("a renew in epoch 1: %v; want epoch_mismatch", body)
	}
	epoch := wantCode(t, "a renew in epoch 1", err, codeEpochMismatch).epoch
	_, err = sc.call(ctx, 2, cmap{1: g, 2: epoch ^ 1})
	wantCode(t, "a stranger's renew in another epoch", err, codeEpochMismatch)
	// A key that is no replica may not.
	_, err = register(sc, "10.0.0.3:7003", rep("10.0.0.3:7003", stranger, true), rep(addrA, a, false), rep(addrB, b, false))
	wantCode(t, "a registration by a key that is no replica", err, codeUnauthorized)
	_, err = sc.call(ctx, 3, cmap{1: g})
	wantCode(t, "a deregistration by a key that is no replica", err, codeUnauthorized)
	_, err = sc.call(ctx, 2, cmap{1: g, 2: epoch})
	wantCode(t, "a renewal by a key that is no replica", err, codeUnauthorized)
	// A registration naming no leader keeps the one listed.
	if _, err := register(ac, addrA, rep(addrA, a, false), rep(addrB, b, false)); err != nil {
		t.Fatal(err)
	}
	if e = listed(); e == nil || e.fp != b.fp || leaderOf(e) == nil || leaderOf(e).fp != b.fp {
		t.Errorf("after a registration naming no leader: %+v; want B still listed as the leader", e)
	}
	// The counters are the leader's: a member that does not lead raises
	// last_seq, never lowers it, and leaves members (§13).
	counts := func(c *conn, addr string, members, last uint64) {
		t.Helper()
		if _, err := c.call(ctx, 1, cmap{1: g, 2: "cell group", 3: []any{addr}, 5: members, 6: last,
			7: []any{rep(addrA, a, false), rep(addrB, b, true)}}); err != nil {
			t.Fatal(err)
		}
	}
	counts(bc, addrB, 4, 20)
	counts(ac, addrA, 9, 15)
	if e = listed(); e == nil || e.members != 4 || e.lastSeq != 20 {
		t.Errorf("after a lagging member's registration: %+v; want the leader's 4 members, last_seq 20", e)
	}
	counts(ac, addrA, 9, 25)
	if e = listed(); e == nil || e.members != 4 || e.lastSeq != 25 {
		t.Errorf("after a member's registration ahead of the leader's: %+v; want 4 members, last_seq 25", e)
	}
	// The leader deregisters: A registered since, so the group stays
	// listed, under no leader.
	if _, err := bc.call(ctx, 3, cmap{1: g}); err != nil {
		t.Fatal(err)
	}
	if e = listed(); e == nil || leaderOf(e) != nil || e.fp != a.fp || !slices.Equal(e.addrs, []string{addrA}) {
		t.Errorf("after the leader's deregistration: %+v; want A's entry, no leader", e)
	}
	// Then A: nobody holds it.
	if _, err := ac.call(ctx, 3, cmap{1: g}); err != nil {
		t.Fatal(err)
	}
	if e = listed(); e != nil {
		t.Errorf("after every member's deregistration: %+v; want it gone", e)
	}

	// A member the cell's registrations stop listing (removed from the
	// cell) loses its right to the group, though it registered it first.
	d := newPeer(t)
	dc := d.mustDial(t, s.registry.addr, s.registry.fp)
	const addrD = "10.0.0.4:7004"
	g2 := newUUID()
	reg2 := func(c *conn, addr string, replicas ...any) error {
		_, err := c.call(ctx, 1, cmap{1: g2, 2: "cell group", 3: []any{addr}, 7: replicas})
		return err
	}
	if err := reg2(ac, addrA, rep(addrA, a, false), rep(addrB, b, true)); err != nil {
		t.Fatal(err)
	}
	if err := reg2(bc, addrB, rep(addrB, b, true), rep(addrD, d, false)); err != nil {
		t.Fatal(err)
	}
	err = reg2(ac, addrA, rep(addrA, a, true), rep(addrB, b, false))
	wantCode(t, "a registration by the first registrant the members no longer list", err, codeUnauthorized)
	_, err = ac.call(ctx, 3, cmap{1: g2})
	wantCode(t, "a deregistration by the first registrant the members no longer list", err, codeUnauthorized)
	if e := mustListed(t, ac, g2); e == nil || e.fp != b.fp || leaderOf(e) == nil || leaderOf(e).fp != b.fp {
		t.Errorf("after the removed member's attempts: %+v; want B's entry, B the leader", e)
	}
	if err := reg2(dc, addrD, rep(addrB, b, true), rep(addrD, d, false)); err != nil {
		t.Errorf("a registration by a member the latest registration lists: %v", err)
	}
	for _, c := range []*conn{bc, dc} {
		if _, err := c.call(ctx, 3, cmap{1: g2}); err != nil {
			t.Fatal(err)
		}
	}
	if e := mustListed(t, ac, g2); e != nil {
		t.Errorf("after its members' deregistrations: %+v; want it gone", e)
	}
}

// testListOrder: §7.4's name order is the names' UTF-8 bytes compared as
// unsigned bytes, then the UUIDs' bytes: "Zulu" before "alpha" before
// "Émile", and two groups of one name by UUID. A client that checks each
// page continues in name order must compare so.
func testListOrder(t *testing.T, s *single) {
	ctx := ctxT(t)
	c := newPeer(t).mustDial(t, s.registry.addr, s.registry.fp)
	alpha1, alpha2 := newUUID(), newUUID()
	if bytes.Compare(alpha1, alpha2) > 0 {
		alpha1, alpha2 = alpha2, alpha1
	}
	want := []struct {
		name  string
		group []byte
	}{{"Zulu", newUUID()}, {"alpha", alpha1}, {"alpha", alpha2}, {"Émile", newUUID()}}
	for _, i := range []int{3, 2, 0, 1} {
		if _, err := c.call(ctx, 1, cmap{1: want[i].group, 2: want[i].name, 4: uint64(7000)}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := c.listAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range all {
		for i, w := range want {
			if bytes.Equal(e.group, w.group) {
				got = append(got, fmt.Sprintf("%d %s", i, e.name))
			}
		}
	}
	if !slices.Equal(got, []string{"0 Zulu", "1 alpha", "2 alpha", "3 Émile"}) {
		t.Errorf("listed in the order %v; want Zulu, alpha (lower UUID), alpha, Émile", got)
	}
	for _, w := range want {
		if _, err := c.call(ctx, 3, cmap{1: w.group}); err != nil {
			t.Fatal(err)
		}
	}
}
