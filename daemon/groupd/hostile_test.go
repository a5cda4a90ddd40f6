package groupd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/internal/testlog"
	"github.com/huddle-chat/huddle/wire"
)

// The hostile-peer suite: misbehaving peers against a running registry and
// group daemon, one attack at a time. After each, an honest user must
// still join, send and fetch, and the servers' connections, streams and
// goroutines, and the process's heap, must come back down to where they
// were before the attack.

// hostile is the servers under attack and what they looked like at rest.
type hostile struct {
	d       *Daemon
	r       *registry.Daemon
	g, priv wire.UUID // a public and a private group
	secret  []byte

	baseGoroutines int
	baseHeap       uint64
}

const (
	hostileRequestTimeout = 500 * time.Millisecond
	hostileIdleTimeout    = 2 * time.Second
	hostileConnsPerAddr   = 24
	hostileGroupsPerKey   = 40
	hostileGroupsPerAddr  = 100
)

// hostileServer is the server configuration of both daemons under attack.
var hostileServer = server.Config{RequestTimeout: hostileRequestTimeout, IdleTimeout: hostileIdleTimeout, MaxConnsPerAddr: hostileConnsPerAddr}

func TestHostilePeers(t *testing.T) {
	h := &hostile{secret: []byte("correct horse battery staple")}
	// Everything the servers log, at debug level, to check at the end that
	// no secret and no message body is in it.
	var logged lockedBuffer
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testlog.Output(t), &logged), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.r = startRegistry(t, registry.Config{Server: hostileServer, Logger: log,
		MaxGroupsPerKey: hostileGroupsPerKey, MaxGroupsPerAddr: hostileGroupsPerAddr})
	h.d, _ = startGroupDaemon(t, Config{
		Logger:    log,
		Groups:    []Spec{{Name: "general"}, {Name: "private", Secret: h.secret}},
		Server:    hostileServer,
		MaxBatch:  16,
		SendBurst: 64,
		SendRate:  0.01, // one token per 100 s: the burst is all a test sees
		// Short, so that a test can wait for a heartbeat to show that
		// nothing else was sent.
		HeartbeatInterval: 200 * time.Millisecond,
	})
	hosted := h.d.Groups()
	h.g, h.priv = hosted[0].ID, hosted[1].ID
	h.honest(t)
	h.settle(t)

	for _, tc := range []struct {
		name   string
		attack func(t *testing.T, h *hostile)
	}{
		{"malformed frames", attackMalformedFiles},
		{"deep nesting", attackDeepNesting},
		{"huge declared lengths", attackHugeLengths},
		{"wrong types", attackWrongTypes},
		{"unknown operations", attackUnknownOps},
		{"over-limit frames and messages", attackOverLimits},
		{"streams that never finish", attackUnfinishedStreams},
		{"one byte at a time", attackSlowloris},
		{"thousands of streams at once", attackStreamFlood},
		{"many connections", attackManyConnections},
		{"idle connections", attackIdleConnections},
		{"stray datagrams", attackStrayDatagrams},
		{"wrong ALPN", attackWrongALPN},
		{"no client certificate", attackNoCertificate},
		{"a non-member's every operation", attackNonMember},
		{"wrong secrets", attackWrongSecret},
		{"replayed message IDs", attackReplay},
		{"forged fields", attackForgedFields},
		{"a stranger at the registry", attackStrangerLease},
		{"cursors and times at their extremes", attackCursorExtremes},
		{"required fields left out", attackMissingFields},
		{"strict CBOR under unknown keys", attackStrictUnknownKeys},
		{"streams that end before a byte", attackEmptyStreams},
		{"a flood of registrations that sort first", attackListingFlood},
		{"request memory held from one address", attackRequestMemory},
		{"request memory held from ten addresses", attackRequestMemoryFromMany},
		{"replies nobody reads", attackUnreadReplies},
		{"operations held from ten addresses", attackOperationsFromMany},
		{"replies nobody reads from ten addresses", attackUnreadRepliesFromMany},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.attack(t, h) })
		if t.Failed() {
			return
		}
		h.recovered(t, tc.name)
	}
	for _, never := range []string{string(h.secret), "hunter2-guess", "still here", "pay bob 10", "signed, alice"} {
		if strings.Contains(logged.String(), never) {
			t.Errorf("the servers logged %q: secrets and message bodies are never logged", never)
		}
	}
}

// lockedBuffer is a log destination safe for concurrent writers.
type lockedBuffer = testlog.Buffer

// honest is a well-behaved user: a new key that joins, sends and fetches
// its message back, then goes away.
func (h *hostile) honest(t *testing.T) {
	t.Helper()
	p := dial(t, h.d.Addr(), h.d.Fingerprint(), nil)
	defer p.conn.CloseWithError(0, "")
	must(t, p.call(wire.OpJoin, wire.Join{Group: h.g, Name: "honest"}, nil))
	sent, err := p.send(h.g, outgoing("still here"))
	must(t, err)
	seq := sent.Acks[0].Seq
	msgs, _, err := p.fetch(wire.Fetch{Group: h.g, After: u64(seq - 1)})
	must(t, err)
	if len(msgs) != 1 || string(msgs[0].Body) != "still here" || msgs[0].From != p.id.Fingerprint() {
		t.Fatalf("honest fetch got %+v", msgs)
	}
	must(t, p.call(wire.OpLeave, wire.GroupRef{Group: h.g}, nil))
	reg := dial(t, h.r.Addr(), h.r.Fingerprint(), nil)
	defer reg.conn.CloseWithError(0, "")
	listGroups(t, reg)
}

// idle reports whether the servers hold no connections and run no
// operations.
func (h *hostile) idle() bool {
	// A stream whose request is being read counts in Streams; a source's
	// connections leave it with the connection (the registry's Stats say
	// as much as Sources would).
	for _, st := range []server.Stats{h.d.srv.Stats(), h.r.Stats()} {
		if st.Connections > 0 || st.Streams > 0 || st.Handshakes > 0 {
			return false
		}
	}
	for _, src := range h.d.srv.Sources() {
		if src.Conns > 0 {
			return false
		}
	}
	return true
}

// heapInUse returns the bytes of the heap in use: the least of three
// readings, each after a forced collection. One is not enough while the
// daemon works: what dies during a collection's concurrent mark (a call
// that ends meanwhile, with its reply's buffers) survives that collection,
// as do the objects sync.Pools cache, and the next frees them. Under an
// attack's churn (its unread fetches' writes timing out, others taking
// their reply memory) one reading was 98.2 MiB over the heap at rest and
// the next, at once, 66.0 (TestOneAddressAtItsBound, load ~20); the lead's
// CI failed on one such reading in session 17 (97.3 MiB against the 96 MiB
// bound): nothing held, only not yet collected. The least reading is still
// at least what is live.
func heapInUse() uint64 {
	least := uint64(math.MaxUint64)
	for range 3 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		least = min(least, ms.HeapAlloc)
	}
	return least
}

// settle waits for the servers to be idle and records the goroutines and
// heap at rest.
func (h *hostile) settle(t *testing.T) {
	t.Helper()
	eventually(t, "the servers to be idle", h.idle)
	// Stream workers linger a moment after their connection's last stream.
	eventually(t, "goroutines to settle", func() bool {
		n := runtime.NumGoroutine()
		time.Sleep(50 * time.Millisecond)
		return runtime.NumGoroutine() == n
	})
	h.baseGoroutines = runtime.NumGoroutine()
	h.baseHeap = heapInUse()
}

// recovered checks that after an attack an honest user is served, and that
// connections, operations, goroutines and heap come back down.
func (h *hostile) recovered(t *testing.T, after string) {
	t.Helper()
	h.honest(t)
	eventually(t, "the servers to be idle after "+after, h.idle)
	eventually(t, "goroutines to come back down after "+after, func() bool {
		return runtime.NumGoroutine() <= h.baseGoroutines+2
	})
	const slack = 16 << 20
	eventually(t, "the heap to come back down after "+after, func() bool {
		return heapInUse() <= h.baseHeap+slack
	})
}

// rawReply writes raw as a whole request on a new stream of p and returns
// the reply: an Error frame's error, nil for any other single frame, or the
// stream's failure.
func rawReply(t *testing.T, p *peer, raw []byte) (*wire.Error, []frame, error) {
	t.Helper()
	str, err := p.conn.OpenStreamSync(testCtx(t))
	must(t, err)
	// The server may stop reading (STOP_SENDING) once it has seen enough
	// to refuse the request; its answer is still there to read.
	if _, err := str.Write(raw); err == nil {
		str.Close()
	}
	var fs []frame
	for {
		f, err := readFrame(str)
		if err != nil {
			if len(fs) > 0 && err == io.EOF {
				break
			}
			return nil, fs, err
		}
		fs = append(fs, f)
	}
	if last := fs[len(fs)-1]; last.kind == wire.KindError {
		return last.err, fs, nil
	}
	return nil, fs, nil
}

// wantRefusal fails the test unless raw gets exactly one Error frame that
// is not internal.
func wantRefusal(t *testing.T, p *peer, what string, raw []byte) *wire.Error {
	t.Helper()
	we, fs, err := rawReply(t, p, raw)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if we == nil || len(fs) != 1 {
		t.Fatalf("%s: got %d frames (%+v), want one Error frame", what, len(fs), fs)
	}
	if we.Code == wire.CodeInternal {
		t.Fatalf("%s: internal error %q: a peer's bytes must never be the server's fault", what, we.Message)
	}
	return we
}

func frameOf(item []byte) []byte { return append(header(uint32(len(item))), item...) }

func parseHex(t testing.TB, path string) []byte {
	t.Helper()
	text, err := os.ReadFile(path)
	must(t, err)
	var digits strings.Builder
	for line := range strings.Lines(string(text)) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			digits.WriteString(strings.Join(strings.Fields(line), ""))
		}
	}
	b, err := hex.DecodeString(digits.String())
	must(t, err)
	return b
}

// attackMalformedFiles sends every malformed request of the wire package's
// test data to both servers.
func attackMalformedFiles(t *testing.T, h *hostile) {
	files, err := filepath.Glob(filepath.Join("..", "..", "wire", "testdata", "malformed", "*.hex"))
	must(t, err)
	if len(files) < 20 {
		t.Fatalf("found %d malformed frames, want the wire package's test data", len(files))
	}
	d := dial(t, h.d.Addr(), h.d.Fingerprint(), nil)
	r := dial(t, h.r.Addr(), h.r.Fingerprint(), nil)
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "resp-") {
			continue
		}
		raw := parseHex(t, f)
		wantRefusal(t, d, filepath.Base(f)+" to the group daemon", raw)
		wantRefusal(t, r, filepath.Base(f)+" to the registry", raw)
	}
}

func attackDeepNesting(t *testing.T, h *hostile) {
	p := dial(t, h.d.Addr(), h.d.Fingerprint(), nil)
	for _, depth := range []int{wire.MaxNesting, 100, 100_000} {
		// {0: 16, 1: {1: [[[...]]]}}
		item := []byte{0xa2, 0x00, 0x10, 0x01, 0xa1, 0x01}
		item = append(item, bytesOf(0x81, depth)...)
		item = append(item, 0x00)
		wantRefusal(t, p, fmt.Sprintf("arrays nested %d deep", depth), frameOf(item))
		item = []byte{0xa2, 0x00, 0x10, 0x01}
		for range depth {
			item = append(item, 0xa1, 0x01) // {1: {1: ...}}
		}
		item = append(item, 0x00)
		wantRefusal(t, p, fmt.Sprintf("maps nested %d deep", depth), frameOf(item))
	}
}

func bytesOf(b byte, n int) []byte {
	s := make([]byte, n)
	for i := range s {
		s[i] = b
	}
	return s
}

// attackHugeLengths declares lengths nothing could hold, at the frame and
// inside it, and checks the daemon allocated none of them.
func attackHugeLengths(t *testing.T, h *hostile) {
	p := dial(t, h.d.Addr(), h.d.Fingerprint(), nil)
	before := heapInUse()
	huge := [][]byte{
		{0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // byte string of 2^64-1
		{0x5a, 0xff, 0xff, 0xff, 0xff},                         // byte string of 2^32-1
		{0x7b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // text of 2^63-1
		{0x9b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00}, // array of 2^32
		{0x9a, 0x00, 0x00, 0x20, 0x00},                         // array of 8192 (present: none)
		{0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // map of 2^64-1 pairs
	}
	for i, v := range huge {
		// {0: 20, 1: {1: group, 2: <huge>}}
		item := append([]byte{0xa2, 0x00, 0x14, 0x01, 0xa2, 0x01, 0x50}, h.g[:]...)
		item = append(append(item, 0x02), v...)
		wantRefusal(t, p, fmt.Sprintf("huge value %d", i), frameOf(item))
	}
	for _, n := range []uint32{wire.MaxFrameSize + 1, 1 << 31, 1<<32 - 1} {
		we := wantRefusal(t, p, fmt.Sprintf("frame declaring %d bytes", n), header(n))
		if we.Code != wire.CodeTooLarge {
			t.Fatalf("frame declaring %d bytes: %v, want too_large", n, we)
		}
	}
	if grew := int64(heapInUse()) - int64(before); grew > 8<<20 {
		t.Fatalf("heap grew by %d bytes answering huge declarations", grew)
	}
}

func attackWrongTypes(t *testing.T, h *hostile) {
	p := dial(t, h.d.Addr(), h.d.Fingerprint(), nil)
	g := hex.EncodeToString(h.g[:])
	for _, item := range []string{
		"a2001001a10163616263",                          // {0: 16, 1: {1: "abc"}}
		"a1006469 6e666f",                               // {0: "info"}
		"a200100180",                                    // {0: 16, 1: []}
		"a10020",                                        // {0: -1}
		"a100f94c00",                                    // {0: 16.0}
		"a2001401a2015 0" + g + "02a0",                  // send whose messages are a map
		"a2001401a2015 0" + g + "0281a201f402f5",        // an outgoing message of booleans
		"a2001501a3015 0" + g + "02f503f4",              // fetch with since true, after false
		"a2001601a2015 0" + g + "05 3b7fffffffffffffff", // watch with a negative epoch
		"f6",     // null
		"a0",     // {}
		"a10111", // {1: 17}: no op
	} {
		raw, err := hex.DecodeString(strings.ReplaceAll(item, " ", ""))
		must(t, err)
		wantRefusal(t, p, item, frameOf(raw))
	}
}

func attackUnknownOps(t *testing.T, h *hostile) {
	d := dial(t, h.d.Addr(), h.d.Fingerprint(), nil)
	r := dial(t, h.r.Addr(), h.r.Fingerprint(), nil)
	for _, op := range []uint64{0, 5, 15, 23, 100, 65535, 1 << 16, 1 << 32, 1<<64 - 1} {
		raw, err := wire.AppendFrame(nil, op, wire.GroupRef{Group: h.g})
		must(t, err)
		for _, p := range []*peer{d, r} {
			if we := wantRefusal(t, p, fmt.Sprintf("op %d", op), raw); we.Code != wire.CodeUnsupported {
				t.Fatalf("op %d: %v, want unsupported", op, we)
			}
		}
	}
	// Each server refuses the other's operations.
	for _, tc := range []struct {
		p   *peer
		op  wire.Op
		arg any
	}{
		{d, wire.OpRegister, wire.Register{Group: uuid.New(), Name: "x", Port: 1}},
		{d, wire.OpList, wire.List{}},
		{r, wire.OpJoin, wire.Join{Group: h.g, Name: "x"}},
		{r, wire.OpSend, wire.Send{Group: h.g, Messages: outgoing("x")}},
	} {
		wantCode(t, tc.p.call(tc.op, tc.arg, nil), wire.CodeUnsupported)
	}
}

func attackOverLimits(t *testing.T, h *hostile) {
	// A whole frame of the largest size, of junk: read whole, then
	// refused. It goes to a daemon with the default request deadline: a
	// 1 MiB request, whose stream window starts at 16 KiB and grows as the
	// server reads, took longer than the suite's 500 ms (a deadline for
	// requests that never finish) on a machine at load 26, and was cut
	// off as slow (0x2) instead of read.
	solo, _ := startGroupDaemon(t, Config{Groups: []Spec{{Name: "general"}}})
	junk := make([]byte, wire.MaxFrameSize)
	rand.Read(junk)
	wantRefusal(t, joined(t, solo, "big"), "a 1 MiB frame of junk", frameOf(junk))

	p := joined(t, h.d, "big")
	defer p.call(wire.OpLeave, wire.GroupRef{Group: h.g}, nil)
	// A whole frame one byte over the limit: refused before it is read.
	over := append(header(wire.MaxFrameSize+1), make([]byte, 64<<10)...)
	if we := wantRefusal(t, p, "a frame one byte over", over); we.Code != wire.CodeTooLarge {
		t.Fatalf("frame over the limit: %v, want too_large", we)
	}
	big := wire.Outgoing{ID: wire.NewID(), Body: make([]byte, DefaultMaxMessageBytes+1)}
	wantCode(t, p.callSend(h.g, []wire.Outgoing{big}), wire.CodeTooLarge)
	wantCode(t, p.callSend(h.g, outgoing(make([]string, 17)...)), wire.CodeTooLarge) // MaxBatch 16
	many := make([]wire.Outgoing, wire.MaxBatch+1)
	for i := range many {
		many[i] = wire.Outgoing{ID: wire.NewID()}
	}
	wantCode(t, p.callSend(h.g, many), wire.CodeTooLarge)
	// The member's rate: 64 at once, then refused with a time to wait.
	for range 4 {
		_, err := p.send(h.g, outgoing(make([]string, 16)...))
		must(t, err)
	}
	if we := wantCode(t, p.callSend(h.g, outgoing("x")), wire.CodeRateLimited); we.RetryAfterMS == 0 {
		t.Fatalf("rate_limited without retry_after_ms: %+v", we)
	}
	for _, name := range []string{strings.Repeat("n", wire.MaxNameBytes+1), "", "a\u202eb", "nul\x00"} {
		err := p.call(wire.OpJoin, wire.Join{Group: h.g, Name: name}, nil)
		var we *wire.Error
		if !errors.As(err, &we) || (we.Code != wire.CodeTooLarge && we.Code != wire.CodeBadRequest) {
			t.Fatalf("join as %q: %v, want too_large or bad_request", name, err)
		}
	}
}

// wantReset fails the test unless str is reset by the server with code.
func wantReset(t *testing.T, str *quic.Stream, code quic.StreamErrorCode) {
	t.Helper()
	_, err := readFrame(str)
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != code || !se.Remote {
		t.Fatalf("got %v, want the server to reset the stream with code %#x", err, code)
	}
}

// attackUnfinishedStreams opens streams and leaves their requests
// unfinished in every way: nothing, half a header, a header and half the
// frame, a whole frame without the end of the stream.
func attackUnfinishedStreams(t *testing.T, h *hostile) {
	p := dial(t, h.d.Addr(), h.d.Fingerprint(), nil)
	info := request(t, wire.OpInfo, wire.GroupRef{Group: h.g})
	prefixes := [][]byte{{0}, {0, 0}, info[:4], info[:len(info)-1], info}
	var strs []*quic.Stream
	for range 40 {
		for _, pre := range prefixes {
			str, err := p.conn.OpenStreamSync(testCtx(t))
			must(t, err)
			_, err = str.Write(pre)
			must(t, err)
			strs = append(strs, str)
		}
	}
	for _, str := range strs {
		wantReset(t, str, wire.StreamTimeout)
	}
}

// attackSlowloris writes a request one byte at a time, slower than the
// request deadline allows: the deadline is absolute, so it is cut off.
func attackSlowloris(t *testing.T, h *hostile) {
	p := dial(t, h.d.Addr(), h.d.Fingerprint(), nil)
	raw := request(t, wire.OpInfo, wire.GroupRef{Group: h.g})
	str, err := p.conn.OpenStreamSync(testCtx(t))
	must(t, err)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(hostileRequestTimeout / 10)
		defer tick.Stop()
		for _, b := range raw {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if _, err := str.Write([]byte{b}); err != nil {
				return
			}
		}
	})
	wantReset(t, str, wire.StreamTimeout)
	close(done)
	wg.Wait()
}

// attackStreamFlood opens every stream three connections may have, each
// declaring a 1 MiB request and sending nothing more, against a daemon of
// its own whose request deadline outlasts the attack. The daemon must not
// allocate what they declare; it runs at most its per-address share of
// operations for them (the others are refused at once, unavailable with a
// time to wait); it serves an honest user from another address meanwhile;
// and it lets go of everything once the attacker leaves.
func attackStreamFlood(t *testing.T, h *hostile) {
	d, _ := startGroupDaemon(t, Config{Server: server.Config{RequestTimeout: time.Minute}})
	before := heapInUse()
	hdr := header(wire.MaxFrameSize)
	var attackers []*peer
	var last *quic.Stream
	total := 0
	for range 3 {
		p := dial(t, d.Addr(), d.Fingerprint(), nil)
		attackers = append(attackers, p)
		for range server.DefaultMaxIncomingStreams {
			str, err := p.conn.OpenStreamSync(testCtx(t))
			must(t, err)
			_, err = str.Write(hdr)
			must(t, err)
			last = str
			total++
		}
	}
	limit := int64(d.cfg.Server.Bounds().Addr.Operations)
	eventually(t, "the address's share of streams to be running", func() bool { return int64(d.srv.Stats().Streams) == limit })
	f, err := readFrame(last)
	must(t, err)
	if f.kind != wire.KindError || f.err.Code != wire.CodeUnavailable || f.err.RetryAfterMS == 0 {
		t.Fatalf("a stream over the address's share: %+v, want unavailable with a time to wait", f)
	}
	p := joinedFrom(t, "127.0.0.2", d, "honest") // served while the flood waits
	_, err = p.send(gid(d), outgoing("still here"))
	must(t, err)
	grew := int64(heapInUse()) - int64(before)
	t.Logf("%d streams declaring 1 MiB each, %d run: heap grew by %.1f MiB, %d goroutines", total, limit, float64(grew)/(1<<20), runtime.NumGoroutine())
	if grew > 64<<20 {
		t.Fatalf("heap grew by %d bytes for %d streams declaring 1 MiB each", grew, total)
	}
	for _, a := range attackers {
		a.conn.CloseWithError(0, "")
	}
	eventually(t, "the flood's streams to end", func() bool { return int64(d.srv.Stats().Streams) == 0 })
}

// joinedFrom dials d from the local address local with a new key and
// joins its first group as name.
func joinedFrom(t *testing.T, local string, d *Daemon, name string) *peer {
	t.Helper()
	p := dialFrom(t, local, d.Addr(), d.Fingerprint())
	must(t, p.call(wire.OpJoin, wire.Join{Group: gid(d), Name: name}, nil))
	return p
}

// attackManyConnections opens more connections than one address may have,
// then uses each. It runs on a daemon of its own with the default idle
// timeout, not the suite's 2 s (which is there for the idle-connection
// attack): on a loaded machine, opening 32 connections took longer than
// 2 s, the server dropped the first ones for their silence (an idle
// timeout sends nothing), and answered their first stream with a
// stateless reset (the flake this once was, 2 runs in 6 under load average
// 13). The connections also keep themselves alive, as a client's do.
func attackManyConnections(t *testing.T, h *hostile) {
	d, _ := startGroupDaemon(t, Config{Server: server.Config{MaxConnsPerAddr: hostileConnsPerAddr}})
	var conns []*quic.Conn
	defer func() {
		for _, c := range conns {
			c.CloseWithError(0, "")
		}
	}()
	refused := 0
	for range hostileConnsPerAddr + 8 {
		c, err := quic.DialAddr(testCtx(t), d.Addr().String(), newKey(t).ClientTLS(d.Fingerprint(), nil),
			&quic.Config{KeepAlivePeriod: 5 * time.Second})
		if err != nil {
			t.Fatalf("handshake failed: %v", err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		str, err := c.OpenStreamSync(testCtx(t))
		if err == nil {
			str.Write(request(t, wire.OpInfo, wire.GroupRef{Group: gid(d)}))
			str.Close()
			_, err = readFrame(str)
		}
		var ae *quic.ApplicationError
		switch {
		case err == nil:
		case errors.As(err, &ae) && ae.ErrorCode == wire.ConnRefused && ae.Remote:
			refused++
		default:
			t.Fatalf("connection failed with %v, want served or refused with 0x3", err)
		}
	}
	if refused != 8 {
		t.Fatalf("%d connections refused, want the 8 over the limit of %d", refused, hostileConnsPerAddr)
	}
}

// attackIdleConnections opens connections that say nothing: the daemon
// drops them after its idle timeout.
func attackIdleConnections(t *testing.T, h *hostile) {
	var conns []*quic.Conn
	for range 8 {
		c, err := quic.DialAddr(testCtx(t), h.d.Addr().String(), newKey(t).ClientTLS(h.d.Fingerprint(), nil),
			&quic.Config{MaxIdleTimeout: time.Hour})
		must(t, err)
		conns = append(conns, c)
	}
	for _, c := range conns {
		select {
		case <-c.Context().Done():
		case <-testCtx(t).Done():
			t.Fatal("an idle connection was kept")
		}
		var ie *quic.IdleTimeoutError
		if err := context.Cause(c.Context()); !errors.As(err, &ie) {
			t.Fatalf("idle connection ended with %v, want an idle timeout", err)
		}
	}
}

// attackStrayDatagrams sends UDP datagrams that are not QUIC, and QUIC-like
// long headers with garbage, to both servers.
func attackStrayDatagrams(t *testing.T, h *hostile) {
	for _, addr := range []net.Addr{h.d.Addr(), h.r.Addr()} {
		c, err := net.DialUDP("udp", nil, addr.(*net.UDPAddr))
		must(t, err)
		for i := range 2000 {
			b := make([]byte, 1+i%1400)
			rand.Read(b)
			if i%2 == 0 {
				b[0] = 0xc0 | b[0]&0x0f // a long header: looks like an Initial
				if len(b) >= 5 {
					binary.BigEndian.PutUint32(b[1:], 1) // QUIC v1
				}
			}
			c.Write(b)
		}
		c.Close()
	}
}

func attackWrongALPN(t *testing.T, h *hostile) {
	for _, protos := range [][]string{{"h3"}, {"huddle/2"}, {"huddle/1 "}} {
		tc := newKey(t).ClientTLS(h.d.Fingerprint(), nil)
		tc.NextProtos = protos
		ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
		c, err := quic.DialAddr(ctx, h.d.Addr().String(), tc, &quic.Config{})
		cancel()
		if err == nil {
			c.CloseWithError(0, "")
			t.Fatalf("handshake with ALPN %q succeeded", protos)
		}
	}
}

func attackNoCertificate(t *testing.T, h *hostile) {
	tc := newKey(t).ClientTLS(h.d.Fingerprint(), nil)
	tc.Certificates = nil
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
	defer cancel()
	c, err := quic.DialAddr(ctx, h.d.Addr().String(), tc, &quic.Config{})
	if err != nil {
		return // refused in the handshake
	}
	defer c.CloseWithError(0, "")
	// TLS 1.3 lets the client finish before the server has checked its
	// certificate: then no operation may succeed.
	str, err := c.OpenStreamSync(ctx)
	if err == nil {
		str.Write(request(t, wire.OpInfo, wire.GroupRef{Group: h.g}))
		str.Close()
		var f frame
		if f, err = readFrame(str); err == nil {
			t.Fatalf("a peer without a certificate was answered: %+v", f)
		}
	}
}

// attackNonMember tries every operation of a group it has not joined.
func attackNonMember(t *testing.T, h *hostile) {
	p := dial(t, h.d.Addr(), h.d.Fingerprint(), nil)
	for _, g := range []wire.UUID{h.g, h.priv} {
		wantCode(t, p.call(wire.OpMembers, wire.GroupRef{Group: g}, nil), wire.CodeNotMember)
		wantCode(t, p.callSend(g, outgoing("let me in")), wire.CodeNotMember)
		_, _, err := p.fetch(wire.Fetch{Group: g})
		wantCode(t, err, wire.CodeNotMember)
		fs := p.do(wire.OpWatch, wire.Watch{Group: g})
		if len(fs) != 1 || fs[0].kind != wire.KindError || fs[0].err.Code != wire.CodeNotMember {
			t.Fatalf("watch as a non-member: %+v", fs)
		}
		var left wire.Left
		must(t, p.call(wire.OpLeave, wire.GroupRef{Group: g}, &left))
		if left.WasMember {
			t.Fatal("leave says a stranger was a member")
		}
		if in := p.info(g); in.Member {
			t.Fatal("info says a stranger is a member")
		}
	}
	// A group the daemon does not host.
	wantCode(t, p.call(wire.OpJoin, wire.Join{Group: uuid.New(), Name: "x"}, nil), wire.CodeNotFound)
	// Nothing was stored for the stranger.
	m := joined(t, h.d, "member")
	defer m.call(wire.OpLeave, wire.GroupRef{Group: h.g}, nil)
	msgs, _, err := m.fetch(wire.Fetch{Group: h.g})
	must(t, err)
	for _, msg := range msgs {
		if msg.From == p.id.Fingerprint() {
			t.Fatalf("a stranger's message was stored: %+v", msg)
		}
	}
}

func attackWrongSecret(t *testing.T, h *hostile) {
	p := dial(t, h.d.Addr(), h.d.Fingerprint(), nil)
	for _, secret := range [][]byte{nil, []byte("hunter2-guess"), h.secret[:len(h.secret)-1], append(append([]byte(nil), h.secret...), 0)} {
		wantCode(t, p.call(wire.OpJoin, wire.Join{Group: h.priv, Name: "guess", Secret: secret}, nil), wire.CodeUnauthorized)
	}
	if p.info(h.priv).Member {
		t.Fatal("a wrong secret made a member")
	}
	// The right one works, and the secret is never in an error or a reply.
	must(t, p.call(wire.OpJoin, wire.Join{Group: h.priv, Name: "knows", Secret: h.secret}, nil))
	must(t, p.call(wire.OpLeave, wire.GroupRef{Group: h.priv}, nil))
}

// attackReplay replays message IDs: the sender's own, and another
// member's. Each is acknowledged with the original's sequence and time;
// nothing new is stored; the stored message keeps its body and sender.
func attackReplay(t *testing.T, h *hostile) {
	alice := joined(t, h.d, "alice")
	mallory := joined(t, h.d, "mallory")
	defer alice.call(wire.OpLeave, wire.GroupRef{Group: h.g}, nil)
	defer mallory.call(wire.OpLeave, wire.GroupRef{Group: h.g}, nil)
	orig := outgoing("pay bob 10")
	sent, err := alice.send(h.g, orig)
	must(t, err)
	ack := sent.Acks[0]
	for _, replay := range []struct {
		p    *peer
		body string
	}{{alice, "pay bob 10"}, {alice, "pay mallory 1000"}, {mallory, "pay mallory 1000"}} {
		got, err := replay.p.send(h.g, []wire.Outgoing{{ID: orig[0].ID, Body: []byte(replay.body)}})
		must(t, err)
		if a := got.Acks[0]; !a.Duplicate || a.Seq != ack.Seq || a.Time != ack.Time {
			t.Fatalf("replay acknowledged as %+v, want the original %+v as a duplicate", a, ack)
		}
	}
	// The same ID twice in one batch is refused whole.
	dup := outgoing("one")
	dup = append(dup, wire.Outgoing{ID: dup[0].ID, Body: []byte("two")})
	wantCode(t, mallory.callSend(h.g, dup), wire.CodeBadRequest)
	msgs, _, err := alice.fetch(wire.Fetch{Group: h.g, After: u64(ack.Seq - 1)})
	must(t, err)
	if len(msgs) != 1 || string(msgs[0].Body) != "pay bob 10" || msgs[0].From != alice.id.Fingerprint() {
		t.Fatalf("after replays the log holds %+v", msgs)
	}
}

// attackForgedFields sends requests with extra fields claiming another
// sender, time and sequence: they are ignored, and the server's own values
// are stored.
func attackForgedFields(t *testing.T, h *hostile) {
	mallory := joined(t, h.d, "mallory")
	defer mallory.call(wire.OpLeave, wire.GroupRef{Group: h.g}, nil)
	victim := newKey(t).Fingerprint()
	id := wire.NewID()
	// {0: 20, 1: {1: group, 2: [{1: id, 2: body, 3: 1, 4: victim, 5: "alice"}], 5: victim}}
	// (keys 3 and 4 of a send are after and after_epoch since session 21)
	type forgedMsg struct {
		ID   wire.ID          `cbor:"1,keyasint"`
		Body []byte           `cbor:"2,keyasint"`
		Seq  uint64           `cbor:"3,keyasint"`
		From wire.Fingerprint `cbor:"4,keyasint"`
		Name string           `cbor:"5,keyasint"`
		Time int64            `cbor:"6,keyasint"`
	}
	type forgedSend struct {
		Group    wire.UUID        `cbor:"1,keyasint"`
		Messages []forgedMsg      `cbor:"2,keyasint"`
		From     wire.Fingerprint `cbor:"5,keyasint"`
	}
	before := time.Now().UnixNano()
	var sent wire.Sent
	must(t, mallory.call(wire.OpSend, forgedSend{Group: h.g, From: victim,
		Messages: []forgedMsg{{ID: id, Body: []byte("signed, alice"), Seq: 1, From: victim, Name: "alice", Time: 1}}}, &sent))
	msgs, _, err := mallory.fetch(wire.Fetch{Group: h.g, After: u64(sent.Acks[0].Seq - 1)})
	must(t, err)
	m := msgs[0]
	if m.From != mallory.id.Fingerprint() || m.Name != "mallory" || m.Seq != sent.Acks[0].Seq || m.Time < before {
		t.Fatalf("stored %+v: the server must use its own sender, name, sequence and time", m)
	}
}

// attackStrangerLease has a stranger renew, deregister and take over a
// lease another key holds.
func attackStrangerLease(t *testing.T, h *hostile) {
	owner := dial(t, h.r.Addr(), h.r.Fingerprint(), nil)
	stranger := dial(t, h.r.Addr(), h.r.Fingerprint(), nil)
	g := uuid.New()
	var lease wire.Lease
	must(t, owner.call(wire.OpRegister, wire.Register{Group: g, Name: "owned", Addrs: []string{"127.0.0.1:9"}}, &lease))
	wantCode(t, stranger.call(wire.OpRenew, wire.Renew{Group: g, Epoch: lease.Epoch, Members: 9999}, nil), wire.CodeUnauthorized)
	wantCode(t, stranger.call(wire.OpDeregister, wire.Deregister{Group: g}, nil), wire.CodeUnauthorized)
	wantCode(t, stranger.call(wire.OpRegister, wire.Register{Group: g, Name: "owned", Addrs: []string{"10.6.6.6:7374"}}, nil), wire.CodeUnauthorized)
	for _, e := range listGroups(t, stranger).Groups {
		if e.Group == g && (e.Fingerprint != owner.id.Fingerprint() || e.Addrs[0] != "127.0.0.1:9" || e.Members == 9999) {
			t.Fatalf("the stranger changed the listing: %+v", e)
		}
	}
	must(t, owner.call(wire.OpDeregister, wire.Deregister{Group: g}, nil))
}
