package cell

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/identity"
)

// Hostile peers on raft's listener (RaftALPN): a key that is not a
// member's, and a member's key sending what raftNet would never send.
// None may crash a member, wedge its raft, or change its state; after each
// attack the cell still replicates to the member attacked.

// dialRaftAs opens a raft connection to m with id's key, as a member
// would; the caller writes raw frames on it.
func dialRaftAs(t *testing.T, id *identity.Identity, m *testMember) *tls.Conn {
	t.Helper()
	tc := id.ClientTLS(m.id.Fingerprint(), nil)
	tc.NextProtos = []string{RaftALPN}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", m.addr, tc)
	if err != nil {
		t.Fatalf("dial %s's raft listener: %v", m.addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// endedByPeer reports whether the peer ended c: a read returns an error
// that is not the deadline's (waitTimeout: the answer comes at once, the
// deadline only bounds a broken test).
func endedByPeer(c net.Conn) (bool, error) {
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout()), err
}

// rawFrame is a raft frame of typ whose header declares n bytes, followed
// by body (which may be shorter or longer).
func rawFrame(typ byte, n uint32, body []byte) []byte {
	b := append([]byte{typ}, binary.BigEndian.AppendUint32(nil, n)...)
	return append(b, body...)
}

// stillReplicates sends a message through the cell's leader and waits for
// m to hold it: m's raft was neither wedged nor harmed.
func stillReplicates(t *testing.T, c *testCell, m *testMember, seq *uint64) {
	t.Helper()
	l := c.leader()
	g := l.group("lobby")
	*seq++
	c.send(g.ID, alice, [][16]byte{newID(int(*seq))}, []string{"still here"})
	m.waitLast(g.ID, *seq)
}

// TestRaftListenerHostileFrames: a stranger's key is refused before raft
// sees a byte; a member's key sending malformed frames (an unknown type, a
// response where a request belongs, a length over the limit, a body cut
// short, bytes after the last field, more entries than the body holds) has
// its connection closed with no answer; stale requests that decode (an
// AppendEntries and an InstallSnapshot of a past term, the latter from a
// member that does not lead) are answered as refusals and change nothing.
// Through all of it the member attacked keeps replicating.
func TestRaftListenerHostileFrames(t *testing.T) {
	c := newTestCell(t, 3, false, nil)
	l := c.leader()
	f := c.follower()
	var seq uint64
	stillReplicates(t, c, f, &seq)

	// A key the cell does not list: the handshake completes on the
	// client's side (TLS 1.3), then f closes the connection unread.
	stranger, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	sc := dialRaftAs(t, stranger, f)
	frame, _ := appendRequest(nil, &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}})
	sc.Write(frame)
	if ended, err := endedByPeer(sc); !ended {
		t.Fatalf("a stranger's raft connection was kept: read %v", err)
	}

	header := appendHeader(nil, raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte(l.addr)})
	tooManyEntries := binary.AppendUvarint(append(append([]byte(nil), header...), 1, 0, 0, 0, 0), 1000)
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"unknown RPC type", rawFrame(7, uint32(len(header)), header)},
		{"an error response as a request", rawFrame(rpcError, 5, []byte("boom!"))},
		{"a length over the limit", rawFrame(rpcAppendEntries, maxFrameBytes+1, nil)},
		{"a length of 2^32-1", rawFrame(rpcAppendEntries, 1<<32-1, nil)},
		{"a body that ends inside a field", rawFrame(rpcRequestVote, uint32(len(header)+1), append(append([]byte(nil), header...), 0x80))},
		{"bytes after the last field", rawFrame(rpcTimeoutNow, uint32(len(header)+1), append(append([]byte(nil), header...), 0))},
		{"more entries than the body holds", rawFrame(rpcAppendEntries, uint32(len(tooManyEntries)), tooManyEntries)},
		{"a number not in its shortest form", rawFrame(rpcTimeoutNow, uint32(len(header)+1), append([]byte{0x83, 0x00}, header[1:]...))},
		{"an unknown flag", rawFrame(rpcRequestVote, uint32(len(header)+5), append(append([]byte(nil), header...), 1, 0, 0, 0, 0x80))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialRaftAs(t, l.id, f)
			if _, err := conn.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(waitTimeout))
			n, err := conn.Read(make([]byte, 64))
			var ne net.Error
			if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("read %d bytes, %v: want the connection ended with no answer", n, err)
			}
			stillReplicates(t, c, f, &seq)
		})
	}

	// A whole frame, then the connection cut inside the next one.
	t.Run("a frame cut short", func(t *testing.T) {
		conn := dialRaftAs(t, l.id, f)
		conn.Write(rawFrame(rpcRequestVote, 100, header))
		conn.Close()
		stillReplicates(t, c, f, &seq)
	})

	before := f.node.raft.LastIndex()
	term := f.node.raft.CurrentTerm()

	// An AppendEntries of a past term carrying an entry: refused, and the
	// connection stays usable, as raft's own refusals leave it.
	t.Run("an AppendEntries of a past term", func(t *testing.T) {
		conn := dialRaftAs(t, l.id, f)
		ae, _ := appendRequest(nil, &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte(l.addr)},
			Term:      term - 1, Leader: []byte(l.addr), PrevLogEntry: before, PrevLogTerm: term,
			Entries: []*raft.Log{{Index: before + 1, Term: term - 1, Type: raft.LogCommand, Data: []byte("forged")}},
		})
		r := bufio.NewReader(conn)
		for range 2 {
			conn.Write(ae)
			var resp raft.AppendEntriesResponse
			typ, body, err := readFrame(r)
			if err == nil {
				err = decodeResponse(rpcAppendEntries, typ, body, &resp)
			}
			if err != nil || resp.Success {
				t.Fatalf("an AppendEntries of term %d (the cell's is %d): %+v, %v; want refused", term-1, term, resp, err)
			}
		}
	})

	// An InstallSnapshot of a past term (a member that does not lead):
	// refused, its bytes read and discarded, the connection ended.
	t.Run("an InstallSnapshot of a past term", func(t *testing.T) {
		conn := dialRaftAs(t, l.id, f)
		data := []byte("not a snapshot at all")
		is, _ := appendRequest(nil, &raft.InstallSnapshotRequest{
			RPCHeader:       raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte(l.addr)},
			SnapshotVersion: raft.SnapshotVersionMax, Term: term - 1, Leader: []byte(l.addr),
			LastLogIndex: before + 100, LastLogTerm: term - 1, Size: int64(len(data)),
		})
		conn.Write(append(is, data...))
		r := bufio.NewReader(conn)
		var resp raft.InstallSnapshotResponse
		typ, body, err := readFrame(r)
		if err == nil {
			err = decodeResponse(rpcInstallSnapshot, typ, body, &resp)
		}
		if err != nil || resp.Success {
			t.Fatalf("an InstallSnapshot of a past term: %+v, %v; want refused", resp, err)
		}
		if ended, err := endedByPeer(conn); !ended {
			t.Fatalf("the connection outlived its snapshot: read %v", err)
		}
	})

	if got := f.node.raft.LastIndex(); got < before {
		t.Fatalf("f's raft log went back from %d to %d", before, got)
	}
	for _, m := range c.members {
		if m.node.raft.CurrentTerm() != term {
			t.Fatalf("%s's term moved from %d to %d", m.addr, term, m.node.raft.CurrentTerm())
		}
	}
	stillReplicates(t, c, f, &seq)
	if got := f.messages(l.group("lobby").ID); len(got) != int(seq) {
		t.Fatalf("f holds %d messages, want %d", len(got), seq)
	}
	for _, m := range f.messages(l.group("lobby").ID) {
		if string(m.Body) != "still here" || *m.From != alice {
			t.Fatalf("f holds a message nobody sent: %+v", m)
		}
	}
}

// TestRaftSnapshotNotWedging: raft reads an InstallSnapshot's bytes on its
// main loop (even those of a snapshot it refuses, to drain the
// connection), so a member's key that declares a snapshot and then sends
// its bytes slowly, or not at all, held the member's raft for as long as
// it liked: the member still answered heartbeats (their handler runs
// beside the main loop), so no election came, and it applied nothing
// more. A snapshot's bytes must now keep to the pace of its sender's own
// deadline, and a size over what a member would read back is refused
// before raft sees the request.
func TestRaftSnapshotNotWedging(t *testing.T) {
	c := newTestCell(t, 3, false, nil)
	l := c.leader()
	f := c.follower()
	var seq uint64
	stillReplicates(t, c, f, &seq)
	term := f.node.raft.CurrentTerm()
	snapshot := func(size int64) []byte {
		b, _ := appendRequest(nil, &raft.InstallSnapshotRequest{
			RPCHeader:       raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte(l.addr)},
			SnapshotVersion: raft.SnapshotVersionMax, Term: term - 1, Leader: []byte(l.addr),
			LastLogIndex: 1 << 20, LastLogTerm: term - 1, Size: size,
		})
		return b
	}

	t.Run("stalled", func(t *testing.T) {
		conn := dialRaftAs(t, l.id, f)
		conn.Write(append(snapshot(1<<20), "the first few bytes"...))
		stillReplicates(t, c, f, &seq)
		// Its refusal comes once its pace is broken; then it ends.
		r := bufio.NewReader(conn)
		conn.SetReadDeadline(time.Now().Add(waitTimeout))
		var resp raft.InstallSnapshotResponse
		typ, body, err := readFrame(r)
		if err == nil {
			err = decodeResponse(rpcInstallSnapshot, typ, body, &resp)
		}
		var remote remoteError
		if err != nil && !errors.As(err, &remote) || resp.Success {
			t.Fatalf("a stalled snapshot: answered %+v, %v; want a refusal", resp, err)
		}
		if ended, err := endedByPeer(conn); !ended {
			t.Fatalf("the connection outlived its snapshot: read %v", err)
		}
	})

	t.Run("trickled", func(t *testing.T) {
		conn := dialRaftAs(t, l.id, f)
		conn.Write(snapshot(1 << 20))
		stop := make(chan struct{})
		trickled := make(chan struct{})
		go func() {
			defer close(trickled)
			tick := time.NewTicker(time.Second / 4)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
				case <-stop:
					return
				}
				if _, err := conn.Write([]byte{0}); err != nil {
					return
				}
			}
		}()
		defer func() { close(stop); <-trickled }()
		stillReplicates(t, c, f, &seq)
	})

	t.Run("over the limit", func(t *testing.T) {
		conn := dialRaftAs(t, l.id, f)
		conn.Write(snapshot(maxSnapBytes + 1))
		conn.SetReadDeadline(time.Now().Add(waitTimeout))
		n, err := conn.Read(make([]byte, 64))
		var ne net.Error
		if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("read %d bytes, %v: want the connection ended with no answer", n, err)
		}
		stillReplicates(t, c, f, &seq)
	})
}

// TestRaftConnsPerKey: a member's key opening raft connections and
// leaving each inside a frame that declares the most a frame may hold
// made the member keep every one (a goroutine, a read buffer, and the
// first MiB of each frame's body): raft's listener bounded only the
// handshakes under way. Now it keeps at most maxConnsPerKey from one
// key, closing the oldest as another arrives, and the cell keeps
// replicating.
func TestRaftConnsPerKey(t *testing.T) {
	c := newTestCell(t, 3, false, nil)
	l := c.leader()
	f := c.follower()
	var other *testMember // the member that neither leads nor is attacked
	for _, m := range c.members {
		if m != l && m != f {
			other = m
		}
	}
	var seq uint64
	stillReplicates(t, c, f, &seq)

	// tracked returns f's raft connections accepted from other's key, by
	// the address they came from.
	tracked := func() map[string]bool {
		tr := f.node.tr
		tr.mu.Lock()
		defer tr.mu.Unlock()
		got := make(map[string]bool)
		for tc := range tr.tcpConns {
			if tc.addr == "" && tc.peer == other.id.Fingerprint() {
				got[tc.raw.RemoteAddr().String()] = true
			}
		}
		return got
	}
	// Each connection is tracked (or was already closed in favour of a
	// newer one) before the next is dialed, so that their order is f's.
	var conns []*tls.Conn
	for i := range maxConnsPerKey + 8 {
		conn := dialRaftAs(t, other.id, f)
		conn.Write(rawFrame(rpcAppendEntries, maxFrameBytes, []byte("a start")))
		conns = append(conns, conn)
		for deadline := time.Now().Add(waitTimeout); !tracked()[conn.LocalAddr().String()]; {
			if time.Now().After(deadline) {
				t.Fatalf("connection %d never reached f", i)
			}
			time.Sleep(time.Millisecond) // the server side of its handshake
		}
	}
	held := tracked()
	if len(held) > maxConnsPerKey {
		t.Fatalf("f holds %d raft connections from one key, want at most %d", len(held), maxConnsPerKey)
	}
	for i, conn := range conns {
		newest := i >= len(conns)-maxConnsPerKey
		if newest != held[conn.LocalAddr().String()] {
			t.Fatalf("connection %d of %d: held %v; want the newest %d held", i, len(conns), !newest, maxConnsPerKey)
		}
		if !newest {
			if ended, err := endedByPeer(conn); !ended {
				t.Fatalf("connection %d was let go, yet not closed: read %v", i, err)
			}
		}
	}
	stillReplicates(t, c, f, &seq)
}
