//go:build linux

package e2e

import (
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// infoJSON is `huddle info --json`, the fields a restart changes or keeps.
type infoJSON struct {
	UUID        string         `json:"uuid"`
	Name        string         `json:"name"`
	Epoch       uint64         `json:"epoch"`
	FirstSeq    uint64         `json:"first_seq"`
	LastSeq     uint64         `json:"last_seq"`
	Members     uint64         `json:"members"`
	Private     bool           `json:"private"`
	Member      bool           `json:"member"`
	Fingerprint string         `json:"fingerprint"`
	Addrs       []string       `json:"addrs"`
	Limits      map[string]any `json:"limits"`
	Storage     string         `json:"storage"`
	Fsync       string         `json:"fsync"`
	FsyncMS     uint64         `json:"fsync_interval_ms"`
	// Replicas: a cell's group's members (absent for a group of one daemon).
	Replicas []struct {
		Addr        string `json:"addr"`
		Fingerprint string `json:"fingerprint"`
		Leader      bool   `json:"leader"`
	} `json:"replicas"`
}

var infoKeys = []string{"uuid", "name", "epoch", "first_seq", "last_seq", "members", "private", "member", "fingerprint", "addrs", "limits",
	"storage", "fsync", "fsync_interval_ms"}

func info(t *testing.T, u *user, group string) infoJSON {
	t.Helper()
	out := u.ok(t, "info", group, "--json")
	keys := infoKeys
	if strings.Contains(out, `"replicas":`) {
		keys = append(slices.Clone(infoKeys), "replicas") // a cell's group
	}
	infos := jsonLines[infoJSON](t, out, keys...)
	if len(infos) != 1 {
		t.Fatalf("info --json printed %d objects", len(infos))
	}
	return infos[0]
}

// TestDaemonRestart restarts `huddle up` (its logs on disk, the default)
// on the same state directory and address: the group keeps its UUID, the
// daemons their keys, the group its members, its messages and its epoch;
// a cursor from before the restart goes on, and the numbering too.
func TestDaemonRestart(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", state)
	lobby := up.groups["lobby"]
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	waitListed(t, alice, lobby)
	alice.join(t, "lobby")
	bob.join(t, "lobby")
	alice.ok(t, "send", "lobby", "one")
	bob.ok(t, "send", "lobby", "two")
	before := info(t, alice, "lobby")
	if before.Storage != "disk" || before.Fsync != "interval" || before.FsyncMS != 1000 {
		t.Fatalf("info before the restart: %+v, want disk storage, fsync every 1000 ms", before)
	}
	fetched := alice.ok(t, "fetch", "lobby")
	up.stop(t)

	up = startDaemon(t, "up", "--listen", up.registry, "--daemon-listen", up.addr, "--state-dir", state)
	defer up.stop(t)
	waitListed(t, alice, lobby)
	after := info(t, alice, "lobby")
	if after.Epoch != before.Epoch || after.FirstSeq != 1 || after.LastSeq != 2 || after.Members != 2 {
		t.Errorf("after the restart: info = %+v, want the same epoch, messages #1..#2 and 2 members (before: %+v)", after, before)
	}
	if out := bob.ok(t, "fetch", "lobby"); out != fetched {
		t.Errorf("fetch after the restart:\n%s\nbefore:\n%s", out, fetched)
	}
	if r := bob.run(t, "fetch", "lobby", "--after", "2"); r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("fetch --after 2 after the restart: want nothing at all: %s", r)
	}
	acks := jsonLines[ackJSON](t, alice.ok(t, "send", "lobby", "--json", "three"), ackKeys...)
	if len(acks) != 1 || acks[0].Seq != 3 {
		t.Errorf("the message after the restart acknowledged as %+v, want seq 3", acks)
	}
	if got, want := parseFetch(t, bob.ok(t, "fetch", "lobby", "--after", "2")), []fetchLine{{3, "alice", "three"}}; !slices.Equal(got, want) {
		t.Errorf("fetch --after 2 = %+v, want %+v", got, want)
	}
}

// TestDaemonRestartMemory restarts `huddle up --storage memory` on the
// same state directory and address: the group keeps its UUID, the daemons
// their keys, the group its members; the messages are gone and the log has
// a new epoch, which fetch --after with an old cursor points out.
func TestDaemonRestartMemory(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", state, "--storage", "memory")
	lobby := up.groups["lobby"]
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	waitListed(t, alice, lobby)
	alice.join(t, "lobby")
	bob.join(t, "lobby")
	alice.ok(t, "send", "lobby", "one")
	alice.ok(t, "send", "lobby", "two")
	before := info(t, alice, "lobby")
	if before.LastSeq != 2 || before.Members != 2 {
		t.Fatalf("before the restart: info = %+v, want 2 messages and 2 members", before)
	}
	up.stop(t)

	up = startDaemon(t, "up", "--listen", up.registry, "--daemon-listen", up.addr, "--state-dir", state, "--storage", "memory")
	defer up.stop(t)
	if got := up.groups["lobby"]; got != lobby {
		t.Errorf("lobby's UUID changed across the restart: %s, then %s", lobby, got)
	}
	if up.fp != before.Fingerprint {
		t.Errorf("the group daemon's fingerprint changed across the restart: %s, then %s", before.Fingerprint, up.fp)
	}
	// The registry kept its key too: alice's pinned fingerprint still holds.
	waitListed(t, alice, lobby)

	after := info(t, alice, "lobby")
	if after.UUID != lobby || after.Members != 2 || !after.Member || after.LastSeq != 0 {
		t.Errorf("after the restart: info = %+v, want lobby with its 2 members and no messages", after)
	}
	if after.Epoch == before.Epoch {
		t.Errorf("the log's epoch is %d before and after the restart; a new log needs a new epoch", after.Epoch)
	}
	type memberJSON struct {
		Fingerprint string `json:"fingerprint"`
		Name        string `json:"name"`
		Joined      string `json:"joined"`
		You         bool   `json:"you"`
		Online      bool   `json:"online"`
		LastSeen    string `json:"last_seen"`
	}
	var names []string
	for _, m := range jsonLines[memberJSON](t, bob.ok(t, "members", "lobby", "--json")) {
		names = append(names, m.Name)
		// Presence is the daemon's memory: since the restart only bob (asking
		// now) has been seen; alice's info does not need membership.
		if m.Online || (m.Name == "alice") != (m.LastSeen == "") {
			t.Errorf("after the restart: %s online %v, last seen %q; want offline, and only bob seen", m.Name, m.Online, m.LastSeen)
		}
	}
	if !slices.Equal(names, []string{"alice", "bob"}) {
		t.Errorf("members after the restart: %v, want alice and bob", names)
	}

	if out := bob.ok(t, "fetch", "lobby"); out != "" {
		t.Errorf("fetch after the restart printed messages of the old log:\n%s", out)
	}
	// A cursor from before the restart: nothing after it, and a note that
	// the numbering may have started again.
	r := bob.run(t, "fetch", "lobby", "--after", "2")
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "messages end at #0") || !strings.Contains(r.stderr, "without --after") {
		t.Errorf("fetch --after 2 after the restart: want nothing, exit code 0, and a note about the restart: %s", r)
	}

	// The new log numbers from 1.
	bob.ok(t, "send", "lobby", "three")
	acks := jsonLines[ackJSON](t, alice.ok(t, "send", "lobby", "--json", "four"), ackKeys...)
	if len(acks) != 1 || acks[0].Seq != 2 {
		t.Errorf("second message after the restart acknowledged as %+v, want seq 2", acks)
	}
	if got, want := parseFetch(t, alice.ok(t, "fetch", "lobby")), []fetchLine{{1, "bob", "three"}, {2, "alice", "four"}}; !slices.Equal(got, want) {
		t.Errorf("fetch after the restart = %+v, want %+v", got, want)
	}
	if r := alice.run(t, "fetch", "lobby", "--after", "2"); r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("fetch --after the last message: want nothing at all: %s", r)
	}
}

// TestRegistryKeyChange restarts a registry at the same address with a new
// key: a client that pinned the old key refuses it, ssh-style, naming
// huddle forget-registry; after that command it trusts the new key.
func TestRegistryKeyChange(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	addr, oldFP := reg.registry, reg.regFP
	alice := newUser(t, "alice", addr)
	alice.ok(t, "groups") // pins the registry's key
	reg.stop(t)

	reg = startDaemon(t, "registry", "--listen", addr, "--state-dir", t.TempDir())
	defer reg.stop(t)
	if reg.regFP == oldFP {
		t.Fatalf("a registry with a new state directory kept fingerprint %s", oldFP)
	}
	for _, args := range [][]string{{"groups"}, {"fetch", "lobby"}, {"groups", "--json"}} {
		r := alice.run(t, args...)
		if r.code != 1 || r.stdout != "" {
			t.Errorf("alice, after the registry's key changed: want exit code 1: %s", r)
		}
		for _, want := range []string{addr, reg.regFP, oldFP, "huddle forget-registry " + addr} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("the refusal does not say %q: %s", want, r)
			}
		}
	}
	// Someone who never met the old key has nothing to object to.
	newUser(t, "bob", addr).ok(t, "groups")

	if out := alice.ok(t, "forget-registry", addr); !strings.Contains(out, "forgot the fingerprint of "+addr) {
		t.Errorf("forget-registry printed %q", out)
	}
	alice.ok(t, "groups") // pins the new key
	if out := alice.ok(t, "forget-registry", "127.0.0.1:1"); !strings.Contains(out, "no fingerprint was pinned for 127.0.0.1:1") {
		t.Errorf("forget-registry of an unknown address printed %q", out)
	}
	alice.ok(t, "groups")
}

// TestCommandFollowsRestartedDaemon kills a group daemon with SIGKILL
// (no deregistration: the registry still lists its address) and starts it
// again on another port, with the same state, while a send is under way
// from the old listing: the send must reach the group where it is listed
// now. It used to dial the old address until the dial timed out (5 s) and
// fail. The daemon is started again only once the send's dial has reached
// the old address (a socket of the test's there, which answers nothing),
// so the send cannot have read the new listing first.
func TestCommandFollowsRestartedDaemon(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer reg.stop(t)
	state := t.TempDir()
	serve := []string{"--group", "lobby", "--registry", reg.registry, "--listen", "127.0.0.1:0", "--state-dir", state}
	gd := startDaemon(t, "serve", serve...)
	alice := newUser(t, "alice", reg.registry)
	waitListed(t, alice, gd.groups["lobby"])
	alice.join(t, "lobby")
	alice.ok(t, "send", "lobby", "before")
	gd.proc.stop(t, syscall.SIGKILL)

	old, err := net.ListenPacket("udp", gd.addr)
	if err != nil {
		t.Fatalf("the killed daemon's address %s: %v", gd.addr, err)
	}
	defer old.Close()
	send := alice.start(t, "send", "lobby", "after")
	if _, _, err := old.ReadFrom(make([]byte, 2048)); err != nil {
		t.Fatal(err)
	}
	gd = startDaemon(t, "serve", serve...)
	defer gd.stop(t)
	if code := send.wait(t); code != 0 {
		t.Fatalf("send from the old listing exited %d, want 0\nstderr:\n%s", code, send.stderr)
	}
	if got, want := parseFetch(t, alice.ok(t, "fetch", "lobby")), []fetchLine{{1, "alice", "before"}, {2, "alice", "after"}}; !slices.Equal(got, want) {
		t.Errorf("the group holds %+v, want %+v", got, want)
	}
}

// TestCommandSaysDaemonUnlisted checks what a command says when the daemon
// it dials was SIGKILLed and, while it dials, the registry's listing of it
// lapses: exit code 3, and that the registry that answered (named) no
// longer lists the group, not the advice for a registry that cannot be
// reached (give its address with --registry), which it was.
func TestCommandSaysDaemonUnlisted(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--lease", "6s")
	defer reg.stop(t)
	gd := startDaemon(t, "serve", "--group", "lobby", "--registry", reg.registry, "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	alice := newUser(t, "alice", reg.registry)
	waitListed(t, alice, gd.groups["lobby"])
	alice.join(t, "lobby")
	gd.proc.stop(t, syscall.SIGKILL)

	old, err := net.ListenPacket("udp", gd.addr)
	if err != nil {
		t.Fatalf("the killed daemon's address %s: %v", gd.addr, err)
	}
	defer old.Close()
	send := alice.start(t, "send", "lobby", "anyone?", "--timeout", "1m")
	if _, _, err := old.ReadFrom(make([]byte, 2048)); err != nil {
		t.Fatal(err)
	}
	code := send.wait(t)
	msg := send.stderr.String()
	if code != 3 || !strings.Contains(msg, "group lobby of daemon ") || !strings.Contains(msg, "is no longer listed by the registries that answered ("+reg.registry+")") ||
		strings.Contains(msg, "--registry") {
		t.Fatalf("send to a daemon whose listing lapsed while it was dialled: exit %d, want 3, saying registry %s no longer lists it (and no advice to give --registry)\nstderr:\n%s",
			code, reg.registry, msg)
	}
}
