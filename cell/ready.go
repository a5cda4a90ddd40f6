package cell

import (
	"errors"
	"os"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/wire"
)

// Ready connections. raftNet dials a member only when raft first sends it
// an RPC, and a follower sends none until an election: when a leader died,
// each candidacy's pre-vote and vote to the other followers first dialed
// them, a TCP handshake and a TLS one, two round trips more than the RPC's
// own. On a LAN that is nothing; on 100-300 ms round trips the dials
// outlasted the election timeout (300-600 ms), each candidacy gave up
// before its votes were in and began another, which dialed again, and a
// cell of three took 2-16 candidacies and 3-6 s to elect
// (internal/jepsen, delay-kill-leader).
//
// So a node's raftNet keeps a connection ready to every other member of
// the cell, in its pool of idle connections (maxIdleConns): it dials one
// to each member it holds none to as the node starts (keepReady), when the
// transport's members change (a member added, or at another address), when
// a connection to a member broke (an RPC's I/O failed), and when a member
// dials this one (it may have restarted: the pooled connections to it are
// checked, and those it ended are dropped, refresh). A candidacy's RPCs
// then take one round trip each.
//
// Neither side ends a connection for being idle: the accepting member
// waits on it for the next request as long as it stays open, and the
// pool keeps it until it is used. TCP's keep-alive (keepAlive) finds a
// host that vanished. Only members' addresses are dialed (Dial), and the
// accepting member counts each ready connection against the dialing key's
// maxConnsPerKey: one of the handful raftNet opens to a member anyway.

// keepReady makes n keep a connection ready to each other member, from
// now until it closes.
func (n *raftNet) keepReady() {
	n.mu.Lock()
	n.ready = true
	n.mu.Unlock()
	n.tr.onPeers(n.warmAll)
	n.warmAll()
}

// warmAll dials a ready connection to each other member that has none.
func (n *raftNet) warmAll() {
	self := n.tr.cfg.Identity.Fingerprint()
	for _, p := range n.tr.peerList() {
		if p.Fingerprint != self {
			n.warm(raft.ServerAddress(p.Addr))
		}
	}
}

// warm dials a connection to target into the idle pool, on a goroutine of
// n's, unless n keeps no ready connections, holds one to target idle, or
// is dialing one already. A failed dial is not tried again until the next
// event that calls warm (keepReady): the member is down, raft's own RPCs
// find it so, and it dials this member as it comes back (refresh).
func (n *raftNet) warm(target raft.ServerAddress) {
	n.mu.Lock()
	if n.closed || !n.ready || n.warming[target] || len(n.idle[target]) > 0 {
		n.mu.Unlock()
		return
	}
	n.warming[target] = true
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		c, err := n.dialReporting(target, false) // quiet: raft's RPCs report the link
		n.mu.Lock()
		delete(n.warming, target)
		n.mu.Unlock()
		if err == nil {
			n.putConn(c)
		}
	}()
}

// refresh checks the idle connections to the member whose key is peer,
// which has just dialed this member: if it restarted, it ended them, and
// they would fail the next RPCs (a candidacy's, which cannot wait for the
// redial callOn makes). Those it ended are closed, and a ready connection
// is dialed if none is left.
func (n *raftNet) refresh(peer wire.Fingerprint) {
	addr, ok := n.tr.addrOf(peer)
	if !ok {
		return
	}
	target := raft.ServerAddress(addr)
	n.mu.Lock()
	if n.closed || !n.ready {
		n.mu.Unlock()
		return
	}
	conns := n.idle[target]
	delete(n.idle, target)
	n.mu.Unlock()
	for _, c := range conns {
		if c.ended() {
			c.close()
		} else {
			n.putConn(c)
		}
	}
	n.warm(target)
}

// endedWait is how long ended waits for a read to tell a connection's end.
// The end, if the member sent it, has arrived already: the wait is only
// for the read to find it.
const endedWait = time.Millisecond

// ended reports whether the member ended c, an idle connection: a read of
// its TLS connection that does not wait finds the connection's end (or
// bytes, which an idle connection does not carry). The read goes under
// tcpConn's, which would report a link down for its timeout.
func (c *rpcConn) ended() bool {
	tc, ok := c.conn.(*tcpConn)
	if !ok {
		return false
	}
	if c.r.Buffered() > 0 {
		return true
	}
	tc.Conn.SetReadDeadline(time.Now().Add(endedWait))
	var b [1]byte
	_, err := tc.Conn.Read(b[:])
	tc.Conn.SetReadDeadline(time.Time{})
	return !errors.Is(err, os.ErrDeadlineExceeded)
}
