//go:build linux

package jepsen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/history"
	"github.com/huddle-chat/huddle/internal/testbin"
	"github.com/huddle-chat/huddle/wire"
)

// attemptTimeout bounds one send or fetch attempt: a client that hears
// nothing for this long gives up on the attempt and tries again (with the
// same message ID, for a send).
const attemptTimeout = 5 * time.Second

// member is one user of the group: its own key, its own client.
type member struct {
	name string
	cl   *client.Client
	g    *client.Group
}

// listing returns the registry's entry for the group named name, waiting
// until it is listed.
func listing(ctx context.Context, t *testing.T, name string) wire.GroupEntry {
	t.Helper()
	cl := newClient(t, true)
	deadline := time.Now().Add(waitTimeout)
	for {
		c, cancel := context.WithTimeout(ctx, attemptTimeout)
		reg, err := cl.Registry(c, regAddr, wire.Fingerprint{})
		if err == nil {
			var l client.Listing
			if l, err = reg.List(c); err == nil {
				for _, e := range l.Groups {
					if e.Name == name {
						cancel()
						return e
					}
				}
				err = fmt.Errorf("%q not listed yet", name)
			}
		}
		cancel()
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("the registry's listing of %q: %v", name, err)
		}
		<-time.After(100 * time.Millisecond) // the daemon registers within a lease renewal
	}
}

func newClient(t *testing.T, batching bool) *client.Client {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := client.Config{Identity: id, NoBatching: !batching, DialTimeout: 2 * time.Second,
		KnownHosts: identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known_registries"))}
	if name := os.Getenv("HUDDLE_JEPSEN_CLIENT_LOG"); name != "" {
		// The clients' debug events (connections, leader following),
		// each client's lines marked with its own c=, for a run whose
		// recoveries need explaining.
		f, err := os.OpenFile(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		cfg.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})).With("c", id.Fingerprint().Short())
	}
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// join makes a new member of the group at entry, retrying until the join
// is acknowledged.
func join(ctx context.Context, t *testing.T, entry wire.GroupEntry, name string, batching bool) *member {
	t.Helper()
	cl := newClient(t, batching)
	g, err := cl.Group(entry)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		c, cancel := context.WithTimeout(ctx, attemptTimeout)
		_, err := g.Join(c, name, nil)
		cancel()
		if err == nil {
			return &member{name: name, cl: cl, g: g}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("join %s: %v", name, err)
		}
	}
}

// workload is the clients of a run, recording into h.
type workload struct {
	h        *history.History
	senders  sync.WaitGroup
	watchers sync.WaitGroup
	stop     chan struct{} // closed: senders finish the message in flight and return
	// progress receives a value (dropping it when full) at each ack.
	progress chan struct{}

	// deaths are the lab's processes that ended unseen: the waits for
	// progress fail at once on one.
	deaths *testbin.Ends

	mu       sync.Mutex
	problems []string // what the workload saw that the checker cannot (a duplicate ack of a new ID...)
}

func newWorkload(h *history.History, d *testbin.Ends) *workload {
	return &workload{h: h, stop: make(chan struct{}), progress: make(chan struct{}, 1), deaths: d}
}

func (w *workload) problem(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.problems) < 20 {
		w.problems = append(w.problems, fmt.Sprintf(format, args...))
	}
}

// send runs m as a sender until stop: each message is sent until
// acknowledged, as a user would under the send outcome contract (README,
// "A send's outcome, settled"): under one ID while its attempts are in
// doubt, under a new ID after a refusal (which promised nothing was
// stored: the checker holds it to that), each attempt recorded; an
// acknowledged ID is sent again now and then (it must get its original
// ack); after some acks the sender fetches from just before its message
// (read-your-writes). ctx ends it at once.
func (w *workload) send(ctx context.Context, m *member, seed uint64) {
	w.senders.Go(func() {
		rng := rand.New(rand.NewPCG(seed, 20))
		for n := 0; ; n++ {
			select {
			case <-w.stop:
				return
			default:
			}
			body := fmt.Appendf(nil, "%s/%d %x", m.name, n, rng.Uint64())
			ack, id, ok := w.sendUntilAcked(ctx, m, wire.NewID(), body, true)
			if !ok {
				return
			}
			select {
			case w.progress <- struct{}{}:
			default:
			}
			if rng.IntN(10) == 0 {
				if again, _, ok := w.sendUntilAcked(ctx, m, id, body, false); ok && (!again.Duplicate || again.Seq != ack.Seq) {
					w.problem("%s sent %s again: ack %+v, want a duplicate of #%d", m.name, id, again, ack.Seq)
				}
			}
			if rng.IntN(8) == 0 {
				w.read(ctx, m, "", ack.Seq-min(ack.Seq, uint64(rng.IntN(20)+1)), false)
			}
		}
	})
}

// sendUntilAcked sends body under id until an attempt is acknowledged,
// recording every attempt, and returns the ack and the ID acknowledged. A
// refusal (an error not in doubt) stored nothing: with fresh, and no
// attempt of id in doubt so far, the next attempt is under a new ID, and
// the refused ID must never be held (the checker's refused-held). An
// attempt in doubt is retried under its ID, which then stays. It returns
// false if ctx ended first.
func (w *workload) sendUntilAcked(ctx context.Context, m *member, id wire.ID, body []byte, fresh bool) (client.Ack, wire.ID, bool) {
	for {
		c, cancel := context.WithTimeout(ctx, attemptTimeout)
		start := time.Now()
		ack, err := m.g.SendWithID(c, id, body)
		end := time.Now()
		cancel()
		s := history.Send{Client: m.name, ID: id, Body: body, Start: start, End: end}
		if err == nil {
			s.Acked, s.Seq, s.Time, s.Epoch, s.Duplicate = true, ack.Seq, ack.Time.UnixNano(), ack.Epoch, ack.Duplicate
			w.h.Send(s)
			return ack, id, true
		}
		s.Err = errClass(err) + ": " + err.Error()
		s.Refused = !errors.Is(err, client.ErrInDoubt)
		w.h.Send(s)
		if ctx.Err() != nil {
			return client.Ack{}, id, false
		}
		if errors.Is(err, client.ErrNotMember) || errors.Is(err, client.ErrBadRequest) || errors.Is(err, client.ErrTooLarge) {
			w.problem("%s: send %s: %v (no retry can fix it)", m.name, id, err)
			return client.Ack{}, id, false
		}
		if !s.Refused {
			fresh = false // it may be stored: only its ID settles it
		} else if fresh {
			id = wire.NewID()
		}
		select {
		case <-time.After(50 * time.Millisecond): // a caller backing off, not a wait for an event
		case <-ctx.Done():
			return client.Ack{}, id, false
		}
	}
}

// settle sends again, through m, every ID the history holds in doubt and
// unacknowledged (a probe's send to a leader cut off from its majority,
// refused without key 7), under its ID and body until acknowledged, as
// the contract tells a user to: the checker then finds each held once.
// Call it after finish, before the final reads.
func (w *workload) settle(ctx context.Context, t *testing.T, m *member) {
	t.Helper()
	acked := make(map[wire.ID]bool)
	var doubt []history.Send
	for _, s := range w.h.Sends() {
		if s.Acked {
			acked[s.ID] = true
		} else if !s.Refused && !slices.ContainsFunc(doubt, func(d history.Send) bool { return d.ID == s.ID }) {
			doubt = append(doubt, s)
		}
	}
	n := 0
	for _, s := range doubt {
		if acked[s.ID] {
			continue
		}
		if _, _, ok := w.sendUntilAcked(ctx, m, s.ID, s.Body, false); !ok {
			t.Fatalf("settling %s, sent by %s in doubt (%s): the test ended first", s.ID, s.Client, s.Err)
		}
		n++
	}
	if n > 0 {
		t.Logf("settled %d sends left in doubt by a retry under their IDs", n)
	}
}

// errClass names the kind of a failed attempt, for the test log and for
// waiting on a refusal, following the send outcome contract: "in doubt"
// (the send may be stored: ErrInDoubt, whatever else the error says);
// otherwise a refusal that stored nothing: "unavailable", "unreachable"
// (no request went out), "timeout" (the context ended before the request
// went out), or "error".
func errClass(err error) string {
	switch {
	case errors.Is(err, client.ErrInDoubt):
		return "in doubt"
	case errors.Is(err, client.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, client.ErrUnreachable):
		return "unreachable"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "error"
}

// read fetches every message after after from m's daemon and records the
// result; a fetch that fails is not recorded (it says nothing). replica
// names the daemon m reads from ("" means m's group entry names one).
func (w *workload) read(ctx context.Context, m *member, replica string, after uint64, final bool) ([]history.Message, bool) {
	msgs, err := w.readErr(ctx, m, replica, after, final)
	return msgs, err == nil
}

// readErr is read, returning the fetch's error.
func (w *workload) readErr(ctx context.Context, m *member, replica string, after uint64, final bool) ([]history.Message, error) {
	c, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	r := history.Read{Client: m.name, Replica: replica, After: after, Start: time.Now(), Final: final}
	if r.Replica == "" {
		r.Replica = "the daemon"
	}
	cur, err := m.g.Fetch(c, client.Query{After: after}, func(msg client.Message) bool {
		r.Messages = append(r.Messages, history.Message{Seq: msg.Seq, Time: msg.Time.UnixNano(), ID: msg.ID, Body: msg.Body})
		return true
	})
	if err != nil {
		return nil, err
	}
	r.End, r.Epoch = time.Now(), cur.Epoch
	w.h.Read(r)
	return r.Messages, nil
}

// watch follows the group from after with m until ctx ends, recording
// every event.
func (w *workload) watch(ctx context.Context, m *member, replica string, after uint64) *history.Watch {
	rec := w.h.Watch(m.name, replica, after)
	w.watchers.Go(func() {
		for ev, err := range m.g.Watch(ctx, client.Query{After: after}) {
			if err != nil {
				if ctx.Err() == nil {
					w.problem("watch by %s ended: %v", m.name, err)
				}
				return
			}
			switch ev.Kind {
			case client.EventMessage:
				msg := ev.Message
				rec.Message(history.Message{Seq: msg.Seq, Time: msg.Time.UnixNano(), ID: msg.ID, Body: msg.Body})
			case client.EventReset:
				rec.Reset()
			case client.EventGap:
				rec.Gap()
			}
		}
	})
	return rec
}

// waitProgress waits for the next ack after the call (at least one more
// acknowledged ID than now), failing the test after waitTimeout.
func (w *workload) waitProgress(t *testing.T, after string) {
	t.Helper()
	before := w.h.Acked()
	deadline := time.After(waitTimeout)
	for w.h.Acked() <= before {
		select {
		case <-w.progress:
		case <-w.deaths.Any():
			t.Fatalf("waiting for a send acknowledged after %s: %v", after, w.deaths.Err())
		case <-deadline:
			sends := w.h.Sends()
			var last []string
			for i := len(sends) - 1; i >= 0 && len(last) < 5; i-- {
				if !sends[i].Acked {
					last = append(last, sends[i].Client+": "+sends[i].Err)
				}
			}
			t.Fatalf("no send acknowledged within %v after %s; the last failures:\n%s", waitTimeout, after, strings.Join(last, "\n"))
		}
	}
}

// waitRecovered waits for an ack of an attempt that started after the
// last fault, failing the test after waitTimeout. waitProgress would not
// do before finish: an attempt under way when the fault struck may be
// acknowledged after it (retried on a new connection), and says nothing
// of whether sends succeed again, which the recoveries check.
func (w *workload) waitRecovered(t *testing.T) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for !w.h.AckedSinceLastFault() {
		select {
		case <-w.progress:
		case <-w.deaths.Any():
			t.Fatalf("waiting for a send started after the last fault to be acknowledged: %v", w.deaths.Err())
		case <-deadline:
			t.Fatalf("no send started after the last fault was acknowledged within %v", waitTimeout)
		}
	}
}

// waitQuiet waits until no send attempt has failed for d (and one was
// acknowledged meanwhile), failing the test after waitTimeout.
func (w *workload) waitQuiet(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var failed, acked time.Time
		for _, s := range w.h.Sends() {
			if s.Acked {
				acked = s.End
			} else if s.End.After(failed) {
				failed = s.End
			}
		}
		if time.Since(failed) >= d && acked.After(failed) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("send attempts still failed %v before the deadline (%v)", time.Since(failed), waitTimeout)
		}
		<-time.After(50 * time.Millisecond) // polling a condition, with a deadline
	}
}

// finish stops the senders, each finishing the message it has in flight,
// and waits for them.
func (w *workload) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	done := make(chan struct{})
	go func() { w.senders.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("the senders did not finish their last messages")
	}
}

// waitWatches waits until every watch has delivered up to last. A watch
// that does not is reported (t.Error), with what the workload saw of it,
// and the run goes on to the checker, which still checks what it
// delivered.
func (w *workload) waitWatches(t *testing.T, last uint64, watches ...*history.Watch) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for _, wt := range watches {
		for wt.Last() < last {
			if time.Now().After(deadline) {
				t.Errorf("a watch by %s on %s stopped at #%d of %d", wt.Client, wt.Replica, wt.Last(), last)
				break
			}
			<-time.After(20 * time.Millisecond) // polling a condition, with a deadline
		}
	}
}

// report checks the history, logs what it checked, and fails the test on
// any violation, ID left in doubt, or workload problem.
func (w *workload) report(t *testing.T) history.Result {
	t.Helper()
	res := w.h.Check()
	t.Logf("checked: %v", res)
	if err := res.Err(); err != nil {
		t.Error(err)
	}
	if res.Settled < res.InDoubt {
		// settle (or the sender) retries each under its ID until
		// acknowledged: one left is a retry the contract did not honour.
		t.Errorf("%d of %d IDs in doubt were never acknowledged when sent again under their IDs", res.InDoubt-res.Settled, res.InDoubt)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.problems {
		t.Error(p)
	}
	return res
}
