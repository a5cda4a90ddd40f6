package cell

import (
	"context"
	"errors"
	"fmt"
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
