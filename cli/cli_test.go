package cli

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/pflag"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "2026-11-24T09:15:00Z", want: time.Date(2026, 11, 24, 9, 15, 0, 0, time.UTC)},
		{in: "2026-11-24T09:15:00.5+01:00", want: time.Date(2026, 11, 24, 8, 15, 0, 5e8, time.UTC)},
		{in: "10m", want: now.Add(-10 * time.Minute)},
		{in: "1795000000", want: time.Unix(1795000000, 0)},
		{in: "1795000000.25", want: time.Unix(1795000000, 25e7)},
		{in: "0", want: time.Unix(0, 0)}, // the epoch, not "0s ago"
		{in: "10d", want: now.Add(-10 * 24 * time.Hour)},
		{in: "1w", want: now.Add(-7 * 24 * time.Hour)},
		{in: "1d12h", want: now.Add(-36 * time.Hour)},
		{in: "1.5d", want: now.Add(-36 * time.Hour)},
		{in: "2026-12-05", want: time.Date(2026, 12, 5, 0, 0, 0, 0, time.Local)},
		{in: "2026-12-05 09:15", want: time.Date(2026, 12, 5, 9, 15, 0, 0, time.Local)},
		{in: "2026-12-05T09:15:30", want: time.Date(2026, 12, 5, 9, 15, 30, 0, time.Local)},
		{in: "2026-12-05 09:15:30.25", want: time.Date(2026, 12, 5, 9, 15, 30, 25e7, time.Local)},
		{in: "-1d", bad: true},
		{in: "10", want: time.Unix(10, 0)},
		{in: "2026-13-05", bad: true},
		{in: "-5m", bad: true},
		{in: "yesterday", bad: true},
		{in: "12abc", bad: true},
		{in: "", bad: true},
	} {
		got, err := parseTime(c.in, now)
		if c.bad {
			if err == nil {
				t.Errorf("parseTime(%q) = %v, want an error", c.in, got)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "1048576", want: 1 << 20},
		{in: "64KiB", want: 64 << 10},
		{in: "256MiB", want: 256 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "2 MB", want: 2e6},
		{in: "16k", want: 16 << 10},
		{in: "12B", want: 12},
		{in: "-1", bad: true},
		{in: "lots", bad: true},
		{in: "99999999999GiB", bad: true},
	} {
		got, err := parseSize(c.in)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d (error %v)", c.in, got, err, c.want, c.bad)
		}
	}
}

func TestResolveGroup(t *testing.T) {
	d1, d2 := wire.Fingerprint{1}, wire.Fingerprint{2}
	a := wire.GroupEntry{Group: uuid.MustParse("0193a4f2-7c2e-7d3a-9b1e-5f2d8c6a4e10"), Name: "lobby", Fingerprint: d1}
	b := wire.GroupEntry{Group: uuid.MustParse("0193a4f2-aaaa-7d3a-9b1e-5f2d8c6a4e11"), Name: "lobby", Fingerprint: d2}
	c := wire.GroupEntry{Group: uuid.MustParse("77777777-7c2e-7d3a-9b1e-5f2d8c6a4e12"), Name: "builds", Fingerprint: d1}
	// A stranger's group named like the UUID prefix of builds, and one
	// registered under builds' UUID by another key.
	named := wire.GroupEntry{Group: uuid.MustParse("12345678-0000-4000-8000-000000000001"), Name: "7777", Fingerprint: d2}
	stolen := wire.GroupEntry{Group: c.Group, Name: "builds", Fingerprint: d2}
	groups := []wire.GroupEntry{a, b, c}
	hijacked := []wire.GroupEntry{a, b, c, named, stolen}
	joinedB := joinedSet{{b.Group, b.Fingerprint}: {name: "lobby"}, {c.Group, c.Fingerprint}: {name: "builds"}}
	for _, tc := range []struct {
		groups    []wire.GroupEntry
		joined    joinedSet
		ref       string
		want      wire.GroupEntry
		ambiguous bool
		missing   bool
		short     bool
	}{
		{groups: groups, ref: "builds", want: c},
		{groups: groups, ref: "7777", want: c},
		{groups: groups, ref: a.Group.String(), want: a},
		{groups: groups, ref: strings.ToUpper(b.Group.String()), want: b},
		{groups: groups, ref: "lobby", ambiguous: true},
		{groups: groups, ref: "0193a4f2", ambiguous: true},
		{groups: groups, ref: "019", short: true}, // prefixes need 4 characters
		{groups: groups, ref: "zz", missing: true},
		{groups: groups, ref: "nope", missing: true},
		// Among joined groups first: a second lobby does not make the
		// member's lobby ambiguous.
		{groups: groups, joined: joinedB, ref: "lobby", want: b},
		{groups: groups, joined: joinedB, ref: "0193a4f2", want: b},
		// A name that is also a UUID prefix is ambiguous, not decided for
		// the name...
		{groups: hijacked, ref: "7777", ambiguous: true},
		// ...unless the user joined one of them.
		{groups: hijacked, joined: joinedB, ref: "7777", want: c},
		// The same UUID under two daemon keys: the one joined, or neither.
		{groups: hijacked, ref: c.Group.String(), ambiguous: true},
		{groups: hijacked, joined: joinedB, ref: c.Group.String(), want: c},
	} {
		got, err := resolveGroup(tc.groups, tc.ref, tc.joined)
		var ue *usageError
		switch {
		case tc.ambiguous:
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "matches") || !strings.Contains(err.Error(), "daemon ") {
				t.Errorf("resolveGroup(%q, joined %d): err = %v, want an ambiguity listing the candidates and their daemons", tc.ref, len(tc.joined), err)
			}
		case tc.short:
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "too short") {
				t.Errorf("resolveGroup(%q): err = %v, want prefix too short", tc.ref, err)
			}
		case tc.missing:
			if !errors.Is(err, errNoGroup) {
				t.Errorf("resolveGroup(%q): err = %v, want errNoGroup", tc.ref, err)
			}
		case err != nil || got.Group != tc.want.Group || got.Fingerprint != tc.want.Fingerprint:
			t.Errorf("resolveGroup(%q, joined %d) = %s/%s, %v; want %s/%s", tc.ref, len(tc.joined), got.Group, got.Fingerprint.Short(), err, tc.want.Group, tc.want.Fingerprint.Short())
		}
	}
}

// TestResolveJoinedNotListed: a group the user joined that no registry
// lists now is not "no such group" alone: the error says it was joined and
// why it may be missing (it used to read like a typo).
// TestResolveTypo: a name one slip away from a listed group's (a letter
// doubled, dropped or swapped, another case) was answered only "no such
// group"; the listed names near it are offered. Nothing near: none.
func TestResolveTypo(t *testing.T) {
	id := func(n byte) wire.UUID { return wire.UUID{n, 1, 2, 3} }
	groups := []wire.GroupEntry{{Group: id(1), Name: "lobby"}, {Group: id(2), Name: "builds"}, {Group: id(3), Name: "build"}, {Group: id(4), Name: "ops"}}
	for _, tc := range []struct{ ref, want string }{
		{"lobyy", `did you mean lobby?`},
		{"Lobby", `did you mean lobby?`},
		{"lbby", `did you mean lobby?`},
		{"buidls", `did you mean build or builds?`},
		{"buil", `did you mean build or builds?`},
		{"opz", `did you mean ops?`},
		{"random", ""},
		{"xy", ""},
	} {
		_, err := resolveGroup(groups, tc.ref, nil)
		if !errors.Is(err, errNoGroup) {
			t.Fatalf("resolveGroup(%q) = %v, want errNoGroup", tc.ref, err)
		}
		if got := err.Error(); (tc.want == "" && strings.Contains(got, "did you mean")) || !strings.Contains(got, tc.want) {
			t.Errorf("resolveGroup(%q): %q; want it to say %q", tc.ref, got, cmp.Or(tc.want, "no suggestion"))
		}
	}
}

// TestResolveLookalikeNotSuggested: with the owner's "lobby" not listed
// (its daemon stopped) and a stranger's "lоbby" (Cyrillic о) listed,
// "lobby" was answered "did you mean lоbby?", which a terminal prints as
// the name typed and which, copied, names the stranger's group. The
// look-alike is named as one, with its UUID and daemon, and not offered.
func TestResolveLookalikeNotSuggested(t *testing.T) {
	stranger := wire.GroupEntry{Group: wire.UUID{9, 1, 2, 3}, Name: "l\u043Ebby", Fingerprint: wire.Fingerprint{9}}
	for _, ref := range []string{"lobby", "Iobby"} {
		_, err := resolveGroup([]wire.GroupEntry{stranger, {Group: wire.UUID{4}, Name: "ops"}}, ref, nil)
		if !errors.Is(err, errNoGroup) {
			t.Fatalf("resolveGroup(%q) = %v, want errNoGroup", ref, err)
		}
		got := err.Error()
		if strings.Contains(got, "did you mean") || !strings.Contains(got, "looks like it") ||
			!strings.Contains(got, stranger.Group.String()) || !strings.Contains(got, stranger.Fingerprint.Short()) {
			t.Errorf("resolveGroup(%q): %q; want the look-alike named as one, with its UUID and daemon, not offered", ref, got)
		}
	}
}

func TestResolveJoinedNotListed(t *testing.T) {
	b := wire.GroupEntry{Group: uuid.MustParse("0193a4f2-0000-7000-8000-000000000002"), Name: "lobby", Fingerprint: wire.Fingerprint{2}}
	joined := joinedSet{{b.Group, b.Fingerprint}: {name: "lobby"}}
	for _, ref := range []string{"lobby", "0193a4f2", b.Group.String()} {
		_, err := resolveGroup(nil, ref, joined)
		if !errors.Is(err, errNoGroup) || !strings.Contains(err.Error(), "you joined lobby ("+b.Group.String()) || !strings.Contains(err.Error(), "no registry that answered lists it") {
			t.Errorf("resolveGroup(%q) of a joined group not listed: %v", ref, err)
		}
	}
	if _, err := resolveGroup(nil, "other", joined); err == nil || strings.Contains(err.Error(), "you joined") {
		t.Errorf("resolveGroup(other): %v, want plain no such group", err)
	}
}

// A group the user joined, listed now only under another daemon key and
// another name, is a key clash named by that name too, as by its joined
// name or UUID: until session 15's walk "hall", the name an impostor (or
// the group's new key after huddle serve --new-identity) listed it under,
// took the joined lobby there, and the send's success recorded the new
// key as joined.
func TestResolveJoinedUnderAnotherKeyAndName(t *testing.T) {
	id := uuid.MustParse("0193a4f2-0000-7000-8000-000000000002")
	mine, other := wire.Fingerprint{2}, wire.Fingerprint{9}
	joined := joinedSet{{id, mine}: {name: "lobby"}}
	listed := []wire.GroupEntry{{Group: id, Name: "hall", Fingerprint: other}}
	for _, ref := range []string{"hall", "lobby", id.String(), "0193a4f2"} {
		_, err := resolveGroup(listed, ref, joined)
		var clash *joinedKeyError
		if !errors.As(err, &clash) || clash.Joined != mine || !slices.Equal(clash.Listed, []wire.Fingerprint{other}) {
			t.Errorf("resolveGroup(%q) of lobby joined at %s, listed as hall at %s only: %v; want a key clash", ref, mine.Short(), other.Short(), err)
		}
	}
	// A stranger's hall beside it: still the clash, never the stranger's.
	stranger := wire.GroupEntry{Group: uuid.MustParse("0193a4f2-0000-7000-8000-000000000003"), Name: "hall", Fingerprint: wire.Fingerprint{7}}
	if _, err := resolveGroup(append(listed, stranger), "hall", joined); err == nil {
		t.Errorf("resolveGroup(hall) beside a stranger's hall: no error, want the key clash or an ambiguity")
	}
	// Another group of that name, the user's UUID not among them: taken.
	if got, err := resolveGroup([]wire.GroupEntry{stranger}, "hall", joined); err != nil || got.Group != stranger.Group {
		t.Errorf("resolveGroup(hall) of a stranger's hall alone: %v, %v; want it", got.Group, err)
	}
}

// The key clash's advice followed (huddle join GROUP --daemon NEWKEY)
// makes the group the user's at that key under every name: its joined
// name too, the record of the key joined first staying in the file. Until
// session 15's walk "lobby" was a key clash still, naming the key the
// user had just taken.
func TestResolveJoinedKeyTaken(t *testing.T) {
	id := uuid.MustParse("0193a4f2-0000-7000-8000-000000000002")
	old, taken := wire.Fingerprint{2}, wire.Fingerprint{9}
	joined := joinedSet{{id, old}: {name: "lobby"}, {id, taken}: {name: "hall"}}
	listed := []wire.GroupEntry{{Group: id, Name: "hall", Fingerprint: taken}}
	for _, ref := range []string{"lobby", "hall", id.String()} {
		if got, err := resolveGroup(listed, ref, joined); err != nil || got.Fingerprint != taken {
			t.Errorf("resolveGroup(%q) of lobby joined at %s, then taken at %s: %s, %v; want it at %s", ref, old.Short(), taken.Short(), got.Fingerprint.Short(), err, taken.Short())
		}
	}
	// Listed under a third key beside the one taken: that one, still.
	other := wire.GroupEntry{Group: id, Name: "lobby", Fingerprint: wire.Fingerprint{7}}
	if got, err := resolveGroup(append(listed, other), "lobby", joined); err != nil || got.Fingerprint != taken {
		t.Errorf("resolveGroup(lobby) beside a third key's entry: %s, %v; want it at %s", got.Fingerprint.Short(), err, taken.Short())
	}
}

func TestExplainExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("send: %w", &wire.Error{Code: wire.CodeNotMember, Message: "not a member"}), ExitRefused},
		{fmt.Errorf("x: %w", client.ErrUnreachable), ExitUnreachable},
		{fmt.Errorf("send group lobby: %w", &client.NotListedError{Group: "lobby", Registries: []string{"10.0.0.9:7373"}}), ExitUnreachable},
		{context.DeadlineExceeded, ExitUnreachable},
		{&usageError{"ambiguous"}, ExitUsage},
		{fmt.Errorf("%w \"x\"", errNoGroup), ExitRefused},
		{errors.New("disk full"), ExitRefused},
	} {
		if _, got := explain(c.err); got != c.want {
			t.Errorf("explain(%v) exit code = %d, want %d", c.err, got, c.want)
		}
	}
	// A send a full disk refused is not said to meet a busy daemon: until
	// session 15's walk the advice contradicted the daemon's message.
	full, _ := explain(&wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: 1000, Message: "send to lobby: the group's log cannot store messages now; nothing was stored: try again later"})
	if strings.Contains(full, "busy or shutting down") || !strings.Contains(full, "storage full or failing") {
		t.Errorf("a send the log could not store is explained as %q; want no cause it may not be, the storage among those it may", full)
	}
	msg, _ := explain(&wire.Error{Code: wire.CodeNotMember, Message: "fetch group lobby: not a member"})
	if !strings.Contains(msg, "huddle join") {
		t.Errorf("not-member message %q gives no advice", msg)
	}
}

func TestFromEnv(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	listen := fs.String("listen", ":7373", "")
	groups := fs.StringArray("group", nil, "")
	noMDNS := fs.Bool("no-mdns", false, "")
	if err := fs.Parse([]string{"--listen", "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HUDDLE_LISTEN": "ignored:2", "HUDDLE_GROUP": "lobby, dev", "HUDDLE_NO_MDNS": "true"}
	if err := fromEnv(Env{Getenv: func(k string) string { return env[k] }}, fs); err != nil {
		t.Fatal(err)
	}
	if *listen != "127.0.0.1:1" {
		t.Errorf("--listen = %q: the command line must win over the environment", *listen)
	}
	if fmt.Sprint(*groups) != "[lobby dev]" || !*noMDNS {
		t.Errorf("groups %v, no-mdns %v from the environment", *groups, *noMDNS)
	}
	env = map[string]string{"HUDDLE_NO_MDNS": "perhaps"}
	fs2 := pflag.NewFlagSet("y", pflag.ContinueOnError)
	fs2.Bool("no-mdns", false, "")
	if err := fromEnv(Env{Getenv: func(k string) string { return env[k] }}, fs2); err == nil {
		t.Error("a bad boolean in the environment was accepted")
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	if code := Main(context.Background(), nil, env); code != ExitUsage || !strings.Contains(errb.String(), "watch") {
		t.Errorf("no arguments: code %d, usage %q on stderr", code, errb.String())
	}
	if code := Main(context.Background(), []string{"frobnicate"}, env); code != ExitUsage {
		t.Errorf("unknown verb: code %d", code)
	}
	for name := range verbs {
		out.Reset()
		if code := Main(context.Background(), []string{name, "--help"}, env); code != ExitOK || !strings.Contains(out.String(), "Example:") {
			t.Errorf("huddle %s --help: code %d, no example in %q", name, code, out.String())
		}
		// A flag whose text names its default gets no second one from
		// pflag (a zero duration printed "(default 0s)" after it).
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Count(line, "(default") > 1 {
				t.Errorf("huddle %s --help: two defaults in %q", name, strings.TrimSpace(line))
			}
		}
	}
}

func TestHeld(t *testing.T) {
	for _, c := range []struct {
		in   client.Info
		want string
	}{
		{client.Info{Epoch: 7}, "none yet (epoch 7)"},
		{client.Info{First: 1, Last: 3, Epoch: 7}, "#1..#3 (epoch 7)"},
		{client.Info{First: 6, Last: 5, Epoch: 7}, "none (retention dropped #1..#5; epoch 7)"},
	} {
		if got := held(c.in); got != c.want {
			t.Errorf("held(%+v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestStorageText(t *testing.T) {
	for _, c := range []struct {
		in   client.Info
		want string
	}{
		{client.Info{Storage: client.StorageMemory}, "memory (a daemon restart loses every message)"},
		{client.Info{Storage: client.StorageDisk, Fsync: client.FsyncAlways}, "disk, fsync always (an acknowledged message survives power loss)"},
		{client.Info{Storage: client.StorageDisk, Fsync: client.FsyncInterval, FsyncInterval: time.Second},
			"disk, fsync every 1s (an acknowledged message survives a daemon crash; an OS crash or power cut loses at most the last 1s)"},
		{client.Info{}, "not reported (an older daemon)"},
		{client.Info{Storage: "tape", Fsync: "weekly"}, "tape weekly"},
	} {
		if got := storage(c.in); got != c.want {
			t.Errorf("storage(%+v) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestUnknownVerbSuggests: a verb one slip from a real one (huddle sned,
// huddle group) names it; one far from every verb is told only to look at
// the list.
func TestUnknownVerbSuggests(t *testing.T) {
	for _, tc := range []struct{ verb, want string }{
		{"sned", `did you mean "huddle send"?`},
		{"group", `did you mean "huddle groups"?`},
		{"fecth", `did you mean "huddle fetch"?`},
		{"frobnicate", ""},
	} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), []string{tc.verb, "lobby"}, Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
		got := errb.String()
		if code != ExitUsage || !strings.Contains(got, "huddle --help") || (tc.want == "" && strings.Contains(got, "did you mean")) || !strings.Contains(got, tc.want) {
			t.Errorf("huddle %s: exit %d, stderr %q; want exit 2 saying %q", tc.verb, code, got, cmp.Or(tc.want, "no suggestion"))
		}
	}
}

// TestResolveJoinedRenamed: a group the user joined as lobby, which a
// registry now lists under another name (a rogue registry renaming it in the
// merged listing: client.Merge takes the name of the entry with the longest
// lease, the registry's word), is still what lobby names, and wins over a
// stranger's group listed as lobby. The name matched the stranger's alone,
// and the user's sends went to the impostor's daemon.
func TestResolveJoinedRenamed(t *testing.T) {
	real := wire.GroupEntry{Group: uuid.MustParse("0193a4f2-0000-7000-8000-000000000001"), Name: "renamed", Fingerprint: wire.Fingerprint{1}}
	fake := wire.GroupEntry{Group: uuid.MustParse("0193a4f2-0000-7000-8000-000000000002"), Name: "lobby", Fingerprint: wire.Fingerprint{6}}
	joined := joinedSet{{real.Group, real.Fingerprint}: {name: "lobby"}}
	got, err := resolveGroup([]wire.GroupEntry{real, fake}, "lobby", joined)
	if err != nil || got.Group != real.Group || got.Fingerprint != real.Fingerprint {
		t.Fatalf("resolveGroup(lobby) with the joined lobby listed as %q = %s %v, want the joined group %s", real.Name, got.Group, err, real.Group)
	}
	// Not joined: the name is the stranger's alone, as listed.
	if got, err := resolveGroup([]wire.GroupEntry{real, fake}, "lobby", nil); err != nil || got.Group != fake.Group {
		t.Errorf("resolveGroup(lobby), nothing joined = %s %v, want %s", got.Group, err, fake.Group)
	}
}

// TestResolveJoinedCellAfterElection: a cell's group is recorded joined
// under the key of the member that led it then, and listed under the one
// that leads it now. The joined file was looked up by the listing's key
// alone, so after an election the group the user joined was not theirs:
// named by its joined name it was not found, and a rogue registry listing
// a group of its own under that name had the user's sends go there (the
// owner having renamed the real one); a leave kept it joined, and each
// leader was recorded anew. A cell's group is joined under any of its
// replicas' keys.
func TestResolveJoinedCellAfterElection(t *testing.T) {
	replicas := []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: wire.Fingerprint{1}},
		{Addr: "10.0.0.2:7374", Fingerprint: wire.Fingerprint{2}, Leader: true}, {Addr: "10.0.0.3:7374", Fingerprint: wire.Fingerprint{3}}}
	real := wire.GroupEntry{Group: uuid.MustParse("0193a4f2-0000-7000-8000-000000000001"), Name: "renamed", Fingerprint: wire.Fingerprint{2}, Replicas: replicas}
	fake := wire.GroupEntry{Group: uuid.MustParse("0193a4f2-0000-7000-8000-000000000002"), Name: "lobby", Fingerprint: wire.Fingerprint{6}}
	joined := joinedSet{{real.Group, wire.Fingerprint{1}}: {name: "lobby"}} // joined while member 1 led
	got, err := resolveGroup([]wire.GroupEntry{real, fake}, "lobby", joined)
	if err != nil || got.Group != real.Group {
		t.Errorf("resolveGroup(lobby), the cell's group joined as lobby under the leader of the day = %s %v, want %s", got.Group, err, real.Group)
	}
	if !joined.has(real) || joining(real)(joined) {
		t.Errorf("the cell's group, joined under another member's key: has %v, joining it again records it anew: %v", joined.has(real), joined)
	}
	if !leaving(real)(joined) || len(joined) != 0 {
		t.Errorf("left: the joined file holds %v, want nothing", joined)
	}
}

// TestResolveRenamedByRegistry: a name another registry lists a group
// under (client.ListedGroup.OtherNames) names it too, so a rogue registry
// that renames the real lobby in the merged listing (its lease the
// longest) and lists a group of its own as lobby makes lobby ambiguous,
// not the rogue's alone; the group's UUID and either name still name it
// alone.
func TestResolveRenamedByRegistry(t *testing.T) {
	real := client.ListedGroup{GroupEntry: wire.GroupEntry{Group: uuid.MustParse("0193a4f2-0000-7000-8000-000000000001"), Name: "renamed", Fingerprint: wire.Fingerprint{1}},
		OtherNames: []string{"lobby", "lobby too"}}
	fake := client.ListedGroup{GroupEntry: wire.GroupEntry{Group: uuid.MustParse("0193a4f2-1111-7000-8000-000000000002"), Name: "lobby", Fingerprint: wire.Fingerprint{6}}}
	entries := listedEntries([]client.ListedGroup{real, fake})
	var ue *usageError
	if got, err := resolveGroup(entries, "lobby", nil); !errors.As(err, &ue) || !strings.Contains(err.Error(), "matches 2 groups") {
		t.Errorf("resolveGroup(lobby), the real lobby renamed by a registry = %s %v, want ambiguous between the two", got.Group, err)
	}
	for _, ref := range []string{"renamed", "lobby too", real.Group.String(), "0193a4f2-0000-7000-8000-00000000000"} {
		if got, err := resolveGroup(entries, ref, nil); err != nil || got.Group != real.Group || got.Fingerprint != real.Fingerprint {
			t.Errorf("resolveGroup(%q) = %s %v, want %s alone", ref, got.Group, err, real.Group)
		}
	}
	joined := joinedSet{{real.Group, real.Fingerprint}: {name: "lobby"}}
	if got, err := resolveGroup(entries, "lobby", joined); err != nil || got.Group != real.Group {
		t.Errorf("resolveGroup(lobby), the real one joined = %s %v, want %s", got.Group, err, real.Group)
	}
	// The listing cache (used when no registry answers) keeps the names.
	dir := t.TempDir()
	if err := saveListCache(dir, "", &listing{groups: []client.ListedGroup{real, fake}}); err != nil {
		t.Fatal(err)
	}
	c, err := loadListCache(dir, "")
	if err != nil || c == nil {
		t.Fatalf("loadListCache: %v %v", c, err)
	}
	if got, err := resolveGroup(listedEntries(c.groups()), "lobby", nil); !errors.As(err, &ue) {
		t.Errorf("resolveGroup(lobby) from the cached listing = %s %v, want ambiguous", got.Group, err)
	}
}

// TestNotMemberNamesGroup: a verb a group refused because the user has not
// joined it says to join that group, as typed, quoted for a shell when it
// would not pass as one word (it said "huddle join GROUP").
func TestNotMemberNamesGroup(t *testing.T) {
	t.Parallel()
	u := newTestUser(t, startUp(t, "lobby", "our room"))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"fetch", "lobby"}, "join the group first: huddle join lobby\n"},
		{[]string{"members", " lobby "}, "join the group first: huddle join lobby\n"},
		{[]string{"send", "our room", "hi"}, "join the group first: huddle join 'our room'\n"},
		{[]string{"watch", "lobby"}, "join the group first: huddle join lobby\n"},
	} {
		code, _, stderr := u.run(t, c.args...)
		if code != ExitRefused || !strings.HasSuffix(stderr, c.want) {
			t.Errorf("huddle %q: exit %d, stderr %q; want %d ending %q", c.args, code, stderr, ExitRefused, c.want)
		}
	}
	code, _, stderr := u.runInput(t, "line\n", "send", "our room")
	if want := "huddle join 'our room'\n"; code != ExitRefused || !strings.HasSuffix(stderr, want) {
		t.Errorf("send from stdin: exit %d, stderr %q; want ending %q", code, stderr, want)
	}
	// A message over the group's limit names the command that shows that
	// group's limits (it said "huddle info GROUP" until session 21).
	u.ok(t, "join", "our room", "--as", "u")
	code, _, stderr = u.run(t, "send", "our room", strings.Repeat("x", 65*1024))
	if want := "at most 65536; its limits: huddle info 'our room'\n"; code != ExitRefused || !strings.HasSuffix(stderr, want) {
		t.Errorf("send too large: exit %d, stderr %q; want ending %q", code, stderr, want)
	}
}

func TestShellWord(t *testing.T) {
	for in, want := range map[string]string{
		"lobby":         "lobby",
		"café-2":        "café-2",
		"3f2a9c1e":      "3f2a9c1e",
		"our room":      "'our room'",
		"it's":          `'it'\''s'`,
		"$HOME;rm":      `'$HOME;rm'`,
		"a\x1b]0;x\x07": "'a\uFFFD]0;x\uFFFD'",
		"":              "''",
	} {
		if got := shellWord(in); got != want {
			t.Errorf("shellWord(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestListCacheKeepsCells: the listing cache, which commands use while no
// registry answers, kept a cell's group as a group of one daemon (its
// leader's key and addresses), so a command then knew none of its other
// members: with the leader of the day gone (killed, or the cell's
// leadership moved and the old one down), it could not reach the group at
// all. The cache keeps the replicas, and every registry's addresses of
// each (client.ListedGroup.MemberAddrs).
func TestListCacheKeepsCells(t *testing.T) {
	replicas := []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: wire.Fingerprint{1}, Leader: true},
		{Addr: "10.0.0.2:7374", Fingerprint: wire.Fingerprint{2}}, {Addr: "10.0.0.3:7374", Fingerprint: wire.Fingerprint{3}}}
	cell := client.ListedGroup{GroupEntry: wire.GroupEntry{Group: uuid.MustParse("0193a4f2-0000-7000-8000-000000000001"), Name: "ops",
		Addrs: []string{replicas[0].Addr}, Fingerprint: replicas[0].Fingerprint, Replicas: replicas},
		MemberAddrs: map[wire.Fingerprint][]string{{1}: {"10.0.0.1:7374"}, {2}: {"10.0.0.2:7374", "10.9.9.2:7374"}, {3}: {"10.0.0.3:7374"}}}
	dir := t.TempDir()
	if err := saveListCache(dir, "", &listing{groups: []client.ListedGroup{cell}}); err != nil {
		t.Fatal(err)
	}
	c, err := loadListCache(dir, "")
	if err != nil || c == nil {
		t.Fatalf("loadListCache: %v %v", c, err)
	}
	got := c.groups()
	if len(got) != 1 || !slices.Equal(got[0].Replicas, replicas) || !maps.EqualFunc(got[0].MemberAddrs, cell.MemberAddrs, slices.Equal) {
		t.Errorf("the cached cell's group: %+v, want its replicas %v and member addresses %v", got, replicas, cell.MemberAddrs)
	}
}
