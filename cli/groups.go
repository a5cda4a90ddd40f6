package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func runGroups(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	fs := newFlags(env, "groups", "[--registry ADDR]... [--json]",
		"List the groups whose daemons are registered now, with every registry asked: those given, else this\nmachine's, those that answered last time and those found over mDNS, merged by group UUID and daemon\nkey. When no registry answers, the last listing (cached in $HUDDLE_HOME) is shown, with its age.",
		"  huddle groups\n  huddle groups --json | jq -r .name")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(env, "groups", "unexpected argument %q", fs.Arg(0))
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	s, err := open(ctx, env, "groups", &cf)
	if err != nil {
		return fail(env, "groups", err)
	}
	defer s.Close()
	l, err := s.listing(ctx)
	if err != nil {
		return fail(env, "groups", err)
	}
	// The groups as the other commands take them: a cell's group the user
	// joined is one row of its recorded members (joinedSet.trusted). A
	// rogue registry's listing of its UUID with one real member's key
	// beside one of its own, leading, was a row of its own, under the
	// joined name: the group, as far as the table told, at the rogue's key.
	//
	// A cell's group whose listings name members other than those
	// recorded (its operator replaced one; or a rogue's listing) is asked
	// who its members are, as a command naming it asks (session.group):
	// a member the operator added is shown once the cell says so, never
	// on a listing's word.
	// Every such cell at once (followCells).
	joined := s.joined
	var stale []joinedGroup
	for k := range joined {
		if joined.stale(l.groups, k) {
			stale = append(stale, k)
		}
	}
	slices.SortFunc(stale, func(a, b joinedGroup) int {
		return cmp.Or(slices.Compare(a.Group[:], b.Group[:]), slices.Compare(a.Daemon[:], b.Daemon[:]))
	})
	joined, _ = s.follow(ctx, joined, stale, l.groups)
	s.joined = joined
	groups := joined.trusted(l.groups)
	held := joined.held(groups)
	for i := range groups {
		if h := held[joinedGroup{groups[i].Group, groups[i].Fingerprint}]; h != nil {
			groups[i] = named(groups[i], h.Name)
		} else {
			groups[i] = joinedName(groups[i], s.joined)
		}
	}
	slices.SortStableFunc(groups, func(a, b client.ListedGroup) int { return strings.Compare(a.Name, b.Name) })
	heldOf := func(g client.ListedGroup) *joinedKeyError { return held[joinedGroup{g.Group, g.Fingerprint}] }
	if cf.json {
		for _, g := range groups {
			j := groupJSON{
				UUID: g.Group.String(), Name: g.Name, Addrs: g.Addrs,
				Fingerprint: g.Fingerprint.String(), Members: g.Members, LastSeq: g.LastSeq,
				OtherNames: g.OtherNames,
			}
			if h := heldOf(g); h != nil {
				j.Held, j.JoinedDaemon, j.Advice = true, h.Joined.String(), h.Error()
			}
			for _, fp := range g.ListedBy {
				j.ListedBy = append(j.ListedBy, fp.String())
			}
			for _, r := range g.Replicas {
				j.Replicas = append(j.Replicas, replicaJSON{Addr: r.Addr, Fingerprint: r.Fingerprint.String(), Leader: r.Leader})
			}
			printJSON(env.Stdout, j)
		}
		return ExitOK
	}
	if len(groups) == 0 {
		fmt.Fprintf(env.Stderr, "no groups registered at %s yet (start one with: huddle serve --group NAME)\n", l.where())
		return ExitOK
	}
	head := []string{"NAME", "UUID", "MEMBERS", "MESSAGES", "ADDRESS", "DAEMON"}
	several := len(l.regs) > 1
	if several {
		head = append(head, "REGISTRIES")
	}
	// The names other registries list a group under: one of them may be
	// the name the user knows it by (a rogue registry renaming the real
	// lobby in the merged listing, or two registries that disagree).
	renamed := slices.ContainsFunc(groups, func(g client.ListedGroup) bool { return len(g.OtherNames) > 0 })
	if renamed {
		head = append(head, "ALSO LISTED AS")
	}
	rows := [][]string{head}
	var advice []string
	for _, g := range groups {
		daemon := g.Fingerprint.Short()
		if len(g.Replicas) > 0 {
			daemon += fmt.Sprintf(" (leads a cell of %d)", len(g.Replicas))
		}
		if h := heldOf(g); h != nil {
			daemon += " (held: not the key you joined)"
			// Once per group: its rows (one a key listing it) share
			// the advice.
			if a := h.Error(); !slices.Contains(advice, a) {
				advice = append(advice, a)
			}
		}
		row := []string{g.Name, g.Group.String(), fmt.Sprint(g.Members), fmt.Sprint(g.LastSeq),
			strings.Join(g.Addrs, ","), daemon}
		if several {
			row = append(row, fmt.Sprintf("%d of %d", len(g.ListedBy), len(l.regs)))
		}
		if renamed {
			row = append(row, otherNames(g.OtherNames))
		}
		rows = append(rows, row)
	}
	writeTable(env.Stdout, rows)
	// Why each held group is not used, and what takes it (the key clash
	// a send to it gets): the table alone gave no sign that a group the
	// user joined is held, listed only under a key they did not join it at.
	for _, a := range advice {
		fmt.Fprintf(env.Stderr, "huddle groups: held: %s\n", a)
	}
	if failed := l.failed(); len(failed) > 0 && l.cached == nil {
		fmt.Fprintf(env.Stderr, "listed by %s; not answering: %s\n", l.where(), strings.Join(failed, "; "))
	}
	return ExitOK
}

// joinedName returns g named as the user joined it, if they did under
// another name than the registries' (client.Merge's, the latest lease's),
// that name among its other names: a group is known by the name it was
// joined under (resolveGroup, huddle web), and huddle groups showed the
// registries' name alone, so that the CLI and the page named a renamed
// group differently.
func joinedName(g client.ListedGroup, joined joinedSet) client.ListedGroup {
	return named(g, joined.nameOf(g.GroupEntry))
}

// held returns, by UUID and key, the key clash of each listing in groups
// of a UUID the user joined at other keys, none of which is listed: the
// refusal a command naming it gets (resolveGroup), its advice included.
func (j joinedSet) held(groups []client.ListedGroup) map[joinedGroup]*joinedKeyError {
	out := make(map[joinedGroup]*joinedKeyError)
	entries := listedEntries(groups)
	joinedUUIDs := make(map[wire.UUID]bool)
	for k := range j {
		joinedUUIDs[k.Group] = true
	}
	// Each UUID is resolved once, for all its rows: a rogue registry
	// listing a joined UUID under thousands of keys had it resolved once
	// a row, over every entry (3,000 keys: 80 s of CPU).
	clash := make(map[wire.UUID]*joinedKeyError)
	for _, g := range groups {
		if j.has(g.GroupEntry) || !joinedUUIDs[g.Group] {
			continue
		}
		ke, done := clash[g.Group]
		if !done {
			if _, err := resolveGroup(entries, g.Group.String(), j); !errors.As(err, &ke) {
				ke = nil
			}
			clash[g.Group] = ke
		}
		if ke != nil {
			out[joinedGroup{g.Group, g.Fingerprint}] = ke
		}
	}
	return out
}

// named returns g under name, the name the user joined it under, the
// registries' name among its other names; g as it is for "" or its name.
func named(g client.ListedGroup, name string) client.ListedGroup {
	if name == "" || name == g.Name {
		return g
	}
	others := []string{g.Name}
	for _, n := range g.OtherNames {
		if n != name {
			others = append(others, n)
		}
	}
	g.Name, g.OtherNames = name, others
	return g
}

// otherNames returns a group's other names for huddle groups' table:
// each through shown and quoted (a name may hold a space or a comma), "-"
// for none.
func otherNames(names []string) string {
	if len(names) == 0 {
		return "-"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(shown(n))
	}
	return strings.Join(q, ", ")
}

// groupJSON is a group in --json output.
type groupJSON struct {
	UUID        string   `json:"uuid"`
	Name        string   `json:"name"`
	Addrs       []string `json:"addrs"`
	Fingerprint string   `json:"fingerprint"`
	Members     uint64   `json:"members"`
	LastSeq     uint64   `json:"last_seq"`
	ListedBy    []string `json:"listed_by,omitempty"` // the fingerprints of the registries that list it
	// OtherNames are the names other registries list it under, besides
	// name (client.ListedGroup.OtherNames), as they came.
	OtherNames []string `json:"other_names,omitempty"`
	// Held: the user joined this UUID at another key (joined_daemon),
	// which no registry that answered lists now; this key is not used
	// until they take it (huddle join UUID --daemon KEY): advice says
	// why and how, as a command naming the group says in its key clash.
	Held         bool   `json:"held,omitempty"`
	JoinedDaemon string `json:"joined_daemon,omitempty"`
	Advice       string `json:"advice,omitempty"`
	// Replicas are the members of the cell that replicates the group
	// (absent for a group of one daemon); addrs and fingerprint are then
	// its leader's.
	Replicas []replicaJSON `json:"replicas,omitempty"`
}

// replicaJSON is a member of a group's cell in --json output.
type replicaJSON struct {
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint"`
	Leader      bool   `json:"leader,omitempty"`
}
