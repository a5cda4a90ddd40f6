package cell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// TestQuestionsDrawReset: each short question a member asks another (a
// progress question, a members question, a probe) draws, from a member
// restarted in place, a QUIC stateless reset at once, which ends the
// connection dialed to its previous process. A restarted daemon answers
// only packets over 42 bytes so (quic-go's bound), and these questions
// were shorter: they went unanswered until the connection's idle timeout
// (15 s), or the question's own deadline. (Not every time: a packet
// that carries an ACK or a flow-control update beside the kind byte is
// long enough. Each is asked twice, on two connections.)
//
// No other question may reach the restarted member first: one left
// unanswered while it was down drops the connection (Transport.unanswered),
// and the test's question then dials anew, the old connection ended as
// "connection replaced". A member that knows of no leader asks the others
// every second (learn.go): under load an election came while the follower
// crashed, the leader lost its lease, and its members question ended the
// connection (the probe of the 6th round, at a tenth of the CPU: "ended
// after 15µs by connection replaced").
func TestQuestionsDrawReset(t *testing.T) {
	c := newTestCell(t, 3, false, func(cfg *Config) {
		steadyLeader(cfg)
		cfg.keyCheckEvery = time.Hour // no members question but the test's
		cfg.learnEvery = time.Hour    // nor a leaderless member's
	})
	l := c.leader()
	f := c.follower()
	asks := []struct {
		name string
		ask  func(ctx context.Context) error
	}{
		{"progress", func(ctx context.Context) error { _, _, _, err := l.node.progress(ctx, f.addr); return err }},
		{"members", func(ctx context.Context) error { _, err := l.node.askMembers(ctx, f.addr); return err }},
		{"probe", func(context.Context) error { l.node.tr.probe(f.id.Fingerprint()); return nil }},
	}
	for _, q := range slices.Concat(asks, asks) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		d, _, err := l.node.tr.conn(ctx, f.addr)
		if err != nil {
			cancel()
			t.Fatalf("%s: dial the follower: %v", q.name, err)
		}
		// The follower restarts once the connection is as members' are
		// between questions: the follower took it (its handshake done),
		// and it is quiet. One dialed just now (the follower restarted in
		// the round before) may be neither. Until the follower's last
		// handshake packet reaches the leader, the leader sends its own
		// beside the question, in long-header datagrams, which a process
		// that does not know the connection drops without a reset: the
		// idle timeout ended it instead (1 run in ~150 under load). And
		// while a packet is left to acknowledge or to send again, the
		// leader's packets carry it beside the question, long enough to
		// draw a reset padded or not: the test would not tell.
		waitUntil(t, q.name+": the follower to take the leader's connection", func() bool {
			f.node.tr.mu.Lock()
			defer f.node.tr.mu.Unlock()
			for c, in := range f.node.tr.in {
				if in.peer == l.id.Fingerprint() && c.Context().Err() == nil {
					return true
				}
			}
			return false
		})
		waitQuiet(t, d.conn)
		old := d.conn
		f.crash()
		stop := standIn(t, f)
		start := time.Now()
		err = q.ask(ctx)
		select {
		case <-old.Context().Done():
		case <-ctx.Done():
		}
		cancel()
		t.Logf("%s: ended after %v by %v (question: %v)", q.name, time.Since(start), context.Cause(old.Context()), err)
		var reset *quic.StatelessResetError
		if cause := context.Cause(old.Context()); !errors.As(cause, &reset) {
			t.Errorf("%s: the connection to the restarted member ended by %v (the question: %v), want a stateless reset", q.name, cause, err)
		}
		stop()
		c.start(f, false)
	}
}

// waitQuiet waits until conn has sent and received nothing for 100 ms,
// four times QUIC's delay of an acknowledgement (25 ms): neither end has a
// packet left to acknowledge or to send again.
func waitQuiet(t *testing.T, conn *quic.Conn) {
	t.Helper()
	last, since := conn.ConnectionStats(), time.Now()
	waitUntil(t, "the connection quiet", func() bool {
		if s := conn.ConnectionStats(); s.PacketsSent != last.PacketsSent || s.PacketsReceived != last.PacketsReceived {
			last, since = s, time.Now()
		}
		return time.Since(since) >= 100*time.Millisecond
	})
}

// standIn listens at m's address, crashed, as m's next process does
// before it knows any connection: it answers each packet of a connection
// it does not know, if long enough, with a stateless reset (m's key). It
// returns what closes it (once or more), which the test's cleanup calls
// too.
func standIn(t *testing.T, m *testMember) (stop func()) {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp, StatelessResetKey: &m.reset}
	stop = sync.OnceFunc(func() {
		tr.Close()
		udp.Close()
	})
	t.Cleanup(stop)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tr.ReadNonQUICPacket(ctx, nil) // starts its reading of packets, and returns
	return stop
}

// TestQuestionsPaddedOrNot: a member answers a progress and a members
// question alike whether the kind comes alone (daemons before session 15)
// or padded to questionSize: it reads nothing after the kind, as those
// daemons did not, so that they answer the padded questions too.
func TestQuestionsPaddedOrNot(t *testing.T) {
	c := newTestCell(t, 3, false, nil)
	l := c.leader()
	f := c.follower()
	answer := func(first []byte, size int) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		str, _, err := l.node.tr.open(ctx, f.addr, first)
		if err != nil {
			t.Fatalf("ask %q: %v", first[0], err)
		}
		defer str.CancelRead(streamClosed)
		defer str.Close()
		str.SetReadDeadline(time.Now().Add(waitTimeout))
		b, err := io.ReadAll(io.LimitReader(str, int64(size)+1))
		if err != nil {
			t.Fatalf("ask %q (%d bytes): %v", first[0], len(first), err)
		}
		return b
	}
	for _, first := range [][]byte{{kindProgress}, question(kindProgress)} {
		if b := answer(first, progressSize); len(b) != progressSize {
			t.Errorf("progress asked in %d bytes: answered %d bytes, want %d", len(first), len(b), progressSize)
		}
	}
	var lists [][]Peer
	for _, first := range [][]byte{{kindMembers}, question(kindMembers)} {
		ms, err := decodeMembers(answer(first, 1+maxLearnedMembers*(32+1+maxLearnedAddr)))
		if err != nil || len(ms) != 3 {
			t.Fatalf("members asked in %d bytes: %v, %v; want the 3 members", len(first), ms, err)
		}
		lists = append(lists, ms)
	}
	if !slices.Equal(lists[0], lists[1]) {
		t.Errorf("members answered %v to the kind alone, %v to the padded question", lists[0], lists[1])
	}
}

// TestMembersAfterRestart: a member killed and restarted answers the next
// members question after one goes unanswered, as it does a progress
// question (TestProgressAfterRestart): a members question unanswered by
// its deadline drops the connection too. Before, it did not, and every
// members question on the kept connection went unanswered until its idle
// timeout (15 s) when no stateless reset ended it (the member restarted
// with another reset key here; in a cell, one that crashed just as the
// connection's handshake finished, whose packets then had a long header).
func TestMembersAfterRestart(t *testing.T) {
	askAfterRestart(t, func(ctx context.Context, l, o *testMember) error {
		ms, err := l.node.askMembers(ctx, o.addr)
		if err == nil && len(ms) != 3 {
			return fmt.Errorf("%d members, want 3", len(ms))
		}
		return err
	})
}

// TestCatchUpAfterRestart: a member killed and restarted answers the next
// catch-up request after one goes unanswered, as it does a progress or
// members question (TestProgressAfterRestart): a catch-up's header
// unanswered by its deadline (the request's, RPCTimeout at most) drops
// the connection too. Before, the header was read for up to 30 s on the
// connection kept, and each request on it went unanswered until its idle
// timeout (15 s) when no stateless reset ended it; a catch-up at start did
// not ask that member again meanwhile. A member that answers it cannot
// serve (its logs are new here) answered all the same.
func TestCatchUpAfterRestart(t *testing.T) {
	askAfterRestart(t, func(ctx context.Context, l, o *testMember) error {
		g := l.node.fsm.group(l.group("lobby").ID)
		s, err := l.node.askCatchUp(ctx, Peer{Addr: o.addr, Fingerprint: o.id.Fingerprint()}, g, 0, 1)
		switch {
		case err == nil:
			s.close()
		case errors.Is(err, errCatchUp): // answered
			err = nil
		}
		return err
	})
}
