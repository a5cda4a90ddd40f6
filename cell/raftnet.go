package cell

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/wire"
)

// raftNet is raft's transport between a cell's members: raft's RPCs in
// the encoding of raftwire.go, on TLS connections over TCP that the
// Transport dials and accepts (tcp.go). It replaces hashicorp/raft's NetworkTransport, whose msgpack
// decoding by reflection was the largest part of a follower's CPU after
// the disk, and which wrote an RPC to a connection in as many writes as its
// buffer took.
//
// As NetworkTransport does, it keeps a few idle connections per member for
// RPCs one at a time (a connection carries one RPC and its response, then
// the next), gives each AppendEntries pipeline a connection of its own, and
// serves each connection a member opens on a goroutine of its own, which hands
// each request to raft's main loop (Consumer) or, for a heartbeat, to
// raft's heartbeat handler, and writes raft's response back.
//
// Close (raft calls it as it shuts down) closes the Transport, ends every
// connection, and waits for the goroutines it started.
type raftNet struct {
	tr      *Transport
	timeout time.Duration // of each RPC's I/O; 0: none
	// linkWait bounds a replicating AppendEntries' wait for a member
	// that cannot be dialed: linkWait, the constant (tests set it).
	linkWait time.Duration
	// transferWait bounds a TimeoutNow (a leadership transfer's last
	// step), in nanoseconds: raft gives the transfer up an ElectionTimeout
	// after it began but refuses proposals until the call returns
	// (transferable.go). Twice the ElectionTimeout raft has now (the
	// timing loop sets it as it raises or lowers that: timing.go): raft's
	// give-up must come first, as its caller tells it from other failures
	// (raftTransferTimeout). 0: the RPC timeout.
	transferWait atomic.Int64
	log          hclog.Logger

	consume chan raft.RPC
	done    chan struct{} // closed by Close
	wg      sync.WaitGroup

	// received is Config.received (tests), set before it accepts
	// connections (newRaftNet).
	received func(req any)
	// voteGranted, if set (newRaftNet), is called with how long each
	// vote or pre-vote request this member sent took to be granted, by
	// round (timing.go, votesLate).
	voteGranted func(round voteRound, sent time.Time, took time.Duration)

	hbMu      sync.Mutex
	heartbeat func(raft.RPC)
	installed func() // under hbMu; see onInstalled
	appended  func() // under hbMu; see onAppended

	mu      sync.Mutex
	closed  bool
	idle    map[raft.ServerAddress][]*rpcConn
	pipes   map[*rpcPipeline]struct{}
	ready   bool                        // keep a connection ready to each member (keepReady)
	warming map[raft.ServerAddress]bool // a ready connection is being dialed to it
	// dialing counts the dials to each member under way (at most
	// maxDialsPerMember); poolWake, closed and dropped when a dial to
	// the member ends or a connection to it goes back to the pool, wakes
	// those waiting for one (connFor).
	dialing  map[raft.ServerAddress]int
	poolWake map[raft.ServerAddress]chan struct{}
	// checking counts the checks of each member's idle connections under
	// way (dropEnded): an RPC that finds none idle meanwhile waits for
	// the check, which puts back those the member did not end, rather
	// than dialing (connFor).
	checking map[raft.ServerAddress]int
	served   map[net.Conn]struct{}          // the connections members opened, being served
	repl     map[raft.ServerID]*replication // by member key: a member replaced at an address starts afresh
	// frameBytes are the bytes of request frames each key's connections
	// hold (frameBudget: frameBudgetPerKey; tests set it).
	frameBytes  map[wire.Fingerprint]int
	frameBudget int
	// frameLimit bounds the frames it sends and reads: maxFrameBytes
	// (tests set it).
	frameLimit int

	// rtt, if set (by tests), replaces the round trip measured
	// (measuredRTT).
	rtt func() (time.Duration, bool)
	// waitingDial, if set (by tests), is called each time an RPC finds
	// maxDialsPerMember dials to target under way, or its idle
	// connections being checked, and waits (connFor).
	waitingDial func(target raft.ServerAddress)
	// checkingEnded, if set (by tests), is called while dropEnded holds
	// target's idle connections out of the pool, before it checks them.
	checkingEnded func(target raft.ServerAddress)
}

var (
	_ raft.Transport   = (*raftNet)(nil)
	_ raft.WithClose   = (*raftNet)(nil)
	_ raft.WithPreVote = (*raftNet)(nil)
)

// maxIdleConns is how many idle connections raftNet keeps per member, as
// NetworkTransport's MaxPool did: one for heartbeats, one for
// replication that is not pipelined, and spares for elections. The
// connection kept ready to each member (ready.go) is one of them.
const maxIdleConns = 4

// pipelineDepth is how many AppendEntries requests a pipeline queues
// besides the one whose response is being read and the one being written:
// as NetworkTransport's default MaxRPCsInFlight (2), none. (Session 3
// measured no gain from more in flight.)
const pipelineDepth = 0

// pipelineAnswered is how many answered requests a pipeline holds for raft
// to take (Consumer). Raft stops taking them when a response says no (a
// follower whose log differs, a newer term), and only notices, and closes
// the pipeline, between two AppendEntries calls: were the answers not
// held, the next call would wait for the reader, the reader for raft, and
// raft for the call, for ever (a leader's shutdown hung so once in the
// cell's tests, TestAddRemoveMember). hashicorp/raft's NetworkTransport
// has the same shape.
const pipelineAnswered = 16

// readBuffer is the size of a connection's read buffer: frames longer than
// what it holds are read into a buffer of their own.
const readBuffer = 64 << 10

// newRaftNet returns a raftNet over tr that accepts members' connections
// at once; set, if given, sets its test hooks (received, rtt, waitingDial)
// before it does, so that no connection reads them while they are written.
func newRaftNet(tr *Transport, timeout time.Duration, log hclog.Logger, set ...func(*raftNet)) *raftNet {
	n := &raftNet{
		tr:       tr,
		timeout:  timeout,
		linkWait: linkWait,
		log:      log,
		consume:  make(chan raft.RPC),
		done:     make(chan struct{}),
		idle:     make(map[raft.ServerAddress][]*rpcConn),
		pipes:    make(map[*rpcPipeline]struct{}),
		warming:  make(map[raft.ServerAddress]bool),
		dialing:  make(map[raft.ServerAddress]int),
		poolWake: make(map[raft.ServerAddress]chan struct{}),
		checking: make(map[raft.ServerAddress]int),
		served:   make(map[net.Conn]struct{}),
		repl:     make(map[raft.ServerID]*replication),

		frameBudget: frameBudgetPerKey,
		frameLimit:  maxFrameBytes,
	}
	for _, f := range set {
		f(n)
	}
	n.wg.Add(1)
	go n.listen()
	return n
}

// errNetClosed is the error of the RPCs of a closed raftNet: raft's own,
// which the logging of raft's lines takes for no news (hclog.go).
var errNetClosed = raft.ErrTransportShutdown

// Consumer returns the channel of the RPCs members send (raft.Transport).
func (n *raftNet) Consumer() <-chan raft.RPC { return n.consume }

// LocalAddr returns this member's address (raft.Transport).
func (n *raftNet) LocalAddr() raft.ServerAddress { return raft.ServerAddress(n.tr.Addr().String()) }

// SetHeartbeatHandler sets the function heartbeats are handed to, on the
// goroutine of the connection that carried them (raft.Transport).
func (n *raftNet) SetHeartbeatHandler(cb func(raft.RPC)) {
	n.hbMu.Lock()
	n.heartbeat = cb
	n.hbMu.Unlock()
}

// onInstalled sets the function told of each snapshot raft installed from
// a member (InstallSnapshot answered with success), on the goroutine of
// the connection that carried it, before the answer is written back.
//
// Why: raft takes the snapshot's configuration as its own once its state
// machine has restored the snapshot, and tells nothing of it (the state
// machine hears only of configurations in the log's entries). Told here,
// the node sets its transport's members from it before the member that
// sent the snapshot, which waits for the answer, sends what follows.
func (n *raftNet) onInstalled(fn func()) {
	n.hbMu.Lock()
	n.installed = fn
	n.hbMu.Unlock()
}

// onAppended sets the function told of each AppendEntries raft took (answered
// with success) that carried a configuration entry, or that may have
// overwritten entries (overwrites), on the goroutine of the connection that
// carried it, before the answer is written back.
//
// Why: raft takes a configuration as its latest once it has appended its
// entry, but the state machine hears of it only once it applies it, a
// heartbeat later, or never (the leader lost before it says the entry is
// committed). A member removed was accepted meanwhile by a follower that
// had appended its removal; told here, the node sets its transport's
// members from raft's latest configuration before the leader, which waits
// for the answer, may count the removal committed.
func (n *raftNet) onAppended(fn func()) {
	n.hbMu.Lock()
	n.appended = fn
	n.hbMu.Unlock()
}

// overwrites reports whether ae's entries begin at or before last, raft's
// last index before it (its answer's LastLog, read as raft began it): raft
// may have cut entries of another term from its log for them, and then
// takes its committed configuration as its latest again, which the node
// is told of as of a configuration appended (onAppended). A follower that
// appended a member's removal which the next leader overwrote refused that
// member, a voter, until the next configuration came. (An AppendEntries
// sent again whose entries cut nothing counts too: the node sets the same
// members again.)
func overwrites(ae *raft.AppendEntriesRequest, last uint64) bool {
	return len(ae.Entries) > 0 && ae.Entries[0].Index <= last
}

// carriesConfiguration reports whether ae carries a configuration entry.
func carriesConfiguration(ae *raft.AppendEntriesRequest) bool {
	for _, e := range ae.Entries {
		if e.Type == raft.LogConfiguration {
			return true
		}
	}
	return false
}

// EncodePeer and DecodePeer: a member's address is its own encoding.
func (n *raftNet) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte { return []byte(addr) }
func (n *raftNet) DecodePeer(b []byte) raft.ServerAddress                     { return raft.ServerAddress(b) }

// Close closes the transport's connections and the Transport under it, and
// waits for raftNet's goroutines. It is safe to call more than once
// (raft.WithClose).
func (n *raftNet) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.wg.Wait()
		return nil
	}
	n.closed = true
	close(n.done)
	idle := n.idle
	n.idle = nil
	pipes := n.pipes
	n.pipes = nil
	n.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.close()
		}
	}
	for p := range pipes {
		p.Close()
	}
	n.tr.Close()
	n.wg.Wait()
	return nil
}

// rpcConn is a connection this member opened to another for RPCs.
type rpcConn struct {
	target raft.ServerAddress
	conn   net.Conn
	r      *bufio.Reader
	buf    []byte // the last request's frame, kept for the next
	reused bool   // taken from the idle pool, not dialed for this RPC
	limit  int    // the longest frame body it sends (raftNet.frameLimit)
}

func (c *rpcConn) close() { c.conn.Close() }

// send writes req's frame in one write, and returns its type. An
// AppendEntries request carries the first of its entries that fit in the
// connection's limit, and says so to raft (fitAppendEntries).
func (c *rpcConn) send(req any) (byte, error) {
	if ae, ok := req.(*raft.AppendEntriesRequest); ok {
		fitAppendEntries(ae, c.limit)
		if cap(c.buf) < appendEntriesBytes(ae) {
			c.buf = make([]byte, 0, appendEntriesBytes(ae))
		}
	}
	buf, typ := appendRequest(c.buf[:0], req)
	if cap(buf) <= readBuffer {
		c.buf = buf // a long one is not kept
	}
	_, err := c.conn.Write(buf)
	return typ, err
}

// receive reads the response to a request of typ into resp.
func (c *rpcConn) receive(typ byte, resp any) error {
	rtyp, body, err := readFrameUpTo(c.r, maxResponseBytes)
	if err != nil {
		return err
	}
	return decodeResponse(typ, rtyp, body, resp)
}

// readFrame reads a request frame: its type, and its body in a buffer of
// its own, which what is decoded from it may refer to.
func readFrame(r *bufio.Reader) (byte, []byte, error) { return readFrameUpTo(r, maxFrameBytes) }

// readFrameUpTo reads a frame as readFrame does, of at most max bytes.
func readFrameUpTo(r *bufio.Reader, max uint32) (byte, []byte, error) {
	return readFrameTaking(r, max, nil)
}

// readFrameTaking reads a frame as readFrameUpTo does; take, if set, is
// told of each part of the body's buffer before it is allocated, and its
// error ends the read.
func readFrameTaking(r *bufio.Reader, max uint32, take func(int) error) (byte, []byte, error) {
	h, err := r.Peek(frameHeader)
	if err != nil {
		if err == io.EOF && len(h) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	typ, n := h[0], binary.BigEndian.Uint32(h[1:])
	if n > max {
		return 0, nil, fmt.Errorf("%w: a frame of %d bytes, more than %d", errMalformed, n, max)
	}
	r.Discard(frameHeader)
	// The body's buffer grows with the bytes that arrive, past the first
	// MiB: a length alone does not make a member allocate.
	if take != nil {
		if err := take(int(min(n, frameAllocStep))); err != nil {
			return 0, nil, err
		}
	}
	body := make([]byte, min(n, frameAllocStep))
	for read := 0; ; {
		k, err := io.ReadFull(r, body[read:])
		read += k
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		if read == int(n) {
			return typ, body, nil
		}
		more := min(int(n)-read, len(body))
		if take != nil {
			if err := take(more); err != nil {
				return 0, nil, err
			}
		}
		body = slices.Grow(body, more)[:len(body)+more]
	}
}

// frameAllocStep is the most a frame's buffer is allocated ahead of its
// bytes: beyond it the buffer doubles as they arrive.
const frameAllocStep = 1 << 20

// getConn returns an idle connection to target, or opens one.
func (n *raftNet) getConn(target raft.ServerAddress) (*rpcConn, error) {
	return n.getConnWithin(target, n.dialTimeout())
}

// getConnWithin returns a connection as getConn does, within timeout.
func (n *raftNet) getConnWithin(target raft.ServerAddress, timeout time.Duration) (*rpcConn, error) {
	return n.connFor(target, timeout, true, true)
}

// dialReporting opens a connection to target for RPCs; a failure is the
// link's (Transport.dialRaft) if report is set.
func (n *raftNet) dialReporting(target raft.ServerAddress, report bool) (*rpcConn, error) {
	return n.dialWithin(target, n.dialTimeout(), report)
}

// dialWithin opens a connection as dialReporting does, within timeout.
func (n *raftNet) dialWithin(target raft.ServerAddress, timeout time.Duration, report bool) (*rpcConn, error) {
	return n.connFor(target, timeout, false, report)
}

// maxDialsPerMember bounds the dials to one member under way at once: the
// RPCs that find no idle connection to it meanwhile wait for one (a dial's,
// back in the pool after its RPC, or the pool's), or for a dial of their
// own once one ends, within their timeout.
//
// Why: raft sends each candidacy's pre-vote and vote to every member on a
// connection of its own, and a candidacy outlasted by its dials (a TLS
// handshake each, 10-25 ms of CPU under the race detector, more than a
// 300 ms election timeout when the host is starved) was followed by another
// that dialed again. A new cell of five on a starved host (its members in
// one test process given a tenth of the CPU) had up to 87 handshakes under
// way at once, each given too little of the CPU to end within the 5 s dial
// timeout: they failed at their timeouts (hundreds of them), were dialed
// again, and no member was elected for 30 s (TestFollowerTakesBackTruncatedRemoval,
// sessions 18-19: 3 of 6 runs). Bounded, at most 24 were under way, they
// ended, their connections served the RPCs that waited, and 4 of 4 runs
// elected. Two, as readyConns: a new leader's heartbeats and pipeline
// dial at once.
const maxDialsPerMember = readyConns

// connFor returns a connection to target within timeout: an idle one, if
// idle is set and the pool holds one (or, while target's idle connections
// are checked, once the check put back those the member did not end:
// dropEnded), else one it dials once fewer than maxDialsPerMember are
// under way to target. A failed dial is reported as the link's if report
// is set.
func (n *raftNet) connFor(target raft.ServerAddress, timeout time.Duration, idle, report bool) (*rpcConn, error) {
	deadline := time.Now().Add(timeout)
	for {
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			return nil, errNetClosed
		}
		if conns := n.idle[target]; idle && len(conns) > 0 {
			c := conns[len(conns)-1]
			conns[len(conns)-1] = nil
			n.idle[target] = conns[:len(conns)-1]
			n.mu.Unlock()
			c.reused = true
			return c, nil
		}
		if n.dialing[target] < maxDialsPerMember && !(idle && n.checking[target] > 0) {
			n.dialing[target]++
			n.mu.Unlock()
			c, err := n.dial(target, time.Until(deadline), report)
			n.mu.Lock()
			if n.dialing[target]--; n.dialing[target] == 0 {
				delete(n.dialing, target)
			}
			n.wakeLocked(target)
			n.mu.Unlock()
			return c, err
		}
		wake := n.poolWake[target]
		if wake == nil {
			wake = make(chan struct{})
			n.poolWake[target] = wake
		}
		n.mu.Unlock()
		if n.waitingDial != nil {
			n.waitingDial(target)
		}
		wait := time.NewTimer(time.Until(deadline))
		select {
		case <-wake:
			wait.Stop()
		case <-wait.C:
			return nil, asLinkError(fmt.Errorf("cell: dial %s: %d dials to it under way, or its idle connections being checked: %w", target, maxDialsPerMember, context.DeadlineExceeded))
		case <-n.done:
			wait.Stop()
			return nil, errNetClosed
		}
	}
}

// wakeLocked wakes those waiting for a connection to target (n.mu held).
func (n *raftNet) wakeLocked(target raft.ServerAddress) {
	if wake := n.poolWake[target]; wake != nil {
		close(wake)
		delete(n.poolWake, target)
	}
}

// dial opens a connection to target within timeout (connFor counts it).
func (n *raftNet) dial(target raft.ServerAddress, timeout time.Duration, report bool) (*rpcConn, error) {
	conn, err := n.tr.dialRaft(target, timeout, report)
	if err != nil {
		return nil, err
	}
	return n.rpcConnOn(target, conn), nil
}

// rpcConnOn makes conn, a connection to target, one for RPCs.
func (n *raftNet) rpcConnOn(target raft.ServerAddress, conn net.Conn) *rpcConn {
	return &rpcConn{target: target, conn: conn, r: newFrameReader(conn), limit: n.frameLimit}
}

// newFrameReader buffers a raft connection for its frames (readFrame).
//
// Unlike a catch-up stream's (newCatchUpReader), it needs nothing to drop
// a deadline's error that came with data, for none comes: bufio.Reader
// keeps an error past the Read that met it only when the connection's
// Read returned bytes with it (bufio.go fill, Read), and on these
// connections a deadline's error comes alone. TCP's Read returns bytes
// or an error (internal/poll/fd_unix.go FD.Read: n = 0 on any error).
// TLS's (crypto/tls conn.go Conn.Read, Go 1.26) returns with an error
// none of the bytes it read but in one case: having copied a record's
// data, it reads on if the next record's header is an alert's (to return
// a close_notify's EOF with the data), and may meet the deadline there.
// In TLS 1.3, the only version raft's TLS allows (identity ServerTLS,
// ClientTLS), every record after the handshake is application_data on the
// wire (RFC 8446 5.2; alerts are inside), so only a peer breaking TLS
// sends such a header, and that record fails the connection for good once
// read (halfConn.decrypt refuses it: a permanent error), deadline or not. And
// a deadline's error ends its connection here (roundTrip, the pipeline's
// receive, serve): nothing is read through the reader after it. (ended
// reads the TLS connection itself, past the reader.)
func newFrameReader(conn net.Conn) *bufio.Reader { return bufio.NewReaderSize(conn, readBuffer) }

// dropEnded closes the idle connections to target that the member ended,
// and keeps the others.
//
// They are out of the pool while it checks them (ended reads each, which
// no RPC may meanwhile), and an RPC to target that finds the pool empty
// meanwhile waits for the check rather than dialing (connFor): until
// session 21 it dialed, and a vote sent while a connection was checked
// (a member dialing this one: refresh) paid a handshake, or failed where
// no dial could succeed, beside an idle connection that was fine.
func (n *raftNet) dropEnded(target raft.ServerAddress) {
	n.mu.Lock()
	conns := n.idle[target]
	delete(n.idle, target)
	if len(conns) > 0 {
		n.checking[target]++
	}
	n.mu.Unlock()
	if len(conns) == 0 {
		return
	}
	defer func() {
		n.mu.Lock()
		if n.checking[target]--; n.checking[target] == 0 {
			delete(n.checking, target)
		}
		n.wakeLocked(target)
		n.mu.Unlock()
	}()
	if n.checkingEnded != nil {
		n.checkingEnded(target)
	}
	for _, c := range conns {
		if c.ended() {
			c.close()
		} else {
			n.putConn(c) // wakes those waiting for it
		}
	}
}

func (n *raftNet) dialTimeout() time.Duration {
	if n.timeout > 0 {
		return n.timeout
	}
	return DefaultRPCTimeout
}

// putConn keeps c for the next RPC to its member, or closes it.
func (n *raftNet) putConn(c *rpcConn) {
	n.mu.Lock()
	if !n.closed && len(n.idle[c.target]) < maxIdleConns {
		n.idle[c.target] = append(n.idle[c.target], c)
		n.wakeLocked(c.target)
		c = nil
	}
	n.mu.Unlock()
	if c != nil {
		c.close()
	}
}

// call runs one RPC on an idle connection to target. One whose I/O
// failed, or that carried bytes that do not decode, is closed; one that
// carried the peer's error is kept.
func (n *raftNet) call(target raft.ServerAddress, req, resp any) error {
	c, err := n.getConn(target)
	if err != nil {
		return err
	}
	return n.callOn(c, req, resp)
}

// callOn runs one RPC on c, as call does. If c was idle and the member
// ended it meanwhile, the RPC is sent again on another connection: one
// pooled since the member ended c, or a new one.
//
// A member that restarted, or whose process was killed, ended every
// connection this member had pooled to it; the next RPCs on them failed
// one after another (EOF) until the pool was empty. For an election that
// cost a round each: a candidate's pre-vote failed on a dead connection to
// the one member that could grant it, and it waited out an election
// timeout (jepsen leader kills of 1.5-2 s, session 8). Sending again is
// safe: the member answered nothing, and raft's RPCs may arrive twice.
func (n *raftNet) callOn(c *rpcConn, req, resp any) error {
	return n.callOnWithin(c, req, resp, n.timeout)
}

// callOnWithin runs one RPC on c as callOn does, its I/O bounded by
// timeout (0: none).
func (n *raftNet) callOnWithin(c *rpcConn, req, resp any, timeout time.Duration) error {
	ended, err := n.roundTrip(c, req, resp, timeout)
	if !ended {
		return err
	}
	// The others the same restart ended go too; but not those dialed
	// since (ready.go), which serve the RPC. (All were closed: a follower
	// whose ready connection to a restarted member was pooled under one
	// of its past, its pre-votes to it then dialing where no dial could
	// succeed, stood for 30 s and was never elected: TestElectionOnReadyConnections.)
	// One the member ended whose end has not arrived yet is left; the
	// RPC fails on it at once, as on c, and goes on to the next: each
	// taken is out of the pool, and a dialed one ends the loop.
	n.dropEnded(c.target)
	for ended {
		if c, err = n.getConnWithin(c.target, cmp.Or(timeout, n.dialTimeout())); err != nil {
			return err
		}
		ended, err = n.roundTrip(c, req, resp, timeout)
	}
	return err
}

// roundTrip writes req on c and reads its response into resp. A
// connection whose I/O failed, or that carried bytes that do not decode,
// is closed; one that carried the peer's error goes back to the pool.
// ended reports that c was idle and the member had ended it before the
// RPC (endedWhileIdle), read before c is closed or pooled: a connection
// back in the pool is another RPC's at once, which writes c.reused as it
// takes it (callOn read it after pooling: a data race under -race,
// TestRaftNetResendLeavesPooledConn).
func (n *raftNet) roundTrip(c *rpcConn, req, resp any, timeout time.Duration) (ended bool, err error) {
	if timeout > 0 {
		c.conn.SetDeadline(time.Now().Add(timeout))
	}
	typ, err := c.send(req)
	if err == nil {
		err = c.receive(typ, resp)
	}
	var remote remoteError
	if err != nil && !errors.As(err, &remote) {
		ended = c.reused && endedWhileIdle(err, c)
		c.close()
		n.warm(c.target)
		return ended, err
	}
	n.putConn(c)
	return false, err
}

// endedWhileIdle reports whether err, of an RPC on c, says the member had
// ended c before the RPC: the connection was reset, or closed with not one
// byte of the response read.
func endedWhileIdle(err error, c *rpcConn) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) && c.r.Buffered() == 0
}

// AppendEntries sends one AppendEntries request (raft.Transport). One
// that replicates (not a heartbeat) to a member that cannot be dialed
// waits for it (awaitConn).
func (n *raftNet) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	r := n.replicationTo(id)
	if isHeartbeat(args) {
		err := n.call(target, args, resp)
		r.done(time.Now(), args, resp, err, true, false)
		return err
	}
	r.start(time.Now())
	c, err := n.awaitConn(target)
	if err == nil {
		err = n.callOn(c, args, resp)
	}
	r.done(time.Now(), args, resp, err, false, true)
	return err
}

// replicationTo returns what raft's replication to the member whose key
// is id last did (transferable.go).
func (n *raftNet) replicationTo(id raft.ServerID) *replication {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.repl[id]
	if r == nil {
		r = new(replication)
		n.repl[id] = r
	}
	return r
}

// linkWait bounds how long a replicating AppendEntries waits for the link
// to a member that cannot be dialed, and redialWait is how often it dials
// meanwhile.
//
// hashicorp/raft's replication goroutine backs off after each failed
// AppendEntries, 10 ms doubling to 10.24 s, and only a successful one resets
// it; it calls again every CommitTimeout, so were a dial's failure returned
// at once, a member down for 10 s would find the leader waiting out up to
// 10 s more after it came back before it was sent what it missed (measured:
// applied 4.6 s after its start, down 16 s). Waiting here counts one failure
// per linkWait down instead, and ends the moment the member answers.
//
// The wait ends too when the member leaves the cell (the dial's
// ErrUnknownPeer), when the node closes (stopOutgoing, before raft's
// shutdown waits for its replication goroutines) and when raftNet closes.
// A goroutine of a leader that stepped down meanwhile finishes its wait
// (raft does not wait for it) and its request, of a past term, is refused.
const (
	linkWait   = 30 * time.Second
	redialWait = 100 * time.Millisecond
)

// awaitConn returns a connection to target as getConn does, but waits
// while the dial fails for the link (linkWait).
func (n *raftNet) awaitConn(target raft.ServerAddress) (*rpcConn, error) {
	c, err := n.getConn(target)
	if !n.linkDown(err) {
		return c, err
	}
	bound := time.NewTimer(n.linkWait)
	defer bound.Stop()
	tick := time.NewTicker(redialWait)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-bound.C:
			return nil, err
		case <-n.tr.ctx.Done():
			return nil, err
		case <-n.done:
			return nil, errNetClosed
		}
		c, err = n.getConn(target)
		if !n.linkDown(err) {
			return c, err
		}
	}
}

// linkDown reports whether err is a dial's failure to reach a member
// (not a closing transport's, nor one for an address not in the cell).
func (n *raftNet) linkDown(err error) bool {
	return err != nil && isLinkError(err) && n.tr.ctx.Err() == nil &&
		!errors.Is(err, ErrUnknownPeer) && !errors.Is(err, ErrTransportClosed) && !errors.Is(err, errNetClosed)
}

// RequestVote sends a vote request (raft.Transport).
func (n *raftNet) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return n.timedVote(voteRound{term: args.Term}, func() (bool, error) {
		err := n.call(target, args, resp)
		return resp.Granted, err
	})
}

// RequestPreVote sends a pre-vote request (raft.WithPreVote: raft runs
// pre-votes with a transport that has it).
func (n *raftNet) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return n.timedVote(voteRound{pre: true, term: args.Term}, func() (bool, error) {
		err := n.call(target, args, resp)
		return resp.Granted, err
	})
}

// timedVote runs call, a vote or pre-vote request of round, and reports
// how long it took to voteGranted if it was granted (timing.go).
func (n *raftNet) timedVote(round voteRound, call func() (granted bool, err error)) error {
	start := time.Now()
	granted, err := call()
	if err == nil && granted && n.voteGranted != nil {
		n.voteGranted(round, start, time.Since(start))
	}
	return err
}

// TimeoutNow asks target to stand for election now (raft.Transport).
// Its I/O is bounded by transferWait, not the RPC timeout: raft refuses
// every proposal until it returns (transferable.go).
func (n *raftNet) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	timeout := n.timeout
	if wait := time.Duration(n.transferWait.Load()); wait > 0 && (timeout <= 0 || wait < timeout) {
		timeout = wait
	}
	c, err := n.getConnWithin(target, cmp.Or(timeout, n.dialTimeout()))
	if err != nil {
		return err
	}
	return n.callOnWithin(c, args, resp, timeout)
}

// snapshotTimeoutScale: a snapshot's I/O gets the RPC timeout for each
// this many bytes of it, as NetworkTransport's TimeoutScale.
const snapshotTimeoutScale = 256 << 10

// InstallSnapshot sends a snapshot on a connection of its own, closed after
// it (raft.Transport).
func (n *raftNet) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	c, err := n.getConn(target)
	if err != nil {
		return err
	}
	defer c.close()
	if n.timeout > 0 {
		c.conn.SetDeadline(time.Now().Add(max(n.timeout, n.timeout*time.Duration(args.Size/snapshotTimeoutScale))))
	}
	typ, err := c.send(args)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(c.conn, data, args.Size); err != nil {
		return fmt.Errorf("cell: send a snapshot: %w", err)
	}
	return c.receive(typ, resp)
}

// AppendEntriesPipeline takes a connection to target for pipelined
// AppendEntries requests, a ready one from the pool if it holds one
// (ready.go: a new leader's pipeline then needs no dial), else a new one
// (raft.Transport).
func (n *raftNet) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	c := n.takeReady(target)
	if c == nil {
		conn, err := n.tr.Dial(target, n.dialTimeout())
		if err != nil {
			return nil, err
		}
		c = n.rpcConnOn(target, conn)
	}
	p := &rpcPipeline{
		n:        n,
		c:        c,
		repl:     n.replicationTo(id),
		inflight: make(chan *appendFuture, pipelineDepth),
		done:     make(chan raft.AppendFuture, pipelineAnswered),
		stop:     make(chan struct{}),
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		c.close()
		return nil, errNetClosed
	}
	n.pipes[p] = struct{}{}
	n.wg.Add(1)
	n.mu.Unlock()
	go p.receive()
	return p, nil
}

// rpcPipeline is a connection of pipelined AppendEntries requests: raft's
// replication goroutine writes them (AppendEntries), and a goroutine of
// the pipeline reads their responses in order and hands them to raft
// (Consumer).
type rpcPipeline struct {
	n        *raftNet
	c        *rpcConn
	repl     *replication
	inflight chan *appendFuture     // written, awaiting their responses
	done     chan raft.AppendFuture // answered, for raft
	stop     chan struct{}          // closed by Close
	once     sync.Once
}

// AppendEntries writes a request and returns at once; its future is
// answered on Consumer in order (raft.AppendPipeline).
func (p *rpcPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	f := &appendFuture{start: time.Now(), req: args, resp: resp, answered: make(chan struct{})}
	if t := p.n.timeout; t > 0 {
		p.c.conn.SetWriteDeadline(time.Now().Add(t))
	}
	if _, err := p.c.send(args); err != nil {
		p.c.close()
		return nil, err
	}
	select {
	case p.inflight <- f:
		return f, nil
	default:
	}
	// The reader is busy with the previous response, for up to the RPC
	// timeout; past it (the reader is stuck on raft: pipelineAnswered),
	// this pipeline is done.
	var timeout <-chan time.Time
	if t := p.n.timeout; t > 0 {
		timer := time.NewTimer(t)
		defer timer.Stop()
		timeout = timer.C
	}
	select {
	case p.inflight <- f:
		return f, nil
	case <-p.stop:
		return nil, raft.ErrPipelineShutdown
	case <-timeout:
		p.c.close()
		return nil, fmt.Errorf("cell: a pipelined AppendEntries: %w", errPipelineStuck)
	}
}

// errPipelineStuck: a pipeline's reader did not take a request within the
// RPC timeout.
var errPipelineStuck = errors.New("its responses are not being taken")

// Consumer returns the answered requests, in order (raft.AppendPipeline).
func (p *rpcPipeline) Consumer() <-chan raft.AppendFuture { return p.done }

// Close ends the pipeline's connection and its goroutine; it does not wait
// for it (raft.AppendPipeline).
func (p *rpcPipeline) Close() error {
	p.once.Do(func() {
		close(p.stop)
		p.c.close()
		p.n.mu.Lock()
		if p.n.pipes != nil {
			delete(p.n.pipes, p)
		}
		p.n.mu.Unlock()
	})
	return nil
}

// receive reads the responses of the requests in flight, until the
// pipeline closes. After a failure it answers every request with it.
func (p *rpcPipeline) receive() {
	defer p.n.wg.Done()
	var failed error
	for {
		var f *appendFuture
		select {
		case f = <-p.inflight:
		case <-p.stop:
			return
		}
		if failed == nil {
			if t := p.n.timeout; t > 0 {
				p.c.conn.SetReadDeadline(time.Now().Add(t))
			}
			failed = p.c.receive(rpcAppendEntries, f.resp)
			if failed != nil {
				p.c.close()
			}
		}
		f.err = failed
		p.repl.done(time.Now(), f.req, f.resp, failed, false, false)
		close(f.answered)
		select {
		case p.done <- f:
		case <-p.stop:
			return
		}
	}
}

// appendFuture is a pipelined AppendEntries request (raft.AppendFuture).
type appendFuture struct {
	start    time.Time
	req      *raft.AppendEntriesRequest
	resp     *raft.AppendEntriesResponse
	err      error
	answered chan struct{}
}

func (f *appendFuture) Error() error {
	<-f.answered
	return f.err
}
func (f *appendFuture) Start() time.Time                      { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest   { return f.req }
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }

// listen serves the raft connections members open, until Close.
func (n *raftNet) listen() {
	defer n.wg.Done()
	for {
		conn, err := n.tr.Accept()
		if err != nil {
			return // the Transport closed
		}
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			conn.Close()
			return
		}
		n.wg.Add(1)
		n.served[conn] = struct{}{}
		n.mu.Unlock()
		go func() {
			defer n.wg.Done()
			defer func() {
				n.mu.Lock()
				delete(n.served, conn)
				n.mu.Unlock()
				conn.Close()
			}()
			if tc, ok := conn.(*tcpConn); ok {
				n.refresh(tc.peer)
			}
			n.serve(conn)
		}()
	}
}

// serve answers the requests on a connection a member opened, one after
// another, until the connection ends or raftNet closes.
func (n *raftNet) serve(conn net.Conn) {
	r := newFrameReader(conn)
	respCh := make(chan raft.RPCResponse, 1)
	var out []byte
	var peer wire.Fingerprint // the zero key for a connection of no key (tests)
	if tc, ok := conn.(*tcpConn); ok {
		peer = tc.peer
	}
	held := 0 // of the key's frameBudget, for the request being served
	take := func(k int) error {
		if !n.takeFrameBytes(peer, k) {
			return fmt.Errorf("%w: the frames its key's connections are sending or have sent, unanswered, hold %d bytes already",
				errFrameBudget, n.frameBudget)
		}
		held += k
		return nil
	}
	defer func() { n.giveFrameBytes(peer, held) }()
	for {
		n.giveFrameBytes(peer, held) // the last request was answered
		held = 0
		typ, body, err := n.readRequest(conn, r, take)
		if err != nil {
			if err != io.EOF && !isLinkError(err) {
				n.log.Warn("cell: a member's raft connection", "error", err)
			}
			return
		}
		req, err := decodeRequest(typ, body)
		if err != nil {
			n.log.Warn("cell: a member's raft connection", "error", err)
			return
		}
		if n.received != nil {
			n.received(req)
		}
		rpc := raft.RPC{Command: req, RespChan: respCh}
		snapshot, _ := req.(*raft.InstallSnapshotRequest)
		if snapshot != nil {
			if snapshot.Size > maxSnapBytes {
				n.log.Warn("cell: a member's raft connection", "error",
					fmt.Errorf("%w: a snapshot of %d bytes, more than %d", errMalformed, snapshot.Size, maxSnapBytes))
				return
			}
			rpc.Reader = &pacedReader{conn: conn, r: io.LimitReader(r, snapshot.Size), timeout: n.dialTimeout(), start: time.Now()}
		}
		if !n.dispatch(rpc) {
			return
		}
		var resp raft.RPCResponse
		select {
		case resp = <-respCh:
		case <-n.done:
			return
		}
		if is, _ := resp.Response.(*raft.InstallSnapshotResponse); is != nil && is.Success && resp.Error == nil {
			n.hbMu.Lock()
			fn := n.installed
			n.hbMu.Unlock()
			if fn != nil {
				fn()
			}
		}
		if ar, _ := resp.Response.(*raft.AppendEntriesResponse); ar != nil && ar.Success && resp.Error == nil &&
			(carriesConfiguration(req.(*raft.AppendEntriesRequest)) || overwrites(req.(*raft.AppendEntriesRequest), ar.LastLog)) {
			n.hbMu.Lock()
			fn := n.appended
			n.hbMu.Unlock()
			if fn != nil {
				fn()
			}
		}
		out = appendResponse(out[:0], typ, resp.Response, resp.Error)
		if _, err := conn.Write(out); err != nil {
			return
		}
		if cap(out) > readBuffer {
			out = nil
		}
		if snapshot != nil {
			return // the connection carries nothing after a snapshot
		}
	}
}

// readRequest reads the next request frame on conn, a connection a member
// opened: the connection may wait for a frame as long as it likes, but
// once a frame's header has arrived the whole frame must arrive within the
// RPC timeout, as its sender must write it within that (roundTrip and the
// pipeline's writes). A member's key that sent part of a frame and then
// nothing held the connection, its goroutine and up to frameAllocStep of
// the body for as long as it stayed connected.
func (n *raftNet) readRequest(conn net.Conn, r *bufio.Reader, take func(int) error) (byte, []byte, error) {
	conn.SetReadDeadline(time.Time{})
	if _, err := r.Peek(1); err != nil {
		return readFrame(r) // its error
	}
	conn.SetReadDeadline(time.Now().Add(n.dialTimeout()))
	return readFrameTaking(r, uint32(n.frameLimit), take)
}

// frameBudgetPerKey bounds the bytes of the request frames the raft
// connections of one member's key hold at once: read, or being read,
// until each is answered. A leader sends a member one large frame at a
// time (its pipeline; pipelineDepth), two while it moves between its
// pipeline and its RPCs one by one: room for two of the longest.
//
// Why: each of the key's connections (maxConnsPerKey, 32) could hold a
// frame of maxFrameBytes while raft's main loop took them one at a time:
// a member's key with the bandwidth made a member hold 8 GiB.
const frameBudgetPerKey = 2 * maxFrameBytes

// errFrameBudget: a member's key sent more frame bytes than
// frameBudgetPerKey while its earlier frames were unanswered.
var errFrameBudget = errors.New("cell: over the raft frame bytes a member's key may have held")

// takeFrameBytes takes k bytes of key's frame budget, if it has them.
func (n *raftNet) takeFrameBytes(key wire.Fingerprint, k int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.frameBytes[key]+k > n.frameBudget {
		return false
	}
	if n.frameBytes == nil {
		n.frameBytes = make(map[wire.Fingerprint]int)
	}
	n.frameBytes[key] += k
	return true
}

// giveFrameBytes gives k bytes back to key's frame budget.
func (n *raftNet) giveFrameBytes(key wire.Fingerprint, k int) {
	if k == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.frameBytes[key] -= k; n.frameBytes[key] <= 0 {
		delete(n.frameBytes, key)
	}
}

// pacedReader reads an InstallSnapshot's bytes from the connection of the
// member sending them, at the pace that member's own deadline holds it to
// (raftNet.InstallSnapshot: an RPC timeout, and one more for each
// snapshotTimeoutScale bytes), and each read within an RPC timeout; past
// either, a read fails with the connection's deadline, raft refuses the
// snapshot, and the connection ends.
//
// Why: raft reads a snapshot's bytes on its main loop, even those of one
// it refuses (it drains them so that the connection stays in step). A
// member whose key sent a snapshot's request and then its bytes slowly,
// or none, held the main loop as long as it liked: the member attacked
// applied nothing more, yet answered heartbeats (raft handles them beside
// its main loop), so no election came to end it.
type pacedReader struct {
	conn    net.Conn
	r       io.Reader
	timeout time.Duration
	start   time.Time
	read    int64
}

func (p *pacedReader) Read(b []byte) (int, error) {
	pace := p.start.Add(p.timeout + time.Duration(float64(p.timeout)*float64(p.read)/snapshotTimeoutScale))
	if next := time.Now().Add(p.timeout); next.Before(pace) {
		pace = next
	}
	p.conn.SetReadDeadline(pace)
	k, err := p.r.Read(b)
	p.read += int64(k)
	return k, err
}

// dispatch hands rpc to raft: a heartbeat to its heartbeat handler, any
// other to its main loop. It returns false if raftNet closed meanwhile.
func (n *raftNet) dispatch(rpc raft.RPC) bool {
	if ae, ok := rpc.Command.(*raft.AppendEntriesRequest); ok && isHeartbeat(ae) {
		n.hbMu.Lock()
		fn := n.heartbeat
		n.hbMu.Unlock()
		if fn != nil {
			fn(rpc)
			return true
		}
	}
	select {
	case n.consume <- rpc:
		return true
	case <-n.done:
		return false
	}
}
