package groupd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/wire"
)

// An attacker in a process of its own, so that what a test measures of its
// own process is the daemon's memory, not the attacker's too, and so that
// the attacker's CPU is not the test's. TestMain runs the test binary as
// one when attackerEnv is set, to "ADDRESS FINGERPRINT GROUP LOCAL,...".
const attackerEnv = "HUDDLE_TEST_ATTACKER"

// runAttacker takes everything one source address may have of a daemon:
// its connections (with a new key each, from each local address in turn),
// its operations, request memory (requests declared at 1 MiB that stall)
// and reply memory (fetches of the whole log that nobody reads). It dials
// more connections than the address may have. It prints "ready OPEN
// REFUSED" on stdout once all is open, and holds on until its stdin
// closes.
func runAttacker() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "attacker:", err)
		return 1
	}
	f := strings.Fields(os.Getenv(attackerEnv))
	if len(f) != 4 {
		return fail(fmt.Errorf("%s=%q: want ADDRESS FINGERPRINT GROUP LOCAL,...", attackerEnv, os.Getenv(attackerEnv)))
	}
	fp, err := wire.ParseFingerprint(f[1])
	if err != nil {
		return fail(err)
	}
	var group wire.UUID
	if err := group.UnmarshalText([]byte(f[2])); err != nil {
		return fail(err)
	}
	raddr, err := net.ResolveUDPAddr("udp", f[0])
	if err != nil {
		return fail(err)
	}
	var trs []*quic.Transport
	defer func() {
		for _, tr := range trs {
			tr.Close()
		}
	}()
	for _, local := range strings.Split(f[3], ",") {
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(local)})
		if err != nil {
			return fail(err)
		}
		defer udp.Close()
		trs = append(trs, &quic.Transport{Conn: udp})
	}
	// The attack lasts until the test ends (its stdin closes), and each of
	// its steps (a handshake, a stream opened, a join answered) is bounded
	// by attackerStep: not its whole ramp, whose ~270 handshakes under the
	// race detector took over the two minutes it once had at load 40-45
	// ('attacker: dial: context deadline exceeded') while each step still
	// went on within seconds.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, attackerStep) }

	stall := binary.BigEndian.AppendUint32(nil, wire.MaxFrameSize)
	stall = append(stall, make([]byte, 12<<10)...)
	fetch, _ := wire.AppendFrame(nil, uint64(wire.OpFetch), wire.Fetch{Group: group})
	// attack takes the i-th connection's part: half the connections are
	// members that fetch and read nothing, half send requests that never
	// finish. It reports false if the server refused the connection.
	// dropped reports whether err says the server dropped the connection:
	// closed with ConnRefused (over the address's connections), or, when
	// that close was missed (a packet the loaded machine dropped: the
	// attacker's socket carries hundreds of connections), answered with a
	// stateless reset once the server had forgotten the connection. CI
	// failed once so at load 30 ('attacker: received a stateless reset').
	dropped := func(err error) bool {
		var ae *quic.ApplicationError
		var reset *quic.StatelessResetError
		return errors.As(err, &ae) && ae.ErrorCode == wire.ConnRefused || errors.As(err, &reset)
	}
	attack := func(i int, c *quic.Conn) (bool, error) {
		open := func(req []byte, fin bool) error {
			ctx, cancel := step()
			defer cancel()
			str, err := c.OpenStreamSync(ctx)
			if err != nil {
				return err
			}
			// As much as flow control lets through: a stalled stream is
			// granted its first 16 KiB only.
			str.SetWriteDeadline(time.Now().Add(time.Second))
			var se *quic.StreamError
			if _, err := str.Write(req); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.As(err, &se) {
				return err // a stream error is the server refusing this one: over the address's operations
			}
			if fin {
				str.Close()
			}
			return nil
		}
		if i%2 == 0 {
			join, _ := wire.AppendFrame(nil, uint64(wire.OpJoin), wire.Join{Group: group, Name: fmt.Sprint("attacker ", i)})
			ctx, cancel := step()
			defer cancel()
			str, err := c.OpenStreamSync(ctx)
			if err != nil {
				return false, nil // refused: the connection is closed
			}
			str.SetDeadline(time.Now().Add(attackerStep))
			str.Write(join)
			str.Close()
			if kind, _, err := wire.ReadResponse(str, nil); err != nil || kind != wire.KindResult {
				if dropped(err) {
					return false, nil
				}
				var we *wire.Error
				if errors.As(err, &we) && we.Code == wire.CodeUnavailable {
					return true, nil // the address's operations are all taken: this one idles
				}
				return false, fmt.Errorf("join: %v %v", kind, err)
			}
		}
		for range 8 {
			req, fin := stall, false
			if i%2 == 0 {
				req, fin = fetch, true
			}
			if err := open(req, fin); err != nil {
				if dropped(err) {
					return false, nil
				}
				return false, err
			}
		}
		return true, nil
	}

	var (
		mu              sync.Mutex
		conns           []*quic.Conn
		opened, refused int
		firstErr        error
		wg              sync.WaitGroup
		next            atomic.Int64
	)
	defer func() {
		for _, c := range conns {
			c.CloseWithError(0, "")
		}
	}()
	total := int64(server.DefaultMaxConnsPerAddr + 16) // more than the address may have
	for range 8 {                                      // handshakes eight at a time
		wg.Go(func() {
			for i := next.Add(1) - 1; i < total; i = next.Add(1) - 1 {
				id, err := identity.Generate()
				if err != nil {
					mu.Lock()
					firstErr = firstOf(firstErr, err)
					mu.Unlock()
					return
				}
				ctx, cancel := step()
				c, err := trs[int(i)%len(trs)].Dial(ctx, raddr, id.ClientTLS(fp, nil), &quic.Config{HandshakeIdleTimeout: 30 * time.Second, MaxIdleTimeout: time.Minute, KeepAlivePeriod: 5 * time.Second})
				cancel()
				if err != nil {
					mu.Lock()
					firstErr = firstOf(firstErr, fmt.Errorf("dial: %w", err))
					mu.Unlock()
					return
				}
				ok, err := attack(int(i), c)
				mu.Lock()
				conns = append(conns, c)
				switch {
				case err != nil:
					firstErr = firstOf(firstErr, err)
				case ok:
					opened++
				default:
					refused++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return fail(firstErr)
	}
	fmt.Println("ready", opened, refused)
	<-ctx.Done()
	return 0
}

// attackerStep bounds each step of the attacker's ramp: a handshake, a
// stream opened, a join answered. On two cores under the race detector at
// load 40-45 the ramp as a whole took over two minutes.
var attackerStep = time.Minute

// firstOf returns the first error that is not nil.
func firstOf(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// TestOneAddressAtItsBound has one source address (a process of its own)
// take everything a daemon's limits let one address have, while an honest
// user from another address joins, sends and fetches throughout (issue
// 15.1, where one address held the whole request budget and the honest user
// waited 9.8 s). Every honest operation must be served within its phase's
// deadline (honestDeadline once the attack holds its bound); the
// attacker must hold no more than one address's shares; and the daemon's
// heap must grow by no more than SECURITY.md's figure for one address,
// Memory().PerAddr.
func TestOneAddressAtItsBound(t *testing.T) {
	testOneAddressAtItsBound(t, "127.0.0.1:0", []string{"127.0.0.1"}, "127.0.0.2")
}

// TestOneSlash64AtItsBound is TestOneAddressAtItsBound from four IPv6
// addresses of one /64, which count as one address (a host is given a
// whole /64 and can pick any address in it), in a network namespace of its
// own.
func TestOneSlash64AtItsBound(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		var attackers []string
		for _, a := range []string{"2001:db8:a::1", "2001:db8:a::2", "2001:db8:a::3:4", "2001:db8:a:0:ffff::5", "2001:db8:b::1"} {
			if out, err := exec.Command("ip", "-6", "addr", "add", a+"/128", "dev", "lo", "nodad").CombinedOutput(); err != nil {
				t.Fatalf("ip addr add %s: %v: %s", a, err, out)
			}
			if strings.HasPrefix(a, "2001:db8:a:") {
				attackers = append(attackers, a)
			}
		}
		testOneAddressAtItsBound(t, "[::1]:0", attackers, "2001:db8:b::1")
	})
}

// The honest user's operations are bounded by phase, during an attack
// whose stalled requests hold on for attackerRequestTimeout. Once the
// attacker holds all one address may, each is served within
// honestDeadline: its shares keep the attack from making the honest user
// wait. On its way there the attacker makes about 270 handshakes, with keys
// made on the spot, and opens 2,000 streams: CPU, which shares do not
// divide (SECURITY.md: an attacker "can still keep the server busy with
// handshakes"). Then each operation is served within rampDeadline, so
// still never after a stalled request of the attacker's gave up. (On two
// cores under the race detector, an honest send or fetch during that ramp
// took up to 6.9 s at load 6 to 27, and over 10 s, the deadline the test
// had for all phases, at load 26 to 40; once the attack held its bound,
// at most 1.7 s. At load ~55 a send of the ramp's took over 30 s, its
// deadline while the stalls lasted a minute: they last three now, which
// the test's passing runs never wait for, as the attacker's stalls end
// with it.)
const (
	attackerRequestTimeout = 3 * time.Minute
	honestDeadline         = attackerRequestTimeout / 6
	rampDeadline           = attackerRequestTimeout / 2
)

func testOneAddressAtItsBound(t *testing.T, listen string, attackers []string, honest string) {
	cfg := Config{Listen: listen, SendRate: -1, MaxBatch: 1024, Server: server.Config{RequestTimeout: attackerRequestTimeout, HandshakeTimeout: 30 * time.Second}}
	d, _ := startGroupDaemon(t, cfg)
	g := gid(d)
	filler := joined(t, d, "filler")
	for range 16 { // 8 MiB of history
		msgs := make([]wire.Outgoing, 256)
		for i := range msgs {
			msgs[i] = wire.Outgoing{ID: wire.NewID(), Body: make([]byte, 2<<10)}
		}
		_, err := filler.send(g, msgs)
		must(t, err)
	}
	filler.conn.CloseWithError(0, "")
	eventually(t, "the daemon to be idle", func() bool { return int64(d.srv.Stats().Streams) == 0 })
	// The honest user's connection lives through the longest operation
	// it may wait for (rampDeadline): the tests' peers have a 30 s idle
	// timeout and send no keepalive, and a starved daemon may say nothing
	// for that long.
	up := peertest.DialFromWith(t, honest, d.Addr(), d.Fingerprint(), &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: 5 * time.Second})
	user := &peer{t: t, id: up.ID, conn: up.Conn}
	must(t, user.call(wire.OpJoin, wire.Join{Group: g, Name: "honest"}, nil))
	before := heapInUse()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %s", attackerEnv, d.Addr(), d.Fingerprint(), g, strings.Join(attackers, ",")))
	stdin, err := cmd.StdinPipe()
	must(t, err)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = t.Output()
	must(t, cmd.Start())
	// Waited for once, by whichever comes first: the reader below, when
	// the attacker ends before it is ready, or the test's end. Each
	// waited (the race detector caught the two Waits when the honest
	// user's round failed after the attacker had ended).
	wait := sync.OnceValue(cmd.Wait)
	defer wait()
	defer stdin.Close()
	type readiness struct {
		opened, refused int
		err             error
	}
	ready := make(chan readiness, 1)
	go func() {
		var r readiness
		var word string
		_, r.err = fmt.Fscanln(stdout, &word, &r.opened, &r.refused)
		if r.err == nil && word != "ready" {
			r.err = fmt.Errorf("attacker said %q", word)
		}
		if r.err != nil {
			r.err = errors.Join(r.err, wait())
		}
		ready <- r
	}()

	// The honest user works throughout: before the attack has taken
	// anything, while it takes all it may, and for as long again once it
	// holds it all.
	rounds, during := 0, 0
	var slowest [2]time.Duration // while the attack ramps up, once it holds its bound
	var r readiness
	// The attack's operations are at their most as it finishes its ramp:
	// on a loaded machine its first unread fetches may time out before it
	// says ready (twice at load ~20: 680 at most of 1024 when counted
	// only once it was ready). They are counted every 50 ms throughout,
	// not between the honest user's rounds: a round of a starved daemon
	// may take 30 s, and the peak came and went within one (560 of 1024
	// seen, a round held 35 s).
	var peak atomic.Int64
	stopCounting, counted := make(chan struct{}), make(chan struct{})
	counting := sync.OnceFunc(func() { close(stopCounting); <-counted })
	defer counting() // a round failed
	go func() {
		defer close(counted)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			ops := int64(d.srv.Stats().Held.Operations)
			if ops > peak.Load() {
				peak.Store(ops)
			}
			select {
			case <-stopCounting:
				return
			case <-tick.C:
			}
		}
	}()
	for got := false; !got || during < 20; rounds++ {
		phase, deadline := 0, rampDeadline
		if got {
			phase, deadline = 1, honestDeadline
		}
		took, err := honestRound(user, g, rounds, deadline)
		if err != nil {
			t.Fatalf("the honest user's round %d (%d with the attack at its bound) failed: %v", rounds, during, err)
		}
		slowest[phase] = max(slowest[phase], took)
		if got {
			during++
			continue
		}
		select {
		case r = <-ready:
			must(t, r.err)
			got = true
		case <-time.After(50 * time.Millisecond): // the next round
		}
	}
	counting()
	peakOps := int(peak.Load())
	grew := int64(heapInUse()) - int64(before)
	m := cfg.Memory()
	held := d.srv.Stats().Held
	t.Logf("one address: %d connections opened, %d refused (as the attacker saw it); %d operations (%d at most), %d MiB of request and %d MiB of reply memory held; heap grew by %.1f MiB, its bound is %d MiB; the honest user did %d rounds, %d of them with the attack at full; its slowest operation took %v while the attack ramped up, %v once it held its bound",
		r.opened, r.refused, held.Operations, peakOps, held.RequestBytes>>20, held.ReplyBytes>>20, float64(grew)/(1<<20), m.PerAddr>>20, rounds, during, slowest[0].Round(time.Millisecond), slowest[1].Round(time.Millisecond))
	// (The attacker cannot tell every refusal: a stream written before the
	// refusal arrives looks open. The server counts.)
	sources := d.srv.Sources()
	conns := sources[server.Source(&net.UDPAddr{IP: net.ParseIP(attackers[0])})].Conns
	if conns > server.DefaultMaxConnsPerAddr || r.refused == 0 {
		t.Errorf("the attacker holds %d connections and saw %d refused, want at most %d and some refused", conns, r.refused, server.DefaultMaxConnsPerAddr)
	}
	// What the attacker holds, and the honest user's round (one operation
	// at most). Its unread fetches that found no reply memory end after
	// the write timeout, so its operations were at their most earlier.
	share := cfg.Server.Bounds().Addr
	if ops := held.Operations; ops > share.Operations+1 || peakOps < share.Operations*9/10 {
		t.Errorf("%d operations running (%d at most during the attack), want the address's share of %d", ops, peakOps, share.Operations)
	}
	for _, res := range []struct {
		what       string
		held, most int
	}{{"request memory", held.RequestBytes, share.RequestBytes}, {"reply memory", held.ReplyBytes, share.ReplyBytes}} {
		if res.held > res.most {
			t.Errorf("%d bytes of %v held, more than the address's share of %d", res.held, res.what, res.most)
		}
	}
	var holding []netip.Prefix
	for p, a := range sources {
		if a.Held.Operations > 0 && !p.Contains(netip.MustParseAddr(honest)) {
			holding = append(holding, p)
		}
	}
	if len(holding) != 1 {
		t.Errorf("the attacker's addresses were counted as %v, want one", holding)
	}
	if grew > m.PerAddr {
		t.Errorf("one address made the daemon's heap grow by %d MiB, more than SECURITY.md's bound of %d MiB", grew>>20, m.PerAddr>>20)
	}
}

// honestRound is one round of an honest user's work, each operation within
// deadline, and returns how long its slowest operation took: a batch of 16 messages of 8 KiB sent (a request that
// takes request memory), fetched back (a reply that takes reply memory),
// then the member list.
func honestRound(p *peer, g wire.UUID, n int, deadline time.Duration) (slowest time.Duration, _ error) {
	call := func(op wire.Op, args any) ([]frame, error) {
		start := time.Now()
		defer func() { slowest = max(slowest, time.Since(start)) }()
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		str, err := p.conn.OpenStreamSync(ctx)
		if err != nil {
			return nil, fmt.Errorf("%v: open: %w", op, err)
		}
		str.SetDeadline(time.Now().Add(deadline))
		raw, err := wire.AppendFrame(nil, uint64(op), args)
		if err != nil {
			return nil, err
		}
		if _, err := str.Write(raw); err != nil {
			return nil, fmt.Errorf("%v: %w", op, err)
		}
		str.Close()
		var fs []frame
		for {
			kind, raw, err := wire.ReadResponse(str, nil)
			if err == io.EOF {
				return fs, nil
			}
			if err != nil {
				return nil, fmt.Errorf("%v: %w", op, err)
			}
			fs = append(fs, frame{kind: kind, raw: raw})
		}
	}
	batch := make([]wire.Outgoing, 16)
	for i := range batch {
		batch[i] = wire.Outgoing{ID: wire.NewID(), Body: fmt.Appendf(make([]byte, 0, 8<<10), "honest %d/%d %0*d", n, i, 8<<10-32, 0)}
	}
	fs, err := call(wire.OpSend, wire.Send{Group: g, Messages: batch})
	if err != nil {
		return slowest, err
	}
	var sent wire.Sent
	if len(fs) != 1 || fs[0].kind != wire.KindResult || fs[0].raw.Decode(&sent) != nil || len(sent.Acks) != len(batch) {
		return slowest, fmt.Errorf("send: %d frames", len(fs))
	}
	after := sent.Acks[0].Seq - 1
	fs, err = call(wire.OpFetch, wire.Fetch{Group: g, After: &after, Limit: uint64(len(batch))})
	if err != nil {
		return slowest, err
	}
	var got []wire.Message
	for _, f := range fs {
		var msgs wire.Messages
		if f.kind == wire.KindMessages && f.raw.Decode(&msgs) == nil {
			got = append(got, msgs.Messages...)
		}
	}
	if len(got) != len(batch) || string(got[len(got)-1].Body) != string(batch[len(batch)-1].Body) {
		return slowest, fmt.Errorf("fetch: got %d of the %d messages back", len(got), len(batch))
	}
	fs, err = call(wire.OpMembers, wire.GroupRef{Group: g})
	if err != nil {
		return slowest, err
	}
	if len(fs) != 1 || fs[0].kind != wire.KindResult {
		return slowest, fmt.Errorf("members: %d frames", len(fs))
	}
	return slowest, nil
}
