package groupd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestSendRateLimit checks the per-member token bucket: a burst passes, the
// next send is refused whole with the time to wait, the bucket refills at
// the rate, and leaving and joining again does not refill it.
func TestSendRateLimit(t *testing.T) {
	clock := newFakeClock()
	d, _ := startGroupDaemon(t, Config{SendRate: 10, SendBurst: 20, MaxBatch: 20, Now: clock.Now})
	g := gid(d)
	alice := joined(t, d, "alice")
	bob := joined(t, d, "bob")

	in := alice.info(g)
	if in.Limits.SendRateMilli != 10_000 || in.Limits.SendBurst != 20 {
		t.Fatalf("info limits %+v, want send_rate_milli 10000, send_burst 20", in.Limits)
	}
	_, err := alice.send(g, outgoing(make([]string, 20)...))
	must(t, err)
	_, err = alice.send(g, outgoing("one too many", "and another"))
	we := wantCode(t, err, wire.CodeRateLimited)
	if we.RetryAfterMS != 200 {
		t.Fatalf("retry after %d ms, want 200 (2 tokens at 10/s)", we.RetryAfterMS)
	}
	if !errors.Is(we, wire.ErrRateLimited) {
		t.Fatalf("%v does not match ErrRateLimited", we)
	}
	// Another member has a bucket of its own.
	_, err = bob.send(g, outgoing("bob is not limited by alice"))
	must(t, err)

	// Leaving and joining again keeps the empty bucket.
	must(t, alice.call(wire.OpLeave, wire.GroupRef{Group: g}, nil))
	must(t, alice.call(wire.OpJoin, wire.Join{Group: g, Name: "alice"}, nil))
	wantCode(t, alice.callSend(g, outgoing("x")), wire.CodeRateLimited)

	clock.advance(100 * time.Millisecond) // one token
	_, err = alice.send(g, outgoing("after waiting"))
	must(t, err)
	wantCode(t, alice.callSend(g, outgoing("x")), wire.CodeRateLimited)

	// Refused sends stored nothing.
	msgs, _, err := bob.fetch(wire.Fetch{Group: g})
	must(t, err)
	if len(msgs) != 22 {
		t.Fatalf("log holds %d messages, want 22", len(msgs))
	}
}

// TestSendOverRetentionTakesNoTokens: a batch larger than retention could
// ever hold is refused too_large before it takes tokens (PROTOCOL.md
// §8.5: a refused send changes nothing), by messages and by bytes.
func TestSendOverRetentionTakesNoTokens(t *testing.T) {
	clock := newFakeClock()
	d, _ := startGroupDaemon(t, Config{SendRate: 10, SendBurst: 4, MaxBatch: 4, Now: clock.Now,
		Retention: store.Config{MaxMessages: 2, MaxBytes: 10}})
	g := gid(d)
	p := joined(t, d, "p")
	wantCode(t, p.callSend(g, outgoing("1", "2", "3")), wire.CodeTooLarge)
	wantCode(t, p.callSend(g, outgoing("123456", "789012")), wire.CodeTooLarge)
	// The whole bucket is left: four messages, no wait.
	for _, msgs := range [][]string{{"a", "b"}, {"c"}, {"d"}} {
		_, err := p.send(g, outgoing(msgs...))
		must(t, err)
	}
	wantCode(t, p.callSend(g, outgoing("e")), wire.CodeRateLimited)
}

func (p *peer) callSend(g wire.UUID, msgs []wire.Outgoing) error {
	p.t.Helper()
	_, err := p.send(g, msgs)
	return err
}

// TestSendRateUnlimited checks that a negative rate turns the limit off
// and info says so.
func TestSendRateUnlimited(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{SendRate: -1, MaxBatch: 1000})
	p := joined(t, d, "p")
	for range 5 {
		_, err := p.send(gid(d), outgoing(make([]string, 1000)...))
		must(t, err)
	}
	if l := p.info(gid(d)).Limits; l.SendRateMilli != 0 || l.SendBurst != 0 {
		t.Fatalf("limits %+v, want no send rate", l)
	}
}

// TestRateLimiterPrunesFullBuckets checks that buckets of keys that stopped
// sending do not pile up.
func TestRateLimiterPrunesFullBuckets(t *testing.T) {
	r := newRateLimiter(1000, 10)
	now := time.Unix(0, 0)
	for i := range 10_000 {
		var fp wire.Fingerprint
		fp[0], fp[1] = byte(i), byte(i>>8)
		if _, ok := r.take(fp, 10, now); !ok {
			t.Fatalf("key %d refused", i)
		}
		now = now.Add(10 * time.Millisecond) // refills a bucket of 10 at 1000/s
	}
	if n := r.size(); n > 2*minPrune {
		t.Fatalf("%d buckets kept, want at most %d", n, 2*minPrune)
	}
}

// TestConnsPerAddr checks the per-address connection limit: a connection
// over it is closed after its handshake with ConnRefused and a reason, and
// once one closes, a new one is served.
func TestConnsPerAddr(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{Server: server.Config{MaxConnsPerAddr: 3}})
	g := gid(d)
	var peers []*peer
	for range 3 {
		p := dial(t, d.Addr(), d.Fingerprint(), nil)
		p.info(g) // accepted and served
		peers = append(peers, p)
	}
	over := dial(t, d.Addr(), d.Fingerprint(), nil)
	wantRefused(t, over.conn)
	if l := peers[0].info(g).Limits; l.MaxConnsPerAddr != 3 {
		t.Fatalf("info limits %+v, want max_conns_per_addr 3", l)
	}

	peers[0].conn.CloseWithError(0, "")
	eventually(t, "a slot to free up", func() bool {
		p := dialQuiet(t, d)
		if p == nil {
			return false
		}
		defer p.CloseWithError(0, "")
		str, err := p.OpenStreamSync(testCtx(t))
		if err != nil {
			return false
		}
		str.Write(request(t, wire.OpInfo, wire.GroupRef{Group: g}))
		str.Close()
		f, err := readFrame(str)
		return err == nil && f.kind == wire.KindResult
	})
}

// wantRefused fails the test unless the daemon closes conn with
// wire.ConnRefused.
func wantRefused(t *testing.T, conn *quic.Conn) {
	t.Helper()
	select {
	case <-conn.Context().Done():
	case <-testCtx(t).Done():
		t.Fatal("connection over the limit still open")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || ae.ErrorCode != wire.ConnRefused || !ae.Remote {
		t.Fatalf("connection over the limit ended with %v, want the daemon's close with code 0x3", err)
	}
}

// dialQuiet dials d with a new key, returning nil rather than failing.
func dialQuiet(t *testing.T, d *Daemon) *quic.Conn {
	conn, err := quic.DialAddr(testCtx(t), d.Addr().String(), newKey(t).ClientTLS(d.Fingerprint(), nil), &quic.Config{})
	if err != nil {
		return nil
	}
	return conn
}

// TestRenamedSendersKeepTheirNames checks that every message keeps the
// name its sender had when it was sent, through thousands of renames, each
// followed by a message, with retention evicting as it goes: the log holds
// each message's sender, so nothing the daemon keeps in memory can lend a
// message a later name. (How little the log spends on it: store's
// TestSenders.) It drives the group directly: each join over the network is
// a synced file write.
func TestRenamedSendersKeepTheirNames(t *testing.T) {
	log, err := store.New(store.Config{MaxMessages: 10})
	must(t, err)
	g := newGroup(wire.UUID{1}, Spec{Name: "g"}, log, t.TempDir(), nil, newRateLimiter(-1, 0), time.Now)
	fp := wire.Fingerprint{7}
	for i := range 2000 {
		name := fmt.Sprintf("loud-%d", i)
		join(g, fp, name)
		from, ok := g.sender(fp, 0)
		if !ok {
			t.Fatal("not a member")
		}
		_, err := g.append([]store.Entry{{ID: wire.NewID(), From: from, Body: []byte(name)}}, nil, store.After{})
		must(t, err)
	}
	msgs, _, err := query(nil, func() ([]store.Message, store.Cursor, error) { return log.After(0, 100, nil) })
	must(t, err)
	if len(msgs) != 10 {
		t.Fatalf("%d messages held, want 10", len(msgs))
	}
	for _, m := range msgs {
		if m.Name != string(m.Body) || m.From != fp {
			t.Fatalf("message %d from %q (%s), want %q", m.Seq, m.Name, m.From.Short(), m.Body)
		}
	}
}

// join makes fp a member of g named name, in memory only.
func join(g *group, fp wire.Fingerprint, name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.joinLocked(fp, name, 0, 10)
}

// TestConcurrentRenames renames and sends from many members at once while
// others fetch, so the race detector and the name check see the log's
// sender dictionaries grow and segments evicted under load.
func TestConcurrentRenames(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{Retention: store.Config{MaxMessages: 5}, SendRate: -1})
	g := gid(d)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		p := joined(t, d, fmt.Sprintf("w%d", w))
		wg.Go(func() {
			for i := range 25 {
				name := fmt.Sprintf("w%d-%d", w, i)
				if err := p.call(wire.OpJoin, wire.Join{Group: g, Name: name}, nil); err != nil {
					errs <- err
					return
				}
				if _, err := p.send(g, outgoing(name)); err != nil {
					errs <- err
					return
				}
				msgs, _, err := p.fetch(wire.Fetch{Group: g})
				if err != nil {
					errs <- err
					return
				}
				for _, m := range msgs {
					if m.Name != string(m.Body) {
						errs <- fmt.Errorf("message %d named %q, sent as %q", m.Seq, m.Name, m.Body)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestLegacyNamesLoad checks that a members file written before names
// refused format characters (session 19), fillers (session 20) and blanks
// at either end (session 23) loads, the characters dropped, the blanks
// trimmed, a name of fillers or blanks alone as U+FFFD.
func TestLegacyNamesLoad(t *testing.T) {
	dir := t.TempDir()
	d1, stop := startGroupDaemon(t, Config{StateDir: dir})
	g := gid(d1)
	legacy := map[string]string{ // a name joined, as written before, as loaded
		"alice": "al\u202eice",
		"bob":   "bob\u3164",
		"carl":  "\u3164",
		"dave":  " dave\u00a0",
		"erin":  "\u3000",
		"fay":   "f a\u3164 ",
		"gus":   "gus \ufe0f",
		"hal":   "\ufe0f",
	}
	for name := range legacy {
		joined(t, d1, name)
	}
	stop()
	path := filepath.Join(dir, membersFile(g))
	data, err := os.ReadFile(path)
	must(t, err)
	old := string(data)
	for name, before := range legacy {
		was := old
		if old = strings.Replace(old, `"name": "`+name+`"`, `"name": "`+before+`"`, 1); old == was {
			t.Fatalf("members file %s does not name %s as expected:\n%s", path, name, data)
		}
	}
	must(t, os.WriteFile(path, []byte(old), 0o600))
	d2, _ := startGroupDaemon(t, Config{StateDir: dir})
	dial(t, d2.Addr(), d2.Fingerprint(), nil).info(g) // serving
	var got []string
	for _, m := range d2.groups[g].memberList(0) {
		got = append(got, m.Name)
	}
	slices.Sort(got)
	if want := []string{"alice", "bob", "dave", "f a", "gus", "\uFFFD", "\uFFFD", "\uFFFD"}; !slices.Equal(got, want) {
		t.Fatalf("members %q, want %q: the format character and the fillers dropped, the blanks at the ends trimmed (a variation selector after one too), a name of a filler, a blank or a selector alone U+FFFD", got, want)
	}
}

// TestLegacyGroupNameKeepsUUID: a daemon of before session 23 took a group
// named with a blank at an end (--group "team "), and one of before
// session 20 one with a filler ("lunch" and U+3164), and wrote those
// names in groups.json. Such a name can no longer be configured; the
// group configured under the name it shows as ("team", "lunch") is that
// group, with its UUID and members, groups.json renaming its entry, rather
// than a new group under a new UUID. An entry whose shown name another
// entry holds stays as it is.
func TestLegacyGroupNameKeepsUUID(t *testing.T) {
	dir := t.TempDir()
	groups := []Spec{{Name: "team"}, {Name: "lunch"}}
	d1, stop := startGroupDaemon(t, Config{StateDir: dir, Groups: groups})
	before := d1.Groups()
	joined(t, d1, "alice") // in team, the first group
	stop()
	path := filepath.Join(dir, groupsFile)
	data, err := os.ReadFile(path)
	must(t, err)
	old := strings.Replace(string(data), `"team":`, `"team ":`, 1)
	old = strings.Replace(old, `"lunch":`, `"lunch\u3164":`, 1)
	if !strings.Contains(old, `"team ":`) || !strings.Contains(old, `"lunch\u3164":`) {
		t.Fatalf("groups.json does not name team and lunch as expected:\n%s", data)
	}
	must(t, os.WriteFile(path, []byte(old), 0o600))

	if _, err := New(Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Groups: []Spec{{Name: "team "}}}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "ends with a blank") {
		t.Errorf("a daemon configured with group %q: %v, want it refused for the blank", "team ", err)
	}
	d2, _ := startGroupDaemon(t, Config{StateDir: dir, Groups: groups})
	// Serving: a daemon closed (at the test's end) before its Serve began
	// makes Serve return ErrClosed, which startGroupDaemon reports.
	dial(t, d2.Addr(), d2.Fingerprint(), nil).info(before[0].ID)
	after := d2.Groups()
	for i := range before {
		if after[i].ID != before[i].ID || after[i].Name != before[i].Name {
			t.Errorf("group %q came back as %+v, want %+v: the entry stored under the name before renamed, its UUID kept", before[i].Name, after[i], before[i])
		}
	}
	if ms := d2.groups[before[0].ID].memberList(0); len(ms) != 1 || ms[0].Name != "alice" {
		t.Errorf("team's members after the rename: %+v, want alice", ms)
	}
	var ids map[string]wire.UUID
	data, err = os.ReadFile(path)
	must(t, err)
	must(t, json.Unmarshal(data, &ids))
	if want := map[string]wire.UUID{"team": before[0].ID, "lunch": before[1].ID}; !maps.Equal(ids, want) {
		t.Errorf("groups.json after the start: %v, want %v", ids, want)
	}

	// Taken: "team" has its own entry, and "team " keeps its own.
	other := t.TempDir()
	taken := map[string]wire.UUID{"team": {1}, "team ": {2}, "\u3000": {3}}
	data, err = json.Marshal(taken)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(other, groupsFile), data, 0o600))
	got, err := loadGroupIDs(other, []string{"team"}, testLogger(t))
	must(t, err)
	if want := map[string]wire.UUID{"team": {1}, "team ": {2}, "\uFFFD": {3}}; !maps.Equal(got, want) {
		t.Errorf("groups.json of a taken name loaded as %v, want %v", got, want)
	}
}

// TestCancelledWaitersReturnCredit fills a connection's request memory with
// streams that declare 1 MiB and stall, then opens streams that must wait
// for that memory, and cancels them as a client that gives up does: their
// stream credit must come back at once (PROTOCOL.md §3: within 25 ms), not
// when their request deadline (a minute, here) passes, so the connection
// can open as many streams again while the stallers still hold on.
func TestCancelledWaitersReturnCredit(t *testing.T) {
	const streams = 8
	d, _ := startGroupDaemon(t, Config{Server: server.Config{MaxIncomingStreams: streams, RequestTimeout: time.Minute}})
	p := dial(t, d.Addr(), d.Fingerprint(), nil)
	hdr := header(wire.MaxFrameSize)
	stall := func() *quic.Stream {
		str, err := p.conn.OpenStreamSync(testCtx(t))
		must(t, err)
		_, err = str.Write(hdr)
		must(t, err)
		return str
	}
	holders := d.cfg.Server.Bounds().Conn.RequestBytes / wire.MaxFrameSize
	for range holders {
		stall()
	}
	eventually(t, "the stallers to hold the connection's request memory", func() bool { return int64(d.srv.Stats().Streams) == int64(holders) })
	for round := range 3 {
		var waiters []*quic.Stream
		for range streams - holders {
			waiters = append(waiters, stall())
		}
		eventually(t, fmt.Sprintf("round %d's waiters to be accepted", round), func() bool { return int64(d.srv.Stats().Streams) == int64(streams) })
		for _, str := range waiters {
			str.CancelRead(wire.StreamCancelled)
			str.CancelWrite(wire.StreamCancelled)
		}
		// The next round opens as many streams again: with OpenStreamSync,
		// it waits for their credit, bounded by the test's deadline, well
		// under the request deadline.
	}
	eventually(t, "the last waiters to end", func() bool { return int64(d.srv.Stats().Streams) == int64(holders) })
}

// TestMembershipNotStoredNotApplied makes the daemon's state directory
// unwritable while it serves: a join or leave that cannot be stored is
// refused as unavailable (with a time to wait), and changes nothing, in
// memory or on disk; once the directory is back, the same requests work,
// and a restart finds exactly the changes that were acknowledged.
func TestMembershipNotStoredNotApplied(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	d, stop := startGroupDaemon(t, Config{StateDir: dir})
	g := gid(d)
	alice := joined(t, d, "alice")
	bob := dial(t, d.Addr(), d.Fingerprint(), nil)

	// The directory goes away and a file takes its place: every write of
	// the members file fails, as on a full or failing disk (and even as
	// root, unlike a read-only mode).
	away := dir + ".away"
	must(t, os.Rename(dir, away))
	must(t, os.WriteFile(dir, nil, 0o600))
	for _, tc := range []struct {
		who  *peer
		op   wire.Op
		args any
	}{
		{bob, wire.OpJoin, wire.Join{Group: g, Name: "bob"}},
		{alice, wire.OpLeave, wire.GroupRef{Group: g}},
		{alice, wire.OpJoin, wire.Join{Group: g, Name: "alice renamed"}},
	} {
		we := wantCode(t, tc.who.call(tc.op, tc.args, nil), wire.CodeUnavailable)
		if we.RetryAfterMS == 0 || !strings.Contains(we.Message, "nothing changed") || strings.Contains(we.Message, dir) {
			t.Fatalf("%v: %+v: want unavailable, a time to wait, that nothing changed, and no path", tc.op, we)
		}
	}
	// Nothing changed: bob is no member, alice still is, under her name.
	wantCode(t, bob.callSend(g, outgoing("let me in")), wire.CodeNotMember)
	if bob.info(g).Member {
		t.Fatal("a join that was not stored made a member")
	}
	sent, err := alice.send(g, outgoing("still here"))
	must(t, err)
	msgs, _, err := alice.fetch(wire.Fetch{Group: g, After: u64(sent.Acks[0].Seq - 1)})
	must(t, err)
	if len(msgs) != 1 || msgs[0].Name != "alice" {
		t.Fatalf("after a rename that was not stored: %+v, want alice's name unchanged", msgs)
	}

	must(t, os.Remove(dir))
	must(t, os.Rename(away, dir))
	must(t, bob.call(wire.OpJoin, wire.Join{Group: g, Name: "bob"}, nil))
	stop()
	d2, _ := startGroupDaemon(t, Config{StateDir: dir})
	dial(t, d2.Addr(), d2.Fingerprint(), nil).info(g) // serving
	var names []string
	for _, m := range d2.groups[g].memberList(0) {
		names = append(names, m.Name)
	}
	if !slices.Equal(names, []string{"alice", "bob"}) {
		t.Fatalf("members after a restart: %q, want alice and bob", names)
	}
}

// TestStateIdentityKept damages a state directory in the ways a fault run
// did: a daemon's identity (its key, its groups' UUIDs) never changes
// silently. A missing key.pem beside groups and members, an all-zero UUID
// or one UUID for two groups in groups.json stop Listen with ErrBadState,
// an explanation and how to recover, and write nothing; NewIdentity
// accepts a new key on purpose, keeping the UUIDs and members.
func TestStateIdentityKept(t *testing.T) {
	dir := t.TempDir()
	d1, stop := startGroupDaemon(t, Config{StateDir: dir, Groups: []Spec{{Name: "general"}, {Name: "ops"}}})
	g := gid(d1)
	alice := joined(t, d1, "alice")
	stop()
	groupsJSON, err := os.ReadFile(filepath.Join(dir, groupsFile))
	must(t, err)

	listen := func(newIdentity bool) (*Daemon, error) {
		t.Helper()
		d, err := New(Config{StateDir: dir, Listen: "127.0.0.1:0", Groups: []Spec{{Name: "general"}, {Name: "ops"}},
			Logger: testLogger(t), NewIdentity: newIdentity})
		must(t, err)
		t.Cleanup(func() { d.Close() })
		return d, d.Listen()
	}
	refused := func(what string, want ...string) {
		t.Helper()
		before, _ := os.ReadDir(dir)
		_, err := listen(false)
		if !errors.Is(err, ErrBadState) {
			t.Fatalf("%s: Listen: %v, want ErrBadState", what, err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: %q does not say %q", what, err, w)
			}
		}
		if after, _ := os.ReadDir(dir); len(after) != len(before) {
			t.Fatalf("%s: the state directory went from %d to %d files: a refused start writes nothing", what, len(before), len(after))
		}
	}

	key := filepath.Join(dir, "key.pem")
	must(t, os.Rename(key, key+".lost"))
	refused("no key.pem beside groups.json and members", "key.pem", "members-", "Restore", "--new-identity",
		"huddle join GROUP --daemon FINGERPRINT") // not "learn the new fingerprint from the listing" (f54288f)
	must(t, os.Remove(filepath.Join(dir, groupsFile)))
	refused("no key.pem beside a members file", "key.pem", "members-")
	must(t, os.WriteFile(filepath.Join(dir, groupsFile), groupsJSON, 0o600))
	must(t, os.Rename(key+".lost", key))

	for _, tc := range []struct{ what, from, to string }{
		{"an all-zero UUID", g.String(), "00000000-0000-0000-0000-000000000000"},
		{"one UUID for two groups", d1.Groups()[1].ID.String(), g.String()},
	} {
		damaged := strings.Replace(string(groupsJSON), tc.from, tc.to, 1)
		must(t, os.WriteFile(filepath.Join(dir, groupsFile), []byte(damaged), 0o600))
		refused(tc.what, groupsFile, "Restore")
		if got, _ := os.ReadFile(filepath.Join(dir, groupsFile)); string(got) != damaged {
			t.Fatalf("%s: groups.json was rewritten", tc.what)
		}
	}
	must(t, os.WriteFile(filepath.Join(dir, groupsFile), groupsJSON, 0o600))

	// A groups.json alone (an operator choosing UUIDs) gets a key, and a
	// warning in case the daemon ran before.
	fresh := t.TempDir()
	must(t, os.WriteFile(filepath.Join(fresh, groupsFile), groupsJSON, 0o600))
	var logged lockedBuffer
	d3, err := New(Config{StateDir: fresh, Listen: "127.0.0.1:0", Groups: []Spec{{Name: "general"}},
		Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	must(t, err)
	t.Cleanup(func() { d3.Close() })
	must(t, d3.Listen())
	if gid(d3) != g || !strings.Contains(logged.String(), "no key.pem") {
		t.Fatalf("a state dir with only groups.json: group %s (want %s), log %q: want its UUID and a warning", gid(d3), g, logged.String())
	}

	// A new key on purpose: same groups and members, another fingerprint.
	must(t, os.Remove(key))
	d2, err := listen(true)
	must(t, err)
	if d2.Fingerprint() == d1.Fingerprint() || gid(d2) != g {
		t.Fatalf("with NewIdentity: fingerprint %s (was %s), group %s (was %s): want a new key, the same UUID",
			d2.Fingerprint().Short(), d1.Fingerprint().Short(), gid(d2), g)
	}
	if m := d2.groups[g].memberList(0); len(m) != 1 || m[0].Fingerprint != alice.id.Fingerprint() {
		t.Fatalf("with NewIdentity: members %+v, want alice", m)
	}
}
