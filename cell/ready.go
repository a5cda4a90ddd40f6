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
// So a node's raftNet keeps connections ready to every other member of
// the cell, readyConns of them, in its pool of idle connections
// (maxIdleConns): it dials them to each member it holds fewer to as the
// node starts (keepReady), when the transport's members change (a member
// added, or at another address), when a connection to a member broke (an
// RPC's I/O failed), when a pipeline took one (AppendEntriesPipeline), and
// when a member dials this one (it may have restarted: the pooled
// connections to it are checked, and those it ended are dropped,
// refresh). A candidacy's RPCs then take one round trip each.
//
// Why two: the candidate that wins needs three connections to each
// follower at once. Raft starts a heartbeat goroutine and a replication
// goroutine per follower: the replication's first AppendEntries (one RPC)
// and the heartbeats (one RPC after another) each hold a connection, and
// once that AppendEntries is answered, replication moves to a pipeline,
// which holds one for as long as it runs. With one connection ready, the
// heartbeat and the pipeline each dialed: on 100-300 ms round trips a TCP
// and a TLS handshake, 200-900 ms, in which the new leader heard nothing
// more from its one live follower than the first AppendEntries' answer,
// and lost its 300 ms lease (raft's LeaderLeaseTimeout): 8-10 of 12 new
// leaders stepped down 0.4-0.9 s after they won, and the cell elected
// again (internal/jepsen, delay-kill-leader). So the pipeline takes a
// pooled connection (the first AppendEntries' own, back in the pool by
// then) and the heartbeats the other: 2 of 200 new leaders stepped down
// (0.6 and 0.9 s after winning, their pipeline up), and sends came back
// after a leader's kill in p50 2.2 s instead of 2.9-4.2 s (BENCHMARKS.md,
// "Network faults").
//
// Neither side ends a connection for being idle: the accepting member
// waits on it for the next request as long as it stays open, and the
// pool keeps it until it is used. TCP's keep-alive (keepAlive) finds a
// host that vanished. Only members' addresses are dialed (Dial), and the
// accepting member counts each ready connection against the dialing key's
// maxConnsPerKey: one of the handful raftNet opens to a member anyway.

// readyConns is how many connections a node keeps ready to each other
// member (at most maxIdleConns): a heartbeat's and a pipeline's.
const readyConns = 2

// keepReady makes n keep readyConns connections ready to each other
// member, from now until it closes.
func (n *raftNet) keepReady() {
	n.mu.Lock()
	n.ready = true
	n.mu.Unlock()
	n.tr.onPeers(n.warmAll)
	n.warmAll()
}

// warmAll dials ready connections to each other member that has fewer
// than readyConns.
func (n *raftNet) warmAll() {
	self := n.tr.cfg.Identity.Fingerprint()
	for _, p := range n.tr.peerList() {
		if p.Fingerprint != self {
			n.warm(raft.ServerAddress(p.Addr))
		}
	}
}

// warm dials connections to target into the idle pool, one after another
// on a goroutine of n's, until it holds readyConns idle, unless n keeps no
// ready connections or is dialing them already. A failed dial is not tried
// again until the next event that calls warm (keepReady): the member is
// down, raft's own RPCs find it so, and it dials this member as it comes
// back (refresh).
func (n *raftNet) warm(target raft.ServerAddress) {
	n.mu.Lock()
	if !n.needsReady(target) || n.warming[target] {
		n.mu.Unlock()
		return
	}
	n.warming[target] = true
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		for {
			c, err := n.dialReporting(target, false) // quiet: raft's RPCs report the link
			if err == nil {
				n.putConn(c)
			}
			n.mu.Lock()
			if err != nil || !n.needsReady(target) {
				delete(n.warming, target)
				n.mu.Unlock()
				return
			}
			n.mu.Unlock()
		}
	}()
}

// needsReady reports whether n keeps ready connections and holds fewer
// than readyConns to target idle. n.mu must be held.
func (n *raftNet) needsReady(target raft.ServerAddress) bool {
	return !n.closed && n.ready && len(n.idle[target]) < readyConns
}

// takeReady takes an idle connection to target that the member has not
// ended, and dials one into the pool in its place (warm); it returns nil
// if the pool holds none. Those the member ended are closed.
func (n *raftNet) takeReady(target raft.ServerAddress) *rpcConn {
	for {
		n.mu.Lock()
		conns := n.idle[target]
		if len(conns) == 0 {
			n.mu.Unlock()
			return nil
		}
		c := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		n.idle[target] = conns[:len(conns)-1]
		n.mu.Unlock()
		if !c.ended() {
			n.warm(target)
			return c
		}
		c.close()
	}
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
	ready := !n.closed && n.ready
	n.mu.Unlock()
	if !ready {
		return
	}
	n.dropEnded(target)
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
