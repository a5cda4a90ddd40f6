package cell

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/store"
)

// TestSendsGoOnAfterRefusedProposal: raft refuses the proposals handed to
// it while a leadership transfer is under way (ErrLeadershipTransferInProgress),
// and a transfer to a member that cannot take it (stopped) fails after an
// ElectionTimeout with this member still leading, in the same term. Sends
// stamped during it are refused, and their senders retry with the same
// IDs; once it failed, the sends go on in that term, and the log holds
// every acknowledged message once, at its acknowledged sequence number,
// with no gap. The sequencer used to stay past the refused proposals
// until the term changed: every later send of the term was refused by
// every replica as not following on from the log (errGap), and the group
// took no sends until the next election (TestRemoveLeaderUnderLoad met it
// under load, its leader's hand-over timing out).
func TestSendsGoOnAfterRefusedProposal(t *testing.T) {
	oneLeader(t, 3, 3, nil, func(c *testCell, l *testMember) error {
		g := l.group("lobby")
		f := c.follower()
		f.stop() // the transfer's member: it cannot take the leadership
		term := l.node.raft.CurrentTerm()

		const senders = 3
		var (
			acked    atomic.Int64 // sends acknowledged
			refused  atomic.Int64 // sends refused ErrUnavailable
			lastErr  atomic.Value // the latest refusal
			mu       sync.Mutex
			failure  error
			acks     = make(map[[16]byte]store.Ack)
			stop     = make(chan struct{})
			wg       sync.WaitGroup
			sendFrom = store.Sender{Fingerprint: [32]byte{7}, Name: "sender"}
		)
		for s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; {
					select {
					case <-stop:
						return
					default:
					}
					id := newID(s*1_000_000 + i)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					a, err := l.node.Send(ctx, g.ID, []store.Entry{{ID: id, From: sendFrom, Body: []byte("m")}}, nil)
					cancel()
					var nl *NotLeaderError
					switch {
					case err == nil:
						mu.Lock()
						acks[id] = a[0]
						mu.Unlock()
						acked.Add(1)
						i++ // a refused send is retried with its ID
					case errors.Is(err, ErrUnavailable):
						refused.Add(1)
						lastErr.Store(err.Error())
					case errors.As(err, &nl):
						time.Sleep(10 * time.Millisecond) // deposed: oneLeader sees it
					default:
						mu.Lock()
						failure = firstErr(failure, fmt.Errorf("sender %d, send %d: %v", s, i, err))
						mu.Unlock()
						return
					}
				}
			}()
		}
		halt := sync.OnceFunc(func() {
			close(stop)
			wg.Wait()
		})
		defer halt()
		failed := func() error {
			mu.Lock()
			defer mu.Unlock()
			return failure
		}
		waitAcked := func(what string, n int64) error {
			for deadline := time.Now().Add(10 * time.Second); acked.Load() < n; {
				if err := failed(); err != nil {
					return err
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s: %d sends acknowledged, want %d, by the deadline (term %d, now %d; %d refused, the latest: %v)",
						what, acked.Load(), n, term, l.node.raft.CurrentTerm(), refused.Load(), lastErr.Load())
				}
				time.Sleep(5 * time.Millisecond)
			}
			return nil
		}
		if err := waitAcked("before the transfer", 30); err != nil {
			return err
		}

		// Transfer until raft refused a send meanwhile: one that comes
		// just before or after it is not.
		for try := 0; ; try++ {
			before := refused.Load()
			err := l.node.raft.LeadershipTransferToServer(raft.ServerID(f.id.Fingerprint().String()), raft.ServerAddress(f.addr)).Error()
			if err == nil || !strings.Contains(err.Error(), raftTransferTimeout) {
				return fmt.Errorf("a transfer to a stopped member: %v, want raft's timeout", err)
			}
			if refused.Load() > before {
				break
			}
			if try == 5 {
				return fmt.Errorf("no send refused during any of %d transfers", try+1)
			}
		}
		if now := l.node.raft.CurrentTerm(); now != term {
			return fmt.Errorf("the term changed during the transfer (%d to %d)", term, now)
		}
		if err := waitAcked("after the transfer failed", acked.Load()+60); err != nil {
			return err
		}
		if now := l.node.raft.CurrentTerm(); now != term {
			return fmt.Errorf("the sends went on only after an election (term %d to %d)", term, now)
		}
		halt()

		// Every member running holds each acknowledged message once, where
		// it was acknowledged, in a log with no gap.
		mu.Lock()
		defer mu.Unlock()
		last, _ := l.host.replica(g.ID).log.Tail()
		for _, m := range c.members {
			if m.node == nil {
				continue
			}
			m.waitLast(g.ID, last)
			msgs := m.messages(g.ID)
			seen := make(map[[16]byte]bool)
			for i, msg := range msgs {
				if msg.Seq != uint64(i+1) || (i > 0 && msg.Time <= msgs[i-1].Time) {
					return fmt.Errorf("%s: message %d has seq %d, time %d after %d", m.addr, i, msg.Seq, msg.Time, msgs[max(i-1, 0)].Time)
				}
				if seen[msg.ID] {
					return fmt.Errorf("%s: message %x held twice", m.addr, msg.ID)
				}
				seen[msg.ID] = true
				if a, ok := acks[msg.ID]; ok && (a.Seq != msg.Seq || a.Time != msg.Time) {
					return fmt.Errorf("%s: message %x acknowledged at %d (%d), held at %d (%d)", m.addr, msg.ID, a.Seq, a.Time, msg.Seq, msg.Time)
				}
			}
			for id := range acks {
				if !seen[id] {
					return fmt.Errorf("%s: acknowledged message %x not held", m.addr, id)
				}
			}
		}
		t.Logf("%d sends acknowledged, %d refused and retried, in term %d", len(acks), refused.Load(), term)
		return nil
	})
}

// firstErr returns the first of errors a and b that is not nil.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// TestStaleSequencerAnswersDuplicates: once raft refused a proposal of
// the leader's term (here one handed to it during a leadership transfer,
// ErrLeadershipTransferInProgress) while another was in flight (held
// uncommitted: one follower stopped, the other holding the AppendEntries
// that carry it), the sequencer waits to re-sync and refuses new messages;
// a retry of a message already applied still gets its original ack, as a
// duplicate (exactly once across retries), and a send that adds a new
// message to it is refused. The refusal came before the log was asked:
// the retry of an applied message was refused unavailable until the
// re-sync. The cell keeps a steady leader (steadyLeader): its leader,
// with one follower stopped and the other holding the AppendEntries it
// was sent, keeps its lead on that follower's heartbeats alone, and at
// load 25 under -race it lost a 300 ms lease in 3 tries of 3 ("failed to
// contact quorum of nodes, stepping down").
func TestStaleSequencerAnswersDuplicates(t *testing.T) {
	type holds struct {
		at                    string        // the follower that holds AppendEntries carrying entries
		release               chan struct{} // closed: it holds none
		held, started         chan struct{} // closed: one is held; the leader's raft started a transfer
		heldOnce, startedOnce sync.Once
		failed                chan struct{} // closed: the leader's raft failed an AppendEntries call (to the member stopped)
		failedOnce            sync.Once
	}
	var cur atomic.Pointer[holds]
	mutate := func(cfg *Config) {
		steadyLeader(cfg)
		self := cfg.Advertise
		logger := slog.New(&noticeHandler{Handler: cfg.Logger.Handler(), msg: "starting leadership transfer", seen: func() {
			if h := cur.Load(); h != nil {
				h.startedOnce.Do(func() { close(h.started) })
			}
		}})
		cfg.Logger = slog.New(&noticeHandler{Handler: logger.Handler(), msg: "failed to appendEntries to", seen: func() {
			if h := cur.Load(); h != nil {
				h.failedOnce.Do(func() { close(h.failed) })
			}
		}})
		cfg.received = func(req any) {
			ae, ok := req.(*raft.AppendEntriesRequest)
			if h := cur.Load(); ok && h != nil && h.at == self && len(ae.Entries) > 0 {
				h.heldOnce.Do(func() { close(h.held) })
				<-h.release
			}
		}
	}
	body := func(id [16]byte) []store.Entry { return []store.Entry{{ID: id, From: alice, Body: []byte("body")}} }
	ignore := func([]store.Ack, error) {}
	oneLeader(t, 3, 3, mutate, func(c *testCell, l *testMember) error {
		g := l.group("lobby")
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		acks, err := l.node.Send(ctx, g.ID, body(newID(1)), nil)
		if err != nil {
			return fmt.Errorf("the first send: %v", err)
		}
		applied := acks[0]
		var f1, f2 *testMember
		for _, m := range c.members {
			switch {
			case m == l:
			case f1 == nil:
				f1 = m
			default:
				f2 = m
			}
		}
		f1.stop() // the transfer's member: it cannot take the leadership
		h := &holds{at: f2.addr, release: make(chan struct{}), held: make(chan struct{}), started: make(chan struct{}), failed: make(chan struct{})}
		cur.Store(h)
		release := sync.OnceFunc(func() { close(h.release) })
		defer release()

		// In flight, and stays so: no majority stores it.
		if later, _, err := l.node.SendLater(ctx, g.ID, body(newID(2)), nil, ignore); !later || err != nil {
			return fmt.Errorf("a send to hold in flight: handed to raft %v, %v", later, err)
		}
		select {
		case <-h.held:
		case <-ctx.Done():
			return errors.New("the follower never got the send to hold")
		}
		// The transfer must find f1's replication out of raft's pipeline:
		// a transfer's request to bring f1 level, taken by a pipeline whose
		// connection to the stopped f1 is dead, fails at once ("replication
		// failed"), and the transfer with it before a send could be refused
		// (CI: "the transfer ended (replication failed) with no send
		// refused by raft"). Once an AppendEntries call to f1 failed, raft
		// replicates to it by calls, with a backoff, which keep the
		// transfer going until its timeout.
		select {
		case <-h.failed:
		case <-ctx.Done():
			return errors.New("the leader's raft never failed an AppendEntries call to the stopped follower")
		}
		transferred := make(chan error, 1)
		go func() {
			transferred <- l.node.raft.LeadershipTransferToServer(raft.ServerID(f1.id.Fingerprint().String()), raft.ServerAddress(f1.addr)).Error()
		}()
		defer func() { <-transferred }()
		select {
		case <-h.started:
		case <-ctx.Done():
			return errors.New("the leader's raft never started the transfer")
		}
		// New sends until raft refused one: the sequencer is past it, and
		// waits to re-sync until raft answers the send held in flight.
		for i := 3; ; i++ {
			later, _, err := l.node.SendLater(ctx, g.ID, body(newID(i)), nil, ignore)
			if errors.Is(err, errResyncing) {
				break
			}
			if err != nil || !later {
				return fmt.Errorf("a new send during the transfer: handed to raft %v, %v", later, err)
			}
			select {
			case err := <-transferred:
				transferred <- err
				return fmt.Errorf("the transfer ended (%v) with no send refused by raft", err)
			case <-time.After(time.Millisecond):
			}
		}

		got, err := l.node.Send(ctx, g.ID, body(newID(1)), nil)
		if want := (store.Ack{Seq: applied.Seq, Time: applied.Time, Duplicate: true}); err != nil || len(got) != 1 || got[0] != want {
			return fmt.Errorf("a retry of a message applied, the sequencer waiting to re-sync: %v, %v; want its ack %+v", got, err, want)
		}
		// Still waiting (the send held in flight keeps it so): a send
		// with a new message is refused, whatever it repeats.
		if _, err := l.node.Send(ctx, g.ID, append(body(newID(1)), body(newID(1000))...), nil); !errors.Is(err, errResyncing) {
			return fmt.Errorf("a send repeating an applied message with a new one, the sequencer waiting to re-sync: %v, want it refused (errResyncing)", err)
		}

		// Once the held send is answered, new sends go on.
		release()
		for {
			_, err := l.node.Send(ctx, g.ID, body(newID(1000)), nil)
			if err == nil {
				return nil
			}
			if !errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
				return fmt.Errorf("a new send once the held one was let through: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
