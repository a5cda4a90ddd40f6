//go:build linux

package jepsen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/history"
	"github.com/huddle-chat/huddle/wire"
)

// The faults of this file combine two of the others: a leader killed
// while the cell changes its members, a member restarted in place while it
// is cut off from the others, and (in a cell of five) the leader killed
// together with a follower.

// operator returns a client holding member n's key: what `huddle cell add`
// and `remove` are, run with HUDDLE_HOME n's state directory.
func operator(t *testing.T, n *cellNode) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Identity: n.id, DialTimeout: 2 * time.Second,
		KnownHosts: identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known_registries"))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// changeKillingLeader runs change (a member added or removed through a
// member, as the CLI does) and SIGKILLs the leader at a moment of the
// change's first within, then restarts it and waits for a leader of a
// later term. The change must still be done (the client follows the next
// leader). It returns the members the change answered, how long after the
// change's start the kill came and the change took, and the term of the
// leader after the kill.
func (c *cell) changeKillingLeader(ctx context.Context, t *testing.T, h *history.History, rng *rand.Rand, what string, within time.Duration,
	leader *cellNode, term uint64, change func(context.Context) ([]client.Replica, error)) ([]client.Replica, time.Duration, time.Duration, uint64) {
	t.Helper()
	type result struct {
		members []client.Replica
		err     error
		took    time.Duration
	}
	done := make(chan result, 1)
	started := time.Now()
	cctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	go func() {
		ms, err := change(cctx)
		done <- result{ms, err, time.Since(started)}
	}()
	<-time.After(time.Duration(rng.IntN(int(within/time.Millisecond))) * time.Millisecond) // the kill's moment in the change, not a wait for an event
	leader.kill(syscall.SIGKILL)
	leader.up = false
	killedAfter := time.Since(started)
	h.Fault(time.Now(), "kill-leader-membership", fmt.Sprintf("%s killed %v into %s", leader.name, killedAfter.Round(time.Millisecond), what))
	// Started again at once: a cell of three that the removal left
	// with two, or that counts two voters while the member added
	// catches up, has no majority without it.
	leader.start()
	leader.up = true
	_, term = c.leader(t, term)
	r := <-done
	if r.err != nil {
		t.Fatalf("%s, its leader %s killed %v into it: %v (after %v)", what, leader.name, killedAfter.Round(time.Millisecond), r.err, r.took.Round(time.Millisecond))
	}
	return r.members, killedAfter, r.took, term
}

// addKillWithin spans an addition's commit (some 10 ms on the lab's LAN)
// and the new member's catch-up, after which the leader makes it a voter
// (about a second): a kill in it finds the member not yet promoted.
const addKillWithin = 1200 * time.Millisecond

// membership removes follower x from the cell and adds it back (it keeps
// running: a removed daemon knows it is no member, and added again it
// catches up and votes), SIGKILLing the leader during each change
// (changeKillingLeader: within the removal's first 20 ms, which commits
// in some 10 ms, and within addKillWithin of the addition), under the
// workload. Each change is asked of member op (with its key), which sends
// it on to the leader. The removal must answer members without x; the
// addition must make x a voter again, in every member's view, that has
// caught up with every ack; and the sends go on between them.
func (c *cell) membership(ctx context.Context, t *testing.T, w *workload, h *history.History, m *member, entry wire.GroupEntry,
	rng *rand.Rand, leader, x, op *cellNode, term uint64) (string, uint64) {
	t.Helper()
	cl := operator(t, op)
	removed, killed1, took1, term := c.changeKillingLeader(ctx, t, h, rng, "removing "+x.name, 20*time.Millisecond, leader, term,
		func(ctx context.Context) ([]client.Replica, error) { return cl.CellRemove(ctx, op.addr, op.fp, x.fp) })
	if slices.ContainsFunc(removed, func(r client.Replica) bool { return r.Fingerprint == x.fp }) {
		t.Errorf("the removal of %s answered members that still hold it: %v", x.name, removed)
	}
	w.waitProgress(t, x.name+" removed")
	next, _ := c.leader(t, 0)
	added, killed2, took2, term := c.changeKillingLeader(ctx, t, h, rng, "adding "+x.name+" back", addKillWithin, next, term,
		func(ctx context.Context) ([]client.Replica, error) {
			return cl.CellAdd(ctx, op.addr, op.fp, client.Replica{Addr: x.addr, Fingerprint: x.fp})
		})
	if !slices.ContainsFunc(added, func(r client.Replica) bool { return r.Fingerprint == x.fp }) {
		t.Errorf("the addition of %s answered members without it: %v", x.name, added)
	}
	// A voter again, once caught up (the leader promotes it), in the view
	// of every running member.
	began := time.Now()
	deadline := began.Add(waitTimeout)
	for {
		voters := 0
		var last string
		for _, n := range c.nodes {
			sctx, cancel := context.WithTimeout(ctx, attemptTimeout)
			st, err := m.cl.CellStatus(sctx, n.addr, n.fp)
			cancel()
			if err != nil {
				last = fmt.Sprintf("%s: %v", n.name, err)
				continue
			}
			if i := slices.IndexFunc(st.Members, func(r client.Replica) bool { return r.Fingerprint == x.fp }); i >= 0 && !st.Members[i].CatchingUp && len(st.Members) == len(c.nodes) {
				voters++
			} else {
				last = fmt.Sprintf("%s: members %v", n.name, st.Members)
			}
		}
		if voters == len(c.nodes) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s, added back, is not a voter in every member's view within %v (%s)", x.name, waitTimeout, last)
		}
		<-time.After(100 * time.Millisecond) // polling a condition, with a deadline
	}
	voted := time.Since(began)
	c.caughtUp(ctx, t, m, entry, x, lastAcked(h))
	w.waitProgress(t, x.name+" added back")
	return fmt.Sprintf("%s removed (leader %s killed %v into it, done in %v), added back (leader %s killed %v into it, done in %v, a voter in every view %v later)",
		x.name, leader.name, killed1.Round(time.Millisecond), took1.Round(time.Millisecond), next.name, killed2.Round(time.Millisecond),
		took2.Round(time.Millisecond), voted.Round(time.Millisecond)), term
}

// restartPartitioned cuts victim off from the other members (the clients
// and the registry still reach it), waits until the others lead without
// it if it led, stops it with SIGTERM (it must exit 0, whatever it could
// not hand over) and starts it again while still cut off: it must start,
// stand for election without raising its term (pre-vote), and answer a
// send unavailable rather than hold it; meanwhile the others take sends.
// Healed, it catches up, and must not depose the leader.
func (c *cell) restartPartitioned(ctx context.Context, t *testing.T, w *workload, h *history.History, m *member, p *probe, entry wire.GroupEntry,
	victim *cellNode, led bool, term uint64) (string, uint64) {
	t.Helper()
	role := "a follower"
	if led {
		role = "the leader"
	}
	cut := time.Now()
	c.l.setFirewall(victim.host, firewall{blocked: ips(c.others(victim))})
	h.Fault(cut, "restart-partitioned", victim.name+" ("+role+") cut off from the members, restarted in place")
	if led {
		c.leader(t, term) // the others lead, in a later term, before the victim stops
	}
	w.waitProgress(t, victim.name+" cut off")
	stopping := time.Now()
	victim.kill(syscall.SIGTERM)
	victim.up = false
	stopTook := time.Since(stopping)
	if code := victim.exitCode(); code != 0 {
		t.Errorf("%s (%s, cut off) exited %d on SIGTERM, want 0", victim.name, role, code)
	}
	restarted := time.Now()
	victim.start()
	victim.up = true
	startTook := time.Since(restarted)
	victim.waitLogged(t, candidacy, 2, restarted)
	refused := minorityRefuses(ctx, t, w, p, entryOf(entry, victim))
	w.waitProgress(t, victim.name+" restarted cut off")
	before, beforeTerm := c.leader(t, 0)
	healed := time.Now()
	c.l.setFirewall(victim.host, firewall{})
	c.caughtUp(ctx, t, m, entry, victim, lastAcked(h))
	caught := time.Since(healed)
	now, nowTerm := c.leader(t, 0)
	if won := victim.lines(preVoteWon, 0, restarted); len(won) > 0 && now == victim {
		t.Errorf("%s, restarted cut off, won a pre-vote and leads: %s", victim.name, won[0].text)
	}
	if (now != before || nowTerm != beforeTerm) && len(before.linesSoon(lostQuorum, healed, linesLag)) == 0 {
		t.Errorf("%s, back from a restart cut off (%d candidacies), deposed %s: term %d, now %s leads in term %d",
			victim.name, len(victim.lines(candidacy, 0, restarted)), before.name, beforeTerm, now.name, nowTerm)
	}
	return fmt.Sprintf("%s (%s): stopped cut off in %v, listening again in %v, refused a send after %v, %d candidacies, caught up %v after the heal; %s led in term %d, then %s in term %d",
		victim.name, role, stopTook.Round(10*time.Millisecond), startTook.Round(10*time.Millisecond), refused.Round(time.Millisecond),
		len(victim.lines(candidacy, 0, restarted)), caught.Round(10*time.Millisecond), before.name, beforeTerm, now.name, nowTerm), nowTerm
}
