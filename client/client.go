package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// Errors. The server's errors are the wire package's sentinels, repeated
// here so that programs need import only this package: each matches, with
// errors.Is, the error a call returns when a server answers with its code
// (PROTOCOL.md §9). errors.As with a *Error gives the code itself, the
// server's message and what came with it (RetryAfter and EpochOf read those
// for you).
var (
	// ErrInternal (internal, or a code this client does not know): the
	// server failed; try again later.
	ErrInternal = wire.ErrInternal
	// ErrBadRequest (bad_request): the request was malformed or invalid
	// (both Since and After, a bad name); do not retry it as it is.
	ErrBadRequest = wire.ErrBadRequest
	// ErrUnauthorized (unauthorized): this key may not do this (a wrong or
	// missing secret, another key holds the UUID); do not retry.
	ErrUnauthorized = wire.ErrUnauthorized
	// ErrNotMember (not_member): the call needs membership of the group
	// (Join first), or a watching member left.
	ErrNotMember = wire.ErrNotMember
	// ErrNotFound (not_found): the daemon hosts no such group, or the
	// registry holds no such lease; list again.
	ErrNotFound = wire.ErrNotFound
	// ErrTooLarge (too_large): a message, batch, name, secret or request
	// over its limit (Info.Limits says the group's); split or shorten it.
	ErrTooLarge = wire.ErrTooLarge
	// ErrRateLimited (rate_limited): the member sends faster than the
	// group allows; wait RetryAfter(err), then send again with the same ID.
	ErrRateLimited = wire.ErrRateLimited
	// ErrUnavailable (unavailable): the server hit a capacity limit (the
	// group or registry is full), could not store a change, or is
	// stopping; try again later (after RetryAfter(err) if it says), with
	// the same message IDs.
	ErrUnavailable = wire.ErrUnavailable
	// ErrUnsupported (unsupported): the server does not know the operation
	// (an older daemon, or the wrong kind of server); do not retry.
	ErrUnsupported = wire.ErrUnsupported
	// ErrEpochMismatch (epoch_mismatch): the log (or the registry) started
	// again under another epoch, EpochOf(err); a cursor of the old epoch
	// means nothing in it.
	ErrEpochMismatch = wire.ErrEpochMismatch
	// ErrWindowPassed (window_passed): a send of messages an earlier send
	// left in doubt, refused, nothing stored, because the group's dedup
	// window may have forgotten a copy that send stored (PROTOCOL.md
	// §8.5): sent again under the same IDs, a message might be stored
	// twice. It comes with ErrInDoubt: the earlier copy may exist.
	ErrWindowPassed = wire.ErrWindowPassed

	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("client closed")
	// ErrUnreachable: no connection to the server could be made or kept
	// (nothing answered, the handshake timed out, the connection died).
	ErrUnreachable = errors.New("server unreachable")
	// ErrGroupAddr: an address to dial is a multicast or broadcast one,
	// which names no one server; the client sends nothing to it.
	ErrGroupAddr = errors.New("a multicast or broadcast address, not a server's")
	// ErrProtocol: the server sent something this client does not
	// understand (a frame of an unknown kind, or none where one was due).
	ErrProtocol = errors.New("protocol error")
	// ErrShuttingDown: the server closed the connection because it is
	// stopping (close code 0x2). It matches ErrUnavailable too: try again
	// later, possibly elsewhere. A server stopping also refuses new calls
	// with an unavailable error that carries a time to wait (RetryAfter).
	ErrShuttingDown = fmt.Errorf("%w: the server is shutting down", ErrUnavailable)
	// ErrCellUnconfirmed: CellMembers found no majority of a recorded
	// replica set answering alike (too few answered, or they disagree).
	// It matches ErrUnavailable too: ask again later.
	ErrCellUnconfirmed = fmt.Errorf("%w: no majority of the recorded members confirms the cell's members", ErrUnavailable)
	// ErrInvalidConfig: New was given a Config it cannot use; the error
	// names the field.
	ErrInvalidConfig = errors.New("client: invalid config")
	// ErrInDoubt: a send's outcome is unknown. Its request may have
	// reached the daemon, which may have stored its messages, but no
	// answer says whether it did: the connection was lost or closed
	// (the daemon stopping, code 0x2, included), the call's context
	// ended, the handle or Client closed, or the reply could not be read,
	// after the request went out (or under an earlier attempt of the
	// same call). It comes with that error, which errors.Is and
	// errors.As find as well (ErrUnreachable, ErrShuttingDown, a
	// context's error, ErrClosed...). To settle it, send the same
	// messages again with the same IDs (SendWithID, SendMessages): a
	// message stored is acknowledged as a duplicate (Ack.Duplicate),
	// with its original Seq and Time, and one that was not is stored,
	// once, within the group's dedup window (at least its last 65,536
	// messages, of those its log still retains: PROTOCOL.md §8.5). A
	// send's error without it (a refusal that stored nothing:
	// ErrNotMember, ErrTooLarge..., or an Error marked Unchanged; or a
	// failure before the request could go out) means nothing of the
	// send was stored, unless a message of it was in doubt already: one
	// stays in doubt on its Group until a send of it is acknowledged,
	// whatever its retries are told (doubts).
	//
	// A cell change (CellAdd, CellRemove) fails with it too when an ask
	// of it may have made the change (left unanswered, or refused without
	// Unchanged): CellStatus shows the cell's members, and asking again is
	// safe (a member added already, or removed already, is left as it is).
	ErrInDoubt = errors.New("outcome unknown: the daemon may have stored it")
)

// inDoubt marks err, a send's, as one whose outcome is unknown
// (ErrInDoubt); err itself is kept for errors.Is and errors.As. An err
// marked already is returned as it is.
func inDoubt(err error) error {
	if err == nil || errors.Is(err, ErrInDoubt) {
		return err
	}
	return &doubtError{err}
}

// doubtError is a send's error whose outcome is unknown (inDoubt).
type doubtError struct{ err error }

func (e *doubtError) Error() string {
	return "outcome unknown (it may have been stored): " + e.err.Error()
}
func (e *doubtError) Unwrap() []error { return []error{ErrInDoubt, e.err} }

// inDoubtIf is inDoubt(err) if doubt, else err.
func inDoubtIf(doubt bool, err error) error {
	if doubt {
		return inDoubt(err)
	}
	return err
}

// Names the protocol already gets right, re-exported so that programs need
// import only this package.
type (
	// Fingerprint is the SHA-256 of a key's public half: a user's member
	// ID, a daemon's or a registry's identity. The zero Fingerprint means
	// "none given".
	Fingerprint = wire.Fingerprint
	// UUID is a group's identity, stable across its daemon's restarts.
	UUID = wire.UUID
	// ID is a message's ID, chosen by its sender (see NewID).
	ID = wire.ID
	// Error is what a server answered instead of a result (an Error
	// frame, PROTOCOL.md §9): its Code, the server's Message (the server's
	// text: show it escaped, never parse it) and, with some codes,
	// RetryAfterMS, Epoch, and the Leader and Replicas of a cell. It
	// matches its code's sentinel (ErrNotMember...) with errors.Is; get it
	// with errors.As:
	//
	//	var se *client.Error
	//	if errors.As(err, &se) { log.Printf("server said %v: %s", se.Code, se.Message) }
	//
	// Errors of this client's own making are not an *Error: ErrUnreachable,
	// ErrClosed, ErrProtocol, a context's error, and the refusals it makes
	// without asking (a message over the limit the group's daemon told it,
	// ErrTooLarge; a Query with both Since and After, ErrBadRequest).
	Error = wire.Error
	// Code is an Error's code; its String is the protocol's name for it
	// ("not_member").
	Code = wire.Code
)

// The codes of PROTOCOL.md §9, each matching the sentinel of the same name.
const (
	CodeInternal      = wire.CodeInternal
	CodeBadRequest    = wire.CodeBadRequest
	CodeUnauthorized  = wire.CodeUnauthorized
	CodeNotMember     = wire.CodeNotMember
	CodeNotFound      = wire.CodeNotFound
	CodeTooLarge      = wire.CodeTooLarge
	CodeRateLimited   = wire.CodeRateLimited
	CodeUnavailable   = wire.CodeUnavailable
	CodeUnsupported   = wire.CodeUnsupported
	CodeEpochMismatch = wire.CodeEpochMismatch
	CodeWindowPassed  = wire.CodeWindowPassed
)

// ParseFingerprint parses a fingerprint's text form (as huddle prints
// them, and as a registry's mDNS TXT record carries it: fp=...), for
// Client.Registry's pin. Case and dashes are optional. Errors: an error
// naming s if it is not a fingerprint.
func ParseFingerprint(s string) (Fingerprint, error) { return wire.ParseFingerprint(s) }

// NewID returns a new message ID (a UUIDv7) for SendWithID or
// SendMessages.
func NewID() ID { return wire.NewID() }

// Stream error codes a client uses when it abandons a stream.
const codeCancelled quic.StreamErrorCode = 0x1

// Config configures a Client. The zero value of each field but Identity
// means its default.
type Config struct {
	// Identity is the key this client presents; servers know the user by
	// its fingerprint. Required.
	Identity *identity.Identity
	// KnownHosts, if set, pins registries dialled without a fingerprint on
	// first use and checks them afterwards. If nil, such registries are
	// accepted unpinned.
	KnownHosts *identity.KnownHosts
	// DialTimeout bounds one connection attempt (handshake included).
	// Default 5 s.
	DialTimeout time.Duration
	// Logger receives debug events (connections opened and lost). Default:
	// discard.
	Logger *slog.Logger
	// NoBatching turns send batching off: each Group.Send is then its own
	// send operation. By default concurrent Sends on one Group are gathered
	// into one operation (see Group.Send).
	NoBatching bool
	// BatchLinger is the longest a Send waits for others to join its batch
	// while another batch of the group is in flight. With nothing in
	// flight a Send waits only right after a batch of several, for that
	// batch's callers to send again: for all of them, 500 µs at most (or
	// BatchLinger, if shorter) and no longer than BatchLinger from the
	// oldest queued Send, and for half of them until 500 µs (or
	// BatchLinger) after that batch ended. Default DefaultBatchLinger
	// (500 µs).
	BatchLinger time.Duration
}

// Validate reports whether the configuration can be used: nil, or an error
// matching ErrInvalidConfig that names the field.
func (c Config) Validate() error {
	switch {
	case c.Identity == nil:
		return fmt.Errorf("%w: Identity is required", ErrInvalidConfig)
	case c.DialTimeout < 0:
		return fmt.Errorf("%w: DialTimeout %v is negative", ErrInvalidConfig, c.DialTimeout)
	case c.BatchLinger < 0:
		return fmt.Errorf("%w: BatchLinger %v is negative", ErrInvalidConfig, c.BatchLinger)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.BatchLinger == 0 {
		c.BatchLinger = DefaultBatchLinger
	}
	return c
}

// Client talks to huddle registries and group daemons. It is safe for
// concurrent use; Close releases its socket and connections and waits for
// the goroutines it started (send batching's).
type Client struct {
	cfg Config

	// ctx ends when Close begins; the batchers' goroutines, counted by wg,
	// stop then.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	attempts attemptClock // times the attempts on cells' members (cell.go)

	mu     sync.Mutex
	tr     *quic.Transport // nil until first dial
	udp    *net.UDPConn
	peers  map[string]*peer
	closed bool
	// closeDone is closed when the first Close has finished: later
	// Closes wait for it.
	closeDone chan struct{}

	now func() time.Time // the clock; tests set it (export_test.go)
	// cellChangeFor bounds a CellAdd or CellRemove whose context has no
	// deadline: cellChangeFor, which tests shorten (export_test.go).
	cellChangeFor time.Duration
	// cellFollowFor bounds a cell's call that has no deadline (cell.go),
	// and cellAskWait each question of CellMembers (cellops.go): their
	// constants, which tests lengthen or shorten (export_test.go) to wait
	// on the event they mean rather than race these clocks.
	cellFollowFor, cellAskWait time.Duration
	// cellDoubtFor bounds a cell's send retried in doubt (cell.go).
	cellDoubtFor time.Duration

	// pins is what Registry's trust on first use knows (registry.go).
	pins pinsSeen
}

// New returns a Client. It does no I/O: the socket is opened on first use.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg.withDefaults(), peers: make(map[string]*peer), closeDone: make(chan struct{}), now: time.Now, cellChangeFor: cellChangeFor,
		cellFollowFor: cellFollowFor, cellAskWait: cellAskWait, cellDoubtFor: cellDoubtFor}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Fingerprint returns the fingerprint this client presents: the user's ID.
func (c *Client) Fingerprint() Fingerprint { return c.cfg.Identity.Fingerprint() }

// Close fails queued sends, ends watches (with ErrClosed), closes every
// connection and the socket, and waits for the Client's goroutines. It is
// safe to call again, also from several goroutines at once: each returns
// once the first has finished. Calls on a closed Client return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.closeDone
		return nil
	}
	c.closed = true
	defer close(c.closeDone)
	peers := c.peers
	c.peers = nil
	tr, udp := c.tr, c.udp
	c.mu.Unlock()
	c.cancel()
	for _, p := range peers {
		p.close()
	}
	c.wg.Wait()
	c.attempts.stop()
	if tr != nil {
		tr.Close()
		udp.Close()
	}
	return nil
}

// start runs fn on a goroutine Close waits for, unless the Client is
// closed (ErrClosed).
func (c *Client) start(fn func(ctx context.Context)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.wg.Go(func() { fn(c.ctx) })
	return nil
}

// transport returns the client's QUIC transport, opening its socket on first
// use.
func (c *Client) transport() (*quic.Transport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.tr == nil {
		udp, err := net.ListenUDP("udp", nil)
		if err != nil {
			return nil, fmt.Errorf("open UDP socket: %w", err)
		}
		c.udp = udp
		c.tr = &quic.Transport{Conn: udp}
	}
	return c.tr, nil
}

// peer returns the shared connection holder for a server at addrs pinned to
// pin (zero: verify decides).
func (c *Client) peer(addrs []string, pin wire.Fingerprint, verify func(wire.Fingerprint) error) (*peer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerLocked(addrs, pin, verify)
}

// peerLocked is peer with c.mu held.
func (c *Client) peerLocked(addrs []string, pin wire.Fingerprint, verify func(wire.Fingerprint) error) (*peer, error) {
	key := strings.Join(addrs, ",") + "|" + pin.String()
	if c.closed {
		return nil, ErrClosed
	}
	if p, ok := c.peers[key]; ok && verify == nil {
		return p, nil
	}
	p := &peer{c: c, key: key, addrs: addrs, pin: pin, verify: verify}
	if verify == nil {
		c.peers[key] = p
	}
	return p, nil
}

// registryPeer returns the shared connection holder for the registry at
// addr with key pin, held for a Registry handle until release: taken and
// counted at once, so that another handle's release cannot retire it
// between the two.
func (c *Client) registryPeer(addr string, pin wire.Fingerprint) (*peer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, err := c.peerLocked([]string{addr}, pin, nil)
	if err != nil {
		return nil, err
	}
	p.registries++
	return p, nil
}

// groupPeer returns the shared connection holder for a group daemon at
// addrs with key pin, held for a Group handle until releaseGroup: taken
// and counted at once, as registryPeer's. group, if not zero, is a group
// the daemon hosts, which its liveness probes name (the first given).
func (c *Client) groupPeer(addrs []string, pin wire.Fingerprint, group wire.UUID) (*peer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, err := c.peerLocked(addrs, pin, nil)
	if err != nil {
		return nil, err
	}
	p.groups++
	p.mu.Lock()
	if p.probe == (wire.UUID{}) {
		p.probe = group
	}
	p.daemon = true
	p.mu.Unlock()
	return p, nil
}

// release gives back a Registry handle's hold on p: the last hold of any
// handle closes its connection and forgets it, so that a registry the
// caller is done with (one discovery says is gone) holds no connection,
// and no goroutines, until the Client closes. A later handle on the same
// address and key dials afresh.
func (c *Client) release(p *peer) {
	c.mu.Lock()
	p.registries--
	c.retireIfLastLocked(p)
}

// releaseGroup gives back a Group handle's hold on p, as release.
func (c *Client) releaseGroup(p *peer) {
	c.mu.Lock()
	p.groups--
	c.retireIfLastLocked(p)
}

// retireIfLastLocked retires p if no handle holds it; c.mu is held, and
// unlocked.
func (c *Client) retireIfLastLocked(p *peer) {
	last := p.registries == 0 && p.groups == 0 && c.peers[p.key] == p
	if last {
		delete(c.peers, p.key)
	}
	c.mu.Unlock()
	if last {
		p.retire()
	}
}

func (c *Client) quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout: c.cfg.DialTimeout,
		MaxIdleTimeout:       30 * time.Second,
		// Keep-alives let a long watch notice a dead daemon and keep NAT
		// bindings open; they cost one small packet per period.
		KeepAlivePeriod:       10 * time.Second,
		MaxIncomingStreams:    -1,
		MaxIncomingUniStreams: -1,
		// QLOGDIR=dir writes a qlog of each connection into dir (README,
		// "Environment"); unset, this tracer is nil and costs nothing.
		Tracer: qlog.DefaultConnectionTracer,
	}
}

// peer holds the connection to one server, redialled when it drops.
type peer struct {
	c      *Client
	key    string // in c.peers
	addrs  []string
	pin    wire.Fingerprint
	verify func(wire.Fingerprint) error
	// registries counts the Registry handles open on it, groups the
	// Group handles that hold it (c.mu guards both): the last one given
	// back retires it.
	registries, groups int

	mu   sync.Mutex
	conn *quic.Conn
	seen wire.Fingerprint // the fingerprint the server presented
	// stopped is when the server last closed the connection because it is
	// shutting down (close code 0x2): for shutdownWait after it, calls
	// fail at once with ErrShuttingDown instead of dialling a server that
	// is going away.
	stopped time.Time
	dialled time.Time // when conn was dialled
	live    *liveness // conn's, while calls wait on it (liveness.go)
	// probe is the group a liveness probe of this group daemon's
	// connections asks about (the first handle's); zero for a registry,
	// and for a group daemon asked only questions of its cell (daemon).
	probe wire.UUID
	// daemon: a group daemon (groupPeer), which a liveness probe can
	// ask for a group's info even without a group to name (liveness.go).
	daemon  bool
	retired bool // its last handle was closed: it dials no more
	// dialling is closed when the dial in progress ends; nil when none
	// is. One dial at a time, made outside mu: a call that finds one in
	// progress waits for it as long as its own context lets it (it held
	// mu across the dial, and a cancelled call waited for another's dial,
	// up to DialTimeout).
	dialling chan struct{}

	requests requestQueue // small requests, written together (requests.go)
}

// noticeClose records when conn was closed, if its server closed it
// because it is shutting down: as err, a call's error on conn, says, or
// conn's own end. A call's stream can fail with the server's close before
// quic-go has ended the connection's context with it: asked of the
// context alone, the close was not recorded, the call then closed the
// connection itself (drop), and that became the context's cause; the
// next call dialled the stopping server again (TestSendCutByShutdownInDoubt,
// about 1 run in 30 under -race).
func (p *peer) noticeClose(conn *quic.Conn, err error) {
	if !shuttingDown(conn, err) {
		return
	}
	p.mu.Lock()
	p.stopped = p.c.now()
	p.mu.Unlock()
}

// forgetStop clears the mark a shutdown close left (see stopped): the
// next call dials the server again.
func (p *peer) forgetStop() {
	p.mu.Lock()
	p.stopped = time.Time{}
	p.mu.Unlock()
}

// shutdownWait is how long after a server closed its connection because
// it is shutting down the client takes it at its word, the time to wait
// its own refusals give while it stops (PROTOCOL.md §3, "Shutting
// down": do not dial the same server again at once): a call in that
// time gets ErrShuttingDown at once. Without it, a call made after the
// close but before the server was gone dialled again, and waited for the
// dial to time out (issue 15.14; TestGracefulStop saw 5 of 64 callers do
// so under load). After it, the next call dials: a server restarted is
// reached as soon as it is back.
const shutdownWait = time.Second

// connected reports whether the peer has a connection that is not closed.
func (p *peer) connected() bool { return p.current() != nil }

// current returns the peer's connection if it has one that is not
// closed, else nil.
func (p *peer) current() *quic.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && p.conn.Context().Err() == nil {
		return p.conn
	}
	return nil
}

// get returns a live connection and its liveness watch, dialling the
// addresses in order if there is none. A call that finds another's dial in
// progress waits for it, or for its own context, and then looks again.
func (p *peer) get(ctx context.Context) (*liveness, error) {
	for {
		p.mu.Lock()
		if p.conn != nil {
			if p.conn.Context().Err() == nil {
				live := p.live
				p.mu.Unlock()
				return live, nil
			}
			if shuttingDown(p.conn, nil) && p.stopped.Before(p.dialled) {
				p.stopped = p.c.now() // before noticeClose could say so
			}
		}
		p.conn = nil
		if p.retired {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if !p.stopped.Before(p.dialled) && p.c.now().Sub(p.stopped) < shutdownWait {
			p.mu.Unlock()
			return nil, ErrShuttingDown
		}
		if wait := p.dialling; wait != nil {
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, dialEnded(ctx, "waiting for a dial in progress")
			}
		}
		done := make(chan struct{})
		p.dialling = done
		p.mu.Unlock()
		conn, addr, err := p.dialAny(ctx)
		p.mu.Lock()
		p.dialling = nil
		close(done)
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		if p.retired { // its last handle closed while it dialled
			p.mu.Unlock()
			conn.CloseWithError(0, "client closed")
			return nil, ErrClosed
		}
		p.conn, p.dialled = conn, p.c.now()
		p.live = newLiveness(p, conn)
		live := p.live
		context.AfterFunc(conn.Context(), func() { p.noticeClose(conn, nil) })
		p.seen, _ = identity.PeerFingerprint(conn.ConnectionState().TLS)
		seen := p.seen // read under mu: another dial may set it once mu is let go
		p.mu.Unlock()
		p.c.cfg.Logger.Debug("connected", "addr", addr, "fingerprint", seen.Short())
		return live, nil
	}
}

// shownAll returns texts a peer chose (the addresses a registry listed
// a daemon at) as an error may quote them (wire.Shown): a registry's
// listing is length-checked only, and programs print the errors they get.
func shownAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = wire.Shown(s)
	}
	return out
}

// dialEnded is the error of a dial (or a wait for one) that ctx ended: a
// server that did not answer in the time the caller gave is unreachable,
// and says so (errors.Is finds both).
func dialEnded(ctx context.Context, where string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, where, ctx.Err())
	}
	return ctx.Err()
}

// dialAny dials the peer's addresses in order and returns the first
// connection made, and its address. An address where another key answers
// is passed over like one where nothing does (the key is checked at each):
// it is the error only if every address answered with another key, as a
// wrong key is no reachability problem (with nothing answering at another
// address, the error is ErrUnreachable: which key is there is unknown,
// and a handle takes a wrong key for final). Giving up at the first such
// address let anyone who could put an address first in a listing (a rogue
// registry on the LAN, whose entry of a group under its real key came
// first by the lease time it claimed) make the group unreachable.
//
// An address that has not answered within dialStagger does not hold the
// next one back: it is dialled too, and the first handshake completed
// wins (the others are cancelled, or closed if they complete). Dialled one
// after the other, an address where nothing answers (a rogue registry's,
// or a daemon's former one) took the whole of the dial's time: a call to
// a cell's member, whose dial is bounded by cellDialFor (500 ms), never
// reached its second address, and a cell listed by a rogue registry at
// silent addresses took 13 s to reach.
func (p *peer) dialAny(ctx context.Context) (*quic.Conn, string, error) {
	tr, err := p.c.transport()
	if err != nil {
		return nil, "", err
	}
	if len(p.addrs) == 1 {
		conn, err := p.dial(ctx, tr, p.addrs[0])
		switch {
		case err == nil:
			return conn, p.addrs[0], nil
		case ctx.Err() != nil:
			return nil, "", dialEnded(ctx, wire.Shown(p.addrs[0]))
		case isWrongKey(err):
			return nil, "", err
		}
		return nil, "", fmt.Errorf("%w: %w", ErrUnreachable, fmt.Errorf("%s: %w", wire.Shown(p.addrs[0]), err))
	}
	if len(p.addrs) == 0 {
		return nil, "", fmt.Errorf("no address to dial: %w", ErrUnreachable)
	}
	type dialled struct {
		conn *quic.Conn
		addr string
		err  error
	}
	dctx, cancel := context.WithCancel(ctx)
	results := make(chan dialled, len(p.addrs))
	var wg sync.WaitGroup
	next, pending := 0, 0
	dialNext := func() {
		addr := p.addrs[next]
		next++
		pending++
		wg.Go(func() {
			conn, err := p.dial(dctx, tr, addr)
			results <- dialled{conn, addr, err}
		})
	}
	stagger := time.NewTimer(dialStagger)
	defer stagger.Stop()
	dialNext()
	var won *dialled
	var errs []error
	var wrongKey error
	for won == nil && pending > 0 && ctx.Err() == nil {
		select {
		case r := <-results:
			pending--
			switch {
			case r.err == nil:
				won = &r
				continue
			case isWrongKey(r.err):
				wrongKey = cmp.Or(wrongKey, r.err)
			case ctx.Err() == nil:
				errs = append(errs, fmt.Errorf("%s: %w", wire.Shown(r.addr), r.err))
			}
		case <-stagger.C:
		case <-ctx.Done():
			continue
		}
		if next < len(p.addrs) {
			dialNext()
			stagger.Reset(dialStagger)
		}
	}
	cancel()
	wg.Wait()
	close(results)
	for r := range results {
		if r.err == nil {
			if won == nil {
				won = &r
				continue
			}
			r.conn.CloseWithError(0, "")
		}
	}
	switch {
	case won != nil:
		return won.conn, won.addr, nil
	case ctx.Err() != nil:
		return nil, "", dialEnded(ctx, strings.Join(shownAll(p.addrs[:next]), ", "))
	case wrongKey != nil && len(errs) == 0:
		return nil, "", wrongKey
	case wrongKey != nil:
		// Another key at one address, nothing at another: the group's
		// daemon is unreachable, not another key (whose key the silent
		// address has is unknown). The wrong key was the error until
		// session 15, which a handle takes for final: with a rogue
		// registry's address among a daemon's, a daemon that moved was
		// never looked for again (a watch retried its old addresses for
		// ever).
		errs = append(errs, fmt.Errorf("another key answered: %v", wrongKey))
	}
	return nil, "", fmt.Errorf("%w: %w", ErrUnreachable, allOf(errs))
}

// allOf is errors.Join's error on one line: its errors' texts joined by
// "; ". errors.Join puts each on a line of its own, and a dial's errors at
// a daemon's addresses, or the registries' that failed a listing, are
// parts of one error: programs print it as one line (huddle web's
// messages, a log line), and the CLI showed each line break as U+FFFD
// (until session 18). errors.Is and errors.As see each error, as they do
// errors.Join's.
type allOf []error

func (e allOf) Error() string {
	texts := make([]string, len(e))
	for i, err := range e {
		texts[i] = err.Error()
	}
	return strings.Join(texts, "; ")
}

func (e allOf) Unwrap() []error { return e }

// dialStagger is how long dialAny waits for a handshake at one address
// before it dials the next one too (RFC 8305's connection attempt delay).
const dialStagger = 250 * time.Millisecond

// isWrongKey reports whether err is a dial's that another key answered.
func isWrongKey(err error) bool {
	var mm *identity.MismatchError
	var ce *identity.ChangedError
	return errors.As(err, &mm) || errors.As(err, &ce)
}

func (p *peer) dial(ctx context.Context, tr *quic.Transport, addr string) (*quic.Conn, error) {
	ua, err := resolve(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.c.cfg.DialTimeout)
	defer cancel()
	conn, err := tr.Dial(ctx, ua, p.c.cfg.Identity.ClientTLS(p.pin, p.verify), p.c.quicConfig())
	if err != nil {
		var mm *identity.MismatchError
		if errors.As(err, &mm) {
			return nil, mm
		}
		var ce *identity.ChangedError
		if errors.As(err, &ce) {
			return nil, ce
		}
		return nil, err
	}
	return conn, nil
}

// drop forgets conn if it is still the current one, so the next call dials.
func (p *peer) drop(conn *quic.Conn) {
	p.mu.Lock()
	if p.conn == conn {
		p.conn = nil
	}
	p.mu.Unlock()
	conn.CloseWithError(0, "")
}

func (p *peer) close() {
	p.mu.Lock()
	conn := p.conn
	p.conn = nil
	p.mu.Unlock()
	if conn != nil {
		conn.CloseWithError(0, "client closed")
	}
}

// retire closes the connection for good: the peer dials no more
// (ErrClosed), as it is no longer among the Client's peers that Close
// closes.
func (p *peer) retire() {
	p.mu.Lock()
	p.retired = true
	p.mu.Unlock()
	p.close()
}

// resolve turns "host:port" (or "host", meaning the registry's default
// port) into a UDP address.
func resolve(addr string) (*net.UDPAddr, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), strconv.Itoa(wire.DefaultRegistryPort))
	}
	if shown := wire.Shown(addr); shown != addr {
		// No host name holds such characters, and net's error would
		// quote the address as it came.
		return nil, fmt.Errorf("resolve %s: not a host name and port", shown)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", addr, err)
	}
	// A datagram to a multicast or broadcast address goes to every host on
	// the link, or to none: no one server is there to handshake with, and
	// the Initials would go out to all of them. Until session 23 a
	// --registry at 224.0.0.251, or a host name resolving to one, was dialled
	// as given (listings and cell configurations were already refused).
	if ua.IP.IsMulticast() || ua.IP.Equal(net.IPv4bcast) {
		return nil, fmt.Errorf("resolve %s: %s: %w", addr, ua.IP, ErrGroupAddr)
	}
	return ua, nil
}

// call performs one operation: it opens a stream, writes the request, and
// hands each response frame to handle until handle says it is done (or
// returns an error), the server's Error frame arrives, or ctx ends. A call
// that fails because the connection died is tried once more on a new
// connection: every huddle operation may be repeated safely (sends carry
// their message IDs).
func (p *peer) call(ctx context.Context, op wire.Op, args any, handle func(wire.Kind, wire.Frame) (bool, error)) error {
	return p.callThen(ctx, op, args, handle, nil, nil)
}

// callThen is call whose second attempt, when the connection died under
// the first, goes to the peer next returns rather than to p dialled
// again (next nil: p). A group handle that follows its daemon passes its
// reach: the daemon that died may be running again elsewhere. on, if set,
// is told each connection an attempt runs on: the last one told is the
// one that answered, when the call succeeds.
//
// A send's error is marked in doubt (ErrInDoubt) when an attempt's request
// may have reached the server and no answer of the server's (an Error
// frame) settled it: the daemon may have stored it.
func (p *peer) callThen(ctx context.Context, op wire.Op, args any, handle func(wire.Kind, wire.Frame) (bool, error), next func(context.Context) (*peer, error), on func(*quic.Conn)) error {
	return p.callOnDoubt(ctx, op, args, handle, next, on, nil)
}

// callOnDoubt is callThen, calling onDoubt, if not nil, when an attempt
// leaves the call in doubt, before the call is tried again: a send's sets,
// in the request args points to, where the log stood before its first try
// (after, PROTOCOL.md §8.5), as memberCallOnDoubt's retries of a cell's
// send do. Until session 22 the retry of a group of one daemon on a new
// connection went without it, and a daemon whose dedup window had passed
// meanwhile (a restart that took its time) stored a second copy.
func (p *peer) callOnDoubt(ctx context.Context, op wire.Op, args any, handle func(wire.Kind, wire.Frame) (bool, error), next func(context.Context) (*peer, error), on func(*quic.Conn), onDoubt func()) error {
	doubt := false
	err := p.attempts(ctx, op, args, handle, next, on, &doubt, onDoubt)
	return inDoubtIf(doubt && op == wire.OpSend && err != nil, err)
}

// attempts is callThen's body: it sets *doubt once an attempt's request
// went out and ended other than in an answer of the server's, and calls
// onDoubt (if not nil) then.
func (p *peer) attempts(ctx context.Context, op wire.Op, args any, handle func(wire.Kind, wire.Frame) (bool, error), next func(context.Context) (*peer, error), on func(*quic.Conn), doubt *bool, onDoubt func()) error {
	var err, lost error // lost: the first attempt's, its connection lost
	for attempt := 0; attempt < 2; attempt++ {
		if attempt > 0 && next != nil {
			if p, err = next(ctx); err != nil {
				return redialFailed(ctx, lost, err)
			}
		}
		var live *liveness
		live, err = p.get(ctx)
		if err != nil {
			return redialFailed(ctx, lost, err)
		}
		conn := live.conn
		if on != nil {
			on(conn)
		}
		heard, start := conn.ConnectionStats().PacketsReceived, time.Now()
		var sent, delivered bool
		sent, delivered, err = p.stream(ctx, live, op, args, handle)
		if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && !delivered &&
			time.Since(start) >= silentAfter/3 && conn.ConnectionStats().PacketsReceived == heard {
			// The whole call, long enough for any live server to have
			// acknowledged its request, passed without a packet from the
			// server: the connection is most likely dead (the server
			// restarted and ignores it), so the next call dials afresh. A
			// call its caller cancelled says nothing of the kind.
			p.drop(conn)
		}
		if sent && err != nil && !refusedWhole(err) {
			// Its request may have reached the server, and no answer
			// settled it: cut short (the connection lost, the context
			// ended), one that could not be read, or a refusal that
			// may follow a send stored (refusedWhole).
			if !*doubt && onDoubt != nil {
				onDoubt()
			}
			*doubt = true
		}
		if err == nil || !connectionLost(conn, err) {
			return err
		}
		if ctx.Err() != nil {
			if errors.Is(err, ctx.Err()) {
				return err // the call ended with its context, which says so
			}
			// The connection was lost (the liveness watch closed it as
			// "server silent", say) and then the call's context ended,
			// before the call could be tried again: its request may have
			// reached the server, its outcome is unknown, as when a retry
			// cannot connect. It was the connection's bare error, and huddle
			// send told a line in doubt "not sent" (exit 1, not 3), its
			// --timeout and the liveness bound both 1.5 s (until session
			// 18: e2e TestSendLinesOutcomeUnknown under load).
			return fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		if shuttingDown(conn, err) {
			// The server closed the connection because it is stopping:
			// dialling it again would only wait for a server that is gone.
			// A send it left unanswered is in doubt (*doubt, above): the
			// server refuses with an Error frame what it will not
			// serve, and closes only once the operations it took have
			// finished or its grace period is over; one cut at that
			// close, or whose answer the close overtook, may be stored
			// (PROTOCOL.md §3, "Shutting down").
			p.noticeClose(conn, err)
			p.drop(conn)
			return ErrShuttingDown
		}
		p.c.cfg.Logger.Debug("connection lost", "remote", conn.RemoteAddr(), "err", context.Cause(conn.Context()))
		p.drop(conn)
		if delivered {
			// Part of a reply was handed out already: repeating the call
			// would repeat it, so the caller decides.
			break
		}
		lost = err
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

// RefusedWhole reports whether err holds a server's answer that says it
// carried out nothing of the request it answered (refusedWhole): a send's
// error that is so and yet matches ErrInDoubt is in doubt because of an
// earlier send of the same messages, not because of this one.
func RefusedWhole(err error) bool { return refusedWhole(err) }

// refusedWhole reports whether err is a server's answer that says it
// carried out nothing of the request: an Error whose code says so (the
// request is wrong, or not allowed, or over a limit: PROTOCOL.md §8.5
// stores nothing of a send so refused), or one marked Unchanged. A send
// refused unavailable or internal without the mark may have been stored:
// a write the log could not make durable, a cell that could not decide it
// (its leadership changed under it), a daemon whose handler failed, or
// any such refusal of a daemon from before session 19, which never marks
// one. Until session 19 every Error was taken for a refusal, and huddle
// send reported such a send "not sent" (exit 1).
func refusedWhole(err error) bool {
	var we *wire.Error
	if !errors.As(err, &we) {
		return false
	}
	switch we.Code {
	case wire.CodeBadRequest, wire.CodeUnauthorized, wire.CodeNotMember, wire.CodeNotFound,
		wire.CodeTooLarge, wire.CodeRateLimited, wire.CodeUnsupported, wire.CodeEpochMismatch, wire.CodeWindowPassed:
		return true
	}
	return we.Unchanged
}

// redialFailed is the error of a call whose connection was lost under its
// first attempt (lost; nil: this was the first attempt) and whose second
// could not connect (err). The first attempt's request may have reached
// the server, so the call's outcome is unknown: ErrUnreachable, whatever
// kept the second from connecting (another key answering, the server
// noticed shutting down meanwhile), except the client closing or the
// call's context ending, which say so themselves. Such an error came back
// as it was (until session 18), and huddle send told a line in doubt "not
// sent" when another key answered the redial, say.
func redialFailed(ctx context.Context, lost, err error) error {
	if lost == nil || errors.Is(err, ErrUnreachable) || errors.Is(err, ErrClosed) || ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%w: %w; connecting again: %w", ErrUnreachable, lost, err)
}

// stream runs one operation on one stream of live's connection.
// delivered reports whether any response frame reached handle. The call
// waits on the connection (liveness) until it ends, a watch until its
// first frame.
//
// sent reports whether its request may have gone out: from the moment
// its stream is open, the request is queued or written, and a server may
// read it.
func (p *peer) stream(ctx context.Context, live *liveness, op wire.Op, args any, handle func(wire.Kind, wire.Frame) (bool, error)) (sent, delivered bool, err error) {
	conn := live.conn
	waiting := ctx.Value(silenceWatched{}) == nil
	if waiting {
		live.begin()
		defer func() {
			if waiting {
				live.end()
			}
		}()
	}
	// The request is encoded once, before its stream is opened: a small
	// one is queued, and written with the others queued with it by
	// whichever caller flushes the queue (this one, maybe, already); a
	// larger one is written here, from the same buffer.
	frame, err := encodeRequest(op, args)
	if err != nil {
		return false, false, err
	}
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		putRequestFrame(frame)
		return false, false, err
	}
	if a, ok := ctx.(*attemptCtx); ok {
		a.cancelOnEnd(st) // a cell's attempt cancels st itself
		defer a.cancelOnEnd(nil)
	} else {
		stop := context.AfterFunc(ctx, func() { cancelStream(st) })
		defer stop()
	}
	var queued *queuedRequest
	if len(*frame) <= maxCoalescedRequest {
		queued = p.requests.queue(st, frame)
		defer p.requests.done()
	} else if _, err := (requestWriter{st}).Write(*frame); err != nil {
		putRequestFrame(frame)
		if !stoppedByServer(err) || ctx.Err() != nil {
			cancelStream(st)
			return false, false, ctxErr(ctx, err) // its end (FIN) never went out: a server reads no request
		}
		// The server stopped reading (STOP_SENDING) because what it read
		// already made it refuse the request, a frame over its limit for
		// instance; its Error frame follows (PROTOCOL.md §3). quic-go has
		// reset the sending side for us.
	} else {
		putRequestFrame(frame)
		st.Close()
	}
	buf := responseBufs.Get().(*[]byte)
	defer putResponseBuf(buf)
	for {
		kind, f, err := readResponse(st, buf)
		if err != nil {
			if handed, werr := queued.writeHandedBack(); handed {
				// The flusher could not write the request without
				// blocking, and woke this read to have it written here.
				if werr != nil && (!stoppedByServer(werr) || ctx.Err() != nil) {
					cancelStream(st)
					return false, false, ctxErr(ctx, werr) // as a larger request's failed write
				}
				continue
			}
			st.CancelRead(codeCancelled)
			var we *wire.Error
			// These errors do not name op: the caller's does (Group.fail,
			// Registry.fail, namedOnce), and they were read "fetch group
			// g: fetch: server closed ..." (until session 18).
			switch {
			case errors.As(err, &we):
				return true, delivered, we
			case errors.Is(err, io.EOF) && delivered:
				// Frames came, but not the one that ends the reply (an
				// End, a Result): "without a reply" misled (until
				// session 17).
				return true, delivered, fmt.Errorf("server closed the stream before its reply ended: %w", ErrProtocol)
			case errors.Is(err, io.EOF):
				return true, delivered, fmt.Errorf("server closed the stream without a reply: %w", ErrProtocol)
			case errors.Is(err, ErrProtocol):
				return true, delivered, err
			case errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrFrameTooLarge), errors.Is(err, wire.ErrEmptyFrame):
				return true, delivered, fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			return true, delivered, ctxErr(ctx, err)
		}
		if !delivered {
			if waiting && op == wire.OpWatch {
				live.end() // accepted: its heartbeats tell from now on
				waiting = false
			}
			delivered = true
		}
		done, err := handle(kind, f)
		if err == nil && done && (kind == wire.KindResult || kind == wire.KindEnd) && finished(st) {
			return true, delivered, nil
		}
		if err != nil || done {
			// Nothing more is expected; STOP_SENDING tells the server so if
			// it has not closed already.
			st.CancelRead(codeCancelled)
			return true, delivered, err
		}
	}
}

// cancelStream cancels both directions of st: the call's context ended.
func cancelStream(st *quic.Stream) {
	st.CancelRead(codeCancelled)
	st.CancelWrite(codeCancelled)
}

// silentAfter is how long a connection on which calls wait may go without
// a single packet from the server (not even the acknowledgment of a
// request, which a live server sends within its 25 ms ack delay) before
// the client takes it for dead (liveness.go: a group daemon's connection
// is probed after two thirds of it, and the probe given as long).
//
// A server that restarted ignores the old connection's packets: it answers
// a stateless reset only to packets of more than 42 bytes, and a client's
// acknowledgements and keep-alives are shorter. Without this, calls would wait
// out the 30 s idle timeout, and past it quic-go's backed-off probe timer
// (100 s was measured, issue 15.11).
const silentAfter = 1500 * time.Millisecond

// silenceWatched is the key of a context value that says the call's
// caller watches the connection for silence itself, sooner than its
// liveness would (a cell's attempts, cellSilentFor): the call then
// spares the timer.
type silenceWatched struct{}

// stoppedByServer reports whether a write failed because the server asked
// the stream's sender to stop (STOP_SENDING).
func stoppedByServer(err error) bool {
	var se *quic.StreamError
	return errors.As(err, &se) && se.Remote
}

// requestWriter writes a request frame so that the FIN the caller sends
// next usually leaves in the frame's last packet.
//
// quic-go's Write of more than a packet's worth waits while the connection
// packs all but the last packet, and that packet often leaves before Close
// marks the stream's end, so the FIN costs a packet of its own; the daemon
// must acknowledge it as well. TryWriteAll queues the whole frame at once
// (one copy), so Close comes first. Under send-batched 16x16 the client's
// send syscalls fell from 0.22 to 0.15 per message this way. A frame too
// large to queue under flow control, or larger than maxQueuedRequest, is
// written by Write as before.
type requestWriter struct{ st *quic.Stream }

// maxQueuedRequest bounds the frames requestWriter queues in one copy.
const maxQueuedRequest = 64 << 10

func (w requestWriter) Write(frame []byte) (int, error) {
	if len(frame) <= maxQueuedRequest {
		switch err := w.st.TryWriteAll(frame); err {
		case nil:
			return len(frame), nil
		case quic.ErrWouldBlock: // no flow-control credit for all of it
		default:
			return 0, err
		}
	}
	return w.st.Write(frame)
}

// responseBufs holds the buffers replies are read into: handlers copy what
// they keep out of a frame, so a stream's buffer serves the next stream.
var responseBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledResponse bounds the buffers kept in responseBufs; a fetch's
// 256 KiB frames are left to the garbage collector once the fetch ends.
const maxPooledResponse = 64 << 10

func putResponseBuf(b *[]byte) {
	if cap(*b) <= maxPooledResponse {
		*b = (*b)[:0]
		responseBufs.Put(b)
	}
}

// readResponse reads one response frame into *buf (growing it if need be)
// and splits it; the body is decoded by the handler in the same pass that
// checks it. Errors are those of wire.ReadFrame, an Error frame's *Error,
// or a frame read whole that is not one (badFrame).
func readResponse(r io.Reader, buf *[]byte) (wire.Kind, wire.Frame, error) {
	item, err := wire.ReadFrame(r, *buf, 0)
	if err != nil {
		return 0, wire.Frame{}, err
	}
	*buf = item[:0:cap(item)]
	kind, f, err := wire.SplitResponse(item)
	if err != nil && !errors.As(err, new(*wire.Error)) {
		err = badFrame(err)
	}
	return kind, f, err
}

// badFrame is err, a server's frame that could not be decoded or broke a
// rule of the protocol, as the client reports it: ErrProtocol, wrapping
// err (and its ErrTooLarge, say) but not ErrBadRequest, with which the wire
// codec marks a frame breaking a rule (a daemon's answer to a request).
// Said of a server's frame, ErrBadRequest blamed the caller's request
// ("fix the request; do not retry"), and an Error frame breaking a rule (no
// code) was not even a protocol error: a watch asked again, and again, for
// as long as its context lived (until session 17).
func badFrame(err error) error {
	if errors.Is(err, wire.ErrBadRequest) {
		return fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return fmt.Errorf("%w: %w", ErrProtocol, err)
}

// finWait bounds how long a client waits for the end of a stream whose
// last reply frame it has read.
const finWait = 100 * time.Millisecond

// finished reads the end of st after the last frame of a reply, and reports
// whether it came. The server ends the stream right after that frame
// (usually in the same packet): taking that end, rather than cancelling
// the stream, spares both sides a STOP_SENDING and the RESET_STREAM it may
// draw, a frame each way per operation.
func finished(st *quic.Stream) bool {
	st.SetReadDeadline(time.Now().Add(finWait))
	var b [1]byte
	n, err := st.Read(b[:])
	return n == 0 && err == io.EOF
}

// ctxErr prefers the context's error when the context ended, since stream
// errors caused by our own cancellation say less.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// connectionLost reports whether err means the connection (not just this
// stream or this request) failed.
func connectionLost(conn *quic.Conn, err error) bool {
	if conn.Context().Err() != nil {
		return true
	}
	var idle *quic.IdleTimeoutError
	var app *quic.ApplicationError
	var reset *quic.StatelessResetError
	return errors.As(err, &idle) || errors.As(err, &app) || errors.As(err, &reset)
}

// shuttingDown reports whether conn was closed by its server because the
// server is shutting down (close code wire.ConnShutdown).
func shuttingDown(conn *quic.Conn, err error) bool {
	var app *quic.ApplicationError
	if !errors.As(err, &app) {
		errors.As(context.Cause(conn.Context()), &app)
	}
	return app != nil && app.Remote && app.ErrorCode == wire.ConnShutdown
}

// single performs an operation whose reply is one Result frame decoded into
// out. Its errors do not name the operation: the caller's do (Group.fail,
// Registry.fail).
func (p *peer) single(ctx context.Context, op wire.Op, args, out any) error {
	return p.singleThen(ctx, op, args, out, nil)
}

// singleThen is single, its second attempt going where next says (see
// callThen).
func (p *peer) singleThen(ctx context.Context, op wire.Op, args, out any, next func(context.Context) (*peer, error)) error {
	return p.singleOn(ctx, op, args, out, next, nil)
}

// singleFrom is single, and returns the key the server presented on the
// connection that answered. Read from the peer after the call (p.seen),
// it could be another connection's: one another call dialled meanwhile,
// the first having dropped.
func (p *peer) singleFrom(ctx context.Context, op wire.Op, args, out any) (wire.Fingerprint, error) {
	var answered *quic.Conn
	if err := p.singleOn(ctx, op, args, out, nil, func(c *quic.Conn) { answered = c }); err != nil {
		return wire.Fingerprint{}, err
	}
	return identity.PeerFingerprint(answered.ConnectionState().TLS)
}

// singleOn is singleThen, telling on each connection it runs on (callThen).
func (p *peer) singleOn(ctx context.Context, op wire.Op, args, out any, next func(context.Context) (*peer, error), on func(*quic.Conn)) error {
	return p.callThen(ctx, op, args, resultInto(out), next, on)
}

// singleOut is single, and reports too whether its request went out and
// was left unanswered (the call's context ended, its connection was lost):
// what it asked may have been carried out, and its error is no refusal.
func (p *peer) singleOut(ctx context.Context, op wire.Op, args, out any) (unanswered bool, err error) {
	var doubt bool
	err = p.attempts(ctx, op, args, resultInto(out), nil, nil, &doubt, nil)
	return doubt && err != nil && !serverSaid(err), err
}

// resultInto is the handler of a reply that is one Result frame, decoded
// into out.
func resultInto(out any) func(wire.Kind, wire.Frame) (bool, error) {
	return func(kind wire.Kind, raw wire.Frame) (bool, error) {
		if kind != wire.KindResult {
			return true, fmt.Errorf("got frame kind %d, want a result: %w", kind, ErrProtocol)
		}
		if err := raw.Decode(out); err != nil {
			return true, badFrame(err)
		}
		return true, nil
	}
}

// serverSaid reports whether err is a server's error, whose message names
// the operation and its subject already ("join group lobby: ...").
func serverSaid(err error) bool {
	var we *wire.Error
	return errors.As(err, &we)
}

// dropCurrent forgets the current connection, whatever it is, so the next
// call dials afresh.
func (p *peer) dropCurrent() {
	p.mu.Lock()
	conn := p.conn
	p.conn = nil
	p.mu.Unlock()
	if conn != nil {
		conn.CloseWithError(0, "silent")
	}
}
