package groupd

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// newTestGroup returns a group stored in a new directory, on the clock now.
func newTestGroup(t *testing.T, now func() time.Time) *group {
	t.Helper()
	log, err := store.New(store.Config{})
	must(t, err)
	return newGroup(wire.UUID{1}, Spec{Name: "g"}, log, t.TempDir(), nil, newRateLimiter(-1, 0), now)
}

func joinChange(n int) *memberChange {
	return &memberChange{fp: wire.Fingerprint{byte(n), 1}, name: fmt.Sprintf("m%d", n), joined: int64(n), max: 100}
}

// storedMembers returns how many members g's file holds.
func storedMembers(t *testing.T, g *group) int {
	t.Helper()
	records, err := loadMembers(g.dir, g.id)
	must(t, err)
	return len(records)
}

// TestMembersPacingOnTheDaemonsClock checks that members-file writes are
// paced on the daemon's clock, and that a change whose caller gives up
// while it waits for pacing is withdrawn: not stored, not applied.
func TestMembersPacingOnTheDaemonsClock(t *testing.T) {
	at := time.Unix(1000, 0)
	g := newTestGroup(t, func() time.Time { return at })
	for i := range persistBurst { // the burst: no waiting
		must(t, g.commit(context.Background(), joinChange(i)))
	}
	// The clock has not moved: the next write must wait. A caller that
	// gives up meanwhile changes nothing.
	ctx, cancel := context.WithCancelCause(context.Background())
	gaveUp := errors.New("gave up")
	cancel(gaveUp)
	ch := joinChange(50)
	if err := g.commit(ctx, ch); !errors.Is(err, gaveUp) {
		t.Fatalf("commit with its context ended while paced: %v, want its cause", err)
	}
	if g.isMember(ch.fp) || storedMembers(t, g) != persistBurst || len(g.pending) != 0 {
		t.Fatalf("a withdrawn join took effect: member %v, %d stored, %d pending", g.isMember(ch.fp), storedMembers(t, g), len(g.pending))
	}
	// The daemon's clock, not the machine's, refills the bucket: a second
	// later by it, ten writes go at once again.
	at = at.Add(time.Second)
	for i := range persistBurst {
		c, cancel := context.WithCancel(context.Background())
		cancel() // no write may wait
		must(t, g.commit(c, joinChange(100+i)))
	}
	if n := storedMembers(t, g); n != 2*persistBurst {
		t.Fatalf("%d members stored, want %d", n, 2*persistBurst)
	}
}

// TestMembersWaitingForTheWriterWithdraw checks that a change waiting for
// another writer is withdrawn when its caller gives up, and that the
// changes still waiting are stored by the next writer.
func TestMembersWaitingForTheWriterWithdraw(t *testing.T) {
	g := newTestGroup(t, time.Now)
	g.writer <- struct{}{} // a writer is busy
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.commit(ctx, joinChange(1)) }()
	kept := make(chan error, 1)
	go func() { kept <- g.commit(context.Background(), joinChange(2)) }()
	eventually(t, "both changes to wait", func() bool {
		g.pendingMu.Lock()
		defer g.pendingMu.Unlock()
		return len(g.pending) == 2
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("commit after its caller gave up: %v, want context.Canceled", err)
	}
	<-g.writer // the busy writer is done
	must(t, <-kept)
	if g.isMember(joinChange(1).fp) || !g.isMember(joinChange(2).fp) || storedMembers(t, g) != 1 {
		t.Fatalf("after the withdrawal: members 1 %v, 2 %v, %d stored; want only 2", g.isMember(joinChange(1).fp), g.isMember(joinChange(2).fp), storedMembers(t, g))
	}
}
