package groupd

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// Membership changes are stored before they are applied.
//
// A join or leave is acknowledged only once the member list holding it is
// synced to disk, and it takes effect in memory only then: a change whose
// write fails changes nothing, here or after a restart, and its caller is
// told so (errMembersNotStored, which travels as unavailable). Before, a
// change was applied first and written after, so with a full disk a
// "failed" joiner could send until the daemon restarted and the file on
// disk won.
//
// Writes are paced (a burst of persistBurst, then persistRate a second per
// group) and shared: the changes that arrive while a write is paced or in
// progress wait in g.pending, and the next writer stores all of them in
// one write (group commit). A flood of joins, leaves or renames, each of
// which rewrites a file of up to MaxMembers entries, so costs the disk at
// most persistRate writes a second, and its callers wait a little.
const (
	persistRate  = 20
	persistBurst = 10
)

// memberChange is one join or leave, waiting to be stored.
type memberChange struct {
	fp    wire.Fingerprint
	leave bool
	// For a join:
	name   string
	joined int64 // Unix ns, if fp becomes a member
	max    int   // the group's member limit

	// Set by the writer that handles the change, before done is closed.
	already, full bool  // join
	was           bool  // leave
	err           error // errMembersNotStored: nothing changed
	done          chan struct{}
}

// errMembersNotStored is the error of a change whose member list could not
// be written: it did not take effect.
type errMembersNotStored struct{ err error }

func (e *errMembersNotStored) Error() string { return "store the member list: " + e.err.Error() }
func (e *errMembersNotStored) Unwrap() error { return e.err }

// commit stores ch with the changes waiting beside it, then applies them,
// and returns once ch is stored and applied, or could not be stored (its
// err). Concurrent callers share writes: one of them at a time, holding
// g.writer, is the writer. If ctx ends while ch waits (for the writer
// before it, or for pacing), ch is withdrawn and commit returns ctx's
// cause: nothing changed.
func (g *group) commit(ctx context.Context, ch *memberChange) error {
	ch.done = make(chan struct{})
	g.pendingMu.Lock()
	g.pending = append(g.pending, ch)
	g.pendingMu.Unlock()

	select {
	case g.writer <- struct{}{}:
	default: // a writer is busy: wait for it
		select {
		case g.writer <- struct{}{}:
		case <-ch.done:
			return nil // that writer stored it
		case <-ctx.Done():
			return g.withdraw(ctx, ch)
		}
	}
	defer func() { <-g.writer }()
	select {
	case <-ch.done:
		return nil // the writer before us stored it
	default:
	}
	if err := g.pace(ctx); err != nil {
		return g.withdraw(ctx, ch)
	}
	g.pendingMu.Lock()
	batch := g.pending
	g.pending = nil
	g.pendingMu.Unlock()

	// The list as it will be: the members now (only a writer changes them,
	// and we are the writer) with the batch applied in order.
	g.mu.RLock()
	next := make(map[wire.Fingerprint]memberRecord, len(g.members)+1)
	for fp, m := range g.members {
		next[fp] = memberRecord{Fingerprint: fp, Name: m.name, Joined: m.joined}
	}
	g.mu.RUnlock()
	changed := false
	for _, c := range batch {
		r, ok := next[c.fp]
		switch {
		case c.leave:
			c.was = ok
			delete(next, c.fp)
			changed = changed || ok
		case ok:
			c.already = true
			if r.Name != c.name {
				r.Name = c.name
				next[c.fp] = r
				changed = true
			}
		case len(next) >= c.max:
			c.full = true
		default:
			next[c.fp] = memberRecord{Fingerprint: c.fp, Name: c.name, Joined: c.joined}
			changed = true
		}
	}
	if changed {
		if err := saveMembers(g.dir, g.id, sortedRecords(next)); err != nil {
			for _, c := range batch {
				c.already, c.full, c.was = false, false, false
				c.err = &errMembersNotStored{err}
				close(c.done)
			}
			return nil // ch.err says why
		}
	}
	g.mu.Lock()
	for _, c := range batch {
		switch {
		case c.leave:
			g.leaveLocked(c.fp)
		case !c.full:
			g.joinLocked(c.fp, c.name, c.joined, c.max)
		}
	}
	g.mu.Unlock()
	if changed {
		g.changed()
	}
	for _, c := range batch {
		close(c.done)
	}
	return nil
}

// withdraw takes ch, whose caller's ctx ended while it waited, out of the
// changes waiting, and returns ctx's cause. If a writer has taken ch
// already, it waits for that write instead (writes are not paced once
// taken) and returns nil.
func (g *group) withdraw(ctx context.Context, ch *memberChange) error {
	g.pendingMu.Lock()
	i := slices.Index(g.pending, ch)
	if i >= 0 {
		g.pending = slices.Delete(g.pending, i, i+1)
	}
	g.pendingMu.Unlock()
	if i < 0 {
		<-ch.done
		return nil
	}
	return context.Cause(ctx)
}

// pace waits, if need be, for the members file's next write to be
// allowed, on the daemon's clock, or until ctx ends (its error). g.writer
// is held.
func (g *group) pace(ctx context.Context) error {
	now := g.now()
	if g.writes.at.IsZero() {
		g.writes = bucket{tokens: persistBurst, at: now}
	}
	pace := rateLimiter{rate: persistRate, burst: persistBurst}
	pace.refill(&g.writes, now)
	if g.writes.tokens < 1 {
		t := time.NewTimer(time.Duration((1 - g.writes.tokens) / persistRate * float64(time.Second)))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		pace.refill(&g.writes, g.now())
	}
	// Never below empty: a clock that stood still while we waited (a
	// test's) makes the next write wait one interval, not longer each time.
	g.writes.tokens = max(0, g.writes.tokens-1)
	return nil
}

// sortedRecords returns the members file's entries, in the order of
// joining.
func sortedRecords(m map[wire.Fingerprint]memberRecord) []memberRecord {
	records := make([]memberRecord, 0, len(m))
	for _, r := range m {
		records = append(records, r)
	}
	slices.SortFunc(records, func(a, b memberRecord) int {
		return cmp.Or(cmp.Compare(a.Joined, b.Joined), slices.Compare(a.Fingerprint[:], b.Fingerprint[:]))
	})
	return records
}
