package cli

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/lockfile"
	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/wire"
)

// TestListingAcrossRegistries runs, in this process, two huddle up (each a
// registry and a group daemon) and asks both, given as a list: the
// listing merges their groups; with one of them stopped, the other's
// groups are listed and the stopped one is named on stderr; with both
// stopped, the cached listing stands in, its age said; and every goroutine
// the gathering started has ended (goleak, in TestMain).
func TestListingAcrossRegistries(t *testing.T) {
	a, stopA := startUpStoppable(t, "lobby")
	b, stopB := startUpStoppable(t, "dev")
	u := newTestUser(t, a+","+b)
	// A registry that answers more than 250 ms after the first is left out
	// of that command's listing (README: one that is down costs a command
	// at most that; the text names it on stderr, below): with the machine
	// loaded, the second of two cold handshakes can be that late (this
	// failed 2 runs in 16, eight at once), so ask until one command hears
	// both.
	var out string
	for deadline := time.Now().Add(waitTimeout); ; {
		out = u.ok(t, "groups", "--json")
		if strings.Contains(out, `"name":"lobby"`) && strings.Contains(out, `"name":"dev"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("groups from both registries, for %v:\n%s", waitTimeout, out)
		}
	}
	if strings.Count(out, "\n") != 2 {
		t.Fatalf("groups from both registries:\n%s", out)
	}

	stopA()
	code, out, errs := u.run(t, "groups", "--timeout", "5s")
	if code != ExitOK || !strings.Contains(out, "dev") || strings.Contains(out, "lobby") || !strings.Contains(errs, "not answering: "+a) {
		t.Fatalf("groups with %s stopped: exit %d\nstdout:\n%s\nstderr:\n%s", a, code, out, errs)
	}

	stopB()
	code, out, errs = u.run(t, "groups", "--timeout", "5s")
	if code != ExitOK || !strings.Contains(out, "dev") || !strings.Contains(errs, "using the listing cached") {
		t.Fatalf("groups with both stopped: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
}

// startUpStoppable is startUp with a function that stops the daemons
// before the test ends.
func startUpStoppable(t *testing.T, group string) (string, func()) {
	t.Helper()
	args := []string{"up", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--log-level", "info", "--group", group}
	v := startVerb(t, nil, args...)
	addr := strings.Replace(v.waitLine(t, upLine), "0.0.0.0", "127.0.0.1", 1)
	u := newTestUser(t, addr)
	awaitLines(t, "huddle up's registry listing "+group, v.stderr, registered, func() bool {
		_, out, _ := u.run(t, "groups", "--json")
		return strings.Contains(out, `"name":"`+group+`"`)
	})
	return addr, func() { v.stop(t) }
}

// TestNoRegistryTellsNewcomers: a newcomer who runs a client command
// before starting anything (no registry on this machine, none on the LAN,
// none given) was told only to give a registry's address; the first thing
// to say is how to start one. A registry given that did not answer is
// asked after instead.
func TestNoRegistryTellsNewcomers(t *testing.T) {
	none := (&noRegistryError{}).Error()
	local := (&noRegistryError{reports: []registryReport{{addr: defaultRegistry, from: fromLocal, err: errors.New("server unreachable")}}}).Error()
	for _, msg := range []string{none, local} {
		for _, want := range []string{"start one on this machine with 'huddle up'", "--registry HOST:PORT", "huddle doctor"} {
			if !strings.Contains(msg, want) {
				t.Errorf("no registry found, none given: %q does not say %q", msg, want)
			}
		}
	}
	given := (&noRegistryError{given: true, reports: []registryReport{{addr: "10.0.0.9:7373", from: fromGiven, err: errors.New("server unreachable")}}}).Error()
	if !strings.Contains(given, "is it running") || strings.Contains(given, "start one on this machine") {
		t.Errorf("a registry given that did not answer: %q", given)
	}
}

// TestForgetRegistryForgetsItsCachedPin: this machine's registry is
// reinstalled (a new key at 127.0.0.1:7373); the user's next command is
// refused naming 'huddle forget-registry 127.0.0.1:7373', which they run.
// The command after it answered, but said on stderr that the registry
// "answered last time" was not answering: "server presented fingerprint
// NEW, expected OLD", the cached listing still pinning the old key. The
// cache forgets the registry too. In a network namespace of its own: with
// no registry given, client commands ask 127.0.0.1:7373 and browse mDNS.
func TestForgetRegistryForgetsItsCachedPin(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		u := &testUser{home: t.TempDir()} // no registry given
		up := func() func() {
			v := startVerb(t, nil, "up", "--no-mdns", "--listen", "127.0.0.1:7373", "--state-dir", t.TempDir(), "--log-level", "info")
			v.waitLine(t, upLine)
			awaitLines(t, "huddle up's registry listing lobby", v.stderr, registered, func() bool {
				probe := &testUser{home: t.TempDir()} // pins nothing of u's
				_, out, _ := probe.run(t, "groups", "--json")
				return strings.Contains(out, `"name":"lobby"`)
			})
			return func() { v.stop(t) }
		}
		stop := up()
		u.ok(t, "groups") // pins the key, and caches the registry as one that answered
		stop()
		up()
		if code, _, errs := u.run(t, "groups"); code != ExitRefused || !strings.Contains(errs, "huddle forget-registry 127.0.0.1:7373") {
			t.Fatalf("groups after the registry's key changed: exit %d, stderr:\n%s", code, errs)
		}
		u.ok(t, "forget-registry", "127.0.0.1:7373")
		code, out, errs := u.run(t, "groups")
		if code != ExitOK || !strings.Contains(out, "lobby") || strings.Contains(errs, "expected") || strings.Contains(errs, "not answering") {
			t.Errorf("groups after forget-registry: exit %d, stdout:\n%s\nstderr:\n%s", code, out, errs)
		}
	})
}

// TestPinFoundWhenFull: with known_registries holding all the pins of
// registries found over mDNS it may, a registry new to it is used but not
// pinned, with a warning that names the file and huddle forget-registry,
// and a name the user pinned still refuses another key (an advertiser who
// filled the file does not get their key pinned under it). Until this was
// found a new name pushed out the pin unused longest.
func TestPinFoundWhenFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), identity.KnownHostsFile)
	kh := identity.OpenKnownHosts(path)
	key := func(i int) wire.Fingerprint { return wire.Fingerprint{byte(i), byte(i >> 8), 2} }
	office := mdnsPinPrefix + "huddle registry on office (abcd-efgh)"
	if pinned, err := pinFound(t.Context(), kh, office, key(9000)); !pinned || err != nil {
		t.Fatalf("pinFound of the user's registry = %v, %v; want pinned", pinned, err)
	}
	for i := range identity.MaxDiscoveredPins - 1 {
		if pinned, err := pinFound(t.Context(), kh, fmt.Sprintf("%sflood %d", mdnsPinPrefix, i), key(i)); !pinned || err != nil {
			t.Fatalf("pinFound of flood name %d = %v, %v; want pinned", i, pinned, err)
		}
	}
	newName := mdnsPinPrefix + "flood one more"
	if pinned, err := pinFound(t.Context(), kh, newName, key(8000)); pinned || err != nil {
		t.Errorf("pinFound of a new name with the file full = %v, %v; want used unpinned (false, nil)", pinned, err)
	}
	if _, ok, _ := kh.Lookup(newName); ok {
		t.Errorf("a new name was pinned past the bound")
	}
	var ce *identity.ChangedError
	if _, err := pinFound(t.Context(), kh, office, key(8001)); !errors.As(err, &ce) {
		t.Errorf("pinFound of another key under the user's pinned name after the flood = %v, want a *identity.ChangedError", err)
	}
	w := pinsFullWarning(path, []string{newName})
	for _, want := range []string{path, "huddle forget-registry", newName, "not pinned"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning %q does not say %q", w, want)
		}
	}
	// An advertiser's name is shown as names are: discovery let format
	// characters through until session 19 (a file may hold such names),
	// and a right-to-left override turned the rest of the warning around.
	bidi := mdnsPinPrefix + "x\u202Edeifirev (abcd-efgh)"
	if w := pinsFullWarning(path, []string{bidi}); strings.ContainsFunc(w, wire.Unshown) || !strings.Contains(w, shown(bidi)) {
		t.Errorf("warning %q shows the name %q as it came", w, bidi)
	}
}

// TestJoinedRecordSharedWithCommands checks huddle web's record of the
// groups joined (web.Joined) against the joined file the commands keep: a
// join through the page is written there, one a command wrote meanwhile is
// seen, and a leave is removed. huddle web resolves a UUID listed under
// several daemon keys to the one recorded (web's
// TestDirectoryClashPrefersJoined): until session 14 it took the first
// registry's, an impostor's if a rogue registry was polled first.
func TestJoinedRecordSharedWithCommands(t *testing.T) {
	dir := t.TempDir()
	r := &joinedRecord{dir: dir}
	lobby := wire.GroupEntry{Group: wire.UUID{1}, Fingerprint: wire.Fingerprint{2}, Name: "lobby"}
	impostor := lobby
	impostor.Fingerprint = wire.Fingerprint{3}
	if r.Has(lobby.Group, lobby.Fingerprint) {
		t.Fatal("an empty record has lobby")
	}
	r.Add(lobby)
	if set, err := loadJoined(dir); err != nil || !set.has(lobby) || set.has(impostor) {
		t.Fatalf("joined file after the page's join: %v, %v; want lobby at its daemon only", set, err)
	}
	if !r.Has(lobby.Group, lobby.Fingerprint) || r.Has(impostor.Group, impostor.Fingerprint) {
		t.Errorf("the record does not have lobby at its daemon only")
	}
	ops := wire.GroupEntry{Group: wire.UUID{4}, Fingerprint: wire.Fingerprint{5}, Name: "ops"}
	set, _ := loadJoined(dir)
	set[joinedGroup{ops.Group, ops.Fingerprint}] = joinedLine{name: ops.Name}
	if err := saveJoined(dir, set); err != nil { // huddle join ops, beside the page
		t.Fatal(err)
	}
	r.checked = time.Time{} // a second later: Has looks at the file at most every joinedRecheck
	if !r.Has(ops.Group, ops.Fingerprint) {
		t.Errorf("a group a command joined beside the page is not seen")
	}
	set[joinedGroup{wire.UUID{8}, wire.Fingerprint{9}}] = joinedLine{name: "dev"}
	if err := saveJoined(dir, set); err != nil { // huddle join dev, just now
		t.Fatal(err)
	}
	r.Remove(lobby) // within joinedRecheck of the last look: dev must stay
	if set, err := loadJoined(dir); err != nil || set.has(lobby) || !set.has(ops) || len(set) != 2 {
		t.Errorf("joined file after the page's leave: %v, %v; want ops and dev", set, err)
	}
	// The page shows each group joined, under the name it was joined
	// under, listed or not.
	got := r.Groups()
	slices.SortFunc(got, func(a, b wire.GroupEntry) int { return cmp.Compare(a.Name, b.Name) })
	if want := []wire.GroupEntry{{Group: wire.UUID{8}, Fingerprint: wire.Fingerprint{9}, Name: "dev"}, ops}; !reflect.DeepEqual(got, want) {
		t.Errorf("Groups() = %+v, want %+v", got, want)
	}
}

// TestRefusedKeyPinnedNowhere: a key one registry name refuses (it is not
// the key pinned for that name) is pinned under no other name in the same
// run. Here the user's registry at A was pinned under its key; a stranger's
// key now answers at A, and at B, a name new to the user. The command stops
// (a changed key), and known_registries is as it was. ask pinned B (each
// new name as its registry answered, before gather's refusal), so the
// stranger's key was trusted at B from the next run on.
func TestRefusedKeyPinnedNowhere(t *testing.T) {
	stateA, stateB := t.TempDir(), t.TempDir()
	if _, err := identity.LoadOrCreate(stateA); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(stateA, identity.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateB, identity.KeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	registry := func(state string) string {
		v := startVerb(t, nil, "registry", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", state)
		return strings.Replace(v.waitLine(t, upLine), "0.0.0.0", "127.0.0.1", 1)
	}
	a, b := registry(stateA), registry(stateB)
	u := newTestUser(t, a+","+b)
	path := filepath.Join(u.home, identity.KnownHostsFile)
	if err := identity.OpenKnownHosts(path).Check(t.Context(), a, wire.Fingerprint{1, 2, 3}); err != nil { // the user's registry's key
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errs := u.run(t, "groups")
	if code != ExitRefused || !strings.Contains(errs, "presented fingerprint") {
		t.Fatalf("groups with a stranger's key at the pinned %s: exit %d, want %d (refused); stderr:\n%s", a, code, ExitRefused, errs)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Errorf("known_registries changed in the run that refused the key; before:\n%s\nafter:\n%s", before, after)
	}
}

// TestRefusedKeyPinnedNowhereOverMDNS is TestRefusedKeyPinnedNowhere over
// mDNS (a network namespace of its own): one key advertised under two
// instance names (two registries with copies of it, the second renamed
// "#2" after the conflict), the first name pinned under another key with
// the same tag. A run that refuses the key under the first name pins the
// second nowhere: ask pinned each new mDNS name as its registry answered,
// before gather's refusal. (A run whose refusal comes after the other
// name's answer pins that name, being over before it knew: such runs are
// not judged, the file is put back and the command run again.)
func TestRefusedKeyPinnedNowhereOverMDNS(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		stateA, stateB := t.TempDir(), t.TempDir()
		id, err := identity.LoadOrCreate(stateA)
		if err != nil {
			t.Fatal(err)
		}
		key, err := os.ReadFile(filepath.Join(stateA, identity.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stateB, identity.KeyFile), key, 0o600); err != nil {
			t.Fatal(err)
		}
		renamed := regexp.MustCompile(`renamed the registry's mDNS instance after a conflict" .*was="([^"]+)" now="([^"]+)"`)
		var regs []*daemonVerb
		for _, state := range []string{stateA, stateB} {
			v := startVerb(t, nil, "registry", "--listen", "127.0.0.1:0", "--state-dir", state, "--log-level", "info")
			v.waitLine(t, upLine)
			regs = append(regs, v)
		}
		var names []string // the first instance name, and the one renamed after the conflict
		deadline := time.NewTimer(waitTimeout)
		defer deadline.Stop()
		for names == nil {
			written0, written1 := regs[0].stderr.written(), regs[1].stderr.written()
			for _, v := range regs {
				if m := renamed.FindStringSubmatch(v.stderr.String()); m != nil {
					names = m[1:]
				}
			}
			if names != nil {
				break
			}
			select {
			case <-written0:
			case <-written1:
			case <-deadline.C:
				t.Fatalf("neither registry renamed its instance after the conflict:\n%s\n%s", regs[0].stderr, regs[1].stderr)
			}
		}
		pinnedKey := id.Fingerprint()
		pinnedKey[len(pinnedKey)-1] ^= 1  // the user's registry: another key, the same tag
		u := &testUser{home: t.TempDir()} // no registry given: it browses
		path := filepath.Join(u.home, identity.KnownHostsFile)
		pins := []byte(fmt.Sprintf("%s%s %s\n", mdnsPinPrefix, names[0], pinnedKey))
		if err := os.MkdirAll(u.home, 0o700); err != nil {
			t.Fatal(err)
		}
		for until := time.Now().Add(waitTimeout); ; {
			if err := os.WriteFile(path, pins, 0o600); err != nil {
				t.Fatal(err)
			}
			code, _, errs := u.run(t, "groups", "--timeout", "5s")
			after, _ := os.ReadFile(path)
			if code == ExitRefused {
				if !bytes.Equal(after, pins) {
					t.Fatalf("known_registries changed in the run that refused the key under %q; now:\n%s", names[0], after)
				}
				t.Logf("refused under %q, %q not pinned:\n%s", names[0], names[1], errs)
				return
			}
			if time.Now().After(until) {
				t.Fatalf("no run refused the key under %q; last exit %d, stderr:\n%s", names[0], code, errs)
			}
		}
	})
}

// TestAddressUsedWhenPinsFull: with known_registries holding all the
// registry addresses it may, a registry at an address new to it is used,
// not pinned, with a warning naming the file and huddle forget-registry,
// and no pin is dropped.
func TestAddressUsedWhenPinsFull(t *testing.T) {
	addr := startUp(t, "lobby")
	u := newTestUser(t, addr)
	path := filepath.Join(u.home, identity.KnownHostsFile)
	var file bytes.Buffer
	for i := range identity.MaxAddressPins {
		fmt.Fprintf(&file, "10.1.%d.%d:7373 %s\n", i/256, i%256, wire.Fingerprint{byte(i), byte(i >> 8), 5})
	}
	if err := os.MkdirAll(u.home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := u.run(t, "groups")
	if code != ExitOK || !strings.Contains(out, "lobby") {
		t.Fatalf("groups with known_registries full of addresses: exit %d, want 0 and lobby\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	for _, want := range []string{path, "not pinned", "huddle forget-registry", addr} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr does not say %q:\n%s", want, errs)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, file.Bytes()) {
		t.Errorf("known_registries changed")
	}
}

// TestJoinedKeepsOtherProcessesJoins: the joined file is written by every
// command that learns the user is a member, and by huddle web. A command
// wrote the set it had read at its start with its own join added, so a
// long one (a huddle send reading standard input, a chat) dropped every
// join made beside it since it started, and commands run at once (a
// script joining groups in the background) each other's. A group dropped
// so no longer resolves among the joined first: a stranger's group of
// its name takes the user's commands, or makes its name ambiguous. A
// change is now made under a lock, to the file read again.
func TestJoinedKeepsOtherProcessesJoins(t *testing.T) {
	dir := t.TempDir()
	entry := func(i int) wire.GroupEntry {
		return wire.GroupEntry{Group: wire.UUID{byte(i), 1}, Fingerprint: wire.Fingerprint{byte(i), 2}, Name: fmt.Sprintf("g%d", i)}
	}
	started, err := loadJoined(dir) // huddle send g0, reading its input a while
	if err != nil {
		t.Fatal(err)
	}
	long := &session{home: dir, joined: started}
	other, _ := loadJoined(dir)
	(&session{home: dir, joined: other}).record(t.Context(), entry(1)) // huddle join g1, meanwhile
	long.record(t.Context(), entry(0))
	if set, err := loadJoined(dir); err != nil || !set.has(entry(0)) || !set.has(entry(1)) {
		t.Fatalf("joined after a join beside a long command: %v, %v; want g0 and g1", set, err)
	}
	long.forget(t.Context(), entry(0))
	if set, err := loadJoined(dir); err != nil || set.has(entry(0)) || !set.has(entry(1)) {
		t.Fatalf("joined after the long command left g0: %v, %v; want g1 alone", set, err)
	}

	// Commands and a page at once, each its own process's reader. Each
	// waits for the file's lock up to waitTimeout, not the 5 s a command
	// waits: 64 writers one after the other, each a read and a rename
	// under the lock, took longer than that under -race at load ~50, and
	// the last gave up (a warning each), which is not what this is about.
	const writers = 64
	var wg sync.WaitGroup
	for i := 2; i < 2+writers; i++ {
		wg.Go(func() {
			if i%2 == 0 {
				(&joinedRecord{dir: dir, locker: lockfile.Locker{Wait: waitTimeout}}).Add(entry(i))
				return
			}
			set, _ := loadJoined(dir)
			(&session{home: dir, joined: set, env: Env{LockWait: waitTimeout}}).record(t.Context(), entry(i))
		})
	}
	wg.Wait()
	set, err := loadJoined(dir)
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	for i := 2; i < 2+writers; i++ {
		if set.has(entry(i)) {
			kept++
		}
	}
	if kept != writers || !set.has(entry(1)) {
		t.Errorf("%d of %d joins made at once kept (g1 kept: %v)", kept, writers, set.has(entry(1)))
	}
}

// TestJoinedNameCannotAddLines: the joined file records a group's name as
// a registry listed it (remember, huddle web's Add), and listings' names
// are not checked for characters (a registry of an earlier version may
// list one the rules refuse now). A rogue registry listing a group the
// user is in under a name holding a line break (its entry's lease the
// longest, so its name is the merged entry's) had the file record a
// second line of its making: a join of another UUID under its own key,
// which the CLI and huddle web then preferred for that UUID, an
// impostor's daemon, over any registry's. A name that cannot be read
// back as it was written is recorded empty (the group resolves by UUID).
func TestJoinedNameCannotAddLines(t *testing.T) {
	dir := t.TempDir()
	victim, impostor := wire.UUID{4, 2}, wire.Fingerprint{6, 6}
	for i, name := range []string{
		"lobby\n" + victim.String() + " " + impostor.String() + " secret",
		"lobby\r" + victim.String() + " " + impostor.String() + " secret",
		"lobby\u0085" + victim.String() + " " + impostor.String() + " secret",
		"lobby\xff",
	} {
		e := wire.GroupEntry{Group: wire.UUID{byte(i + 1)}, Fingerprint: wire.Fingerprint{byte(i + 1)}, Name: name}
		set, _ := loadJoined(dir)
		(&session{home: dir, joined: set}).record(t.Context(), e)
		(&joinedRecord{dir: dir}).Add(wire.GroupEntry{Group: wire.UUID{byte(i + 1), 1}, Fingerprint: e.Fingerprint, Name: name})
		set, err := loadJoined(dir)
		if err != nil {
			t.Fatal(err)
		}
		if set.has(wire.GroupEntry{Group: victim, Fingerprint: impostor}) || len(set) != 2*(i+1) || !set.has(e) {
			t.Fatalf("joined file after joining a group listed as %q: %v; want that group and no other line", name, set)
		}
		if got := set.nameOf(e); got != "" {
			t.Errorf("name recorded for %q: %q, want none", name, got)
		}
	}
}

// TestJoinedSymlinked: a joined file that is a symbolic link (kept with
// other dotfiles) was replaced by a regular file at the first join
// recorded, and the file it named got no more; a change is now written,
// and locked, at the file the link names.
func TestJoinedSymlinked(t *testing.T) {
	real := filepath.Join(t.TempDir(), joinedFile)
	if err := os.WriteFile(real, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(real, filepath.Join(dir, joinedFile)); err != nil {
		t.Fatal(err)
	}
	e := wire.GroupEntry{Group: wire.UUID{1}, Fingerprint: wire.Fingerprint{2}, Name: "lobby"}
	set, _ := loadJoined(dir)
	(&session{home: dir, joined: set}).record(t.Context(), e)
	if st, err := os.Lstat(filepath.Join(dir, joinedFile)); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link after a join: %v, %v; want the link kept", st.Mode(), err)
	}
	if set, err := loadJoined(filepath.Dir(real)); err != nil || !set.has(e) {
		t.Errorf("the file the link names: %v, %v; want lobby", set, err)
	}
}

// TestJoinedRecordSeesSameSizeRewrite: a file another process wrote over
// the one huddle web read, of the same size and with the same modification
// time (file times are as coarse as the kernel's tick, a few milliseconds:
// two writers within one tick, as the page and a command joining at once),
// is read again. A join of another group of the same name length, or a
// cell's followed key set (one key for another), is the same size: until
// session 16 the page took the file for unchanged, and went on with the
// first set for as long as no other change came.
func TestJoinedRecordSeesSameSizeRewrite(t *testing.T) {
	dir := t.TempDir()
	lobby := joinedGroup{wire.UUID{1}, wire.Fingerprint{2}}
	other := joinedGroup{wire.UUID{3}, wire.Fingerprint{4}}
	if err := saveJoined(dir, joinedSet{lobby: {name: "lobby"}}); err != nil {
		t.Fatal(err)
	}
	r := &joinedRecord{dir: dir}
	if !r.Has(lobby.Group, lobby.Daemon) {
		t.Fatal("the record does not have lobby")
	}
	path := filepath.Join(dir, joinedFile)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// The other writer: lobby left, other joined, in the same tick.
	if err := saveJoined(dir, joinedSet{other: {name: "other"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, before.ModTime(), before.ModTime()); err != nil {
		t.Fatal(err)
	}
	if after, err := os.Stat(path); err != nil || after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("the rewrite is not alike: %v, %v", after, err)
	}
	r.mu.Lock()
	r.checked = time.Time{} // a second later: Has looks at the file at most every joinedRecheck
	r.mu.Unlock()
	if !r.Has(other.Group, other.Daemon) || r.Has(lobby.Group, lobby.Daemon) {
		t.Errorf("after another process replaced the joined file (same size, same time), the record still has the set it read first")
	}
}

// TestSaveJoinedLeavesNoTemp: a write of the joined file that fails at its
// last step (the rename over the file: here a directory stands in its
// place) leaves no temporary file beside it. Until session 16 each failed
// write left one in $HUDDLE_HOME, for good: every command that learned a
// membership tried, and failed, again.
func TestSaveJoinedLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, joinedFile, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := saveJoined(dir, joinedSet{{wire.UUID{1}, wire.Fingerprint{2}}: {name: "lobby"}}); err == nil {
		t.Fatal("saveJoined over a directory succeeded")
	}
	left, err := filepath.Glob(filepath.Join(dir, joinedFile+".*"))
	if err != nil || len(left) != 0 {
		t.Errorf("files left beside the joined file after a failed write: %v, %v", left, err)
	}
}

// TestLateNamesRegistriesBeingChecked: a registry found over mDNS whose
// answer was still being checked when the run stopped (its verifying
// handshake slow, or its key's pin waiting for known_registries' lock) is
// named among those that did not answer. late named only the registries
// asked, and such a run said nothing of the registry it had found.
func TestLateNamesRegistriesBeingChecked(t *testing.T) {
	g := &gatherer{start: time.Now(), claimed: make(map[wire.Fingerprint]bool), pending: make(map[string]registryReport),
		held: make(map[wire.Fingerprint]*heldAnswer), wake: make(chan struct{}, 1)}
	checking, asked := wire.Fingerprint{1}, wire.Fingerprint{2}
	g.hold(checking, registryReport{from: fromMDNS, name: mdnsPinPrefix + "office", addr: "10.0.0.5:7373"})
	g.hold(checking, registryReport{from: fromMDNS, name: mdnsPinPrefix + "office", addr: "10.0.0.6:7373"})
	g.hold(asked, registryReport{from: fromMDNS, name: mdnsPinPrefix + "lab", addr: "10.0.0.7:7373"})
	g.claim(asked) // asked: its report is pending's
	g.pending[fromMDNS+" 10.0.0.7:7373"] = registryReport{from: fromMDNS, name: mdnsPinPrefix + "lab", addr: "10.0.0.7:7373"}
	l := &listing{reports: g.late()}
	failed := strings.Join(l.failed(), "\n")
	if !strings.Contains(failed, "10.0.0.5:7373 (mDNS): ") || !strings.Contains(failed, "mDNS answer still being checked") ||
		strings.Count(failed, "10.0.0.7:7373") != 1 || strings.Contains(failed, "10.0.0.6") {
		t.Errorf("not answering:\n%s\nwant office named once, at its first address, still being checked, and lab once", failed)
	}
}

// TestTimedAskAlwaysAnswers: a registry asked under a bound of its own
// (this machine's, 1 s) that does not answer within it still reports so to
// gather. The bound was the context the answer was sent on too, so the
// answer met a select whose context was done as well, and was dropped
// half the time: gather waited for it until the command's --timeout, then
// said "none was found (nothing answers at 127.0.0.1:7373...)" and "raise
// --timeout", where another run said at 3 s that this machine's registry
// did not answer. Asked 32 times, a dropped answer is all but certain to
// show (each drop was a coin toss).
func TestTimedAskAlwaysAnswers(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // takes the handshake's packets, answers none
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	addr := silent.LocalAddr().String()
	var out bytes.Buffer
	s := doctorFor(t, &out, waitTimeout).s
	for i := range 32 {
		g := &gatherer{s: s, start: time.Now(), answers: make(chan registryAnswer, 1), claimed: make(map[wire.Fingerprint]bool),
			pending: make(map[string]registryReport), held: make(map[wire.Fingerprint]*heldAnswer), wake: make(chan struct{}, 1)}
		g.ask(t.Context(), registryReport{from: fromLocal, name: addr, addr: addr}, wire.Fingerprint{}, false, 20*time.Millisecond)
		g.wg.Wait() // the ask has ended: its answer was sent, or dropped
		select {
		case a := <-g.answers:
			if a.err == nil || a.from != fromLocal {
				t.Fatalf("ask %d: answer %+v, want this machine's, failed", i, a.registryReport)
			}
		default:
			t.Fatalf("ask %d of a registry not answering within its bound: no answer reached gather", i)
		}
	}
}
