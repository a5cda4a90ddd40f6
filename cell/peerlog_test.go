package cell

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/huddle-chat/huddle/store"
)

// recorder is a slog.Handler that keeps every record at Info and above
// (with its attributes as text), and passes each on to next.
type recorder struct {
	next  slog.Handler
	attrs []slog.Attr
	mu    *sync.Mutex
	recs  *[]string
	lvls  *[]slog.Level
}

func newRecorder(next slog.Handler) *recorder {
	return &recorder{next: next, mu: new(sync.Mutex), recs: new([]string), lvls: new([]slog.Level)}
}

// memberLogs records each member's log as the member starts (its
// record is newTestCell's mutate), by the member's address.
type memberLogs struct {
	mu   sync.Mutex
	recs map[string]*recorder
}

func (ml *memberLogs) record(cfg *Config) {
	r := newRecorder(cfg.Logger.Handler())
	cfg.Logger = slog.New(r)
	ml.mu.Lock()
	defer ml.mu.Unlock()
	if ml.recs == nil {
		ml.recs = make(map[string]*recorder)
	}
	ml.recs[cfg.Advertise] = r
}

// of returns the recorder of the member at addr, as last started.
func (ml *memberLogs) of(addr string) *recorder {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.recs[addr]
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelInfo {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %q", rec.Level, rec.Message)
		for _, a := range r.attrs {
			fmt.Fprintf(&b, " %s", a)
		}
		rec.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s", a)
			return true
		})
		r.mu.Lock()
		*r.recs = append(*r.recs, b.String())
		*r.lvls = append(*r.lvls, rec.Level)
		r.mu.Unlock()
	}
	if r.next.Enabled(ctx, rec.Level) {
		return r.next.Handle(ctx, rec)
	}
	return nil
}

func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	c.attrs = append(append([]slog.Attr(nil), r.attrs...), as...)
	c.next = r.next.WithAttrs(as)
	return &c
}

func (r *recorder) WithGroup(name string) slog.Handler {
	c := *r
	c.next = r.next.WithGroup(name)
	return &c
}

// since returns the records kept from the n-th on.
func (r *recorder) since(n int) (recs []string, lvls []slog.Level) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), (*r.recs)[n:]...), append([]slog.Level(nil), (*r.lvls)[n:]...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(*r.recs)
}

// TestPeerRestartQuiet: a follower that crashes (nothing said to its
// peers) and restarts is normal operation. The others find its old
// connections dead (the restarted daemon answers them with a stateless
// reset), drop them and dial again; they log no error for it, no raft RPC
// that failed meanwhile above debug level, and at most one line per
// change of the peer's link (lost, reached again).
func TestPeerRestartQuiet(t *testing.T) {
	var logs memberLogs
	c := newTestCell(t, 3, true, logs.record)
	leader := c.leader()
	g := leader.group("lobby")
	acks := c.send(g.ID, store.Sender{Name: "ann"}, [][16]byte{newID(1)}, []string{"before"})
	var follower *testMember
	for _, m := range c.members {
		if m != leader {
			follower = m
			m.waitLast(g.ID, acks[0].Seq)
		}
	}
	fp := follower.id.Fingerprint()
	mark := make(map[*testMember]int)
	for _, m := range c.members {
		if m != follower {
			mark[m] = logs.of(m.addr).count()
		}
	}

	follower.crash()
	// Sends go on while it is down (raft's RPCs to it fail meanwhile).
	for i := range 20 {
		c.send(g.ID, store.Sender{Name: "ann"}, [][16]byte{newID(100 + i)}, []string{"while down"})
	}
	c.restart(follower)
	acks = c.send(g.ID, store.Sender{Name: "ann"}, [][16]byte{newID(2)}, []string{"after"})
	follower.waitLast(g.ID, acks[0].Seq)
	for _, m := range c.members {
		if m != follower {
			m.waitLast(g.ID, acks[0].Seq)
		}
	}

	for m, n := range mark {
		lines, lvls := logs.of(m.addr).since(n)
		link := 0
		for i, l := range lines {
			if lvls[i] >= slog.LevelError {
				t.Errorf("%s logged an error across a peer's restart: %s", m.addr, l)
			}
			about := strings.Contains(l, fp.Short()) || strings.Contains(l, follower.addr)
			if about && strings.Contains(l, `"cell: member`) {
				link++
			}
			if about && strings.Contains(l, `"failed to`) {
				t.Errorf("%s logged a failed RPC to the restarted peer above debug level: %s", m.addr, l)
			}
		}
		t.Logf("%s: %d lines at info and above:\n%s", m.addr, len(lines), strings.Join(lines, "\n"))
		if link > 2 {
			t.Errorf("%s logged the restarted peer's link %d times, want at most 2 (lost, reached again)", m.addr, link)
		}
	}
}
