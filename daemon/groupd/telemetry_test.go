package groupd

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// TestLimitLogIsSparing floods a daemon with refused joins (the group is
// full) and wrong secrets, from new keys each time: each kind of refusal
// is logged once per server.LimitLogEvery of the daemon's clock (injected), with
// how many were refused meanwhile, however many keys refuse.
func TestLimitLogIsSparing(t *testing.T) {
	clock := newFakeClock()
	var logged lockedBuffer
	d, _ := startGroupDaemon(t, Config{
		Groups:     []Spec{{Name: "general"}, {Name: "private", Secret: []byte("s3cret")}},
		MaxMembers: 1,
		Now:        clock.Now,
		Logger:     slog.New(slog.NewTextHandler(&logged, nil)),
	})
	g, priv := d.Groups()[0].ID, d.Groups()[1].ID
	joined(t, d, "first")
	lines := func(kind string) []string {
		var out []string
		for line := range strings.Lines(logged.String()) {
			if strings.Contains(line, "limit hit") && strings.Contains(line, kind) {
				out = append(out, line)
			}
		}
		return out
	}
	refuse := func(n int) {
		t.Helper()
		for i := range n {
			// Each from an address of its own: joins of a private group
			// are paced per address (guesses.go), and the fake clock
			// stands still.
			p := dialFrom(t, fmt.Sprintf("127.0.0.%d", 2+i), d.Addr(), d.Fingerprint())
			wantCode(t, p.call(wire.OpJoin, wire.Join{Group: g, Name: fmt.Sprint("late", i)}, nil), wire.CodeUnavailable)
			wantCode(t, p.call(wire.OpJoin, wire.Join{Group: priv, Name: "guess", Secret: []byte("guess")}, nil), wire.CodeUnauthorized)
			p.conn.CloseWithError(0, "")
		}
	}
	before := strings.Count(logged.String(), "\n")
	refuse(30)
	full, secret := lines("result=unavailable"), lines("result=unauthorized")
	if n := strings.Count(logged.String(), "\n") - before; n != 2 || len(full) != 1 || len(secret) != 1 {
		t.Fatalf("30 refused joins of a full group and 30 wrong secrets logged %d lines, want 2, one of each kind:\n%s", n, logged.String())
	}
	if !strings.Contains(full[0], "op=join") || !strings.Contains(full[0], "limit") || strings.Contains(secret[0], "guess") {
		t.Fatalf("limit lines %q %q: want the operation and the reason, never the secret tried", full[0], secret[0])
	}

	clock.advance(server.LimitLogEvery - time.Millisecond)
	refuse(1)
	if n := len(lines("result=unavailable")); n != 1 {
		t.Fatalf("%d lines before the interval is over, want 1", n)
	}
	clock.advance(time.Millisecond)
	refuse(1)
	full = lines("result=unavailable")
	if len(full) != 2 || !strings.Contains(full[1], "refused_since_last_logged=30") {
		t.Fatalf("after the interval: %q, want a second line counting the 30 refusals not logged", full)
	}
}

// TestShutdownIsNoLimit stops a daemon a member watches: the watch is
// ended with unavailable ("the daemon is shutting down"), which the
// daemon logged at warn as "limit hit", a capacity limit the operator
// may want to raise, on every restart with a client watching. A refusal
// because the daemon is stopping is no limit: not logged so.
func TestShutdownIsNoLimit(t *testing.T) {
	var logged lockedBuffer
	d, stop := startGroupDaemon(t, Config{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	p := joined(t, d, "watcher")
	str := p.open(request(t, wire.OpWatch, wire.Watch{Group: gid(d)}))
	if f, err := readFrame(str); err != nil || f.kind != wire.KindStart {
		t.Fatalf("watch: %v %v, want its start", f.kind, err)
	}
	ended := nextFrame(str)
	stop()
	if f := <-ended; f.kind != wire.KindError || f.err.Code != wire.CodeUnavailable {
		t.Fatalf("watch at shutdown: frame %v %v, want an unavailable error", f.kind, f.err)
	}
	if strings.Contains(logged.String(), "limit hit") {
		t.Errorf("a watch ended by the daemon's shutdown was logged as a limit hit:\n%s", logged.String())
	}
}
