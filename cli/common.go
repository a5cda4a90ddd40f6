package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// defaultRegistry is where client verbs look when neither --registry nor
// HUDDLE_REGISTRY says otherwise: the registry `huddle up` starts.
const defaultRegistry = "127.0.0.1:7373"

// clientFlags are the flags every client verb takes.
type clientFlags struct {
	registries registryAddrsValue
	ifaces     []string
	json       bool
	timeout    time.Duration
	// daemon, if set (huddle join --daemon), is the daemon key GROUP is
	// taken at: the user saying which, where registries list its UUID
	// under a key other than the one they joined (joinedKeyError).
	daemon *wire.Fingerprint
}

func (f *clientFlags) register(fs *pflag.FlagSet) {
	fs.Var(&f.registries, "registry", "ask the registry at HOST[:PORT] (repeatable, or comma-separated; default $HUDDLE_REGISTRY, else this machine's, those that answered last time and every one found over mDNS)")
	fs.StringArrayVar(&f.ifaces, "iface", nil, "look for registries over mDNS on this interface only (repeatable; default: every up, multicast-capable one)")
	fs.BoolVar(&f.json, "json", false, "print one JSON object per line")
	fs.Var(newDuration(&f.timeout, 10*time.Second, time.Millisecond, false), "timeout", "give up after this long")
}

// newFlags returns a verb's flag set with a usage text that shows the
// synopsis, the flags and an example.
func newFlags(env Env, name, synopsis, about, example string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprint(env.Stdout, helpText(name, synopsis, about, flagUsages(fs), example))
	}
	return fs
}

// helpText is a verb's --help: its synopsis, what it does, its flags (a
// section left out when it has none) and an example.
func helpText(name, synopsis, about, flags, example string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s\n\n%s\n\n", strings.TrimSpace("huddle "+name+" "+synopsis), strings.TrimRight(about, "\n"))
	if flags != "" {
		fmt.Fprintf(&b, "Flags:\n%s\n", flags)
	}
	fmt.Fprintf(&b, "Example:\n%s\n", example)
	return b.String()
}

// flagUsages lists fs's flags as pflag's FlagUsages does, but as people
// read a command's help: each value named for what it is (--since TIME,
// --group NAME, not "string" or "stringArray"), a boolean flag bare
// (--json, not pflag's --json[=true|false], which reads as if the value
// had to be given), and no empty default ("(default [])"). Until session
// 21 it was pflag's own text.
func flagUsages(fs *pflag.FlagSet) string {
	type line struct{ head, usage string }
	var lines []line
	width := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		head := "      --" + f.Name
		if f.Shorthand != "" {
			head = "  -" + f.Shorthand + ", --" + f.Name
		}
		name, usage := pflag.UnquoteUsage(f)
		if f.Value.Type() != "bool" {
			head += " " + flagValueName(f.Name, name)
		}
		switch def := f.DefValue; {
		case def == "" || def == "[]" || def == "false" || def == "0" || def == "0s":
		case f.Value.Type() == "string":
			usage += fmt.Sprintf(" (default %q)", def)
		default:
			usage += fmt.Sprintf(" (default %s)", strings.TrimSuffix(strings.TrimPrefix(def, "["), "]"))
		}
		width = max(width, len(head))
		lines = append(lines, line{head, usage})
	})
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%-*s   %s\n", width, l.head, l.usage)
	}
	return b.String()
}

// flagValueName names a flag's value in help: by what the flag takes
// where its type alone says too little (a string is a TIME, a FILE, a
// NAME...), else by its type. typeName is pflag's name for the type.
func flagValueName(flag, typeName string) string {
	if n, ok := flagValueNames[flag]; ok {
		return n
	}
	switch typeName {
	case "int", "float":
		return "N"
	case "duration":
		return "DURATION"
	case "size":
		return "SIZE"
	case "addr", "addrs":
		return "ADDR"
	}
	return "VALUE"
}

// flagValueNames are the value names of the flags whose type is a string
// or a list of them, by flag (the same name means the same thing in every
// verb).
var flagValueNames = map[string]string{
	"advertise": "HOST:PORT", "after": "SEQ", "as": "NAME", "cell-dir": "DIR", "cell-peer": "FP@HOST:PORT",
	"daemon": "FINGERPRINT", "data-dir": "DIR", "fingerprint": "FINGERPRINT", "fsync": "interval|always",
	"group": "NAME", "host": "NAME", "id": "UUID", "iface": "NAME", "listen": "ADDR", "log-format": "text|json",
	"log-level": "LEVEL", "metrics": "ADDR", "pprof": "ADDR", "profile": "DIR", "registry": "ADDR",
	"registry-fingerprint": "FINGERPRINT", "replica": "leader|follower", "secret-file": "FILE", "server": "HOST:PORT",
	"since": "TIME", "state-dir": "DIR", "storage": "disk|memory",
}

// parse parses args; it returns (code, false) when the verb should exit now
// (help was asked for, or the flags were wrong).
func parse(fs *pflag.FlagSet, args []string) (int, bool) {
	return parsed(fs, fs.Parse(args))
}

// parsed is parse for a verb that looked at the error of fs.Parse first.
func parsed(fs *pflag.FlagSet, err error) (int, bool) {
	if errors.Is(err, pflag.ErrHelp) {
		return ExitOK, false
	}
	if err != nil {
		fmt.Fprintf(fs.Output(), "huddle %s: %v%s; run 'huddle %s --help'\n", fs.Name(), err, flagNear(fs, err), fs.Name())
		return ExitUsage, false
	}
	return 0, true
}

// flagNear names the flag of fs an unknown flag was probably meant to be
// (--cell-peers for --cell-peer), as " (did you mean --NAME?)", or "".
func flagNear(fs *pflag.FlagSet, err error) string {
	typed, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok {
		return ""
	}
	typed, _, _ = strings.Cut(typed, "=")
	names := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			names[f.Name] = true
		}
	})
	if near := nearest(typed, names); near != "" {
		return " (did you mean --" + near + "?)"
	}
	return ""
}

// usageErr reports a command-line mistake and returns the usage exit code.
func usageErr(env Env, verb, format string, args ...any) int {
	fmt.Fprintf(env.Stderr, "huddle %s: %s; run 'huddle %s --help'\n", verb, fmt.Sprintf(format, args...), verb)
	return ExitUsage
}

// home returns the directory holding the user's key and pinned registries.
func home(env Env) (string, error) {
	if h := env.Getenv("HUDDLE_HOME"); h != "" {
		return h, nil
	}
	if x := env.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "huddle"), nil
	}
	if h := env.Getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "huddle"), nil
	}
	return "", errors.New("cannot tell where to keep your key: set HUDDLE_HOME or HOME")
}

// stateDir returns the default state directory of a daemon component.
func stateDir(env Env, component string) (string, error) {
	if x := env.Getenv("XDG_STATE_HOME"); x != "" {
		return filepath.Join(x, "huddle", component), nil
	}
	if h := env.Getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "huddle", component), nil
	}
	return "", errors.New("cannot tell where to keep state: give --state-dir or set HOME")
}

// session is what a client verb works with: the user's client and the
// registries it asks.
type session struct {
	env    Env
	verb   string
	flags  *clientFlags
	client *client.Client
	kh     *identity.KnownHosts
	home   string    // $HUDDLE_HOME
	joined joinedSet // the groups the user joined (joined.go); nil if unreadable
	// unwritable: a change of the joined file failed (update): no other
	// is tried.
	unwritable bool
	listed     *listing // set by the first call of listing (locate.go)
	// looking makes the session only look (huddle doctor): it pins no
	// registry and writes no cached listing.
	looking bool
}

// open loads the user's identity; the registries are asked on first use
// (listing). A HUDDLE_REGISTRY that is not a list of addresses is a usage
// error.
func open(ctx context.Context, env Env, verb string, f *clientFlags) (*session, error) {
	for _, a := range strings.Split(env.Getenv("HUDDLE_REGISTRY"), ",") {
		if err := checkRegistryAddr(strings.TrimSpace(a)); err != nil {
			return nil, &usageError{fmt.Sprintf("HUDDLE_REGISTRY: %q: %v", a, err)}
		}
	}
	// A daemon refuses a HUDDLE_ variable nobody reads; a client command
	// says so and goes on (a script's environment may hold its own), so
	// that HUDDLE_REGISTRYS does not leave the registry meant unasked
	// without a word.
	if k, near := unknownSetting(env); k != "" {
		if near != "" {
			near = fmt.Sprintf(" (did you mean %s?)", near)
		}
		fmt.Fprintf(env.Stderr, "huddle %s: warning: %s is not a huddle setting%s: ignored\n", verb, k, near)
	}
	dir, err := home(env)
	if err != nil {
		return nil, err
	}
	id, err := identity.LoadOrCreate(dir)
	if err != nil {
		return nil, err
	}
	kh := openKnownHosts(env, dir)
	// The client is given no KnownHosts: gather checks each registry's pin
	// itself and pins a new one only once no registry's answer refused its
	// key under another name (locate.go). A client that pinned on first
	// use pinned such a key under an address new to the user.
	c, err := client.New(client.Config{Identity: id})
	if err != nil {
		return nil, err
	}
	joined, err := loadJoined(dir)
	if err != nil {
		fmt.Fprintf(env.Stderr, "huddle %s: warning: cannot read the groups you joined (%s); names resolve among all groups\n", verb, plainErr(err))
	}
	return &session{env: env, verb: verb, flags: f, client: c, kh: kh, home: dir, joined: joined}, nil
}

func (s *session) Close() { s.client.Close() }

// group resolves GROUP (a UUID, a unique UUID prefix, or a unique name)
// against the merged listing, preferring the groups the user joined. The
// handle asks the registries that answered where its daemon went, if it
// moves; from a cached listing it keeps the listed addresses.
func (s *session) group(ctx context.Context, ref string) (*client.Group, wire.GroupEntry, error) {
	l, err := s.listing(ctx)
	if err != nil {
		return nil, wire.GroupEntry{}, err
	}
	groups, joined := l.groups, s.joined
	if at := s.flags.daemon; at != nil {
		// The user names the key: no preference of the keys joined
		// before.
		groups, joined = takenAt(groups, *at), nil
	} else if joined != nil {
		groups = joined.trusted(groups)
	}
	e, err := resolveGroup(listedEntries(groups), ref, joined)
	if k, ok := joined.find(e); err == nil && ok && joined.stale(l.groups, k) {
		// The cell's members are not those recorded: ask them.
		if set, changed := s.follow(ctx, joined, []joinedGroup{k}, l.groups); changed {
			s.joined, joined = set, set
			groups = joined.trusted(l.groups)
			e, err = resolveGroup(listedEntries(groups), ref, joined)
		}
	}
	if err != nil {
		return nil, e, err
	}
	lg := listedOf(groups, e)
	if len(l.regs) == 0 {
		g, err := s.client.GroupListed(lg)
		return g, e, err
	}
	g, err := l.regs.GroupListed(lg)
	return g, e, err
}

// takenAt returns the groups of a merged listing that the daemon key at
// serves (huddle join --daemon), a cell's group taken at that member
// alone (its replica set then followed from its word, followCell): a
// rogue registry listing the UUID with the key named beside one of its
// own, leading, had the join, and the user's secret, go to the rogue's
// key, recorded in the set.
func takenAt(groups []client.ListedGroup, at wire.Fingerprint) []client.ListedGroup {
	groups = slices.DeleteFunc(slices.Clone(groups), func(g client.ListedGroup) bool { return !client.ServedBy(g.GroupEntry, at) })
	pinned := joinedSet{}
	for _, g := range groups {
		if len(g.Replicas) > 0 {
			pinned[joinedGroup{g.Group, at}] = joinedLine{cell: []wire.Fingerprint{at}}
		}
	}
	return pinned.trusted(groups)
}

// listedOf returns the group of the merged listing e was resolved from
// (listedEntries): its MemberAddrs, every registry's addresses of a
// cell's members, are dialled too (client.GroupListed). The entry is e.
func listedOf(groups []client.ListedGroup, e wire.GroupEntry) client.ListedGroup {
	for _, g := range groups {
		if g.Group == e.Group && g.Fingerprint == e.Fingerprint && slices.Equal(g.Replicas, e.Replicas) {
			return client.ListedGroup{GroupEntry: e, MemberAddrs: g.MemberAddrs}
		}
	}
	return client.ListedGroup{GroupEntry: e}
}

// listedEntries returns the merged listing's entries for resolveGroup:
// each group's, then a copy under each of its OtherNames, the names other
// registries list it under, which name it too (resolveGroup counts the
// copies as their group once). A rogue registry renaming the real lobby in
// the merged listing (its lease the longest) and listing a group of its
// own as lobby left lobby naming its group alone.
func listedEntries(groups []client.ListedGroup) []wire.GroupEntry {
	entries := make([]wire.GroupEntry, 0, len(groups))
	for _, g := range groups {
		entries = append(entries, g.GroupEntry)
	}
	for _, g := range groups {
		for _, n := range g.OtherNames {
			e := g.GroupEntry
			e.Name = n
			entries = append(entries, e)
		}
	}
	return entries
}

// openKnownHosts returns the known-registries file of the huddle home dir,
// whose changes wait env.LockWait at most for another process's lock.
func openKnownHosts(env Env, dir string) *identity.KnownHosts {
	return identity.OpenKnownHostsWith(filepath.Join(dir, identity.KnownHostsFile), env.locker())
}

// errNoGroup: GROUP matched nothing in the registry's list.
var errNoGroup = errors.New("no such group")

// minPrefix is the shortest UUID prefix GROUP may be.
const minPrefix = 4

// resolveGroup chooses the group ref names among groups: the one whose
// UUID it is, or else the one whose name it is or whose UUID it begins
// (4 characters at least). Anyone may register a group under any name or
// UUID, so a name matching one group and a prefix matching another is
// ambiguous, not decided by a rule a stranger could exploit; and of the
// candidates, the groups the user joined (the set joined, which may be nil)
// win over the others. An ambiguous reference is a usage error listing the
// candidates with their daemons' fingerprints.
func resolveGroup(groups []wire.GroupEntry, ref string, joined joinedSet) (wire.GroupEntry, error) {
	ref = strings.TrimSpace(ref)
	lower := strings.ToLower(ref)
	var exact, others []wire.GroupEntry
	shortMatch := false
	for _, g := range groups {
		id := g.Group.String()
		switch {
		case id == lower:
			exact = append(exact, g)
		case g.Name == ref || ref != "" && joined.nameOf(g) == ref:
			// A group the user joined under ref is named so whatever a
			// registry lists it as now: a rogue registry may rename it in
			// the merged listing (client.Merge takes the name of the
			// entry with the longest lease, its word), and list a group of
			// its own under the name.
			others = append(others, g)
		case len(lower) >= minPrefix && strings.HasPrefix(id, lower):
			others = append(others, g)
		case lower != "" && strings.HasPrefix(id, lower):
			shortMatch = true
		}
	}
	// One group listed under several names (listedEntries) is one
	// candidate, under the name that matched first.
	exact, others = distinctGroups(exact), distinctGroups(others)
	cands := exact
	if len(cands) == 0 {
		cands = others
	}
	if mine := slices.DeleteFunc(slices.Clone(cands), func(g wire.GroupEntry) bool { return !joined.has(g) }); len(mine) > 0 {
		cands = mine
	} else if k, name, ok := joined.meant(ref, cands); ok {
		// ref names a group the user joined, and nothing listed is it:
		// never another group in its place. A stranger's group of its
		// name, or its own UUID listed under another daemon key while its
		// daemon is down (a rogue registry's impostor: anyone may list any
		// UUID under a key of their own), was taken for it; and until
		// session 15's walk, so was that UUID named by the name the
		// impostor lists it under, and the send's success then recorded
		// the impostor's key as joined (session.remember).
		//
		// Unless the user took one of the keys it is listed under (huddle
		// join GROUP --daemon, as the key clash advises; the record of the
		// key joined first stays): that key is theirs, under the name they
		// joined the group by first too, as huddle web shows it. Until
		// session 15's walk the advice followed left the joined name a
		// key clash still.
		taken := distinctGroups(slices.DeleteFunc(slices.Clone(groups), func(g wire.GroupEntry) bool { return g.Group != k.Group || !joined.has(g) }))
		if len(taken) == 1 {
			return taken[0], nil
		}
		var keys []wire.Fingerprint
		seen := make(map[wire.Fingerprint]bool)
		for _, g := range groups {
			if g.Group == k.Group && !seen[g.Fingerprint] {
				seen[g.Fingerprint] = true
				keys = append(keys, g.Fingerprint)
			}
		}
		if len(keys) > 0 {
			return wire.GroupEntry{}, &joinedKeyError{Group: k.Group, Name: name, Joined: k.Daemon, Listed: keys}
		}
		return wire.GroupEntry{}, fmt.Errorf("%w %q listed now: you joined %s (%s, daemon %s), but no registry that answered lists it: its daemon is stopped, or has not registered again yet; 'huddle groups' lists the groups listed now",
			errNoGroup, ref, name, k.Group, k.Daemon.Short())
	}
	switch len(cands) {
	case 1:
		return cands[0], nil
	case 0:
		if shortMatch {
			return wire.GroupEntry{}, &usageError{fmt.Sprintf("%q is too short for a UUID prefix: give at least %d characters of the UUID ('huddle groups' lists them)", ref, minPrefix)}
		}
		if alike := lookalikeGroups(groups, ref); len(alike) > 0 {
			// Not offered as "did you mean": printed, it reads as what the
			// user typed, and copied it names a stranger's group.
			var b strings.Builder
			for _, g := range alike {
				fmt.Fprintf(&b, "\n    %s  %s  daemon %s", g.Group, shown(g.Name), g.Fingerprint.Short())
			}
			return wire.GroupEntry{}, fmt.Errorf("%w %q: only a name that looks like it (other letters drawn alike, or characters shown as nothing) is listed; "+
				"anyone may register any name, so name it by UUID if it is the one you mean:%s", errNoGroup, ref, b.String())
		}
		if near := nearNames(groups, ref); len(near) > 0 {
			return wire.GroupEntry{}, fmt.Errorf("%w %q: did you mean %s? ('huddle groups' lists the groups the registry knows)", errNoGroup, ref, strings.Join(near, " or "))
		}
		return wire.GroupEntry{}, fmt.Errorf("%w %q: 'huddle groups' lists the groups the registry knows", errNoGroup, ref)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%q matches %d groups; name one by UUID:", ref, len(cands))
	for _, c := range cands {
		mark := ""
		if joined.has(c) {
			mark = "  (joined)"
		}
		fmt.Fprintf(&b, "\n    %s  %s  %s  daemon %s%s", c.Group, shown(c.Name), shown(strings.Join(c.Addrs, ",")), c.Fingerprint.Short(), mark)
	}
	if len(exact) > 1 {
		b.WriteString("\n  the same UUID is listed under several daemon keys: someone registered a group under another's UUID; ask its owner which daemon is theirs")
	}
	return wire.GroupEntry{}, &usageError{b.String()}
}

// joinedKeyError: GROUP names a group the user joined at the daemon key
// Joined, which no registry that answered lists now, and registries list
// its UUID under other keys (Listed) only. Those are not used without the
// user saying so (huddle join --daemon): its daemon may be stopped and a
// rogue registry listing an impostor in its place, or its owner may have
// moved it to a new key.
type joinedKeyError struct {
	Group  wire.UUID
	Name   string // the name it was joined under
	Joined wire.Fingerprint
	Listed []wire.Fingerprint
	// Leaving: the command is huddle leave, which the advice to join the
	// other key does not serve (followed, it joins what may be an
	// impostor's group). Set by withGroup.
	Leaving bool
}

// maxKeysShown bounds the listed keys a key clash names.
const maxKeysShown = 4

func (e *joinedKeyError) Error() string {
	// At most maxKeysShown keys: a rogue registry listing the UUID under
	// a thousand keys made each of huddle groups' thousand held rows
	// carry an advice naming all of them (14 MB, quadratic in the listing).
	var listed []string
	for _, fp := range e.Listed[:min(len(e.Listed), maxKeysShown)] {
		listed = append(listed, fp.Short())
	}
	if more := len(e.Listed) - len(listed); more > 0 {
		listed = append(listed, fmt.Sprintf("%d other %s", more, plural(more, "key", "keys")))
	}
	group := e.Group.String()
	if e.Name != "" {
		group = fmt.Sprintf("%s (%s)", shown(e.Name), e.Group)
	}
	at := "FINGERPRINT"
	if len(e.Listed) == 1 {
		at = e.Listed[0].String()
	}
	what := fmt.Sprintf("If its owner tells you it moved to that key, join it there: huddle join %s --daemon %s", e.Group, at)
	if e.Leaving {
		what = fmt.Sprintf("A leave is asked of the daemon you joined: leave again once a registry lists the group under %s "+
			"(huddle join --daemon would join it at the other key, not leave it)", e.Joined.Short())
	}
	return fmt.Sprintf("group %s: key clash: you joined it at daemon %s, which no registry that answered lists now; "+
		"registries list its UUID only under daemon %s, not the key you joined, so it is not used (its daemon may be stopped "+
		"and someone listing an impostor in its place: anyone may list any UUID). %s", group, e.Joined.Short(), strings.Join(listed, " and "), what)
}

// distinctGroups returns es without the entries of a group (UUID and
// daemon key) met earlier in es.
func distinctGroups(es []wire.GroupEntry) []wire.GroupEntry {
	seen := make(map[joinedGroup]bool, len(es))
	return slices.DeleteFunc(es, func(e wire.GroupEntry) bool {
		k := joinedGroup{e.Group, e.Fingerprint}
		if seen[k] {
			return true
		}
		seen[k] = true
		return false
	})
}

// lookalikeGroups returns the groups whose names look like ref without
// being it (lookalike: "lоbby" with a Cyrillic о for "lobby").
func lookalikeGroups(groups []wire.GroupEntry, ref string) []wire.GroupEntry {
	look := lookalike(ref)
	var alike []wire.GroupEntry
	for _, g := range groups {
		if g.Name != ref && lookalike(g.Name) == look {
			alike = append(alike, g)
		}
	}
	return alike
}

// nearNames returns the names of groups that ref is a slip away from
// (edit distance, ignoring case, under half the name's length and at most
// 2), nearest first, at most three: a typed name that matched nothing.
func nearNames(groups []wire.GroupEntry, ref string) []string {
	type near struct {
		name string
		d    int
	}
	var found []near
	lower := strings.ToLower(ref)
	for _, g := range groups {
		if g.Name == "" || slices.ContainsFunc(found, func(n near) bool { return n.name == g.Name }) {
			continue
		}
		if d := editDistance(lower, strings.ToLower(g.Name)); d <= 2 && 2*d < len([]rune(g.Name)) {
			found = append(found, near{g.Name, d})
		}
	}
	slices.SortFunc(found, func(a, b near) int { return cmp.Or(cmp.Compare(a.d, b.d), cmp.Compare(a.name, b.name)) })
	names := make([]string, 0, min(len(found), 3))
	for _, n := range found[:min(len(found), 3)] {
		names = append(names, n.name)
	}
	return names
}

// usageError is a mistake in what the user asked for (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// fail reports err for verb on stderr with advice, and returns the exit
// code it deserves.
func fail(env Env, verb string, err error) int {
	msg, code := explain(err)
	fmt.Fprintf(env.Stderr, "huddle %s: %s\n", verb, msg)
	return code
}

// explain turns an error into a message that says what failed and what to
// do, and the exit code for it. The texts of errors go through shown (one
// line, no control or format character): they quote what peers chose (a
// group's listed name in the client's own errors, the addresses a
// registry lists, an mDNS instance name), and a rogue registry's name
// holding a line break and a bidirectional override wrote a line of its
// own on stderr, or in huddle chat, after "huddle watch: " (until session
// 17).
//
// A send whose outcome is unknown (client.ErrInDoubt: its request may have
// reached the daemon, and no answer came) exits 3, or 130 if interrupted,
// whatever else its error says: exit 1 tells a script nothing was stored,
// and a send cut short whose redial met another key (exit 1 as a key
// mismatch), or whose daemon closed the connection as it stopped (exit 1
// as unavailable), was told so (until session 19), though the daemon may
// have stored it. A retry with the same IDs settles it (stored once).
func explain(err error) (string, int) {
	msg, code := explainCause(err)
	if errors.Is(err, client.ErrInDoubt) {
		if client.RefusedWhole(err) {
			// This request was refused whole (its refusal may say "nothing
			// was stored"), and its doubt is an earlier try's of the same
			// messages: said as one text, the refusal's words contradicted
			// the doubt (until session 19, K).
			msg = outcomeUnknown + " (an earlier try of it may have been stored; only an ack of a try under the same ID settles it): this send was refused and stored nothing itself: " + msg
		} else if !strings.Contains(msg, outcomeUnknown) {
			msg = outcomeUnknown + " (it may have been stored): " + msg
		}
		if code != ExitInterrupted {
			code = ExitUnreachable
		}
	}
	return msg, code
}

// outcomeUnknown begins the text of client.ErrInDoubt's errors.
const outcomeUnknown = "outcome unknown"

// explainCause is explain's text and exit code for what err says went
// wrong.
func explainCause(err error) (string, int) {
	var ue *usageError
	var ce *identity.ChangedError
	var mm *identity.MismatchError
	var we *wire.Error
	var dns *net.DNSError
	var nre *noRegistryError
	var eu *explainedUnreachable
	var rf *refusal
	var nl *client.NotListedError
	_, refusedBefore := client.LastRefusal(err)
	switch {
	case errors.As(err, &ue):
		return ue.msg, ExitUsage
	case errors.As(err, &eu):
		return eu.msg, ExitUnreachable
	case errors.As(err, &rf):
		return rf.msg, ExitRefused
	case errors.As(err, &ce):
		// Its text is lines of its own (ssh's layout), the name in them
		// shown as wire.Shown shows it: each line is shown, and the
		// lines kept. Shown whole, its line breaks were U+FFFD, the
		// fingerprints and the advice run into one line (since session
		// 17's d0d501d).
		lines := strings.Split(ce.Error(), "\n")
		for i := range lines {
			lines[i] = shown(lines[i])
		}
		return strings.Join(lines, "\n"), ExitRefused
	case errors.As(err, &mm):
		return fmt.Sprintf("%s; the daemon's key is not the one the registry lists: the listing may be stale (try again in a few seconds) or someone is impersonating it", shown(err.Error())), ExitRefused
	case errors.As(err, &nre):
		return nre.Error(), ExitUnreachable
	case errors.As(err, &dns):
		return fmt.Sprintf("cannot find the host %q (%s); check the name in --registry or HUDDLE_REGISTRY", dns.Name, dns.Err), ExitUnreachable
	case errors.As(err, &nl):
		// Before ErrUnreachable, whose advice (give a registry's address)
		// is wrong here: registries answered, and said the group is gone.
		return fmt.Sprintf("%s; 'huddle groups' lists the groups listed now", shown(err.Error())), ExitUnreachable
	case refusedBefore && !errors.Is(err, context.Canceled):
		// Before the deadline's: the cell's members answered.
		return cellRefusedText(err), ExitUnreachable
	case errors.Is(err, context.DeadlineExceeded):
		// Before ErrUnreachable: a dial the deadline cut short is both.
		return fmt.Sprintf("%s: timed out; is the daemon running and reachable over UDP? (raise --timeout for slow links)", shown(withoutGoText(err))), ExitUnreachable
	case errors.Is(err, client.ErrUnreachable):
		return fmt.Sprintf("%s\n  is it running (huddle up, huddle registry, huddle serve) and reachable over UDP? give the registry's address with --registry HOST:PORT or HUDDLE_REGISTRY", shown(err.Error())), ExitUnreachable
	case errors.Is(err, errNoGroup):
		return shown(err.Error()), ExitRefused
	case errors.As(err, &we):
		return shown(we.Error()) + advice(we), ExitRefused
	case errors.Is(err, context.Canceled):
		return "interrupted", ExitInterrupted
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return shown(err.Error()), ExitUnreachable
	}
	return shown(err.Error()), ExitRefused
}

// cellRefusedText is explainCause's text for err, a call to a cell that
// ended unanswered after a member had refused it (client.LastRefusal):
// the members were running, and the cell had no leader (an election
// outlasting the tries). Until session 23 a send so ended said "timed out; is the daemon running and
// reachable over UDP? (raise --timeout for slow links)": but the members
// had answered, and a send in doubt is retried 10 s at most whatever
// --timeout says. A send's own lines then give the --id to send it again
// under (send.go), which stores it once.
func cellRefusedText(err error) string {
	then := "try again shortly (huddle cell status --server MEMBER shows the cell's leader)"
	if errors.Is(err, client.ErrInDoubt) {
		then = "no leader settled it before the tries ended (at --timeout, or 10 s after the first try in doubt, whichever came first: a longer --timeout does not lengthen the latter); " +
			"send it again with the same --id once the cell has a leader (huddle cell status --server MEMBER shows it): it is stored once"
	}
	return fmt.Sprintf("%s; the cell's members were running and answered, and the cell had no leader: an election outlasted the tries; %s", shown(withoutGoText(err)), then)
}

// refusal is a server's refusal with what to do about it already said:
// printed as it is (exit code ExitRefused).
type refusal struct{ msg string }

func (e *refusal) Error() string { return e.msg }

func advice(we *wire.Error) string {
	switch we.Code {
	case wire.CodeNotMember:
		return "; join the group first: huddle join GROUP"
	case wire.CodeUnauthorized:
		return "; this key may not do that (for a private group, give the right --secret-file)"
	case wire.CodeNotFound:
		return "; 'huddle groups' lists the groups that exist now"
	case wire.CodeTooLarge:
		return "; 'huddle info GROUP' shows the group's limits"
	case wire.CodeRateLimited:
		return "; slow down"
	case wire.CodeUnavailable:
		// Not a cause of its own: a group whose log cannot store
		// messages (its disk full, read-only or failing) answers
		// unavailable too, and "busy or shutting down" contradicted it.
		return "; try again shortly (the daemon cannot take it now: busy, shutting down, or its storage full or failing, which its log says)"
	case wire.CodeEpochMismatch:
		return "; the group's history was reset (its daemon restarted): fetch again without --after"
	case wire.CodeWindowPassed:
		// A retry of messages in doubt (PROTOCOL.md §8.5): sent again
		// under the same IDs they may be stored twice.
		return "; the earlier send may still be stored: sending it again under the same ID may store it a second time"
	}
	return ""
}

// plainErr returns what an operating-system error says without the
// operation and path Go puts before it ("open /x: permission denied"
// becomes "permission denied"), for messages that name the file already.
func plainErr(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// withoutGoText drops the Go runtime's own phrases from an error's text,
// where the message goes on to say the same in words a user reads.
func withoutGoText(err error) string {
	msg := err.Error()
	for _, goText := range []string{": context deadline exceeded", "context deadline exceeded: ", "context deadline exceeded",
		": context canceled", "context canceled"} {
		msg = strings.ReplaceAll(msg, goText, "")
	}
	if msg == "" {
		msg = "no answer"
	}
	return msg
}

// printJSON writes v as one line of JSON.
func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(escapeJSON(b), '\n')
	_, err = w.Write(b)
	return err
}

// localTime formats a server timestamp for people.
func localTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05.000") }

// jsonTime formats a server timestamp for programs: RFC 3339 in UTC with
// all nine digits of nanoseconds. The fixed width (time.RFC3339Nano drops
// trailing zeros) makes the strings sort as the times do.
func jsonTime(t time.Time) string { return t.UTC().Format(jsonTimeLayout) }

const jsonTimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// parseTime reads TIME: RFC 3339; a date, or a date and time, without a
// zone, in local time (2026-12-05, 2026-12-05 09:15, 2026-12-05T09:15:30);
// Unix seconds (0 is 1970); or how long ago, as a Go duration or in days
// and weeks (10m, 2h, 10d, 1w, 1d12h).
func parseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range localLayouts {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	// Unix seconds before durations: "0" is the epoch, not "0s ago".
	if t, ok := unixSeconds(s); ok {
		return t, nil
	}
	if d, ok := agoDuration(s); ok {
		if d < 0 {
			return time.Time{}, fmt.Errorf("duration %q is negative; give how long ago, like 10m", s)
		}
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: not a time: give a date and time (2026-01-02T15:04:05Z, or 2026-01-02 15:04 in local time), a date (2026-01-02), Unix seconds, or how long ago (10m, 2h, 10d)", s)
}

// localLayouts are the times without a zone that TIME accepts, read in
// local time.
var localLayouts = []string{
	"2006-01-02",
	"2006-01-02 15:04",
	"2006-01-02 15:04:05",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04",
	"2006-01-02T15:04:05",
	"2006-01-02T15:04:05.999999999",
}

// agoDuration reads a Go duration whose largest units may also be days (d,
// 24 h) and weeks (w, 7 d): "10d", "1w2d", "1d12h".
func agoDuration(s string) (time.Duration, bool) {
	var total time.Duration
	rest := s
	neg := strings.HasPrefix(rest, "-")
	rest = strings.TrimPrefix(rest, "-")
	for _, u := range []struct {
		suffix byte
		d      time.Duration
	}{{'w', 7 * 24 * time.Hour}, {'d', 24 * time.Hour}} {
		i := strings.IndexByte(rest, u.suffix)
		if i < 0 {
			continue
		}
		n, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil || n < 0 {
			return 0, false
		}
		total += time.Duration(n * float64(u.d))
		rest = rest[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 {
			return 0, false
		}
		total += d
	}
	if rest == s {
		// Neither days nor weeks: a plain Go duration, which needs a unit
		// (so "10" is not taken for 10 ns ago).
		if _, err := time.ParseDuration(s); err != nil {
			return 0, false
		}
	}
	if neg {
		total = -total
	}
	return total, true
}

// withGroup runs fn against GROUP for a client verb, within --timeout, and
// turns its error into a report and an exit code.
func withGroup(ctx context.Context, env Env, verb string, cf *clientFlags, ref string,
	fn func(ctx context.Context, s *session, g *client.Group, e wire.GroupEntry) error) int {
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	s, err := open(ctx, env, verb, cf)
	if err != nil {
		return fail(env, verb, err)
	}
	defer s.Close()
	g, e, err := s.group(ctx, ref)
	if ke := (*joinedKeyError)(nil); errors.As(err, &ke) && verb == "leave" {
		ke.Leaving = true
	}
	if err != nil {
		return fail(env, verb, err)
	}
	if err := fn(ctx, s, g, e); err != nil {
		return fail(env, verb, groupAdvice(err, ref))
	}
	return ExitOK
}

// groupAdvice returns err, if the group refused it because the user is not
// a member, as a refusal naming the command that joins GROUP as the user
// typed it (advice's generic "huddle join GROUP" left them to find the
// group's name again), and, if it refused a message as too large, the
// command that shows that group's limits (it said "huddle info GROUP"
// until session 21); other errors are returned as they are.
func groupAdvice(err error, ref string) error {
	var we *wire.Error
	if !errors.As(err, &we) || errors.Is(err, client.ErrInDoubt) {
		// A send in doubt stays so (explain), whatever its retry was
		// told.
		return err
	}
	switch we.Code {
	case wire.CodeNotMember:
		return &refusal{fmt.Sprintf("%v; join the group first: huddle join %s", err, shellWord(strings.TrimSpace(ref)))}
	case wire.CodeTooLarge:
		return &refusal{fmt.Sprintf("%v; its limits: huddle info %s", err, shellWord(strings.TrimSpace(ref)))}
	}
	return err
}

// oneGroup checks that exactly one GROUP argument was given.
func oneGroup(env Env, verb string, args []string) (string, int, bool) {
	if len(args) != 1 {
		return "", usageErr(env, verb, "want one GROUP (a name, UUID or UUID prefix), got %d arguments", len(args)), false
	}
	return args[0], 0, true
}

// unixSeconds reads "SECONDS[.FRACTION]" exactly (no float rounding: a
// timestamp copied from --json output must select the same message).
func unixSeconds(s string) (time.Time, bool) {
	whole, frac, _ := strings.Cut(s, ".")
	secs, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || secs < 0 || len(frac) > 9 {
		return time.Time{}, false
	}
	var ns int64
	if frac != "" {
		n, err := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		if err != nil || n < 0 {
			return time.Time{}, false
		}
		ns = n
	}
	return time.Unix(secs, ns), true
}

// plural returns one when n is 1, else many.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// count says "n things", with the right form of thing.
func count(n uint64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
