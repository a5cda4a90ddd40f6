package cell

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// pacedServe is how a member played by the test answers a catch-up
// (servePaced): behind (its log ends before the messages asked for), or
// ok, once wait (if set) returns true, sending from first (after+1 if 0:
// else past a hole its retention made) in batches of per messages, one
// each every (the member's pace: what it sends is the test's).
type pacedServe struct {
	behind  bool
	wait    func(ctx context.Context) bool
	first   uint64
	per     int
	every   time.Duration
	body    int            // each message's body, in bytes (0: the 10 held's)
	hold    uint64         // if set, the last message sent: then none, the stream kept open
	sent    *atomic.Uint64 // if set, the last message sent, stored after each batch
	garbage bool           // after its header, a frame no member sends
}

// servePaced answers each catch-up on tr as how says for its request,
// counting in asked the requests it answered ok. (Not the copies it
// served to their end: the catch-up may return as soon as the end frame
// is written, before the count.)
func (c *paceCell) servePaced(tr *Transport, how func(after, upto uint64) pacedServe, asked *atomic.Int64) {
	tr.handle(kindCatchUp, func(ctx context.Context, _ wire.Fingerprint, str *quic.Stream) {
		after, upto, frame, ok := readCatchUpRequest(str)
		if !ok {
			return
		}
		s := how(after, upto)
		if s.behind {
			if frame('h', append([]byte{catchUpBehind}, make([]byte, 8)...)) == nil {
				str.Close()
			}
			return
		}
		if s.wait != nil && !s.wait(ctx) {
			return
		}
		first := max(s.first, after+1)
		if frame('h', binary.LittleEndian.AppendUint64([]byte{catchUpOK}, first)) != nil {
			return
		}
		asked.Add(1)
		if s.garbage {
			if frame('x', nil) == nil {
				str.Close()
			}
			return
		}
		tick := time.NewTicker(s.every)
		defer tick.Stop()
		for from := first; from <= upto; from += uint64(s.per) {
			if from > first && !nextTick(ctx, str, tick) {
				return
			}
			to := min(from+uint64(s.per)-1, upto)
			if frame('b', c.batchOf(from, to, s.body)) != nil {
				return
			}
			if s.sent != nil {
				s.sent.Store(to)
			}
			if s.hold != 0 && to >= s.hold {
				select { // until f leaves the stream
				case <-ctx.Done():
				case <-str.Context().Done():
				}
				return
			}
		}
		if frame('e', nil) == nil {
			str.Close()
		}
	})
}

// tailPast waits until f's log holds a message past seq (a copy begun),
// or ctx ends (false).
func (c *paceCell) tailPast(ctx context.Context, seq uint64) bool {
	poll := time.NewTicker(5 * time.Millisecond) // f's next append
	defer poll.Stop()
	for tail, _ := c.f.node.fsm.group(c.g.ID).log.Tail(); tail <= seq; tail, _ = c.f.node.fsm.group(c.g.ID).log.Tail() {
		select {
		case <-poll.C:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// oneRestore catches f's group up to each of uptos in turn, as one
// restore's catch-ups (one per group behind) do, and returns what they
// learnt of the members.
func (c *paceCell) oneRestore(t *testing.T, uptos ...uint64) *catchUpRestore {
	t.Helper()
	restore := newCatchUpRestore()
	for _, upto := range uptos {
		c.catchUpIn(t, restore, upto)
	}
	return restore
}

// catchUpIn catches f's group up to upto as one of restore's catch-ups.
func (c *paceCell) catchUpIn(t *testing.T, restore *catchUpRestore, upto uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	err := c.f.node.catchUp(ctx, c.f.node.fsm.group(c.g.ID), upto, 0, false, restore)
	cancel()
	if err != nil {
		t.Fatalf("catch up to %d: %v", upto, err)
	}
	t.Logf("caught up to %d; paces measured: %v; shunned: %v", upto, restore.rates, restore.shun)
}

// TestCatchUpPacesKeptForTheRestore: the paces a restore's catch-ups
// measure (one per group behind, one after another) are the restore's, as
// the members shunned are: a member measured in one group's copy is set
// against the others as that in the next. Until session 21 each group's
// copy measured afresh, and took a member measured slower in the one
// before for one not measured yet: the next copy moved to it for a window
// (its stream from the faster member closed, that member asked again
// after). Here the slow member alone serves the first catch-up (~320
// messages a second over 2 s: measured), and the fast one (~3,200 a
// second over 1.5 s, past its first window) answers first in the second,
// the slow one once that copy has begun; the fast member is asked once:
// its copy never moved.
func TestCatchUpPacesKeptForTheRestore(t *testing.T) {
	c := newPaceCell(t, 0, 0) // the default least pace and window (1 s)
	// The slow member's copy spans 2 s from its first batch: measured at
	// its first window's end, or at its end (half a window or more after
	// its first batch) however late f reads it. The fast member's spans
	// 1.5 s: its first window ends before it (the copy would move then).
	const slowPer, slowBatches, slowEvery = 16, 40, 50 * time.Millisecond
	const fastPer, fastBatches, fastEvery = 64, 75, 20 * time.Millisecond
	first := uint64(10 + slowPer*slowBatches)
	second := first + fastPer*fastBatches
	var slowAsked, fastAsked atomic.Int64
	c.servePaced(c.slow, func(after, upto uint64) pacedServe {
		s := pacedServe{per: slowPer, every: slowEvery}
		if upto > first { // the second: once the fast member's copy has begun
			s.wait = func(ctx context.Context) bool { return c.tailPast(ctx, first) }
		}
		return s
	}, &slowAsked)
	c.servePaced(c.other, func(_, upto uint64) pacedServe {
		return pacedServe{behind: upto <= first, per: fastPer, every: fastEvery}
	}, &fastAsked)

	c.oneRestore(t, first, second)
	t.Logf("the second catch-up: the fast member asked %d times; the slow member was asked %d times in both", fastAsked.Load(), slowAsked.Load())
	if got := fastAsked.Load(); got != 1 {
		t.Fatalf("the fast member was asked %d times, want once: its copy moved to the slow member, measured in the first catch-up, as one not measured yet, and came back", got)
	}
	if msgs := c.f.messages(c.g.ID); uint64(len(msgs)) != second || msgs[len(msgs)-1].Seq != second {
		t.Fatalf("f holds %d messages after the catch-ups, want %d", len(msgs), second)
	}
}

// TestCatchUpEndMeasuresWhatItCopied: a copy's end measures the pace of
// the messages copied since its last window began, after its first batch,
// and only over half a window or more with messages copied: a copy past a
// hole its member's retention made, or of one batch, is no measure of a
// pace that shuns an honest member. Until session 21 the end measured the
// whole copy from the request: the messages skipped past the hole, and the
// member's first read, counted as its pace, and an honest member measured
// over a window in the restore's copy before was shunned against it for
// the rest of the restore. Here the member measured first serves ~1,280
// messages a second over 1.25 s; the other then serves the next group's
// copy alone, at a quarter of that pace, past a hole of a million
// messages, or one batch at once.
func TestCatchUpEndMeasuresWhatItCopied(t *testing.T) {
	for _, tc := range []struct {
		name         string
		hole         uint64
		per, batches int
	}{
		{"past a hole", 1_000_000, 16, 16},
		{"one batch", 0, catchUpChunk, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newPaceCell(t, 0, 0) // the default least pace and window (1 s)
			const per, batches, every = 64, 26, 50 * time.Millisecond
			first := uint64(10 + per*batches)
			second := first + tc.hole + uint64(tc.per*tc.batches)
			var asked atomic.Int64
			// The member measured first (honest, at its pace), behind in
			// the second catch-up; the other, behind in the first.
			c.servePaced(c.other, func(_, upto uint64) pacedServe {
				return pacedServe{behind: upto > first, per: per, every: every}
			}, &asked)
			c.servePaced(c.slow, func(after, upto uint64) pacedServe {
				return pacedServe{behind: upto <= first, first: after + 1 + tc.hole, per: tc.per, every: 4 * every * time.Duration(tc.per) / per}
			}, &asked)

			restore := c.oneRestore(t, first, second)
			if tail, _ := c.f.node.fsm.group(c.g.ID).log.Tail(); tail != second {
				t.Fatalf("f's log ends at %d after the catch-ups, want %d", tail, second)
			}
			if restore.shun[c.otherKey] {
				t.Fatal("the member measured over a window in the first catch-up was shunned against the other's copy's end")
			}
		})
	}
}

// TestCatchUpShunsOnPaceWithinOneGroup: a member is shunned for its pace
// only against the paces measured in the same group's copy. Paces are
// messages a second, and one group's messages are not another's: a
// member serving a group of 3 KiB messages at 320 a second (1 MiB/s) is
// not four times slower than one that served a group of 10-byte messages
// at 1,280 a second. Until session 21's last landing the paces a restore
// kept were set against each other whatever group measured them, and
// the member serving the large messages was shunned for the rest of the
// restore (and a member measured in a group of small messages, a hostile
// key's too, stood against every member serving large ones). Here the
// member measured first serves the first catch-up alone; the other
// serves the second alone, its messages 3 KiB.
func TestCatchUpShunsOnPaceWithinOneGroup(t *testing.T) {
	c := newPaceCell(t, 0, 0) // the default least pace and window (1 s)
	const per, batches, every = 64, 26, 50 * time.Millisecond
	first := uint64(10 + per*batches)
	second := first + 16*16
	var asked atomic.Int64
	c.servePaced(c.other, func(_, upto uint64) pacedServe {
		return pacedServe{behind: upto > first, per: per, every: every}
	}, &asked)
	// 16 batches of 16 messages, one every 50 ms: 0.8 s, past half a
	// window, measured at its end.
	c.servePaced(c.slow, func(_, upto uint64) pacedServe {
		return pacedServe{behind: upto <= first, per: 16, every: every, body: 3 << 10}
	}, &asked)

	restore := c.oneRestore(t, first, second)
	if tail, _ := c.f.node.fsm.group(c.g.ID).log.Tail(); tail != second {
		t.Fatalf("f's log ends at %d after the catch-ups, want %d", tail, second)
	}
	if restore.shun[c.slowKey] || restore.shun[c.otherKey] {
		t.Fatalf("shunned %v (the member serving 3 KiB messages: %v), though each alone served a copy of its own group's messages", restore.shun, restore.shun[c.slowKey])
	}
}

// TestCatchUpBurstThenCrawl: a member's key that sends fast for one
// window cannot have an honest member shunned for the rest of the
// restore against that pace: the honest member's shun is lifted once the
// key's pace stands no longer, and the key, if it crawls, is left. Until
// session 22 a shun for pace lasted the restore, against the fastest pace
// any member was measured at in the copy: the honest member, measured
// after the burst, was shunned; the copy went back to the key (the
// fastest); its crawl shunned it too, and with every member shunned none
// was left to move to, so the copy crawled to its end. Here the key
// answers first, sends 1,500 messages in 150 ms and then nothing
// (measured at ~1,400 a second over its first window); the honest member
// (~400 a second) answers once the key's copy has begun. Asked again, the
// key crawls at 40 a second, or fails its copy (its pace no longer the
// others' measure), or says it has not the messages (its pace, measured
// no more, is no longer the top after catchUpRecent measures).
func TestCatchUpBurstThenCrawl(t *testing.T) {
	for _, tc := range []struct {
		name  string
		then  pacedServe // the key's answer when asked again
		extra uint64     // messages, past the 2,400, for the honest member's windows
	}{
		{"crawls", pacedServe{per: 4, every: 100 * time.Millisecond}, 0},
		{"fails", pacedServe{garbage: true}, 0},
		{"has not the messages", pacedServe{behind: true}, 1500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rerunOnNewCells(t, 3, "the copy never went back to the key after the honest member's window (a loaded machine: its burst measured under twice the honest pace)", func(t *testing.T) bool {
				c := newPaceCell(t, 0, 0) // the default least pace and window (1 s)
				const burst = 1500
				upto := 10 + 2400 + tc.extra
				var keyAsked, asked atomic.Int64
				var crawled atomic.Uint64 // the last message the key sent when asked again
				c.servePaced(c.slow, func(_, _ uint64) pacedServe {
					if keyAsked.Add(1) == 1 {
						return pacedServe{per: 100, every: 10 * time.Millisecond, hold: 10 + burst}
					}
					then := tc.then
					then.sent = &crawled
					return then
				}, &asked)
				c.serveHonest(&asked)

				restore := newCatchUpRestore()
				c.catchUpIn(t, restore, upto)
				if keyAsked.Load() < 2 {
					return false
				}
				c.keyLeft(t, restore, upto, crawled.Load())
				if !tc.then.behind && !restore.shun[c.slowKey] {
					t.Fatal("the key that then crawled or failed is not shunned")
				}
				return true
			})
		})
	}
}

// TestCatchUpBurstThenCrawlNextGroup: a member shunned for its pace in one
// group's copy, against a key's burst, is moved to in the next group's
// copy when the key crawls there, and lifted once measured no longer
// slower. Until session 22 a shun for pace was for the rest of the
// restore, and a shunned member was never moved to: the key sent one
// group's messages fast (the honest member measured at a fifth of its
// pace was shunned) and the next group's at a crawl, to its end, the only
// member left. Here the key sends the first group's messages at ~2,000 a
// second and the next's at 40; the honest member (~400 a second) answers
// once the key's first copy has begun.
func TestCatchUpBurstThenCrawlNextGroup(t *testing.T) {
	rerunOnNewCells(t, 3, "the honest member was not shunned in the first copy (a loaded machine: the key's burst measured under twice the honest pace)", func(t *testing.T) bool {
		c := newPaceCell(t, 0, 0) // the default least pace and window (1 s)
		first := uint64(10 + 3000)
		second := first + 600
		var asked atomic.Int64
		var crawled atomic.Uint64 // the last message its crawl sent
		c.servePaced(c.slow, func(_, upto uint64) pacedServe {
			if upto <= first {
				return pacedServe{per: 50, every: 25 * time.Millisecond}
			}
			return pacedServe{per: 4, every: 100 * time.Millisecond, sent: &crawled}
		}, &asked)
		c.serveHonest(&asked)

		restore := newCatchUpRestore()
		c.catchUpIn(t, restore, first)
		if !restore.shun[c.otherKey] {
			return false
		}
		c.catchUpIn(t, restore, second)
		c.keyLeft(t, restore, second, crawled.Load())
		if !restore.shun[c.slowKey] {
			t.Fatal("the key that crawled is not shunned")
		}
		return true
	})
}

// serveHonest has the other member serve as the burst-then-crawl tests'
// honest member: ~400 messages a second, answering once f's copy from the
// key (the slow member's) has begun.
func (c *paceCell) serveHonest(asked *atomic.Int64) {
	c.servePaced(c.other, func(_, _ uint64) pacedServe {
		return pacedServe{wait: func(ctx context.Context) bool { return c.tailPast(ctx, 10) }, per: 10, every: 25 * time.Millisecond}
	}, asked)
}

// keyLeft fails t unless f's log ends at upto, the key's later copy
// (crawled: the last message it sent) was left before its end, and the
// honest member is not shunned.
func (c *paceCell) keyLeft(t *testing.T, restore *catchUpRestore, upto, crawled uint64) {
	t.Helper()
	if tail, _ := c.f.node.fsm.group(c.g.ID).log.Tail(); tail != upto {
		t.Fatalf("f's log ends at %d after the catch-ups, want %d", tail, upto)
	}
	if crawled >= upto {
		t.Fatalf("the key sent every message when asked again, up to %d: the copy stayed with it to its end", crawled)
	}
	if restore.shun[c.otherKey] {
		t.Fatal("the honest member is shunned at the restore's end, against the key's burst")
	}
}

// chunkReader returns its chunks one a Read, each with its error: a quic
// stream's reads, scripted.
type chunkReader struct {
	chunks [][]byte
	errs   []error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if len(c.chunks[0]) > 0 {
		return n, nil
	}
	err := c.errs[0]
	c.chunks, c.errs = c.chunks[1:], c.errs[1:]
	return n, err
}

// TestCatchUpReaderDeadlinePassedWithData: a catch-up stream's Read that
// brought a frame with a deadline's error (a quic stream's, when the
// deadline passed as it copied data across its frames) leaves the next
// frame's read to the deadline set then. (bufio.Reader kept the error and
// returned it on the next frame's read: a copy whose window ended as a
// batch arrived ended "deadline exceeded" at its next, and its honest
// member was shunned: TestCatchUpShunsOnPaceWithinOneGroup's flake.)
func TestCatchUpReaderDeadlinePassedWithData(t *testing.T) {
	frame := func(kind byte, body string) []byte {
		return append(binary.LittleEndian.AppendUint32(nil, uint32(len(body)+1)), append([]byte{kind}, body...)...)
	}
	r := &chunkReader{
		chunks: [][]byte{frame('b', "one"), frame('e', "")},
		errs:   []error{os.ErrDeadlineExceeded, nil},
	}
	s := &catchUpStream{r: newCatchUpReader(r)}
	for _, want := range []byte{'b', 'e'} {
		kind, _, err := s.read()
		if err != nil || kind != want {
			t.Fatalf("read frame %q, %v; want frame %q (the deadline's error came with the frame before, which was read whole)", kind, err, want)
		}
	}
}

// TestCatchUpPaceHoveringAtHalf: a member whose pace hovers around half
// the top's (measures either side of it, as a loaded machine's noise
// makes them) is shunned at its first measure under half and stays so,
// with one warning: until session 23 it was lifted at each measure over
// half and shunned again at the next under, with a warning each time.
// Once its pace comes within catchUpLifted of the top it is lifted, once.
func TestCatchUpPaceHoveringAtHalf(t *testing.T) {
	rec := newRecorder(slog.DiscardHandler)
	log := slog.New(rec)
	fast := Peer{Addr: "127.0.0.1:1", Fingerprint: wire.Fingerprint{1}}
	hover := Peer{Addr: "127.0.0.1:2", Fingerprint: wire.Fingerprint{2}}
	shun, slow := make(shunned), make(shunned)
	here := make(map[Peer]catchUpPace)
	measures := 0
	measure := func(p Peer, rate float64) {
		measures++
		here[p] = catchUpPace{rate: rate, at: measures}
		judgePaces(log, "lobby", here, measures, shun, slow)
	}
	for i, rate := range []float64{480, 520, 470, 540, 490, 560, 450, 600} {
		measure(fast, 1000) // the copy's windows alternate, as moves between the two make them
		measure(hover, rate)
		if !shun[hover.Fingerprint] || !slow[hover.Fingerprint] {
			t.Fatalf("window %d: a member at %v msgs/s against 1000 not shunned for its pace (shun %v, slow %v)", i, rate, shun[hover.Fingerprint], slow[hover.Fingerprint])
		}
	}
	if shun[fast.Fingerprint] {
		t.Fatal("the fastest member shunned")
	}
	count := func(level string) (n int) {
		recs, _ := rec.since(0)
		for _, r := range recs {
			if strings.HasPrefix(r, level+" ") && strings.Contains(r, "peer="+hover.Addr) {
				n++
			}
		}
		return n
	}
	if w, i := count("WARN"), count("INFO"); w != 1 || i != 0 {
		recs, _ := rec.since(0)
		t.Fatalf("a pace hovering around half the top's logged %d warnings and %d lifts, want 1 and 0:\n%s", w, i, strings.Join(recs, "\n"))
	}

	measure(fast, 1000)
	measure(hover, 700) // within catchUpLifted of the top
	if shun[hover.Fingerprint] || slow[hover.Fingerprint] {
		t.Fatal("a member at 700 msgs/s against 1000 still shunned")
	}
	if i := count("INFO"); i != 1 {
		t.Fatalf("the lift logged %d times, want once", i)
	}
}
