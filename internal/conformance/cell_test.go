//go:build linux

package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/testport"
)

// cellGroup waits until the registry lists the cell's group with its three
// replicas and a leader, and returns the entry.
func cellGroup(t *testing.T, reg *conn, name string) groupEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		all, err := reg.listAll(ctx)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, g := range all {
			if g.name == name && len(g.replicas) == 3 && slices.ContainsFunc(g.replicas, func(r replica) bool { return r.leader }) {
				return g
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the registry never listed %s with three replicas and a leader: %+v", name, all)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// hop is one answer on the way to an operation's outcome.
type hop struct {
	addr string
	err  error
}

// callFollowing sends raw to the member at first and, while the answer is
// `unavailable`, follows §13: to the leader the Error names, with the
// same request unchanged, or after retry_after_ms to another member. It
// returns the outcome and every refusal on the way.
func callFollowing(ctx context.Context, p *peer, members []replica, first replica, raw []byte) (cmap, []hop, error) {
	var hops []hop
	at := first
	for attempt := 0; attempt < 20; attempt++ {
		c, err := p.dial(ctx, at.addr, at.fp)
		if err != nil {
			return nil, hops, err
		}
		body, err := c.roundTrip(ctx, raw)
		c.close()
		var pe *protoError
		if !errors.As(err, &pe) || pe.code != codeUnavailable {
			return body, hops, err
		}
		hops = append(hops, hop{at.addr, err})
		if pe.leader != nil {
			at = *pe.leader
			continue
		}
		select {
		case <-ctx.Done():
			return nil, hops, ctx.Err()
		case <-time.After(time.Duration(pe.retryAfter) * time.Millisecond):
		}
		at = members[(slices.IndexFunc(members, func(r replica) bool { return r.fp == at.fp })+1)%len(members)]
	}
	return nil, hops, fmt.Errorf("still unavailable after 20 answers: %v", hops)
}

// TestCell runs the client against a cell of three `huddle serve`
// processes (§13): it sends through a follower and follows the leader the
// refusal names by itself, and reads its writes from the followers.
func TestCell(t *testing.T) {
	t.Parallel()
	reg := startHuddle(t, "huddle registry", nil, "registry", "--listen", "127.0.0.1:0", "--no-mdns", "--state-dir", t.TempDir())
	registry := serverFrom(t, reg.waitLine(t, registryLine))

	var peers []string
	var dirs, addrs []string
	for len(addrs) < 3 {
		addr := testport.Cell(t)
		if slices.Contains(addrs, addr) {
			continue // free again once its socket closed: another draw
		}
		dir := t.TempDir()
		fp := huddleID(t, dir)
		dirs, addrs = append(dirs, dir), append(addrs, addr)
		peers = append(peers, "--cell-peer", peerFlag(fp, addr))
	}
	procs := make(map[string]*proc) // by address
	for i := range 3 {
		args := append([]string{"serve", "--no-mdns", "--listen", addrs[i], "--registry", registry.addr,
			"--registry-fingerprint", registry.fp.String(), "--state-dir", dirs[i], "--group", "general", "--max-bytes", "1KiB",
			// Elections only when a member stops: -race on a busy machine
			// can hold a process past the default 300 ms.
			"--cell-heartbeat", "1s"}, peers...)
		procs[addrs[i]] = startHuddle(t, "huddle serve "+addrs[i], nil, args...)
	}

	rc := newPeer(t).mustDial(t, registry.addr, registry.fp)
	entry := cellGroup(t, rc, "general")
	var leader replica
	var followers []replica
	for _, r := range entry.replicas {
		if r.leader {
			leader = r
		} else {
			followers = append(followers, r)
		}
	}
	if !slices.IsSortedFunc(entry.replicas, func(a, b replica) int { return bytes.Compare(a.fp[:], b.fp[:]) }) {
		t.Errorf("listed replicas %+v: want them in fingerprint order (§13)", entry.replicas)
	}
	if !slices.Equal(entry.addrs, []string{leader.addr}) || entry.fp != leader.fp || len(followers) != 2 {
		t.Fatalf("listing %+v: want the leader's address and key, and two followers", entry)
	}
	g := entry.group
	ctx := ctxT(t)
	p := newPeer(t)

	// info on a follower: the cell's members, the leader marked. The
	// registry lists the group once the leader created it: a follower
	// that has not applied it yet says unavailable, with a wait (§13).
	fc := p.mustDial(t, followers[0].addr, followers[0].fp)
	var in info
	err := whileUnavailable(ctx, t, func() (err error) { in, err = fc.info(ctx, g); return err })
	if err != nil {
		t.Fatal(err)
	}
	if in.fp != followers[0].fp || in.epoch == 0 || !slices.Equal(in.replicas, entry.replicas) {
		t.Errorf("info from a follower: key %s, epoch %d, replicas %+v; want %s, nonzero, %+v", in.fp, in.epoch, in.replicas, followers[0].fp, entry.replicas)
	}
	// cell_status of each: one leader, the same one.
	for _, r := range entry.replicas {
		c := p.mustDial(t, r.addr, r.fp)
		st, err := c.call(ctx, opCellStatus, cmap{})
		if err != nil {
			t.Fatalf("cell_status of %s: %v", r.addr, err)
		}
		sr := reader{m: st}
		self, err1 := decodeReplica(sr.cmap(1))
		lead, err2 := decodeReplica(sr.cmap(4))
		state := sr.text(2)
		if err := errors.Join(sr.err, err1, err2); err != nil {
			t.Fatal(err)
		}
		wantState := map[bool]string{true: "leader", false: "follower"}[r.leader]
		if self.fp != r.fp || self.addr != r.addr || state != wantState || lead.fp != leader.fp || !lead.leader {
			t.Errorf("cell_status of %s: self %+v, state %s, leader %+v; want itself, %s, %+v", r.addr, self, state, lead, wantState, leader)
		}
	}

	// join and send through a follower: refused, naming the leader;
	// followed, answered by the leader.
	// The leader named is the listing's, unless the cell elected another
	// meanwhile: then the one it names, a member, the operation follows.
	wantLed := func(what string, hops []hop) {
		t.Helper()
		var pe *protoError
		if len(hops) == 0 || hops[0].addr != followers[0].addr || !errors.As(hops[0].err, &pe) || pe.leader == nil ||
			!pe.leader.leader || pe.leader.fp == followers[0].fp || !slices.ContainsFunc(entry.replicas, func(r replica) bool { return r.fp == pe.leader.fp && r.addr == pe.leader.addr }) {
			t.Errorf("%s through a follower: refusals %+v; want unavailable from %s naming another member as leader", what, hops, followers[0].addr)
		} else if !pe.unchanged {
			// §9: a member that does not lead proposes nothing, and says
			// so (key 7), so a client may take the refusal as final.
			t.Errorf("%s through a follower: refusal %+v not marked unchanged (§9, key 7)", what, pe)
		} else if !sameMembers(pe.replicas, entry.replicas) {
			// §13: the refusal names the members that serve the group,
			// which the client uses in place of the list it holds.
			t.Errorf("%s through a follower: refusal names replicas %+v (key 6); want the cell's %+v", what, pe.replicas, entry.replicas)
		} else if len(hops) != 1 || *pe.leader != leader {
			t.Logf("%s through a follower: refusals %+v (the leader changed since the listing named %s)", what, hops, leader.addr)
		}
	}
	body, hops, err := callFollowing(ctx, p, entry.replicas, followers[0], joinRequest(g, "follower"))
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	wantLed("join", hops)
	if j, err := decodeJoined(body); err != nil || j != (joined{epoch: in.epoch}) {
		t.Errorf("joined %+v, %v; want epoch %d, last 0", j, err, in.epoch)
	}
	// At once on the other follower: a member request from a key whose
	// join the leader acknowledged waits for it to arrive (§13).
	// One lagging by more than that wait says unavailable: ask again.
	f1 := p.mustDial(t, followers[1].addr, followers[1].fp)
	var ms []member
	err = whileUnavailable(ctx, t, func() (err error) { ms, err = f1.members(ctx, g); return err })
	if err != nil || len(ms) != 1 || ms[0].fp != p.fp || ms[0].name != "follower" {
		t.Errorf("members from the other follower right after the join: %+v, %v; want us", ms, err)
	}
	// A key that never joined: only the leader says not_member; a
	// follower answers unavailable, naming the leader, with a wait.
	stranger := newPeer(t)
	_, _, err = stranger.mustDial(t, followers[0].addr, followers[0].fp).fetch(ctx, query{group: g})
	if pe := wantCode(t, "a non-member's fetch from a follower", err, codeUnavailable); pe.retryAfter == 0 || pe.leader == nil || *pe.leader != leader {
		t.Errorf("a non-member's fetch from a follower: retry_after_ms %d, leader %+v; want a wait and %+v", pe.retryAfter, pe.leader, leader)
	}
	_, _, err = stranger.mustDial(t, leader.addr, leader.fp).fetch(ctx, query{group: g})
	wantCode(t, "a non-member's fetch from the leader", err, codeNotMember)

	// §13: only the key of one of the cell's members may change it; a
	// stranger is refused by any member, the leader or not, and nothing
	// changes.
	for _, r := range []replica{followers[0], leader} {
		_, err := stranger.mustDial(t, r.addr, r.fp).call(ctx, opCellAdd, cmap{1: "127.0.0.1:9", 2: stranger.fp[:]})
		wantCode(t, "cell_add by a stranger at "+r.addr, err, codeUnauthorized)
		_, err = stranger.mustDial(t, r.addr, r.fp).call(ctx, opCellRemove, cmap{2: r.fp[:]})
		wantCode(t, "cell_remove by a stranger at "+r.addr, err, codeUnauthorized)
	}

	// A member's key (its daemon's, in its state directory) may ask; the
	// leader refuses, changing nothing, what §13 says it refuses, and an
	// add of a member at its own address changes nothing.
	member := peerOfKeyFile(t, filepath.Join(dirs[slices.Index(addrs, followers[0].addr)], "key.pem"))
	if member.fp != followers[0].fp {
		t.Fatalf("the key in %s's state directory is %s, want %s", followers[0].addr, member.fp, followers[0].fp)
	}
	for _, tc := range []struct {
		name string
		op   uint64
		args cmap
		code uint64
	}{
		{"an address whose port is a service name", opCellAdd, cmap{1: "127.0.0.1:http", 2: stranger.fp[:]}, codeBadRequest},
		{"an address without a port", opCellAdd, cmap{1: "127.0.0.1", 2: stranger.fp[:]}, codeBadRequest},
		{"port 0", opCellAdd, cmap{1: "127.0.0.1:0", 2: stranger.fp[:]}, codeBadRequest},
		{"no address", opCellAdd, cmap{2: stranger.fp[:]}, codeBadRequest},
		{"another member's address", opCellAdd, cmap{1: followers[1].addr, 2: stranger.fp[:]}, codeBadRequest},
		{"an address over 64 bytes", opCellAdd, cmap{1: strings.Repeat("h", 60) + ":7000", 2: stranger.fp[:]}, codeTooLarge},
		{"no fingerprint", opCellAdd, cmap{1: "127.0.0.1:9"}, codeBadRequest},
		{"a removal of no fingerprint", opCellRemove, cmap{}, codeBadRequest},
	} {
		_, _, err := callFollowing(ctx, member, entry.replicas, leader, request(tc.op, tc.args))
		wantCode(t, "a member's cell change with "+tc.name, err, tc.code)
	}
	body, _, err = callFollowing(ctx, member, entry.replicas, leader, request(opCellAdd, cmap{1: followers[1].addr, 2: followers[1].fp[:]}))
	if err != nil {
		t.Fatalf("cell_add of a member at its address: %v", err)
	}
	var changed []replica
	rows, err := body.maps(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range rows {
		r, err := decodeReplica(m)
		if err != nil {
			t.Fatal(err)
		}
		changed = append(changed, r)
	}
	if !sameMembers(changed, entry.replicas) {
		t.Errorf("cell_add of a member at its address: members %+v; want the cell's, unchanged: %+v", changed, entry.replicas)
	}

	// A batch retention could never hold (1 KiB of bodies here) is
	// too_large (§8.5), from the leader, and changes nothing.
	_, _, err = callFollowing(ctx, p, entry.replicas, followers[0],
		sendRequest(g, outgoing{newID(), make([]byte, 600)}, outgoing{newID(), make([]byte, 600)}))
	wantCode(t, "a batch over max_bytes", err, codeTooLarge)

	one := outgoing{newID(), []byte("through a follower")}
	batch := []outgoing{{newID(), []byte("b1")}, {newID(), []byte("b2")}, {newID(), []byte("b3")}}
	var acks []ack
	for _, msgs := range [][]outgoing{{one}, batch} {
		body, hops, err := callFollowing(ctx, p, entry.replicas, followers[0], sendRequest(g, msgs...))
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		wantLed("send", hops)
		s, err := decodeSent(body)
		if err != nil || s.epoch != in.epoch || len(s.acks) != len(msgs) {
			t.Fatalf("sent %+v, %v", s, err)
		}
		acks = append(acks, s.acks...)
	}
	for i, a := range acks {
		if a.seq != uint64(i+1) || a.duplicate || i > 0 && a.ts <= acks[i-1].ts {
			t.Errorf("ack %d: %+v; want seq %d, increasing ts, not duplicate", i, a, i+1)
		}
	}
	// The batch again, through the other follower: its original acks.
	body, _, err = callFollowing(ctx, p, entry.replicas, followers[1], sendRequest(g, batch...))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := decodeSent(body); err != nil || len(s.acks) != 3 || s.acks[0] != (ack{2, acks[1].ts, true}) || s.acks[2] != (ack{4, acks[3].ts, true}) {
		t.Errorf("the batch again: %+v, %v; want its first acks, duplicate", s, err)
	}

	// Read-your-writes from each follower: min_seq = the last acked.
	all := append([]outgoing{one}, batch...)
	for _, f := range followers {
		c := p.mustDial(t, f.addr, f.fp)
		msgs, end, err := c.fetch(ctx, query{group: g, hasAfter: true, epoch: in.epoch, minSeq: 4})
		if err != nil {
			t.Fatalf("fetch from %s: %v", f.addr, err)
		}
		if len(msgs) != 4 || end.next != 4 || end.last != 4 || end.more || end.epoch != in.epoch {
			t.Fatalf("fetch from %s: %v %+v; want 1..4", f.addr, msgs, end)
		}
		for i, m := range msgs {
			want := message{seq: uint64(i + 1), ts: acks[i].ts, id: all[i].id, from: p.fp, name: "follower", body: all[i].body}
			if fmt.Sprint(m) != fmt.Sprint(want) {
				t.Errorf("fetch from %s: %+v, want %+v", f.addr, m, want)
			}
		}
	}
	// A watch on a follower sees what the leader acknowledges next.
	wc := p.mustDial(t, followers[1].addr, followers[1].fp)
	w, err := wc.watch(ctx, query{group: g, after: 4, epoch: in.epoch, minSeq: 4})
	if err != nil {
		t.Fatal(err)
	}
	body, _, err = callFollowing(ctx, p, entry.replicas, leader, sendRequest(g, outgoing{newID(), []byte("live")}))
	if err != nil {
		t.Fatal(err)
	}
	s, err := decodeSent(body)
	if err != nil || len(s.acks) != 1 || s.acks[0].seq != 5 {
		t.Fatalf("send to the leader: %+v, %v", s, err)
	}
	got, err := w.messagesUntil(5)
	if err != nil || len(got) != 1 || got[0].ts != s.acks[0].ts || string(got[0].body) != "live" {
		t.Errorf("watch on a follower: %+v, %v; want message 5", got, err)
	}

	// §13 "Watches across a change of leader": the member serving the
	// watch dies; the client watches again on another member from its
	// cursor, in its epoch: no gap, no repeat, no epoch_mismatch. The
	// leader and the other follower are a majority still.
	w.s.cancel()
	ctx = ctxT(t) // a bound of its own: the test's first is the cell's start's and the calls' above
	// The watched member must still be a follower: killing a leader
	// starts an election, another test's matter.
	st, err := wc.call(ctx, opCellStatus, cmap{})
	if err != nil {
		t.Fatal(err)
	}
	if state, _ := st.text(2); state != "follower" {
		t.Logf("the watched member %s is %s now, not a follower: not killing it", followers[1].addr, state)
		return
	}
	dead := procs[followers[1].addr]
	live := slices.DeleteFunc(slices.Clone(entry.replicas), func(r replica) bool { return r.fp == followers[1].fp })
	if err := dead.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-dead.done
	wc = p.mustDial(t, followers[0].addr, followers[0].fp)
	w, err = wc.watch(ctx, query{group: g, after: 5, epoch: in.epoch, minSeq: 5})
	if err != nil {
		t.Fatalf("a watch resumed on the other follower: %v", err)
	}
	if w.start.epoch != in.epoch || w.start.last < 5 {
		t.Errorf("resumed start %+v; want epoch %d, last 5 at least", w.start, in.epoch)
	}
	body, _, err = callFollowing(ctx, p, live, leader, sendRequest(g, outgoing{newID(), []byte("after the death")}))
	if err != nil {
		t.Fatalf("send with a member dead: %v", err)
	}
	if s, err = decodeSent(body); err != nil || len(s.acks) != 1 || s.acks[0].seq != 6 {
		t.Fatalf("send with a member dead: %+v, %v; want seq 6", s, err)
	}
	got, err = w.messagesUntil(6)
	if err != nil || len(got) != 1 || got[0].seq != 6 || got[0].ts != s.acks[0].ts {
		t.Errorf("the resumed watch: %+v, %v; want message 6 alone", got, err)
	}
	w.s.cancel()
}

// whileUnavailable runs op again while it is answered unavailable with a
// wait (retry_after_ms), after that wait, as §13 asks of a client whose
// member is not ready yet (it has not applied the group, or a join).
func whileUnavailable(ctx context.Context, t *testing.T, op func() error) error {
	t.Helper()
	for {
		err := op()
		var pe *protoError
		if !errors.As(err, &pe) || pe.code != codeUnavailable || pe.retryAfter == 0 {
			return err
		}
		t.Logf("asked again after %d ms: %v", pe.retryAfter, err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(pe.retryAfter) * time.Millisecond):
		}
	}
}

// sameMembers reports whether a and b name the same members (address and
// key), whichever each marks leader.
func sameMembers(a, b []replica) bool {
	key := func(rs []replica) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.addr+" "+r.fp.String())
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}
