package web

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/wire"
)

// waitGroups reads groups events until ok holds for one's list.
func (s *sse) waitGroups(what string, ok func(listJSON) bool) listJSON {
	s.t.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	var last string
	for {
		select {
		case ev, open := <-s.events:
			if !open {
				s.t.Fatalf("event stream ended while waiting for %s", what)
			}
			if ev.name != "groups" {
				continue
			}
			var l listJSON
			must(s.t, jsonDecodeString(ev.raw, &l))
			if ok(l) {
				return l
			}
			last = ev.raw
		case <-timer.C:
			s.t.Fatalf("waiting for %s: the last list was %s", what, last)
		}
	}
}

func names(l listJSON) map[string]groupJSON {
	m := map[string]groupJSON{}
	for _, g := range l.Groups {
		m[g.Name] = g
	}
	return m
}

// TestDirectoryEveryRegistry lists the groups of two registries as one
// list, live: a group registering later appears in an open stream, a
// registry that stops answering keeps its groups listed for a while (it
// may be restarting) and is reported, and a group whose daemon stopped
// leaves the list once its lease is gone.
func TestDirectoryEveryRegistry(t *testing.T) {
	r1, r2 := startRegistry(t), startRegistry(t)
	startGroups(t, r1, groupd.Config{Groups: []groupd.Spec{{Name: "lobby"}}})
	startGroups(t, r2, groupd.Config{Groups: []groupd.Spec{{Name: "ops", Secret: []byte("s3cret")}}})
	a := newAPI(t, startWeb(t, newClient(t), r1.Addr().String(), r2.Addr().String()))
	s := a.events("")
	l := s.waitGroups("lobby and ops", func(l listJSON) bool { n := names(l); return n["lobby"].Reachable && n["ops"].Reachable })
	n := names(l)
	if n["lobby"].Registries[0] != r1.Addr().String() || n["ops"].Registries[0] != r2.Addr().String() || !n["ops"].Private || n["lobby"].Private {
		t.Fatalf("list %+v", l)
	}
	if len(l.Registries) != 2 || !l.Registries[0].OK || !l.Registries[1].OK {
		t.Fatalf("registries %+v", l.Registries)
	}

	_, stopDev := startGroups(t, r2, groupd.Config{Groups: []groupd.Spec{{Name: "dev"}}})
	s.waitGroups("dev to appear", func(l listJSON) bool { _, ok := names(l)["dev"]; return ok })

	// r1 stops: lobby stays listed (its last good listing), r1 is reported.
	r1Stop := time.Now()
	stopRegistry(t, r1)
	l = s.waitGroups("r1 reported down", func(l listJSON) bool { return !l.Registries[0].OK })
	if _, ok := names(l)["lobby"]; !ok && time.Since(r1Stop) < staleListing {
		t.Fatalf("lobby dropped as soon as its registry stopped answering: %+v", l)
	}

	// dev's daemon stops: it deregisters, and leaves the list.
	stopDev()
	s.waitGroups("dev to go", func(l listJSON) bool { _, ok := names(l)["dev"]; return !ok })

	// ops is private: its secret is needed to join.
	ops := names(l)["ops"].UUID
	var e errorReply
	if st := a.do("POST", "/api/groups/"+ops+"/join", map[string]string{"name": "me"}, e.reset()); st != 403 || e.Error.Code != "unauthorized" {
		t.Fatalf("join ops without its secret: HTTP %d %+v, want 403 unauthorized", st, e.Error)
	}
	if st := a.do("POST", "/api/groups/"+ops+"/join", map[string]string{"name": "me", "secret": "s3cret"}, nil); st != 200 {
		t.Fatalf("join ops with its secret: HTTP %d", st)
	}
}

// TestDirectoryClash lists a group UUID that two registries list with two
// different daemon keys (one of them an impostor, or a daemon moved under a
// new key): once, with the first registry's daemon, marked as a clash.
func TestDirectoryClash(t *testing.T) {
	r1, r2 := startRegistry(t), startRegistry(t)
	real := startClash(t, r1, r2)
	a := newAPI(t, startWeb(t, newClient(t), r1.Addr().String(), r2.Addr().String()))
	s := a.events("")
	l := s.waitGroups("lobby listed by both", func(l listJSON) bool { return len(l.Groups) == 1 && len(l.Groups[0].Registries) == 2 })
	g := l.Groups[0]
	if !g.Clash || g.Fingerprint != real.Fingerprint().String() {
		t.Fatalf("lobby %+v: want a clash, with the first registry's daemon %s", g, real.Fingerprint())
	}
	// Joined under neither key: the first registry's is a guess, so the
	// page joins neither (as the CLI refuses such a UUID as ambiguous);
	// until session 14 it joined the first registry's, an impostor's if
	// a rogue registry came first.
	var e errorReply
	if st := a.do("POST", "/api/groups/"+g.UUID+"/join", map[string]string{"name": "me"}, e.reset()); st != 409 || e.Error.Code != "clash" {
		t.Errorf("join of a UUID two daemons are listed for: HTTP %d %+v, want 409 clash", st, e.Error)
	}
}

// joinedSet is a Config.Joined in memory: the groups joined (and the
// names they were joined under), and what Add and Remove were told.
type joinedSet struct {
	mu      sync.Mutex
	keys    map[wire.UUID]wire.Fingerprint
	names   map[wire.UUID]string
	added   []wire.GroupEntry
	removed []wire.GroupEntry
	// fail, if set, is what Add and Remove answer, recording nothing.
	fail error
}

func (j *joinedSet) Groups() []wire.GroupEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []wire.GroupEntry
	for g, fp := range j.keys {
		out = append(out, wire.GroupEntry{Group: g, Fingerprint: fp, Name: j.names[g]})
	}
	return out
}

func (j *joinedSet) Has(g wire.UUID, fp wire.Fingerprint) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	k, ok := j.keys[g]
	return ok && k == fp
}

func (j *joinedSet) Add(e wire.GroupEntry) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.fail != nil {
		return j.fail
	}
	j.keys[e.Group] = e.Fingerprint
	j.added = append(j.added, e)
	return nil
}

func (j *joinedSet) Remove(e wire.GroupEntry) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.fail != nil {
		return j.fail
	}
	delete(j.keys, e.Group)
	j.removed = append(j.removed, e)
	return nil
}

// TestDirectoryClashPrefersJoined lists a group UUID that an impostor's
// registry, polled first, lists under the impostor daemon's key, and the
// user's registry under the key the user joined at: the first registry's
// entry was used whatever the user had joined, so the page sent the user's
// messages to the impostor (a rogue registry found over mDNS before the
// user's own, its answers first, has its listings first). The key the user
// joined under (Config.Joined, huddle's joined file) is used, marked as a
// clash, its registry named first; a join and a leave through the server
// are recorded there, under the key used.
func TestDirectoryClashPrefersJoined(t *testing.T) {
	r1, r2 := startRegistry(t), startRegistry(t)
	real := startClash(t, r1, r2)
	id := real.Groups()[0].ID
	joined := &joinedSet{keys: map[wire.UUID]wire.Fingerprint{id: real.Fingerprint()}}
	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{r2.Addr().String(), r1.Addr().String()},
		Secret: testSecret, PollInterval: 100 * time.Millisecond, Logger: testLogger(t), Joined: joined})
	must(t, err)
	serve(t, s)
	a := newAPI(t, s)
	l := a.events("").waitGroups("lobby listed by both", func(l listJSON) bool { return len(l.Groups) == 1 && len(l.Groups[0].Registries) == 2 })
	g := l.Groups[0]
	if !g.Clash || g.Fingerprint != real.Fingerprint().String() || g.Registries[0] != r1.Addr().String() {
		t.Fatalf("lobby %+v: want a clash, with the daemon the user joined at, %s, listed by %s", g, real.Fingerprint(), r1.Addr())
	}
	if st := a.do("POST", "/api/groups/"+g.UUID+"/join", map[string]string{"name": "me"}, nil); st != 200 {
		t.Fatalf("join: HTTP %d", st)
	}
	if st := a.do("POST", "/api/groups/"+g.UUID+"/leave", nil, nil); st != 200 {
		t.Fatalf("leave: HTTP %d", st)
	}
	joined.mu.Lock()
	defer joined.mu.Unlock()
	if len(joined.added) != 1 || joined.added[0].Fingerprint != real.Fingerprint() || len(joined.removed) != 1 || joined.removed[0].Fingerprint != real.Fingerprint() {
		t.Errorf("recorded joins %+v, leaves %+v; want one each, at %s", joined.added, joined.removed, real.Fingerprint())
	}
	if name := real.Groups()[0].Name; len(joined.added) == 1 && joined.added[0].Name != name {
		t.Errorf("joined recorded as %q; want %q, the name the page and the daemon agree on", joined.added[0].Name, name)
	}
}

// TestDirectoryAddressesOfEveryRegistry has a rogue registry list the
// user's group under its real daemon key but at an address where a daemon
// of another key answers, and the real registry found later (over mDNS,
// here Discover): the page's handle on the group dialled only the
// addresses of the registry it was made from, gave up at the wrong key,
// and could not reach the group. The handle dials the addresses every
// registry lists under the key, passing over the wrong one, and is made
// again when a registry lists an address it lacks.
func TestDirectoryAddressesOfEveryRegistry(t *testing.T) {
	r := startRegistry(t)
	real, _ := startGroups(t, r, groupd.Config{})
	lobby := real.Groups()[0].ID
	rogue := listingRegistry(t, []wire.GroupEntry{{Group: lobby, Name: "lobby", Addrs: []string{hostileRegistry(t, 0)},
		Fingerprint: real.Fingerprint(), ExpiresMS: 60_000}})
	c := newClient(t)
	findReal := make(chan struct{})
	s, err := New(Config{Listen: "127.0.0.1:0", Client: c, Registries: []string{rogue}, Secret: testSecret,
		PollInterval: 100 * time.Millisecond, Logger: testLogger(t),
		Discover: func(ctx context.Context, found func(*client.Registry), _ func(client.Fingerprint)) error {
			select {
			case <-findReal:
			case <-ctx.Done():
				return nil
			}
			reg, err := c.Registry(ctx, r.Addr().String(), r.Fingerprint())
			if err != nil {
				return err
			}
			found(reg)
			<-ctx.Done()
			return nil
		}})
	must(t, err)
	serve(t, s)
	a := newAPI(t, s)
	events := a.events("")
	events.waitGroups("lobby listed by the rogue registry", func(l listJSON) bool { return len(l.Groups) == 1 })
	close(findReal)
	l := events.waitGroups("lobby listed by both", func(l listJSON) bool { return len(l.Groups) == 1 && len(l.Groups[0].Registries) == 2 })
	if g := l.Groups[0]; g.Clash || g.Registries[0] != rogue {
		t.Fatalf("lobby %+v: want the rogue registry's entry first, no clash (one key)", g)
	}
	var e errorReply
	if st := a.do("POST", "/api/groups/"+lobby.String()+"/join", map[string]string{"name": "me"}, e.reset()); st != 200 {
		t.Fatalf("join through the page: HTTP %d %+v, want 200 (the daemon at the real registry's address)", st, e.Error)
	}
}

// TestDirectoryMemberCount follows a group's member count while its
// registry is down (its last listing stands, with the count of its day):
// the count is the daemon's, from its info after a join or leave through
// the server and from a member list asked through it, as soon as that is
// newer than the listing. It used to be the larger of the daemon's and the
// registry's, so a leave did not show until the registry listed it.
func TestDirectoryMemberCount(t *testing.T) {
	r := startRegistry(t)
	startGroups(t, r, groupd.Config{})
	a := newAPI(t, startWeb(t, newClient(t), r.Addr().String()))
	s := a.events("")
	id := a.groupID("lobby")

	ctx := testCtx(t)
	_, lobby := bobInFirstGroup(ctx, t, r)
	s.waitGroups("bob counted", func(l listJSON) bool { return len(l.Groups) == 1 && l.Groups[0].Members == 1 })
	stopRegistry(t, r)
	s.waitGroups("the registry reported down", func(l listJSON) bool { return !l.Registries[0].OK })

	count := func() uint64 {
		t.Helper()
		var l listJSON
		if st := a.do("GET", "/api/groups", nil, &l); st != 200 {
			t.Fatalf("GET /api/groups: HTTP %d", st)
		}
		for _, g := range l.Groups {
			if g.UUID == id {
				return g.Members
			}
		}
		t.Fatalf("lobby not listed: %+v", l)
		return 0
	}
	if st := a.do("POST", "/api/groups/"+id+"/join", map[string]string{"name": "me"}, nil); st != 200 {
		t.Fatalf("join: HTTP %d", st)
	}
	if n := count(); n != 2 {
		t.Errorf("%d members listed after joining beside bob, want 2", n)
	}
	if _, err := lobby.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	var ms struct {
		Members []memberJSON `json:"members"`
	}
	if st := a.do("GET", "/api/groups/"+id+"/members", nil, &ms); st != 200 || len(ms.Members) != 1 {
		t.Fatalf("members after bob left: HTTP %d %+v", st, ms)
	}
	if n := count(); n != 1 {
		t.Errorf("%d members listed once the member list said 1, want 1", n)
	}
	if st := a.do("POST", "/api/groups/"+id+"/leave", nil, nil); st != 200 {
		t.Fatalf("leave: HTTP %d", st)
	}
	if n := count(); n != 0 {
		t.Errorf("%d members listed after the last one left, want 0", n)
	}
}

// TestDirectoryEpochAfterRestart restarts a group's daemon with a new log
// (memory storage) while the page's list holds the group: the registry is
// down meanwhile, so its last listing stands in and the group never leaves
// the list. The list kept the old log's epoch (and its higher last
// sequence) until the next info round, 30 s later, and a page opened
// meanwhile counted unread messages in a log the daemon no longer had. The
// listing's counts moving is now a reason to ask the daemon again.
//
// The registry and the daemon start again at their addresses: reserved
// ports (testport.Cell, startGroups), which no other process's socket
// bound to port 0 can take while they are down, as a kernel-chosen one
// could (the other tests' restarts moved to reserved ports in session 19;
// this one gave both 127.0.0.1:0 until session 20).
func TestDirectoryEpochAfterRestart(t *testing.T) {
	regDir, regCfg := t.TempDir(), registry.Config{Listen: testport.Cell(t), LeaseTTL: 3 * time.Second, Logger: testLogger(t)}
	regCfg.StateDir = regDir
	r, err := registry.New(regCfg)
	must(t, err)
	must(t, r.Listen())
	regCfg.Listen = r.Addr().String()
	serve := func(r *registry.Daemon) func() {
		done := make(chan struct{})
		go func() { r.Serve(context.Background()); close(done) }()
		var once sync.Once
		stop := func() { once.Do(func() { r.Close(); <-done }) }
		t.Cleanup(stop)
		return stop
	}
	stopReg := serve(r)
	gdCfg := groupd.Config{StateDir: t.TempDir(), Storage: groupd.StorageConfig{Memory: true}}
	d, stop := startGroups(t, r, gdCfg)
	gdCfg.Listen = d.Addr().String()

	a := newAPI(t, startWeb(t, newClient(t), r.Addr().String()))
	s := a.events("")
	first := s.waitGroups("lobby with its epoch", func(l listJSON) bool { return len(l.Groups) == 1 && l.Groups[0].Epoch != 0 }).Groups[0]

	ctx := testCtx(t)
	reg, lobby := bobInFirstGroup(ctx, t, r)
	_, err = lobby.Send(ctx, []byte("in the old log"))
	must(t, err)
	s.waitGroups("the old log's message listed", func(l listJSON) bool { return len(l.Groups) == 1 && l.Groups[0].LastSeq == 1 })

	stopReg()
	s.waitGroups("the registry reported down", func(l listJSON) bool { return len(l.Registries) == 1 && !l.Registries[0].OK })
	stop()
	r2, err := registry.New(regCfg)
	must(t, err)
	must(t, r2.Listen())
	serve(r2)
	d2, _ := startGroups(t, r2, gdCfg)
	if d2.Groups()[0].ID.String() != first.UUID {
		t.Fatalf("the restarted daemon hosts lobby as %s, not %s", d2.Groups()[0].ID, first.UUID)
	}
	lobby, err = reg.Group(wire.GroupEntry{Group: d2.Groups()[0].ID, Name: "lobby", Addrs: []string{gdCfg.Listen}, Fingerprint: d2.Fingerprint()})
	must(t, err)
	for _, text := range []string{"new one", "new two"} {
		// The client answers unavailable for a second after the daemon
		// it knew shut down its connection; the retry has the same ID.
		id := client.NewID()
		for {
			_, err = lobby.SendWithID(ctx, id, []byte(text))
			if !errors.Is(err, client.ErrUnavailable) {
				break
			}
			select {
			case <-time.After(100 * time.Millisecond): // polling the daemon's readiness, within ctx
			case <-ctx.Done():
			}
		}
		must(t, err)
	}
	// Well within the 30 s between info rounds (infoEvery).
	deadline := time.AfterFunc(infoEvery/3, func() { s.close() })
	defer deadline.Stop()
	// The new epoch can be listed before the lease renewal that counts the
	// two sends (the daemon registers as it starts, before they are made):
	// the list must come to both, within the deadline.
	s.waitGroups("lobby's new log, its epoch and its two messages", func(l listJSON) bool {
		return len(l.Groups) == 1 && l.Groups[0].Epoch != first.Epoch && l.Groups[0].Epoch != 0 && l.Groups[0].LastSeq == 2
	})
}

// bobInFirstGroup has a client of its own join the first group r lists,
// as bob; it returns bob's handles on r and on that group.
func bobInFirstGroup(ctx context.Context, t *testing.T, r *registry.Daemon) (*client.Registry, *client.Group) {
	t.Helper()
	bob := newClient(t)
	reg, err := bob.Registry(ctx, r.Addr().String(), r.Fingerprint())
	must(t, err)
	list, err := reg.List(ctx)
	must(t, err)
	lobby, err := reg.Group(list.Groups[0])
	must(t, err)
	_, err = lobby.Join(ctx, "bob", nil)
	must(t, err)
	return reg, lobby
}

// TestDirectoryRegistryKeyChanged has a registry answer with another key
// than the one pinned for its address (reinstalled, or an impostor): the
// page said only "(not answering)" beside it, while the CLI says what
// happened and the command that accepts the new key. The list's entry
// has code key_changed and that command.
func TestDirectoryRegistryKeyChanged(t *testing.T) {
	r := startRegistry(t)
	id, err := identity.Generate()
	must(t, err)
	other, err := identity.Generate()
	must(t, err)
	kh := identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known"))
	must(t, kh.Check(t.Context(), r.Addr().String(), other.Fingerprint()))
	c, err := client.New(client.Config{Identity: id, KnownHosts: kh})
	must(t, err)
	t.Cleanup(func() { c.Close() })
	a := newAPI(t, startWeb(t, c, r.Addr().String()))
	l := a.events("").waitGroups("the registry's refusal", func(l listJSON) bool { return len(l.Registries) == 1 && l.Registries[0].Error != "" })
	reg := l.Registries[0]
	if reg.OK || reg.Code != "key_changed" || reg.Forget != "huddle forget-registry "+r.Addr().String() {
		t.Errorf("registry whose key changed: %+v, want code key_changed and its forget-registry command", reg)
	}
}

// TestHandleSourceOneEntryPerRegistry: a rogue registry listing a real
// group a thousand times under its real key, 16 new addresses each time,
// gives a handle on it 16 of them, not 16,000 (each dialed for up to 5 s
// before the real registry's, and compared with all the others at every
// merge).
func TestHandleSourceOneEntryPerRegistry(t *testing.T) {
	r := startRegistry(t)
	reg, err := newClient(t).Registry(testCtx(t), r.Addr().String(), wire.Fingerprint{})
	must(t, err)
	daemon := wire.Fingerprint{0xa}
	var flood []wire.GroupEntry
	for i := range 1000 {
		e := wire.GroupEntry{Group: wire.UUID{1}, Name: "lobby", Fingerprint: daemon}
		for j := range wire.MaxAddrs {
			e.Addrs = append(e.Addrs, fmt.Sprintf("10.6.%d.%d:%d", i/250, i%250, 7000+j))
		}
		flood = append(flood, e)
	}
	d := &directory{regs: []*registryState{{addr: r.Addr().String(), reg: reg, entries: flood, at: time.Now()}}}
	src := d.handleSourcesLocked(time.Now(), nil, d.cellsLocked(time.Now()))
	s := src[wire.UUID{1}]
	if s == nil {
		t.Fatal("no handle source for the group")
	}
	if len(s.addrs) != wire.MaxAddrs {
		t.Fatalf("a handle source of %d addresses, want the first entry's %d", len(s.addrs), wire.MaxAddrs)
	}
}

// startClash starts a daemon registering with r1, which it returns, and an
// impostor, its state a copy of the first's (the same group UUIDs, under
// another key), registering with r2.
func startClash(t *testing.T, r1, r2 *registry.Daemon) *groupd.Daemon {
	t.Helper()
	d1 := t.TempDir()
	real, _ := startGroups(t, r1, groupd.Config{StateDir: d1})
	d2 := t.TempDir()
	groups, err := os.ReadFile(filepath.Join(d1, "groups.json"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(d2, "groups.json"), groups, 0o600))
	impostor, _ := startGroups(t, r2, groupd.Config{StateDir: d2})
	if real.Groups()[0].ID != impostor.Groups()[0].ID {
		t.Fatal("the two daemons host different UUIDs")
	}
	return real
}

// renamingRegistry starts a daemon hosting lobby, registered with r, and a
// rogue registry of its own making that lists that lobby under its real
// key and address but another name, rename (its lease the longest: the
// merged listing's name, as client.Merge takes it), then again under a
// third name (a registry's second entry of a group, which counts for
// nothing), and a group of its own under lobby's name. It returns the
// real daemon, the rogue's address and its lobby's UUID.
func renamingRegistry(t *testing.T, r *registry.Daemon, rename string) (*groupd.Daemon, string, wire.UUID) {
	t.Helper()
	real, _ := startGroups(t, r, groupd.Config{})
	renamed := wire.GroupEntry{Group: real.Groups()[0].ID, Name: rename, Addrs: []string{real.Addr().String()},
		Fingerprint: real.Fingerprint(), ExpiresMS: 3_600_000}
	again := renamed
	again.Name = "zz again"
	fake := wire.GroupEntry{Group: wire.UUID{0xf, 0xa, 0xc, 0xe}, Name: "lobby", Addrs: []string{"127.0.0.1:9"},
		Fingerprint: wire.Fingerprint{6}, ExpiresMS: 3_600_000}
	// In the order a registry lists (client.Registry.List checks it).
	entries := []wire.GroupEntry{renamed, fake, again}
	slices.SortStableFunc(entries, func(a, b wire.GroupEntry) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), bytes.Compare(a.Group[:], b.Group[:]))
	})
	return real, listingRegistry(t, entries), fake.Group
}

// TestDirectoryOtherNames: a group registries list under several names
// is listed under one, with the others in other_names, as huddle groups
// shows it: the name of the longest lease (client.Merge's), or the one
// the user joined it under, whatever the registries call it now (the
// CLI's resolveGroup). huddle web showed and matched the first registry's
// name only: a rogue registry renaming the real lobby and listing a group
// of its own as lobby left the page one "lobby", the rogue's.
func TestDirectoryOtherNames(t *testing.T) {
	r := startRegistry(t)
	const rename = "our lounge\u202e"
	real, rogue, fake := renamingRegistry(t, r, rename)
	id := real.Groups()[0].ID
	byUUID := func(l listJSON) map[string]groupJSON {
		m := map[string]groupJSON{}
		for _, g := range l.Groups {
			m[g.UUID] = g
		}
		return m
	}
	both := func(l listJSON) bool {
		m := byUUID(l)
		return len(m[id.String()].Registries) == 2 && m[fake.String()].Name != ""
	}

	l := newAPI(t, startWeb(t, newClient(t), r.Addr().String(), rogue)).events("").waitGroups("lobby listed by both", both)
	m := byUUID(l)
	if g := m[id.String()]; g.Name != rename || !slices.Equal(g.OtherNames, []string{"lobby"}) {
		t.Errorf("the real lobby listed as %q, other names %q; want %q (the longest lease's name), other names [lobby]", g.Name, g.OtherNames, rename)
	}
	if g := m[fake.String()]; g.Name != "lobby" || g.OtherNames != nil {
		t.Errorf("the rogue's lobby listed as %q, other names %q; want lobby alone", g.Name, g.OtherNames)
	}

	// Joined under lobby: named so, whatever the registries call it.
	joined := &joinedSet{keys: map[wire.UUID]wire.Fingerprint{id: real.Fingerprint()}, names: map[wire.UUID]string{id: "lobby"}}
	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{r.Addr().String(), rogue},
		Secret: testSecret, PollInterval: 100 * time.Millisecond, Logger: testLogger(t), Joined: joined})
	must(t, err)
	serve(t, s)
	m = byUUID(newAPI(t, s).events("").waitGroups("lobby listed by both", both))
	if g := m[id.String()]; g.Name != "lobby" || !slices.Equal(g.OtherNames, []string{rename}) {
		t.Errorf("the real lobby, joined as lobby, listed as %q, other names %q; want lobby, other names [%q]", g.Name, g.OtherNames, rename)
	}
}

// TestDirectoryRegistryNamedOnce: a registry listing a group twice is
// one of the group's registries, named once (it was named once an entry).
func TestDirectoryRegistryNamedOnce(t *testing.T) {
	r := startRegistry(t)
	real, rogue, _ := renamingRegistry(t, r, "lobby")
	id := real.Groups()[0].ID.String()
	l := newAPI(t, startWeb(t, newClient(t), r.Addr().String(), rogue)).events("").waitGroups("lobby listed by both", func(l listJSON) bool {
		return slices.ContainsFunc(l.Groups, func(g groupJSON) bool { return g.UUID == id && len(g.Registries) >= 2 })
	})
	for _, g := range l.Groups {
		if g.UUID == id && !slices.Equal(g.Registries, []string{r.Addr().String(), rogue}) {
			t.Errorf("lobby's registries %q, want %q", g.Registries, []string{r.Addr().String(), rogue})
		}
	}
}

// TestDirectoryShowsJoinedGroups: the groups the user joined (Config.Joined)
// are the user's while their daemons cannot say so: one no registry lists
// (its daemon stopped) is listed, unlisted, under the name it was joined
// under, and one listed whose daemon does not answer is a member's. A page
// loaded while a joined group's daemon was down said "no groups yet", or
// offered to join the group as a stranger's.
func TestDirectoryShowsJoinedGroups(t *testing.T) {
	down := wire.GroupEntry{Group: wire.UUID{0xd, 0xe, 0xa, 0xd}, Name: "down", Addrs: []string{"127.0.0.1:9"},
		Fingerprint: wire.Fingerprint{0xd}, ExpiresMS: 60_000}
	gone := wire.GroupEntry{Group: wire.UUID{0x90, 0x9e}, Name: "gone", Fingerprint: wire.Fingerprint{0x9}}
	reg := listingRegistry(t, []wire.GroupEntry{down})
	joined := &joinedSet{keys: map[wire.UUID]wire.Fingerprint{down.Group: down.Fingerprint, gone.Group: gone.Fingerprint},
		names: map[wire.UUID]string{down.Group: "down", gone.Group: "gone"}}
	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{reg},
		Secret: testSecret, PollInterval: 100 * time.Millisecond, Logger: testLogger(t), Joined: joined})
	must(t, err)
	serve(t, s)
	l := newAPI(t, s).events("").waitGroups("down listed", func(l listJSON) bool { _, ok := names(l)["down"]; return ok })
	n := names(l)
	if g := n["down"]; !g.Member || g.Reachable || g.Unlisted {
		t.Errorf("a joined group whose daemon does not answer: %+v, want a member's, unreachable", g)
	}
	g, ok := n["gone"]
	if !ok || !g.Member || !g.Unlisted || g.Reachable || g.UUID != gone.Group.String() || g.Fingerprint != gone.Fingerprint.String() {
		t.Errorf("a joined group no registry lists: %+v (listed: %v), want it unlisted, a member's, with its UUID and daemon", g, ok)
	}
}

// TestDirectoryJoinedCellAfterElection: the user joined a cell's group
// while one member led it (the joined file records that member's key),
// and the real registry now lists it under another, its leader since an
// election; a rogue registry polled first lists the UUID under an
// impostor's key. The page looked the joined file up by the listing's key
// alone: the group was no longer the user's, and the page used the first
// registry's key, the impostor's. A cell's group is joined under any of
// its replicas' keys: the page uses the cell's, and shows the group under
// the name the user joined it under.
func TestDirectoryJoinedCellAfterElection(t *testing.T) {
	id := wire.UUID{1}
	replicas := []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: wire.Fingerprint{1}},
		{Addr: "10.0.0.2:7374", Fingerprint: wire.Fingerprint{2}, Leader: true}, {Addr: "10.0.0.3:7374", Fingerprint: wire.Fingerprint{3}}}
	cell := wire.GroupEntry{Group: id, Name: "ops renamed", Addrs: []string{"10.0.0.2:7374"}, Fingerprint: wire.Fingerprint{2}, Replicas: replicas, ExpiresMS: 60_000}
	impostor := wire.GroupEntry{Group: id, Name: "ops", Addrs: []string{"10.6.6.6:7374"}, Fingerprint: wire.Fingerprint{6}, ExpiresMS: 60_000}
	joined := &joinedSet{keys: map[wire.UUID]wire.Fingerprint{id: {1}}}
	now := time.Now()
	d := &directory{joined: joined, regs: []*registryState{{addr: "rogue", entries: []wire.GroupEntry{impostor}, at: now},
		{addr: "real", entries: []wire.GroupEntry{cell}, at: now}}}
	if pick, _ := d.pickKeysLocked(now, d.cellsLocked(now)); pick[id] != cell.Fingerprint {
		got := pick[id]
		t.Errorf("the key used for the cell's group joined under member 1: %s, want the cell's leader %s (not the impostor's %s)",
			got.Short(), cell.Fingerprint.Short(), impostor.Fingerprint.Short())
	}
	if !d.joinedUnder(cell) || d.joinedUnder(impostor) {
		t.Errorf("joinedUnder: the cell's group %v, the impostor's %v; want true, false", d.joinedUnder(cell), d.joinedUnder(impostor))
	}
	names := map[groupKey]string{{id, wire.Fingerprint{1}}: "ops"}
	if k := joinedKey(names, cell); names[k] != "ops" {
		t.Errorf("the name the cell's group was joined under: %q, want ops", names[k])
	}
}

// TestDirectoryCellHandleKeptAcrossElection: a registry that lists a
// cell's group under its new leader after an election (or a rogue one
// naming another member at every poll, its lease the longest) had the
// page replace its handle on the group and forget what it knew of it
// (its info, its member count), as for a group moved to another daemon:
// the calls that had taken the old handle failed (sends queued on it),
// at every such poll. A handle on a cell's group follows the leader by
// itself: the same set of replicas keeps it.
func TestDirectoryCellHandleKeptAcrossElection(t *testing.T) {
	r := startRegistry(t)
	c := newClient(t)
	reg, err := c.Registry(testCtx(t), r.Addr().String(), wire.Fingerprint{})
	must(t, err)
	id := wire.UUID{1}
	replicas := []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: wire.Fingerprint{1}, Leader: true},
		{Addr: "10.0.0.2:7374", Fingerprint: wire.Fingerprint{2}}, {Addr: "10.0.0.3:7374", Fingerprint: wire.Fingerprint{3}}}
	e := wire.GroupEntry{Group: id, Name: "ops", Addrs: []string{replicas[0].Addr}, Fingerprint: replicas[0].Fingerprint, Replicas: replicas, ExpiresMS: 60_000}
	d := newDirectory(Config{Client: c, Logger: testLogger(t)})
	d.regs = []*registryState{{addr: r.Addr().String(), reg: reg, entries: []wire.GroupEntry{e}, at: time.Now()}}
	t.Cleanup(func() {
		for _, gs := range d.groups {
			gs.handle.Close()
		}
	})
	d.merge()
	h := d.handle(id)
	if h == nil {
		t.Fatal("no handle on the cell's group")
	}
	d.mu.Lock()
	d.groups[id].members = 7
	d.mu.Unlock()
	elected := slices.Clone(replicas)
	elected[0].Leader, elected[1].Leader = false, true
	e.Replicas, e.Fingerprint, e.Addrs = elected, elected[1].Fingerprint, []string{elected[1].Addr}
	d.regs[0].entries, d.regs[0].at = []wire.GroupEntry{e}, time.Now()
	d.merge()
	d.mu.Lock()
	gs := d.groups[id]
	d.mu.Unlock()
	if gs == nil || gs.handle != h || gs.members != 7 {
		t.Errorf("after the cell elected another leader: the handle kept %v, what was known of the group kept %v; want both",
			gs != nil && gs.handle == h, gs != nil && gs.members == 7)
	}
	if gs != nil && gs.entry.Fingerprint != e.Fingerprint {
		t.Errorf("the group's entry names %s, want the new leader %s", gs.entry.Fingerprint.Short(), e.Fingerprint.Short())
	}
}

// TestDirectoryHoldsJoinedGroupListedElsewhere: the daemon of a group the
// user joined is down (its registry lists nothing) and a rogue registry
// lists its UUID under an impostor's key. That listing, the only one, was
// used: the directory opened a handle on the impostor and asked it for
// the group's info. The group is shown unlisted, a clash with the key
// listed, and no handle is opened.
func TestDirectoryHoldsJoinedGroupListedElsewhere(t *testing.T) {
	id, mine, impostor := wire.UUID{4, 2}, wire.Fingerprint{1}, wire.Fingerprint{6}
	rogue := listingRegistry(t, []wire.GroupEntry{{Group: id, Name: "lobby", Addrs: []string{"127.0.0.1:9"}, Fingerprint: impostor, ExpiresMS: 3_600_000}})
	joined := &joinedSet{keys: map[wire.UUID]wire.Fingerprint{id: mine}, names: map[wire.UUID]string{id: "lobby"}}
	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{startRegistry(t).Addr().String(), rogue},
		Secret: testSecret, PollInterval: 100 * time.Millisecond, Logger: testLogger(t), Joined: joined})
	must(t, err)
	serve(t, s)
	l := newAPI(t, s).events("").waitGroups("every registry polled", func(l listJSON) bool {
		return len(l.Registries) == 2 && l.Registries[0].OK && l.Registries[1].OK && len(l.Groups) == 1
	})
	if g := l.Groups[0]; !g.Unlisted || !g.Clash || g.Fingerprint != mine.String() || !slices.Equal(g.OtherKeys, []string{impostor.String()}) {
		t.Errorf("lobby %+v; want unlisted at %s, a clash, other key %s", g, mine.Short(), impostor.Short())
	}
	if s.dir.handle(id) != nil {
		t.Errorf("the directory holds a handle on lobby (its only listing is the impostor's)")
	}
}

// TestDirectoryJoinRecordsDaemonsName: a join through the page records
// the group in the joined file under the name the page showed it under
// only if its daemon gives it that name too, as the CLI does (e58d680).
// It recorded the page's name, the longest lease's for a group not joined
// yet: a rogue registry renaming lobby (its lease the longest) at the time
// of the join had its name recorded, which the CLI then resolved to lobby
// before any other group of that name.
func TestDirectoryJoinRecordsDaemonsName(t *testing.T) {
	r := startRegistry(t)
	const rename = "dev"
	real, rogue, _ := renamingRegistry(t, r, rename)
	id := real.Groups()[0].ID
	joined := &joinedSet{keys: map[wire.UUID]wire.Fingerprint{}}
	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{r.Addr().String(), rogue},
		Secret: testSecret, PollInterval: 100 * time.Millisecond, Logger: testLogger(t), Joined: joined})
	must(t, err)
	serve(t, s)
	a := newAPI(t, s)
	a.events("").waitGroups("lobby shown under the rogue's name", func(l listJSON) bool {
		return slices.ContainsFunc(l.Groups, func(g groupJSON) bool { return g.UUID == id.String() && g.Name == rename && len(g.Registries) == 2 })
	})
	if st := a.do("POST", "/api/groups/"+id.String()+"/join", map[string]string{"name": "me"}, nil); st != 200 {
		t.Fatalf("join: HTTP %d", st)
	}
	joined.mu.Lock()
	defer joined.mu.Unlock()
	if len(joined.added) != 1 || joined.added[0].Name != "" || joined.added[0].Fingerprint != real.Fingerprint() {
		t.Errorf("recorded joins %+v; want lobby at %s, with no name (the page showed %q, its daemon says %q)", joined.added, real.Fingerprint().Short(), rename, real.Groups()[0].Name)
	}
}

// TestDirectoryAskingNotUnreachable: a group whose daemon has not answered
// its first info yet is published asking, not only unreachable: the page
// showed every group "unreachable" from huddle web's start until the
// first answers. Once the daemon answered (here, refused), it is no
// longer asking, and unreachable.
func TestDirectoryAskingNotUnreachable(t *testing.T) {
	id, err := identity.Generate()
	must(t, err)
	release := make(chan struct{})
	daemon := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &wire.Error{Code: wire.CodeUnavailable, Message: "not now"}
	})
	must(t, daemon.Listen(id))
	must(t, daemon.Start())
	t.Cleanup(daemon.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	reg := listingRegistry(t, []wire.GroupEntry{{Group: wire.UUID{0xa5}, Name: "slow", Addrs: []string{daemon.Addr().String()},
		Fingerprint: id.Fingerprint(), ExpiresMS: 60_000}})
	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{reg},
		Secret: testSecret, PollInterval: 100 * time.Millisecond, Logger: testLogger(t)})
	must(t, err)
	serve(t, s)
	ev := newAPI(t, s).events("")
	g := names(ev.waitGroups("slow listed", func(l listJSON) bool { _, ok := names(l)["slow"]; return ok }))["slow"]
	if !g.Asking || g.Reachable {
		t.Errorf("a group whose daemon has not answered yet: %+v; want asking, not reachable", g)
	}
	close(release)
	g = names(ev.waitGroups("slow answered", func(l listJSON) bool { return !names(l)["slow"].Asking }))["slow"]
	if g.Reachable {
		t.Errorf("a group whose daemon refused its info: %+v; want unreachable", g)
	}
}

// TestDirectoryJoinRecordedAcrossHandleReplaced: a merge that replaces a
// group's handle (a registry lists the same daemon at an address more)
// between a join through the page and its record: the join is recorded.
// It was never recorded (the handle the join used was no longer the
// directory's), and the info asked between the two (refreshGroup, first
// since session 15) widened the window to a round trip.
func TestDirectoryJoinRecordedAcrossHandleReplaced(t *testing.T) {
	r := startRegistry(t)
	c := newClient(t)
	reg, err := c.Registry(testCtx(t), r.Addr().String(), wire.Fingerprint{})
	must(t, err)
	id, key := wire.UUID{1, 6}, wire.Fingerprint{7}
	e := wire.GroupEntry{Group: id, Name: "lobby", Addrs: []string{"127.0.0.1:9"}, Fingerprint: key, ExpiresMS: 60_000}
	joined := &joinedSet{keys: map[wire.UUID]wire.Fingerprint{}}
	d := newDirectory(Config{Client: c, Logger: testLogger(t), Joined: joined})
	d.regs = []*registryState{{addr: r.Addr().String(), reg: reg, entries: []wire.GroupEntry{e}, at: time.Now()}}
	t.Cleanup(func() {
		for _, gs := range d.groups {
			gs.handle.Close()
		}
	})
	d.merge()
	h, was, err := d.listed(testCtx(t), id)
	must(t, err)
	// The join went through h; meanwhile the registry lists the daemon
	// at another address too, and the next merge opens another handle.
	e.Addrs = append(e.Addrs, "127.0.0.1:10")
	d.regs[0].entries, d.regs[0].at = []wire.GroupEntry{e}, time.Now()
	d.merge()
	if now := d.handle(id); now == h {
		t.Fatal("the merge kept the handle: the test does not replace it")
	}
	d.joinedAt(id, was, false)
	joined.mu.Lock()
	defer joined.mu.Unlock()
	if len(joined.added) != 1 || joined.added[0].Group != id || joined.added[0].Fingerprint != key {
		t.Errorf("recorded joins %+v; want lobby at %s (its handle replaced by a merge meanwhile, the daemon the same)", joined.added, key.Short())
	}
}

// TestJoinUnrecordedSaid: a join and a leave through the page whose record
// in Config.Joined fails (huddle's joined file locked by another process
// past huddle web's wait) are done, and their answers say the record
// failed (unrecorded), which the page shows: it was said in huddle web's
// log alone, once, and the page's user never saw why the CLI did not
// prefer the group joined.
func TestJoinUnrecordedSaid(t *testing.T) {
	r := startRegistry(t)
	startGroups(t, r, groupd.Config{})
	joined := &joinedSet{keys: map[wire.UUID]wire.Fingerprint{}, fail: errors.New("the joined file is locked by another process")}
	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{r.Addr().String()},
		Secret: testSecret, PollInterval: 100 * time.Millisecond, Logger: testLogger(t), Joined: joined})
	must(t, err)
	serve(t, s)
	a := newAPI(t, s)
	id := a.groupID("lobby")
	for _, op := range []string{"join", "leave"} {
		var got struct {
			Unrecorded string `json:"unrecorded"`
		}
		if st := a.do("POST", "/api/groups/"+id+"/"+op, map[string]string{"name": "me"}, &got); st != 200 {
			t.Fatalf("%s: HTTP %d", op, st)
		}
		if !strings.Contains(got.Unrecorded, "Your "+op+" is done") || !strings.Contains(got.Unrecorded, "locked by another process") {
			t.Errorf("%s's answer, its record failed: unrecorded %q; want it said, with why", op, got.Unrecorded)
		}
	}
	joined.mu.Lock()
	joined.fail = nil
	joined.mu.Unlock()
	var got map[string]any
	if st := a.do("POST", "/api/groups/"+id+"/join", map[string]string{"name": "me"}, &got); st != 200 || got["unrecorded"] != nil {
		t.Errorf("join recorded: HTTP %d, %v; want no unrecorded", st, got)
	}
}
