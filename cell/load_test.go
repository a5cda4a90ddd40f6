package cell

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// load is a steady send load on a test cell, as clients make it: senders
// that each send one message at a time to whichever member leads, and
// retry a message under its ID (on the next member, after an error that
// says the leadership moved or the member closed) until it is
// acknowledged. It records every ack and when it came, so that a test can
// check that the cell lost and duplicated nothing acknowledged, and
// measure the longest pause in acknowledgments over an operation.
type load struct {
	t     testing.TB
	group wire.UUID
	stop  chan struct{}
	wg    sync.WaitGroup

	mu    sync.Mutex
	nodes []*Node
	next  int
	acks  map[[16]byte]store.Ack
	times []time.Time // of each ack, in order
	err   error       // the first error no client would retry
	// changed is closed and replaced at each ack.
	changed chan struct{}
	// stall bounds await's wait for the next ack (waitTimeout if zero).
	stall time.Duration
}

// loadSenders is how many senders a load runs: enough that the leader
// gathers sends into shared raft entries, as under real load.
const loadSenders = 4

// startLoad starts a load on c's group; it sends through c's running
// members (setNodes tells it of changes) until stopped.
func startLoad(c *testCell, group wire.UUID) *load {
	l := &load{t: c.t, group: group, stop: make(chan struct{}), acks: make(map[[16]byte]store.Ack), changed: make(chan struct{})}
	l.setNodes(c)
	for s := range loadSenders {
		l.wg.Add(1)
		go l.sender(s)
	}
	c.t.Cleanup(l.halt)
	return l
}

// setNodes makes the load send through c's members as they run now. The
// test calls it from its own goroutine after it started or stopped one.
func (l *load) setNodes(c *testCell) {
	var nodes []*Node
	for _, m := range c.members {
		if m.node != nil {
			nodes = append(nodes, m.node)
		}
	}
	l.mu.Lock()
	l.nodes = nodes
	l.mu.Unlock()
}

func (l *load) sender(s int) {
	defer l.wg.Done()
	from := store.Sender{Fingerprint: [32]byte{byte(s + 1)}, Name: fmt.Sprint("sender", s)}
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		l.mu.Lock()
		i := l.next
		l.next++
		l.mu.Unlock()
		// A message begun is sent until acknowledged, even past stop, so
		// that every message attempted is acknowledged: the cell must then
		// hold exactly the acknowledged ones.
		id := newID(1_000_000 + i)
		ack, err := l.sendOne(id, from, fmt.Sprint("load ", i))
		l.mu.Lock()
		if err != nil {
			if l.err == nil {
				l.err = err
			}
			l.mu.Unlock()
			return
		}
		l.acks[id] = ack
		l.times = append(l.times, time.Now())
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
}

// sendOne sends one message until acknowledged, or until a minute passes
// or an error no client would retry (returned).
func (l *load) sendOne(id [16]byte, from store.Sender, body string) (store.Ack, error) {
	deadline := time.Now().Add(2 * waitTimeout)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		l.mu.Lock()
		nodes := slices.Clone(l.nodes)
		l.mu.Unlock()
		tried := false
		for _, n := range nodes {
			if n.Leading() != nil {
				continue
			}
			tried = true
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			acks, err := n.Send(ctx, l.group, []store.Entry{{ID: id, From: from, Body: []byte(body)}}, nil)
			cancel()
			if err == nil {
				return acks[0], nil
			}
			var nl *NotLeaderError
			if !errors.As(err, &nl) && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrClosed) {
				return store.Ack{}, err
			}
			last = err
		}
		if !tried {
			last = errors.New("no member leads")
		}
		time.Sleep(2 * time.Millisecond) // an election under way: ask again, as a client's retry
	}
	return store.Ack{}, fmt.Errorf("message still unacknowledged after %v: %v", 2*waitTimeout, last)
}

// await waits until k more messages than now are acknowledged: the cell
// takes sends. It fails the test if a sender failed, or if no message was
// acknowledged for waitTimeout (l.stall): the cell stopped taking sends.
// It asserts no rate: k acknowledged within waitTimeout was one, and the
// cell's tests failed under load while the cell took sends all along
// (session 18, load ~54: "1883 of 2000 more messages acknowledged by the
// deadline", "5824 of 10000").
func (l *load) await(what string, k int) {
	l.t.Helper()
	l.mu.Lock()
	want := len(l.times) + k
	l.mu.Unlock()
	stall := cmp.Or(l.stall, waitTimeout)
	deadline := time.NewTimer(stall)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		got, err, changed := len(l.times), l.err, l.changed
		l.mu.Unlock()
		switch {
		case err != nil:
			l.t.Fatalf("%s: a sender failed: %v", what, err)
		case got >= want:
			return
		}
		select {
		case <-changed:
			deadline.Reset(stall)
		case <-deadline.C:
			l.t.Fatalf("%s: %d of %d more messages acknowledged, then none for %v", what, got-(want-k), k, stall)
		}
	}
}

// pause returns the longest time in [from, to] with no acknowledgment,
// counted from the last one before from to the first one after to, and
// how many came in between.
func (l *load) pause(from, to time.Time) (longest time.Duration, acked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := from
	for _, at := range l.times {
		if at.Before(from) {
			prev = at
			continue
		}
		longest = max(longest, at.Sub(prev))
		prev = at
		if at.After(to) {
			return longest, acked
		}
		acked++
	}
	return max(longest, to.Sub(prev)), acked
}

// measure runs op, waits for k acknowledgments after it, and logs the
// longest pause in acknowledgments from op's start until then.
func (l *load) measure(what string, k int, op func()) time.Duration {
	l.t.Helper()
	start := time.Now()
	op()
	done := time.Now()
	l.await(what, k)
	p, n := l.pause(start, time.Now())
	l.t.Logf("%s: took %v; longest send pause %v (%d messages acknowledged meanwhile)", what, done.Sub(start).Round(time.Millisecond), p.Round(time.Millisecond), n)
	return p
}

// halt stops the senders and waits for them: each ends once the message
// it was sending is acknowledged.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// check halts the load and checks that every running member of c holds
// exactly the messages acknowledged, each once, as acknowledged, and that
// every replica's history is the same: gapless, timestamps strictly
// increasing. It returns how many messages there were.
func (l *load) check(c *testCell) int {
	l.t.Helper()
	l.halt()
	if l.err != nil {
		l.t.Fatalf("a sender failed: %v", l.err)
	}
	n := len(l.acks)
	c.sameLogs(l.group, n)
	held := make(map[[16]byte]bool, n)
	var prev int64
	for i, m := range c.leader().messages(l.group) {
		a, ok := l.acks[m.ID]
		switch {
		case !ok:
			l.t.Fatalf("message %d (%x) is held but was never acknowledged", m.Seq, m.ID)
		case held[m.ID]:
			l.t.Fatalf("message %x is held twice", m.ID)
		case a.Seq != m.Seq || a.Time != m.Time:
			l.t.Fatalf("message %x acknowledged as %d at %d, held as %d at %d", m.ID, a.Seq, a.Time, m.Seq, m.Time)
		case m.Seq != uint64(i+1):
			l.t.Fatalf("message %d at position %d: a gap", m.Seq, i)
		case m.Time <= prev:
			l.t.Fatalf("message %d stamped %d, not after the one before (%d)", m.Seq, m.Time, prev)
		}
		held[m.ID] = true
		prev = m.Time
	}
	return n
}

// TestLoadAwaitsProgress: await waits as long as messages keep being
// acknowledged, however slowly, and fails only once none came for its
// stall bound. (It failed once k had not all come within waitTimeout.)
func TestLoadAwaitsProgress(t *testing.T) {
	l := &load{t: t, stop: make(chan struct{}), acks: make(map[[16]byte]store.Ack), changed: make(chan struct{}), stall: 2 * time.Second}
	const k = 25
	go func() {
		tick := time.NewTicker(200 * time.Millisecond) // k acks take 5 s: 2.5 stall bounds
		defer tick.Stop()
		for range k {
			<-tick.C
			l.mu.Lock()
			l.times = append(l.times, time.Now())
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	l.await("acks coming slowly", k)
}
