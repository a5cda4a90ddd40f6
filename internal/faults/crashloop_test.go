//go:build unix

package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// acked is a message as its sender was told it was stored.
type acked struct {
	id   wire.ID
	seq  uint64
	time time.Time
	from wire.Fingerprint
	body []byte
}

// crashLog records what the workload was told, for the checker.
type crashLog struct {
	mu       sync.Mutex
	acks     map[wire.ID]acked
	resent   int // acknowledged IDs sent again, answered with their original ack
	failures int // sends that failed and were retried with the same ID
	errs     []string
	progress chan struct{} // signalled at each ack
	// The send outcome contract (README, "A send's outcome, settled"):
	// refused holds each ID whose attempts were all refusals (errors not
	// in doubt), with the last; none may ever be held. doubt holds each
	// ID an attempt left in doubt: retried under it until acknowledged.
	refused map[wire.ID]string
	doubt   map[wire.ID]bool
}

// failed records a send attempt of id that failed with err, and says
// whether the next attempt goes under a new ID: a refusal promised that
// nothing was stored, so a sender with a fresh message (fresh; not an
// acknowledged ID sent again) that no attempt left in doubt sends it anew,
// as a user would, and id must then never be held. An attempt in doubt is
// retried under its ID.
func (l *crashLog) failed(id wire.ID, err error, fresh bool) (renew bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refused == nil {
		l.refused, l.doubt = make(map[wire.ID]string), make(map[wire.ID]bool)
	}
	l.failures++
	switch {
	case errors.Is(err, client.ErrInDoubt):
		l.doubt[id] = true
		delete(l.refused, id)
	case fresh && !l.doubt[id]:
		l.refused[id] = err.Error()
		return true
	}
	return false
}

// checkRefused reports each refused ID (crashLog.failed) that msgs, what
// where holds or delivered, holds: a refusal that stored its send. It
// returns how many IDs were refused and how many in doubt, for the log.
func (l *crashLog) checkRefused(t *testing.T, where string, msgs []client.Message) (refused, doubt int) {
	t.Helper()
	for _, m := range msgs {
		if err, ok := l.refused[m.ID]; ok {
			t.Errorf("a refused send is held: ID %s, refused with %q, is #%d in %s (the contract: a refusal stores nothing)", m.ID, err, m.Seq, where)
		}
	}
	return len(l.refused), len(l.doubt)
}

func (l *crashLog) errorf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 20 {
		l.errs = append(l.errs, fmt.Sprintf(format, args...))
	}
}

// TestCrashLoop is the crash test of issue 19, Jepsen style: a group
// daemon keeping its log on disk is killed with SIGKILL at random moments,
// at least 50 times, while senders (batching and not) keep sends in flight
// and a watcher follows; it is started again on the same directory and
// address each time, alternating the fsync policy. Senders retry a failed
// send with the same message ID until it is acknowledged, and send some
// acknowledged IDs again. The checker then proves that every acknowledged
// message is held exactly once, in order, under a gapless sequence, with
// the sequence number, timestamp, ID, sender and body it was acknowledged
// with; that no message is held that was not acknowledged; that every ID
// sent again got its original ack; and that the watcher saw the log's
// prefix with no reset, gap or repeat.
func TestCrashLoop(t *testing.T) {
	kills := killsFromEnv(t, "HUDDLE_CRASH_KILLS", 50) // make crashloop sets more
	regAddr, _, reg := startRegistry(t, "127.0.0.1:0", t.TempDir())
	defer reg.kill(syscall.SIGTERM)
	dir, listen := t.TempDir(), "127.0.0.1:0"
	var p *proc
	serve := func(policy string) {
		t.Helper()
		p = start(t, "serve", "--no-mdns", "--registry", regAddr, "--listen", listen, "--group", "alpha",
			"--state-dir", dir, "--fsync", policy, "--fsync-interval", "200ms", "--send-rate", "0")
		listen = p.line(t, listening)[1]
	}
	serve("interval")
	defer func() { p.kill(syscall.SIGTERM) }()

	u := newUser(t)
	var entry wire.GroupEntry
	eventually(t, "the group listed", func() bool { entry = u.listed(regAddr)["alpha"]; return entry.Fingerprint != wire.Fingerprint{} })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	member := func(name string, batching bool) (*client.Group, wire.Fingerprint) {
		g, fp := groupOfNewUser(t, entry, batching)
		for {
			_, err := g.Join(ctx, name, nil)
			if err == nil {
				return g, fp
			}
			if ctx.Err() != nil {
				t.Fatalf("join %s: %v", name, err)
			}
		}
	}

	log := &crashLog{acks: make(map[wire.ID]acked), progress: make(chan struct{}, 1)}

	// The watcher follows from the start: every event must be the next
	// message.
	var watched []client.Message
	var wmu sync.Mutex
	watcher, _ := member("watcher", false)
	wctx, stopWatch := context.WithCancel(ctx)
	var wg, swg sync.WaitGroup // the watcher's, the senders'
	defer wg.Wait()
	defer stopWatch()
	wg.Go(func() {
		for ev, err := range watcher.Watch(wctx, client.Query{}) {
			if err != nil {
				return
			}
			wmu.Lock()
			switch {
			case ev.Kind != client.EventMessage:
				log.errorf("watch event %+v: only messages may come across a crash (no reset, no gap)", ev)
			case ev.Message.Seq != uint64(len(watched)+1):
				log.errorf("watch delivered #%d after #%d", ev.Message.Seq, len(watched))
			default:
				watched = append(watched, ev.Message)
			}
			wmu.Unlock()
		}
	})

	// Senders: each message is sent until acknowledged, under its one ID.
	const senders = 6
	sctx, stopSending := context.WithCancel(ctx)
	for k := range senders {
		g, from := member(fmt.Sprint("sender", k), k%2 == 0)
		swg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(k), 19))
			var resend *acked
			for n := 0; sctx.Err() == nil; n++ {
				id, body := wire.NewID(), fmt.Appendf(nil, "%d/%d %x", k, n, rng.Uint64())
				if resend != nil {
					id, body = resend.id, resend.body
				}
				var ack client.Ack
				for {
					c, stop := context.WithTimeout(ctx, 10*time.Second)
					a, err := g.SendWithID(c, id, body)
					stop()
					if err == nil {
						ack = a
						break
					}
					if ctx.Err() != nil {
						return
					}
					if log.failed(id, err, resend == nil) {
						id = wire.NewID()
					}
					<-time.After(20 * time.Millisecond) // a caller backing off
				}
				got := acked{id: id, seq: ack.Seq, time: ack.Time, from: from, body: body}
				if resend != nil {
					if !ack.Duplicate || ack.Seq != resend.seq || !ack.Time.Equal(resend.time) {
						log.errorf("ID %s sent again: ack %+v, want the original #%d at %v", id, ack, resend.seq, resend.time.UnixNano())
					}
					log.mu.Lock()
					log.resent++
					log.mu.Unlock()
					resend = nil
					continue
				}
				log.mu.Lock()
				if prev, ok := log.acks[id]; ok {
					log.errs = append(log.errs, fmt.Sprintf("ID %s acknowledged twice as new: #%d and #%d", id, prev.seq, ack.Seq))
				}
				log.acks[id] = got
				log.mu.Unlock()
				select {
				case log.progress <- struct{}{}:
				default:
				}
				if rng.IntN(8) == 0 {
					resend = &got
				}
			}
		})
	}

	// The faults: a kill at a random moment after the daemon has
	// acknowledged something since it came back.
	rng := rand.New(rand.NewPCG(19, 19))
	policies := []string{"interval", "always"}
	for i := range kills {
		select {
		case <-log.progress:
		case <-ctx.Done():
			t.Fatalf("no acknowledgment after restart %d", i)
		}
		<-time.After(time.Duration(rng.IntN(150)) * time.Millisecond) // the fault's moment, not a wait for an event
		p.kill(syscall.SIGKILL)
		serve(policies[(i+1)%2])
	}
	// Each sender finishes the message it has in flight, retrying it
	// until it is acknowledged.
	stopSending()
	sendersDone := make(chan struct{})
	go func() { swg.Wait(); close(sendersDone) }()
	select {
	case <-sendersDone:
	case <-ctx.Done():
		t.Fatal("the senders did not finish")
	}

	checker, _ := member("checker", false)
	var held []client.Message
	if _, err := checker.Fetch(ctx, client.Query{}, func(m client.Message) bool {
		held = append(held, m)
		return true
	}); err != nil {
		t.Fatalf("fetch the log: %v", err)
	}
	eventually(t, "the watcher caught up", func() bool {
		wmu.Lock()
		defer wmu.Unlock()
		return len(watched) >= len(held)
	})
	stopWatch()
	wg.Wait()

	log.mu.Lock()
	defer log.mu.Unlock()
	for _, e := range log.errs {
		t.Error(e)
	}
	seen := make(map[wire.ID]bool, len(held))
	for i, m := range held {
		if m.Seq != uint64(i+1) {
			t.Fatalf("the log's message %d has seq %d: not gapless from 1", i, m.Seq)
		}
		if i > 0 && !m.Time.After(held[i-1].Time) {
			t.Fatalf("#%d at %v, not after #%d at %v", m.Seq, m.Time.UnixNano(), m.Seq-1, held[i-1].Time.UnixNano())
		}
		if seen[m.ID] {
			t.Fatalf("ID %s held twice (again at #%d)", m.ID, m.Seq)
		}
		seen[m.ID] = true
		a, ok := log.acks[m.ID]
		if !ok {
			if m.Name != "checker" && m.Name != "watcher" {
				t.Errorf("#%d (ID %s from %s) is held but was never acknowledged", m.Seq, m.ID, m.Name)
			}
			continue
		}
		if a.seq != m.Seq || !a.time.Equal(m.Time) || a.from != m.From || !bytes.Equal(a.body, m.Body) {
			t.Errorf("#%d: held as seq %d at %v from %s %q, acknowledged as #%d at %v from %s %q",
				m.Seq, m.Seq, m.Time.UnixNano(), m.From.Short(), m.Body, a.seq, a.time.UnixNano(), a.from.Short(), a.body)
		}
	}
	lost := 0
	for id, a := range log.acks {
		if !seen[id] {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged #%d (ID %s) is not held", a.seq, id)
			}
		}
	}
	wmu.Lock()
	defer wmu.Unlock()
	for i, m := range watched {
		if i >= len(held) || m.Seq != held[i].Seq || m.ID != held[i].ID || !m.Time.Equal(held[i].Time) {
			t.Fatalf("the watcher's #%d differs from the log's", m.Seq)
		}
	}
	refused, doubt := log.checkRefused(t, "the log", held)
	log.checkRefused(t, "the watch", watched)
	t.Logf("%d kills survived; %d messages acknowledged, %d held and checked, %d lost; %d acknowledged IDs sent again got their original ack; %d failed sends retried: %d IDs refused (checked: none held), %d in doubt (retried until acknowledged); the watcher saw %d",
		kills, len(log.acks), len(held), lost, log.resent, log.failures, refused, doubt, len(watched))
	if len(log.acks) < kills {
		t.Errorf("only %d messages acknowledged over %d kills: the load did not run", len(log.acks), kills)
	}
}
