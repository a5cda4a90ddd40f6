//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testfixture"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/wire"
)

// oldUser is a user whose key is the key file name of a fixture unpacked
// in dir, checked to have the fingerprint the old huddle printed.
func oldUser(t *testing.T, name, registry, dir, fixture, file string) *user {
	t.Helper()
	u := newUser(t, name, registry)
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(u.home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(u.home, identity.KeyFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := u.fingerprint(t), testfixture.Lines(t, fixture, name+".id")[0]; got != want {
		t.Fatalf("%s's fingerprint is %s; the old huddle said %s", name, got, want)
	}
	return u
}

// sameMessages fails t unless got is want, every field.
func sameMessages(t *testing.T, where string, got, want []testfixture.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d messages, want %d", where, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || !g.Time.Equal(w.Time) || g.ID != w.ID || g.From != w.From || g.Name != w.Name || g.Text != w.Text {
			t.Fatalf("%s: message %d is %+v; the old huddle served %+v", where, i, g, w)
		}
	}
}

// fetchAll fetches every message of group as u, through the CLI.
func fetchAll(t *testing.T, u *user, group string) []testfixture.Message {
	t.Helper()
	var ms []testfixture.Message
	for _, l := range strings.Split(strings.TrimSpace(u.ok(t, "fetch", group, "--json", "--after", "0", "--limit", "100000")), "\n") {
		var m testfixture.Message
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("fetch --json printed %q: %v", l, err)
		}
		ms = append(ms, m)
	}
	return ms
}

// checkOldGroup fails t unless u finds group as the old daemon described
// it: UUID, epoch, first and last sequence numbers, privacy, members (key,
// name, when joined) and every message.
func checkOldGroup(t *testing.T, u *user, fixture, group string, want []testfixture.Message) {
	t.Helper()
	old := testfixture.GroupInfo(t, fixture, group)
	in := info(t, u, group)
	if in.UUID != old.UUID.String() || in.Epoch != old.Epoch || in.FirstSeq != want[0].Seq || in.LastSeq != want[len(want)-1].Seq ||
		in.Private != old.Private || in.Members != old.Members {
		t.Errorf("%s: info %+v; the old daemon said %+v, messages %d..%d", group, in, old, want[0].Seq, want[len(want)-1].Seq)
	}
	var members []testfixture.Member
	for _, l := range strings.Split(strings.TrimSpace(u.ok(t, "members", group, "--json")), "\n") {
		var m testfixture.Member
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("members --json printed %q: %v", l, err)
		}
		members = append(members, m)
	}
	oldMembers := testfixture.Members(t, fixture, group)
	if len(members) != len(oldMembers) {
		t.Fatalf("%s: members %+v; the old daemon listed %+v", group, members, oldMembers)
	}
	for i, m := range oldMembers {
		if g := members[i]; g.Fingerprint != m.Fingerprint || g.Name != m.Name || !g.Joined.Equal(m.Joined) {
			t.Errorf("%s: member %d is %+v; the old daemon listed %+v", group, i, g, m)
		}
	}
	sameMessages(t, group+" fetched", fetchAll(t, u, group), want)
}

// sendAfterUpgrade sends one message to group as u and returns what the
// group holds then: want, cut to what retention keeps, and the message.
func sendAfterUpgrade(t *testing.T, u *user, group string, want []testfixture.Message) []testfixture.Message {
	t.Helper()
	acks := jsonLines[ackJSON](t, u.ok(t, "send", group, "--json", "after the upgrade"), ackKeys...)
	last := want[len(want)-1]
	if len(acks) != 1 || acks[0].Seq != last.Seq+1 {
		t.Fatalf("the message after the upgrade was acknowledged as %+v, want seq %d", acks, last.Seq+1)
	}
	all := fetchAll(t, u, group)
	sent := all[len(all)-1]
	if sent.Text != "after the upgrade" || sent.From.String() != u.fingerprint(t) {
		t.Fatalf("the message after the upgrade reads back as %+v", sent)
	}
	first := info(t, u, group).FirstSeq
	if first < want[0].Seq || first > last.Seq {
		t.Fatalf("after one more message the group starts at %d; it started at %d", first, want[0].Seq)
	}
	return append(want[first-want[0].Seq:], sent)
}

// TestCompatDaemon starts today's registry and group daemon on the state
// directories an older huddle wrote (testdata/compat/daemon-*, unpacked in
// a temporary directory) and its users with their old keys: the daemons
// keep their fingerprints, the groups their UUIDs, epochs and members, and
// both groups (one private, one past retention over five segment files)
// serve every message as the old daemon did. A message sent then follows
// on, and after a restart all of it is served again.
func TestCompatDaemon(t *testing.T) {
	t.Parallel()
	for _, fx := range testfixture.Fixtures(t, "daemon") {
		t.Run(fx, func(t *testing.T) {
			t.Parallel()
			dir := testfixture.Unpack(t, fx, "daemon.tar.gz")
			groups := testfixture.Groups(t, fx)
			reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "registry"))
			defer reg.stop(t)
			if reg.regFP != groups[0].ListedBy[0].String() {
				t.Errorf("the registry's fingerprint is %s; it was %s", reg.regFP, groups[0].ListedBy[0])
			}
			secret := filepath.Join(t.TempDir(), "secret")
			if err := os.WriteFile(secret, []byte("open sesame\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"--listen", "127.0.0.1:0", "--registry", reg.registry, "--state-dir", filepath.Join(dir, "daemon"),
				"--group", "lobby", "--group", "secret", "--secret-file", "secret=" + secret, "--max-msgs", "800"}
			serve := startDaemon(t, "serve", args...)
			for _, g := range groups {
				if serve.fp != g.Fingerprint.String() || serve.groups[g.Name] != g.UUID.String() {
					t.Errorf("the daemon is %s hosting %s as %s; it was %s, with %s", serve.fp, g.Name, serve.groups[g.Name], g.Fingerprint, g.UUID)
				}
			}
			alice := oldUser(t, "alice", reg.registry, dir, fx, "alice-key.pem")
			oldUser(t, "bob", reg.registry, dir, fx, "bob-key.pem")
			waitListed(t, alice, serve.groups["lobby"], serve.groups["secret"])
			want := make(map[string][]testfixture.Message)
			for _, g := range []string{"lobby", "secret"} {
				want[g] = testfixture.Messages(t, fx, g)
				checkOldGroup(t, alice, fx, g, want[g])
				want[g] = sendAfterUpgrade(t, alice, g, want[g])
			}
			serve.stop(t)

			args[1] = serve.addr // the same address again, as a restart on a host would
			serve = startDaemon(t, "serve", args...)
			defer serve.stop(t)
			waitListed(t, alice, serve.groups["lobby"], serve.groups["secret"])
			for _, g := range []string{"lobby", "secret"} {
				sameMessages(t, g+" after the restart", fetchAll(t, alice, g), want[g])
			}
		})
	}
}

// oldCell is a cell of today's huddle serve processes on the directories
// of a cell fixture.
type oldCell struct {
	peers   []string // FINGERPRINT@ADDR, as the old members were started
	members []*cellMember
}

func startOldCell(t *testing.T, dir, fixture, registry string) *oldCell {
	t.Helper()
	c := &oldCell{peers: testfixture.Lines(t, fixture, "peers")}
	var peerArgs []string
	for _, p := range c.peers {
		peerArgs = append(peerArgs, "--cell-peer", p)
	}
	for i, p := range c.peers {
		fp, addr, _ := strings.Cut(p, "@")
		m := &cellMember{dir: filepath.Join(dir, "m"+strconv.Itoa(i+1)), addr: addr}
		// The old raft configuration records this address, so the member
		// must listen there (rewriting the fixture's raft log and
		// snapshots would test the rewriting, not what the old huddle
		// wrote): its port is one testport gives no test, and no other
		// test process holds it meanwhile.
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("%s: peer %q: %v", fixture, p, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			t.Fatalf("%s: peer %q: %v", fixture, p, err)
		}
		testport.Pinned(t, n)
		if err := m.fp.UnmarshalText([]byte(fp)); err != nil {
			t.Fatal(err)
		}
		// --advertise: registered from 127.0.0.1, a member would be listed
		// there.
		m.args = append([]string{"--listen", addr, "--advertise", addr, "--registry", registry, "--state-dir", m.dir, "--group", "lobby", "--no-mdns"},
			peerArgs...)
		m.start(t)
		c.members = append(c.members, m)
	}
	return c
}

// stop stops every member with SIGTERM; each must exit 0.
func (c *oldCell) stop(t *testing.T) {
	t.Helper()
	for _, m := range c.members {
		if code := m.p.stop(t, syscall.SIGTERM); code != 0 {
			t.Errorf("member %s exited with code %d after SIGTERM\nstderr:\n%s", m.addr, code, tail(m.p.stderr.Lines(), 40))
		}
	}
}

// checkRunning fails t at once if a member has exited (it refused its
// directories), rather than after the waits for it.
func (c *oldCell) checkRunning(t *testing.T) {
	t.Helper()
	for _, m := range c.members {
		if !m.p.running() {
			t.Fatalf("member %s exited\nstderr:\n%s", m.addr, tail(m.p.stderr.Lines(), 20))
		}
	}
}

// checkEachServes fails t unless every member serves exactly want of
// group gid, fetched from it directly, as key; a member still catching up
// is asked again.
func (c *oldCell) checkEachServes(t *testing.T, key *identity.Identity, gid wire.UUID, want []testfixture.Message) {
	t.Helper()
	cl, err := client.New(client.Config{Identity: key})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, m := range c.members {
		var got []testfixture.Message
		var ferr error
		eventually(t, waitTimeout, func() bool {
			c.checkRunning(t)
			r, err := cl.Group(wire.GroupEntry{Group: gid, Name: "lobby", Addrs: []string{m.addr}, Fingerprint: m.fp})
			if err != nil {
				t.Fatal(err)
			}
			got = got[:0]
			_, ferr = r.Fetch(ctx, client.Query{}, func(msg client.Message) bool {
				got = append(got, testfixture.Message{Seq: msg.Seq, Time: msg.Time, ID: uuid.UUID(msg.ID), From: msg.From, Name: msg.Name, Text: string(msg.Body)})
				return true
			})
			var we *wire.Error
			if ferr != nil && !errors.As(ferr, &we) && !errors.Is(ferr, client.ErrUnreachable) {
				t.Fatalf("fetch from %s: %v", m.addr, ferr)
			}
			return ferr == nil && len(got) >= len(want)
		})
		if ferr != nil {
			t.Fatalf("fetch from %s: %v", m.addr, ferr)
		}
		sameMessages(t, "member "+m.addr, got, want)
	}
}

// TestCompatCell starts today's huddle on the directories of the three
// members of a cell an older huddle ran (testdata/compat/cell-*, unpacked
// in a temporary directory; raft's log in raft.db, bbolt, or in raftlog/
// with a version 1 state file; a snapshot taken, entries after it), at the
// addresses their raft configuration records: the members rejoin their
// cell, and each serves the replicated group's history as the old cell
// did, with its UUID, epoch and members. A message sent then reaches
// every member, and after the whole cell restarts each serves all of it.
// The fixtures run one after the other: their members share addresses,
// whose port testport keeps from every other test (testport.Pinned).
func TestCompatCell(t *testing.T) {
	t.Parallel()
	for _, fx := range testfixture.Fixtures(t, "cell") {
		t.Run(fx, func(t *testing.T) {
			dir := testfixture.Unpack(t, fx, "cell.tar.gz")
			group := testfixture.Groups(t, fx)[0]
			reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "registry"))
			defer reg.stop(t)
			cell := startOldCell(t, dir, fx, reg.registry)
			alice := oldUser(t, "alice", reg.registry, dir, fx, "alice-key.pem")
			key, err := identity.LoadOrCreate(alice.home)
			if err != nil {
				t.Fatal(err)
			}
			// A cell's group is listed with its replicas, which waitListed's
			// strict decoding does not take.
			if !eventually(t, waitTimeout, func() bool {
				cell.checkRunning(t)
				return strings.Contains(alice.run(t, "groups", "--json").stdout, group.UUID.String())
			}) {
				t.Fatalf("the registry did not list %s", group.UUID)
			}
			want := testfixture.Messages(t, fx, "lobby")
			cell.checkEachServes(t, key, group.UUID, want)
			checkOldGroup(t, alice, fx, "lobby", want)
			want = sendAfterUpgrade(t, alice, "lobby", want)
			cell.checkEachServes(t, key, group.UUID, want)
			cell.stop(t)
			for _, m := range cell.members {
				if _, err := os.Stat(filepath.Join(m.dir, "cell", "raft.db")); err == nil {
					t.Errorf("%s: raft.db is still there after a start: not imported", m.dir)
				}
			}

			cell = startOldCell(t, dir, fx, reg.registry)
			defer cell.stop(t)
			cell.checkEachServes(t, key, group.UUID, want)
			if in := info(t, alice, "lobby"); in.Epoch != testfixture.GroupInfo(t, fx, "lobby").Epoch {
				t.Errorf("after the restart the epoch is %d, not the old one", in.Epoch)
			}
		})
	}
}
