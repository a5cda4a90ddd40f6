package groupd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// Hostile peers beyond TestHostilePeers' attacks (session 22, H): limits
// that must hold per key however many connections carry it, and fields at
// their extremes. Each test proves the daemon answers what PROTOCOL.md
// says, changes nothing else, and serves a well-behaved peer after.

// rawSend sends msgs to g on a new stream of p without the test's helpers
// (it runs on goroutines of its own) and returns the Sent or the Error.
func rawSend(ctx context.Context, p *peer, g wire.UUID, msgs []wire.Outgoing) (*wire.Error, error) {
	raw, err := wire.AppendFrame(nil, uint64(wire.OpSend), wire.Send{Group: g, Messages: msgs})
	if err != nil {
		return nil, err
	}
	str, err := p.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := str.Write(raw); err != nil {
		return nil, err
	}
	str.Close()
	f, err := readFrame(str)
	switch {
	case err != nil:
		return nil, err
	case f.kind == wire.KindError:
		return f.err, nil
	case f.kind != wire.KindResult:
		return nil, fmt.Errorf("a frame of kind %d, want a Result", f.kind)
	}
	return nil, nil
}

// TestWideRateOneKeyManyConnections: a member's send rate is its key's,
// however many connections it sends on at once (PROTOCOL.md §8.5, Rate:
// the bucket belongs to the key): three connections of one key, sending
// together, store no more than one bucket holds, and each send refused is
// rate_limited with retry_after_ms; another member's bucket is untouched.
func TestWideRateOneKeyManyConnections(t *testing.T) {
	const burst, batch = 6, 2
	d, _ := startGroupDaemon(t, Config{MaxBatch: batch, SendBurst: burst, SendRate: 0.001})
	g := gid(d)
	key := newKey(t)
	var conns []*peer
	for range 3 {
		conns = append(conns, dial(t, d.Addr(), d.Fingerprint(), key))
	}
	must(t, conns[0].call(wire.OpJoin, wire.Join{Group: g, Name: "greedy"}, nil))

	const each = 4 // sends per connection, of batch messages each
	var (
		mu              sync.Mutex
		stored, limited int
		failures        []error
		wg              sync.WaitGroup
	)
	for _, p := range conns {
		for range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				we, err := rawSend(testCtx(t), p, g, outgoing("a", "b"))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					failures = append(failures, err)
				case we == nil:
					stored++
				case we.Code == wire.CodeRateLimited && we.RetryAfterMS > 0:
					limited++
				default:
					failures = append(failures, we)
				}
			}()
		}
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("sends failed otherwise than rate_limited with retry_after_ms: %v", failures)
	}
	if stored != burst/batch || limited != len(conns)*each-burst/batch {
		t.Fatalf("one key on %d connections: %d sends stored, %d rate_limited; want %d stored (its one bucket of %d)",
			len(conns), stored, limited, burst/batch, burst)
	}
	// Another member sends its own whole burst.
	other := joined(t, d, "other")
	for range burst / batch {
		_, err := other.send(g, outgoing("c", "d"))
		must(t, err)
	}
	if last := other.info(g).Last; last != 2*burst {
		t.Fatalf("the log's last is %d, want %d: one bucket each", last, 2*burst)
	}
}

// TestWideSendAfterExtremes: a send's after and after_epoch (PROTOCOL.md
// §8.5, A retry's window) at their extremes: a cursor past the log's end
// in its epoch (nothing was stored after it: the window holds all of it),
// an epoch that is not the log's (ignored), after without an epoch (not
// said). Each is stored once, and a retry of it is acknowledged as a
// duplicate with its original seq.
func TestWideSendAfterExtremes(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	g := gid(d)
	p := joined(t, d, "edge")
	epoch := p.info(g).Epoch
	for _, tc := range []struct {
		what              string
		after, afterEpoch uint64
	}{
		{"after 2^64-1 in the log's epoch", math.MaxUint64, epoch},
		{"after 2^63 in the log's epoch", 1 << 63, epoch},
		{"after 0 in the log's epoch", 0, epoch},
		{"after 2^64-1 in epoch 2^64-1", math.MaxUint64, math.MaxUint64},
		{"after 2^64-1, no epoch", math.MaxUint64, 0},
	} {
		msgs := outgoing(tc.what)
		var first wire.Sent
		must(t, p.call(wire.OpSend, wire.Send{Group: g, Messages: msgs, After: tc.after, AfterEpoch: tc.afterEpoch}, &first))
		if first.Acks[0].Duplicate {
			t.Fatalf("%s: the first send is acknowledged as a duplicate", tc.what)
		}
		var again wire.Sent
		must(t, p.call(wire.OpSend, wire.Send{Group: g, Messages: msgs, After: tc.after, AfterEpoch: tc.afterEpoch}, &again))
		if !again.Acks[0].Duplicate || again.Acks[0].Seq != first.Acks[0].Seq {
			t.Fatalf("%s: the retry's ack is %+v, want a duplicate of seq %d", tc.what, again.Acks[0], first.Acks[0].Seq)
		}
	}
	if last := p.info(g).Last; last != 5 {
		t.Fatalf("the log's last is %d, want 5: each message stored once", last)
	}
}

// TestWideReadExtremes: fetch and watch fields at their extremes on a
// daemon of one (no cell): a limit of 2^64-1 is capped at fetch_page; an
// epoch of 2^64-1 is epoch_mismatch naming the log's own epoch, never the
// one asked; min_seq of 2^64-1 (read-your-writes, a cell's) is answered at
// once, as a daemon of one holds every message it acknowledged.
func TestWideReadExtremes(t *testing.T) {
	const page = 3
	d, _ := startGroupDaemon(t, Config{FetchPage: page})
	g := gid(d)
	p := joined(t, d, "reader")
	_, err := p.send(g, outgoing("1", "2", "3", "4", "5"))
	must(t, err)
	epoch := p.info(g).Epoch

	msgs, end, err := p.fetch(wire.Fetch{Group: g, Limit: math.MaxUint64})
	must(t, err)
	if len(msgs) != page || !end.More || end.Next != page {
		t.Fatalf("fetch limit 2^64-1: %d messages, end %+v; want fetch_page (%d) and more", len(msgs), end, page)
	}
	msgs, end, err = p.fetch(wire.Fetch{Group: g, After: u64(0), MinSeq: math.MaxUint64})
	must(t, err)
	if len(msgs) != page || end.Epoch != epoch {
		t.Fatalf("fetch min_seq 2^64-1: %d messages, end %+v", len(msgs), end)
	}
	for _, bad := range []uint64{math.MaxUint64, epoch + 1, epoch - 1} {
		_, _, err := p.fetch(wire.Fetch{Group: g, Epoch: bad})
		if we := wantCode(t, err, wire.CodeEpochMismatch); we.Epoch != epoch {
			t.Fatalf("fetch in epoch %d: epoch_mismatch names %d, want the log's %d", bad, we.Epoch, epoch)
		}
		_, err = p.watch(wire.Watch{Group: g, Epoch: bad})
		if we := wantCode(t, err, wire.CodeEpochMismatch); we.Epoch != epoch {
			t.Fatalf("watch in epoch %d: epoch_mismatch names %d, want the log's %d", bad, we.Epoch, epoch)
		}
	}
	w, err := p.watch(wire.Watch{Group: g, After: u64(2), MinSeq: math.MaxUint64})
	must(t, err)
	if f := w.next(); f.kind != wire.KindMessages {
		t.Fatalf("watch min_seq 2^64-1: a frame of kind %d after Start, want the history", f.kind)
	}
}

// TestWideUnknownGroupOrder: every group operation on a group the daemon
// does not host is not_found, for a stranger and a member alike, after the
// request's own checks (a bad name is bad_request first, PROTOCOL.md §9,
// Which refusal comes first), and changes nothing.
func TestWideUnknownGroupOrder(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	member := joined(t, d, "member")
	stranger := dial(t, d.Addr(), d.Fingerprint(), nil)
	nowhere := uuid.New()
	for _, p := range []*peer{member, stranger} {
		for _, tc := range []struct {
			op   wire.Op
			args any
		}{
			{wire.OpInfo, wire.GroupRef{Group: nowhere}},
			{wire.OpJoin, wire.Join{Group: nowhere, Name: "x"}},
			{wire.OpLeave, wire.GroupRef{Group: nowhere}},
			{wire.OpMembers, wire.GroupRef{Group: nowhere}},
			{wire.OpSend, wire.Send{Group: nowhere, Messages: outgoing("x")}},
			{wire.OpFetch, wire.Fetch{Group: nowhere, Epoch: math.MaxUint64}},
			{wire.OpWatch, wire.Watch{Group: nowhere, Epoch: math.MaxUint64}},
		} {
			fs := p.do(tc.op, tc.args)
			if len(fs) != 1 || fs[0].kind != wire.KindError || fs[0].err.Code != wire.CodeNotFound {
				t.Fatalf("%v of a group not hosted: %+v, want one Error not_found", tc.op, fs)
			}
		}
		wantCode(t, p.call(wire.OpJoin, wire.Join{Group: nowhere, Name: "a\u202eb"}, nil), wire.CodeBadRequest)
	}
	var in wire.Info
	must(t, member.call(wire.OpInfo, wire.GroupRef{Group: gid(d)}, &in))
	if in.Members != 1 || in.Last != 0 {
		t.Fatalf("the hosted group changed: %+v", in)
	}
}

// TestWideStolenCertificate: a peer that presents a member's certificate
// without its key (certificates cross the network; a rogue server is shown
// a client's) signs the handshake with a key of its own, which the
// certificate's does not verify: the handshake fails (a TLS alert, QUIC's
// CRYPTO_ERROR), nothing of it reaches the group, and the member and
// another peer are served as before (PROTOCOL.md §2: the key's fingerprint
// is the identity, and TLS 1.3's CertificateVerify proves the key).
func TestWideStolenCertificate(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	g := gid(d)
	alice := newKey(t)
	ap := dial(t, d.Addr(), d.Fingerprint(), alice)
	must(t, ap.call(wire.OpJoin, wire.Join{Group: g, Name: "alice"}, nil))

	thief := newKey(t)
	stolen := alice.Certificate()
	stolen.PrivateKey = thief.Certificate().PrivateKey
	conf := thief.ClientTLS(d.Fingerprint(), nil)
	conf.Certificates = []tls.Certificate{stolen}
	conn, err := dialWith(t, d.Addr().String(), conf)
	if err == nil {
		// TLS 1.3 lets a client finish before the server checked it
		// (PROTOCOL.md §2): the close arrives with the first stream or
		// after it, never an answer.
		p := &peer{t: t, conn: conn}
		str, err := p.conn.OpenStreamSync(testCtx(t))
		if err == nil {
			str.Write(request(t, wire.OpSend, wire.Send{Group: g, Messages: outgoing("as alice")}))
			str.Close()
			if f, err := readFrame(str); err == nil {
				t.Fatalf("a stolen certificate's send was answered: a frame of kind %d (%v)", f.kind, f.err)
			}
		}
		<-conn.Context().Done()
	}
	var te *quic.TransportError
	if err == nil {
		err = context.Cause(conn.Context())
	}
	if !errors.As(err, &te) || te.ErrorCode&^0xff != 0x100 {
		t.Fatalf("a stolen certificate's connection ended with %v, want a TLS alert (CRYPTO_ERROR)", err)
	}

	// Nothing reached the group; alice and a stranger are served.
	var in wire.Info
	must(t, ap.call(wire.OpInfo, wire.GroupRef{Group: g}, &in))
	if in.Last != 0 || in.Members != 1 || !in.Member {
		t.Fatalf("after the stolen certificate: %+v, want alice alone and no message", in)
	}
	_, err = ap.send(g, outgoing("alice herself"))
	must(t, err)
	joined(t, d, "bystander")
}

// TestWideNoResumption: servers issue no session tickets and take no
// 0-RTT data (PROTOCOL.md §2), so there is no handshake to replay: a
// client keeping a session cache makes a full handshake every time, and
// one asking for 0-RTT sends its request in 1-RTT.
func TestWideNoResumption(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	key := newKey(t)
	conf := key.ClientTLS(d.Fingerprint(), nil)
	conf.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i := range 2 {
		ctx, cancel := context.WithTimeout(testCtx(t), testTimeout)
		conn, err := quic.DialAddrEarly(ctx, d.Addr().String(), conf, &quic.Config{})
		cancel()
		must(t, err)
		p := &peer{t: t, conn: conn}
		var in wire.Info
		must(t, p.call(wire.OpInfo, wire.GroupRef{Group: gid(d)}, &in))
		cs := conn.ConnectionState()
		if cs.TLS.DidResume || cs.Used0RTT {
			t.Fatalf("connection %d: resumed %v, 0-RTT %v: the server must issue no tickets", i+1, cs.TLS.DidResume, cs.Used0RTT)
		}
		conn.CloseWithError(0, "")
	}
}

// TestWideRateAtItsLeast: the least send rate a daemon takes is the least
// info can report (send_rate_milli 1: one message per 1000 s); a smaller
// one rounded to 0, which tells clients the rate is unlimited, and is
// refused now. And a rate_limited send's wait is bounded (a day), however
// far the bucket is from holding the send: one too far for a Duration
// converted to garbage (a negative wait, a retry_after_ms of about 2^64).
func TestWideRateAtItsLeast(t *testing.T) {
	for _, rate := range []float64{0.0004, 1e-12, math.SmallestNonzeroFloat64} {
		if _, err := New(Config{StateDir: t.TempDir(), Groups: []Spec{{Name: "g"}}, SendRate: rate}); !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("SendRate %v: %v, want ErrInvalidConfig", rate, err)
		}
	}
	d, _ := startGroupDaemon(t, Config{SendRate: minSendRate, SendBurst: 1 << 40, MaxBatch: 1})
	var in wire.Info
	p := joined(t, d, "slow")
	must(t, p.call(wire.OpInfo, wire.GroupRef{Group: gid(d)}, &in))
	if in.Limits.SendRateMilli != 1 {
		t.Fatalf("send_rate_milli %d at the least rate, want 1", in.Limits.SendRateMilli)
	}
	r := newRateLimiter(minSendRate, 1<<40)
	now := time.Now()
	var fp wire.Fingerprint
	if _, ok := r.take(fp, 1<<40, now); !ok {
		t.Fatal("a full bucket refused its burst")
	}
	wait, ok := r.take(fp, 1<<40, now)
	if ok || wait <= 0 || wait > maxRateWait {
		t.Fatalf("a send a bucket holds in 35,000 years: wait %v (ok %v), want a refusal of at most %v", wait, ok, maxRateWait)
	}
}

// TestWideSecretGuessesPaced: a peer guessing a private group's secret is
// paced per source address: after guessBurst joins from one address (any
// keys, right secret or wrong), those that follow are refused rate_limited
// with retry_after_ms before their secret is compared, so a right one is
// refused too while the address is over its pace and the refusal says
// nothing of it; a join with the right secret takes nothing (it gives its
// token back); another address is not slowed, and after the wait the
// address guesses again. Until session 22 a peer could try thousands of
// secrets a second.
func TestWideSecretGuessesPaced(t *testing.T) {
	clock := newFakeClock()
	secret := []byte("open sesame")
	d, _ := startGroupDaemon(t, Config{Groups: []Spec{{Name: "private", Secret: secret}}, Now: clock.Now})
	g := gid(d)
	join := func(p *peer, s []byte) error {
		return p.call(wire.OpJoin, wire.Join{Group: g, Name: "guess", Secret: s}, nil)
	}
	// Right secrets give their tokens back: more than a burst of them.
	friend := dialFrom(t, "127.0.0.3", d.Addr(), d.Fingerprint())
	for range 2 * guessBurst {
		must(t, join(friend, secret))
	}
	// A guesser from one address, a new key for each guess.
	for i := range guessBurst {
		p := dialFrom(t, "127.0.0.2", d.Addr(), d.Fingerprint())
		wantCode(t, join(p, []byte(fmt.Sprint("guess", i))), wire.CodeUnauthorized)
	}
	p := dialFrom(t, "127.0.0.2", d.Addr(), d.Fingerprint())
	if we := wantCode(t, join(p, []byte("one more")), wire.CodeRateLimited); we.RetryAfterMS == 0 || we.RetryAfterMS > 1000/guessRate {
		t.Fatalf("a guess over the pace: retry_after_ms %d, want 1..%v", we.RetryAfterMS, 1000/guessRate)
	}
	wantCode(t, join(p, secret), wire.CodeRateLimited) // the right one too
	if p.info(g).Member {
		t.Fatal("a join refused rate_limited made a member")
	}
	// Another address is served; the guesser's, once its wait is over.
	must(t, join(friend, secret))
	clock.advance(time.Duration(float64(time.Second) / guessRate))
	must(t, join(p, secret))
	wantCode(t, join(dialFrom(t, "127.0.0.2", d.Addr(), d.Fingerprint()), []byte("again")), wire.CodeUnauthorized)
}
