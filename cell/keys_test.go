package cell

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/identity"
)

// askAs opens a stream of kind to the member at addr on tr, writes req and
// reads the answer's first byte: nil if one came (the member served it).
func askAs(t *testing.T, tr *Transport, addr string, kind byte, req []byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	str, _, err := tr.open(ctx, addr, kind)
	if err != nil {
		return err
	}
	defer str.CancelRead(streamClosed)
	str.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := str.Write(req); err != nil {
		return err
	}
	str.Close()
	_, err = io.ReadFull(str, make([]byte, 1))
	return err
}

// raftRefused dials m's raft listener with id's key, as a member would,
// and reports whether m refused it: the dial failed, or m ended the
// connection unasked (after the handshake, TLS 1.3's client has sent its
// certificate, and learns of its refusal on its first read).
func raftRefused(t *testing.T, id *identity.Identity, m *testMember) (bool, error) {
	t.Helper()
	tc := id.ClientTLS(m.id.Fingerprint(), nil)
	tc.NextProtos = []string{RaftALPN}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", m.addr, tc)
	if err != nil {
		return true, err
	}
	defer c.Close()
	return endedByPeer(c)
}

// TestRemovedMemberRefused: a member removed from the cell (huddle cell
// remove) is no member to those that remain, whose flags (Config.Peers)
// still name it, as an operator replacing a host leaves them: it can open
// no raft connection to any of them, and is served nothing on the cell's
// QUIC ALPN (a catch-up, a member's progress, the members), neither on
// the connections it held from before its removal nor on new ones.
// (Every member whose flags named it accepted it until restarted with
// other flags, until this test's commit.)
func TestRemovedMemberRefused(t *testing.T) {
	c := newTestCell(t, 3, false, nil)
	d := c.addMember(false) // so that three remain; every member's flags but d's name the one removed
	gone := c.followers(1, d)[0]
	g := c.leader().group("lobby")
	c.sendMany(g.ID, 0, 10)
	var remaining []*testMember
	for _, m := range c.members {
		if m != gone {
			remaining = append(remaining, m)
		}
	}
	catchUp := make([]byte, catchUpRequestSize)
	copy(catchUp[:16], g.ID[:])
	binary.LittleEndian.PutUint64(catchUp[16:], g.Epoch)
	binary.LittleEndian.PutUint64(catchUp[32:], 10)
	asks := []struct {
		name string
		kind byte
		req  []byte
	}{
		{"a catch-up", kindCatchUp, catchUp},
		{"its progress", kindProgress, nil},
		{"the members", kindMembers, nil},
	}
	// A transport of the test's with the removed member's key, beside
	// the removed member's own (which holds connections from before).
	fresh, _ := newTransport(t, gone.id, c.peers, false)
	for _, m := range remaining {
		for _, a := range asks {
			if err := askAs(t, gone.node.tr, m.addr, a.kind, a.req); err != nil {
				t.Fatalf("before its removal, %s asked %s for %s: %v", gone.addr, m.addr, a.name, err)
			}
		}
	}

	c.removeMember(gone)
	removal := c.leader().node.raft.LastIndex() // the removal's entry, or after it
	for _, m := range remaining {
		waitUntil(t, m.addr+" to apply the removal of "+gone.addr, func() bool { return m.node.raft.AppliedIndex() >= removal })
	}
	for _, m := range remaining {
		if refused, err := raftRefused(t, gone.id, m); !refused {
			t.Errorf("%s accepted a raft connection from the member removed: %v", m.addr, err)
		}
		for _, a := range asks {
			if err := askAs(t, gone.node.tr, m.addr, a.kind, a.req); err == nil {
				t.Errorf("%s served the member removed %s", m.addr, a.name)
			}
			if err := askAs(t, fresh, m.addr, a.kind, a.req); err == nil {
				t.Errorf("%s served %s to the removed member's key on a new connection", m.addr, a.name)
			}
		}
	}
	gone.stop()
	c.sendMany(g.ID, 10, 5) // the cell of three goes on
	c.sameLogs(g.ID, 15)
}
