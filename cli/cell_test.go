package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/wire"
)

// TestCellThreeDaemons walks README's three-host cell on loopback: three
// huddle serve verbs with the same --cell-peer list register one group
// that the registry lists once, with its three replicas; a user joins,
// sends and fetches through it; huddle cell status shows one leader and
// every member applied as far, in text and in --json.
func TestCellThreeDaemons(t *testing.T) {
	// At debug level the registry logs every registration, each member's
	// again as it learns of a leader: the listing is asked again then.
	reg := startVerb(t, nil, "registry", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--log-level", "debug")
	regAddr := strings.Replace(reg.waitLine(t, upLine), "0.0.0.0", "127.0.0.1", 1)
	type host struct{ dir, addr, fp string }
	var hosts []host
	var peers []string
	for range 3 {
		dir := t.TempDir()
		id, addr := cellHost(t, dir)
		hosts = append(hosts, host{dir, addr, id.Fingerprint().String()})
		peers = append(peers, "--cell-peer", id.Fingerprint().String()+"@"+addr)
	}
	var verbs []*daemonVerb
	var argsOf [][]string
	for _, h := range hosts {
		args := append([]string{"serve", "--no-mdns", "--registry", regAddr, "--listen", h.addr, "--state-dir", h.dir,
			"--group", "general", "--log-level", "warn"}, peers...)
		verbs = append(verbs, startVerb(t, nil, args...))
		argsOf = append(argsOf, args)
	}
	u := newTestUser(t, regAddr)
	var listed groupJSON
	awaitLines(t, "the registry lists the group with 3 replicas and a leader", reg.stderr, registered, func() bool {
		_, out, _ := u.run(t, "groups", "--json")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) > 1 {
			t.Fatalf("the registry lists the cell's group %d times, want once:\n%s", len(lines), out)
		}
		if lines[0] == "" {
			return false
		}
		if err := json.Unmarshal([]byte(lines[0]), &listed); err != nil {
			t.Fatalf("groups --json: %v\n%s", err, out)
		}
		return len(listed.Replicas) == 3 && leaderOf(listed) != ""
	})
	if listed.Fingerprint != leaderOf(listed) {
		t.Fatalf("the listing names daemon %s, its leader is %s", listed.Fingerprint, leaderOf(listed))
	}
	u.ok(t, "join", "general", "--as", "ann")
	u.ok(t, "send", "general", "hello cell")
	out := u.ok(t, "fetch", "general", "--json")
	if !strings.Contains(out, "hello cell") {
		t.Fatalf("fetch after send:\n%s", out)
	}
	// huddle info says the group is replicated, by which members, and what
	// an acknowledgment means there: it showed one daemon and that
	// daemon's durability, as for a group of one.
	// The member that answers marks the leader it knows: none while the
	// cell elects (a loaded machine misses heartbeats, as below), so info
	// is asked again until one is marked.
	for deadline := time.Now().Add(waitTimeout); ; {
		info := u.ok(t, "info", "general")
		var lacks string
		for _, want := range []string{"replicated by", "a cell of 3 members", "(leader)", "held by a majority of the cell"} {
			if !strings.Contains(info, want) {
				lacks = want
				break
			}
		}
		if lacks == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("huddle info of a cell's group does not say %q:\n%s", lacks, info)
		}
		<-time.After(50 * time.Millisecond) // polling a condition, with a deadline
	}
	var infoJSON struct {
		Replicas []replicaJSON `json:"replicas"`
	}
	if err := json.Unmarshal([]byte(u.ok(t, "info", "general", "--json")), &infoJSON); err != nil || len(infoJSON.Replicas) != 3 {
		t.Errorf("huddle info --json of a cell's group: replicas %+v (%v), want the 3 members", infoJSON.Replicas, err)
	}

	var st struct {
		Leader  struct{ Addr, Fingerprint string }
		Term    uint64
		Members []struct {
			Addr, Fingerprint, State string
			AppliedIndex             uint64 `json:"applied_index"`
			Lag                      *uint64
		}
		Groups []struct {
			Name    string
			LastSeq uint64 `json:"last_seq"`
		}
	}
	// cell status is a question that no event answers (no member says
	// when it applied an entry): it is asked again until it holds.
	deadline := time.Now().Add(waitTimeout)
	for {
		out = u.ok(t, "cell", "status", "--server", hosts[2].addr, "--json")
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("cell status --json: %v\n%s", err, out)
		}
		caughtUp := len(st.Members) == 3
		leaders := 0
		for _, m := range st.Members {
			caughtUp = caughtUp && m.Lag != nil && *m.Lag == 0
			if m.State == "leader" {
				leaders++
			}
		}
		// The leader may have changed since the listing above (a loaded
		// machine misses heartbeats): the one status names must lead.
		if caughtUp && leaders == 1 && st.Leader.Fingerprint != "" && len(st.Groups) == 1 && st.Groups[0].LastSeq == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cell status never showed one leader and three members caught up:\n%s", out)
		}
		<-time.After(50 * time.Millisecond) // polling a condition, with a deadline
	}
	// Asked again while the cell elects (the text then names no leader).
	for deadline = time.Now().Add(waitTimeout); ; {
		text := u.ok(t, "cell", "status", "--server", hosts[0].addr)
		var lacks string
		for _, want := range []string{"cell of 3 members; leader", "APPLIED", "LAG", "(leader)", "general (1 message, 1 member)"} {
			if !strings.Contains(text, want) {
				lacks = want
				break
			}
		}
		if lacks == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cell status lacks %q:\n%s", lacks, text)
		}
		<-time.After(50 * time.Millisecond) // polling a condition, with a deadline
	}
	// Changing the cell needs a member's key: the user's is refused.
	code, _, errs := u.run(t, "cell", "remove", "--server", hosts[0].addr, hosts[1].fp)
	if code != ExitRefused || !strings.Contains(errs, "HUDDLE_HOME=that daemon's --state-dir") || strings.Contains(errs, "secret") {
		t.Fatalf("cell remove with a user's key: exit %d, stderr:\n%s", code, errs)
	}

	// A member that is down: status from another lists it unreachable
	// (after its table, why), without waiting on it longer than a member
	// gets; asked itself, a clear error.
	verbs[1].stop(t)
	var text string
	code, text, errs = u.run(t, "cell", "status", "--server", hosts[0].addr, "--timeout", "1m")
	if code != ExitOK {
		t.Fatalf("cell status with a member down: exit %d\n%s", code, errs)
	}
	gone := strings.Split(hosts[1].fp, "-")[0]
	for _, want := range []string{gone, "unreachable  -", "unreachable:\n  " + gone, hosts[1].addr + ": no answer after "} {
		if !strings.Contains(text, want) {
			t.Fatalf("cell status with a member down lacks %q:\n%s", want, text)
		}
	}
	code, _, errs = u.run(t, "cell", "status", "--server", hosts[1].addr)
	if code != ExitUnreachable || !strings.Contains(errs, hosts[1].addr+": no answer after 2s: is it running") {
		t.Fatalf("cell status at a member that is down: exit %d, stderr:\n%s", code, errs)
	}

	// A member added whose daemon does not run: it stays a member that
	// does not vote, and status says so in its row, in text as in --json
	// (the text used to say only "unreachable", like a voter that is down).
	id, addr := cellHost(t, t.TempDir())
	absent := id.Fingerprint().String() + "@" + addr
	op := &testUser{home: hosts[0].dir, registry: regAddr} // a member's key
	if out := op.ok(t, "cell", "add", "--wait", "0", "--server", hosts[0].addr, absent); !strings.Contains(out, absent+"  (catching up: no vote yet)") {
		t.Fatalf("cell add --wait 0 of a daemon that does not run printed:\n%s", out)
	}
	short := id.Fingerprint().Short()
	text = u.ok(t, "cell", "status", "--server", hosts[2].addr)
	if !strings.Contains(text, "cell of 4 members") || !strings.Contains(text, "unreachable, catching up (no vote)  -") || !strings.Contains(text, "\nunreachable:\n") || !strings.Contains(text, "\n  "+gone) || !strings.Contains(text, "\n  "+short+": ") {
		t.Fatalf("cell status with a member added that does not run:\n%s", text)
	}
	var js struct {
		Members []struct {
			Fingerprint, Error string
			Voter              bool
			CatchingUp         bool `json:"catching_up"`
		}
	}
	out = u.ok(t, "cell", "status", "--server", hosts[2].addr, "--json")
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatalf("cell status --json: %v\n%s", err, out)
	}
	found := false
	for _, m := range js.Members {
		if m.Fingerprint == id.Fingerprint().String() {
			found = true
			if m.Voter || !m.CatchingUp || m.Error == "" {
				t.Errorf("cell status --json shows the member added that does not run as %+v, want no vote, catching up, an error", m)
			}
		}
	}
	if !found {
		t.Errorf("cell status --json does not list the member added:\n%s", out)
	}

	// The member that was down, restarted with its state, says what is
	// true of it: the cell has created its groups already (it used to say
	// it waited for the cell to create them), and it serves them once it
	// has applied the cell's log up to them (at once, had its snapshot
	// held them).
	again := startVerb(t, nil, argsOf[1]...)
	again.waitLine(t, regexp.MustCompile(`(?m)^  group general  (\S+)`))
	if said := again.stdout.String(); strings.Contains(said, "create the groups") {
		t.Fatalf("a restarted member said it waits for the cell to create the groups:\n%s", said)
	}
}

// registered matches the registry's log line of a registration, a
// member's first or one again (at debug level).
var registered = regexp.MustCompile(`msg="group registered`)

func leaderOf(g groupJSON) string {
	for _, r := range g.Replicas {
		if r.Leader {
			return r.Fingerprint
		}
	}
	return ""
}

// cellHost makes a member's key in dir and picks a free UDP address on
// 127.0.0.1 for it (closed again: the member's daemon binds it).
func cellHost(t *testing.T, dir string) (*identity.Identity, string) {
	t.Helper()
	id, err := identity.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	return id, testport.Cell(t)
}

// TestCellServerNotAMember names, as --server, what operators reach for
// by mistake: a host without a port (which went to the registry's port,
// 7373), the registry, and a group daemon that is in no cell. Each says
// what --server wants; the registry's answer was "unsupported operation:
// cell_status" and nothing more.
func TestCellServerNotAMember(t *testing.T) {
	reg := startUp(t)
	u := newTestUser(t, reg)
	var g groupJSON
	if err := json.Unmarshal([]byte(u.ok(t, "groups", "--json")), &g); err != nil || len(g.Addrs) == 0 {
		t.Fatalf("huddle up's group: %+v, %v", g, err)
	}
	host, _, _ := net.SplitHostPort(reg)
	for _, tc := range []struct {
		server string
		code   int
		want   string
	}{
		{host, ExitUsage, `--server "` + host + `": want HOST:PORT`},
		{reg, ExitRefused, reg + " is no member of a cell: a registry, or a group daemon started without --cell-peer"},
		{g.Addrs[0], ExitRefused, g.Addrs[0] + " is no member of a cell: a registry, or a group daemon started without --cell-peer"},
	} {
		for _, sub := range [][]string{{"status"}, {"remove", g.Fingerprint}} {
			args := append([]string{"cell"}, sub...)
			code, _, errs := u.run(t, append(args, "--server", tc.server)...)
			if code != tc.code || !strings.Contains(errs, tc.want) {
				t.Errorf("huddle cell %s --server %s: exit %d (want %d), stderr:\n%s\nwant it to say %q", sub[0], tc.server, code, tc.code, errs, tc.want)
			}
		}
	}
}

// TestCellStatusJSONGroups: huddle cell status --json gives "groups" as a
// list, empty while the leader hosts none (a cell's first leader before it
// has created them): it printed null, which a script ranging over it or
// taking its length fails on.
func TestCellStatusJSONGroups(t *testing.T) {
	id := wire.UUID{1}
	for _, tc := range []struct {
		groups []wire.CellGroup
		want   string
	}{
		{nil, `[]`},
		{[]wire.CellGroup{}, `[]`},
		{[]wire.CellGroup{{Group: id, Name: "general", Epoch: 2, Last: 3, Members: 4}},
			`[{"uuid":"` + id.String() + `","name":"general","epoch":2,"last_seq":3,"members":4}]`}, // README's order (sorted until session 23)
	} {
		got, err := json.Marshal(cellGroupsJSON(tc.groups))
		if err != nil || string(got) != tc.want {
			t.Errorf("groups of %+v: %s (%v), want %s", tc.groups, got, err, tc.want)
		}
	}
}

// TestCellStatusGroupsOmitted: a leader hosting more groups than
// cell_status lists (wire.MaxCellGroups) says how many it left out, and
// huddle cell status says so too, in text and in --json
// (groups_omitted), rather than show the groups listed as all there are.
func TestCellStatusGroupsOmitted(t *testing.T) {
	me := wire.Replica{Addr: "10.0.0.1:7374", Fingerprint: wire.Fingerprint{1}}
	leader := &client.CellStatus{Self: me, State: "leader", Term: 3, Members: []wire.Replica{me},
		Groups: []wire.CellGroup{{Group: wire.UUID{1}, Name: "general", Epoch: 2, Last: 3, Members: 4}}, GroupsOmitted: 1500}
	views := []memberView{{replica: me, status: leader}}
	if out := cellStatusOut(t, *leader, views, false); !strings.Contains(out, "groups: general (3 messages, 4 members), and 1500 more groups not listed") {
		t.Errorf("huddle cell status:\n%s\nwant it to say 1500 more groups are not listed", out)
	}
	var got struct {
		Groups  []map[string]any `json:"groups"`
		Omitted uint64           `json:"groups_omitted"`
	}
	out := cellStatusOut(t, *leader, views, true)
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Groups) != 1 || got.Omitted != 1500 {
		t.Errorf("--json: %s (%v), want 1 group and groups_omitted 1500", out, err)
	}
}

// TestCellStatusShowsStall: a member whose state machine cannot apply what
// the cell commits (its disk full) is shown as stalled, with since how
// long, at which raft entry, the group and the cause, in text and in
// --json. (huddle cell status showed it as a member that merely lagged.)
func TestCellStatusShowsStall(t *testing.T) {
	a, b := wire.Fingerprint{1}, wire.Fingerprint{2}
	leader := client.CellStatus{Self: wire.Replica{Addr: "10.0.0.1:7374", Fingerprint: a, Leader: true}, State: "leader", Term: 3,
		AppliedIndex: 40, CommitIndex: 52, LastIndex: 52,
		Members: []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: a}, {Addr: "10.0.0.2:7374", Fingerprint: b}},
		Stall:   &wire.CellStall{StalledMS: 83_400, Index: 41, Group: "general", Cause: "disk full (no space left on device)"}}
	follower := client.CellStatus{Self: wire.Replica{Addr: "10.0.0.2:7374", Fingerprint: b}, State: "follower", Term: 3,
		AppliedIndex: 52, CommitIndex: 52, LastIndex: 52, Members: leader.Members}
	views := []memberView{{replica: leader.Members[0], status: &leader}, {replica: leader.Members[1], status: &follower}}

	out := cellStatusOut(t, leader, views, false)
	for _, want := range []string{"leader, stalled", "stalled (cannot apply what the cell commits",
		a.Short() + ": for 1m23.4s, at raft entry 41: group general's log refuses appends: disk full (no space left on device)"} {
		if !strings.Contains(out, want) {
			t.Errorf("huddle cell status:\n%s\nwant it to say %q", out, want)
		}
	}
	if strings.Contains(out, b.Short()+": for") {
		t.Errorf("huddle cell status shows the member that applies as stalled:\n%s", out)
	}

	out = cellStatusOut(t, leader, views, true)
	var got struct {
		Members []struct {
			Fingerprint string
			Stall       *struct {
				StalledMS uint64 `json:"stalled_ms"`
				Index     uint64
				Group     string
				Cause     string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(got.Members) != 2 || got.Members[1].Stall != nil {
		t.Fatalf("--json members: %s, want two, the second without a stall", out)
	}
	if s := got.Members[0].Stall; s == nil || s.StalledMS != 83_400 || s.Index != 41 || s.Group != "general" || s.Cause != "disk full (no space left on device)" {
		t.Fatalf("--json: %s, want the first member's stall", out)
	}
}

// TestCellStatusHostileDurations: a member's stall length and a follower's
// last contact, milliseconds a daemon chose, are shown as the longest a
// duration holds when they are longer: converted as they came they wrapped
// past 2^63 ns, and a stall of 2^62 ms read as a negative duration, one of
// 2^64-1 ms as "for 0s".
func TestCellStatusHostileDurations(t *testing.T) {
	a, b := wire.Fingerprint{1}, wire.Fingerprint{2}
	for _, ms := range []uint64{1 << 62, math.MaxUint64, math.MaxInt64} {
		leader := client.CellStatus{Self: wire.Replica{Addr: "10.0.0.1:7374", Fingerprint: a, Leader: true}, State: "leader", Term: 3,
			Members: []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: a}, {Addr: "10.0.0.2:7374", Fingerprint: b}},
			Stall:   &wire.CellStall{StalledMS: ms, Index: 41, Group: "general", Cause: "disk full"}}
		follower := client.CellStatus{Self: wire.Replica{Addr: "10.0.0.2:7374", Fingerprint: b}, State: "follower", Term: 3,
			Members: leader.Members, LastContact: int64(min(ms, math.MaxInt64))}
		views := []memberView{{replica: leader.Members[0], status: &leader}, {replica: leader.Members[1], status: &follower}}
		out := cellStatusOut(t, leader, views, false)
		for _, want := range []string{a.Short() + ": for 2562047h47m16", "2562047h47m16.854775807s ago"} {
			if !strings.Contains(out, want) {
				t.Errorf("%d ms: huddle cell status:\n%s\nwant it to say %q", ms, out, want)
			}
		}
	}
	if d := shownMS(1500); d != 1500*time.Millisecond {
		t.Errorf("shownMS(1500) = %v", d)
	}
}

// TestCellStatusShowsKeyMismatch: a member whose raft configuration names
// a wrong key for a member (a wrong --cell-peer when the cell was
// created) is named once, with the keys and who saw it, in text and in
// --json, whichever members report it. (huddle cell status at the leader
// showed such a cell as healthy.)
func TestCellStatusShowsKeyMismatch(t *testing.T) {
	a, b, c, old := wire.Fingerprint{1}, wire.Fingerprint{2}, wire.Fingerprint{3}, wire.Fingerprint{9}
	members := []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: a}, {Addr: "10.0.0.2:7374", Fingerprint: b}, {Addr: "10.0.0.3:7374", Fingerprint: c}}
	named := wire.CellKeyMismatch{Member: members[2], Addr: members[0].Addr, Named: &old, Presented: a}
	refusing := wire.CellKeyMismatch{Member: members[2], Addr: members[0].Addr, Presented: a}
	status := func(self wire.Replica, state string, ks ...wire.CellKeyMismatch) *client.CellStatus {
		return &client.CellStatus{Self: self, State: state, Term: 2, AppliedIndex: 7, Members: members, KeyMismatches: ks}
	}
	leader := status(wire.Replica{Addr: members[0].Addr, Fingerprint: a, Leader: true}, "leader", refusing)
	views := []memberView{
		{replica: members[0], status: leader},
		{replica: members[1], status: status(members[1], "follower", named)},
		{replica: members[2], status: status(members[2], "follower", named)},
	}
	out := cellStatusOut(t, *leader, views, false)
	for _, want := range []string{"MISCONFIGURED", "cell remove it and cell add it again",
		c.Short() + " at 10.0.0.3:7374 names " + old.String() + " for 10.0.0.1:7374, where the daemon presents " + a.String() + " (seen by " + b.Short() + ", " + c.Short() + ")",
		c.Short() + " at 10.0.0.3:7374 refuses the key of " + a.Short() + " at 10.0.0.1:7374: its configuration does not list it (seen by " + a.Short() + ")"} {
		if !strings.Contains(out, want) {
			t.Errorf("huddle cell status:\n%s\nwant it to say %q", out, want)
		}
	}
	if n := strings.Count(out, "names "+old.String()); n != 1 {
		t.Errorf("huddle cell status names the mismatch %d times, want once:\n%s", n, out)
	}

	out = cellStatusOut(t, *leader, views, true)
	var got struct {
		KeyMismatches []struct {
			Member, Addr, Named, Presented string
			MemberAddr                     string   `json:"member_addr"`
			SeenBy                         []string `json:"seen_by"`
		} `json:"key_mismatches"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(got.KeyMismatches) != 2 {
		t.Fatalf("--json: %s, want two key mismatches", out)
	}
	if k := got.KeyMismatches[0]; k.Member != c.String() || k.MemberAddr != "10.0.0.3:7374" || k.Addr != "10.0.0.1:7374" || k.Named != "" || k.Presented != a.String() || len(k.SeenBy) != 1 {
		t.Errorf("--json: first %+v, want the refusal seen by the leader", k)
	}
	if k := got.KeyMismatches[1]; k.Named != old.String() || len(k.SeenBy) != 2 {
		t.Errorf("--json: second %+v, want the old key named, seen by two", k)
	}

	// A cell set up right says nothing of it.
	views = []memberView{{replica: members[0], status: status(members[0], "leader")}}
	out = cellStatusOut(t, *views[0].status, views, false)
	if strings.Contains(out, "MISCONFIGURED") {
		t.Errorf("huddle cell status of a cell set up right:\n%s", out)
	}
}

// TestCellStatusKeyMismatchUnconfirmed: a member's report that another
// member's raft configuration is wrong is that member's word (cell_status
// key 12). Each honest member reports a mismatch of its own configuration
// itself (its check dials the address its configuration names wrong), so
// one that the accused member's own status does not show (a hostile
// member's key, or a member that has not checked yet) is shown apart, as
// unconfirmed, with no advice to remove the member: huddle cell status
// told the operator to remove and re-add a healthy leader on one other
// member's false report.
func TestCellStatusKeyMismatchUnconfirmed(t *testing.T) {
	a, b, c, forged := wire.Fingerprint{1}, wire.Fingerprint{2}, wire.Fingerprint{3}, wire.Fingerprint{9}
	members := []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: a}, {Addr: "10.0.0.2:7374", Fingerprint: b}, {Addr: "10.0.0.3:7374", Fingerprint: c}}
	lie := wire.CellKeyMismatch{Member: members[0], Addr: members[2].Addr, Named: &forged, Presented: c}
	status := func(self wire.Replica, state string, ks ...wire.CellKeyMismatch) *client.CellStatus {
		return &client.CellStatus{Self: self, State: state, Term: 2, AppliedIndex: 7, Members: members, KeyMismatches: ks}
	}
	leader := status(wire.Replica{Addr: members[0].Addr, Fingerprint: a, Leader: true}, "leader")
	views := []memberView{
		{replica: members[0], status: leader},
		{replica: members[1], status: status(members[1], "follower", lie)}, // b's key, hostile
		{replica: members[2], status: status(members[2], "follower")},
	}
	out := cellStatusOut(t, *leader, views, false)
	if strings.Contains(out, "MISCONFIGURED") || strings.Contains(out, "cell remove it") {
		t.Errorf("huddle cell status on one member's word against the leader's own status:\n%s\nwant no advice to remove it", out)
	}
	for _, want := range []string{"UNCONFIRMED", a.Short() + " at 10.0.0.1:7374 names " + forged.String() + " for 10.0.0.3:7374, where the daemon presents " + c.String() + " (seen by " + b.Short() + ")"} {
		if !strings.Contains(out, want) {
			t.Errorf("huddle cell status:\n%s\nwant it to say %q", out, want)
		}
	}
	out = cellStatusOut(t, *leader, views, true)
	var got struct {
		KeyMismatches []struct {
			Member    string
			Confirmed *bool `json:"confirmed"`
		} `json:"key_mismatches"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(got.KeyMismatches) != 1 || got.KeyMismatches[0].Confirmed == nil || *got.KeyMismatches[0].Confirmed {
		t.Errorf("--json: %s, want the one mismatch with confirmed false", out)
	}

	// The accused member reporting a mismatch of its own configuration
	// elsewhere (a stranger at another address, say) confirms nothing of
	// this one: a hostile member could have drawn that report (its own
	// key swapped at its own address) and lied about the rest.
	elsewhere := wire.CellKeyMismatch{Member: members[0], Addr: members[1].Addr, Named: &b, Presented: forged}
	views[0].status = status(wire.Replica{Addr: members[0].Addr, Fingerprint: a, Leader: true}, "leader", elsewhere)
	out = cellStatusOut(t, *views[0].status, views, false)
	if !strings.Contains(out, "UNCONFIRMED") || strings.Contains(out, "MISCONFIGURED") {
		t.Errorf("huddle cell status with the leader reporting another mismatch of its own:\n%s\nwant the lie unconfirmed", out)
	}

	// Once the accused member's own status shows it, it is confirmed.
	own := wire.CellKeyMismatch{Member: members[0], Addr: members[2].Addr, Named: &forged, Presented: c}
	views[0].status = status(wire.Replica{Addr: members[0].Addr, Fingerprint: a, Leader: true}, "leader", own)
	out = cellStatusOut(t, *views[0].status, views, false)
	if !strings.Contains(out, "MISCONFIGURED") || strings.Contains(out, "UNCONFIRMED") {
		t.Errorf("huddle cell status with the leader reporting its own mismatch:\n%s", out)
	}
}

// TestCellStatusStrangerAtMemberAddress: a member's host reinstalled with a
// new key (or another daemon at its address: the member down and its
// address taken) presents a key that no member's configuration names,
// where every configuration names the member's. Each member's check then
// finds its own configuration naming "another key than the daemon there
// presents", and the others' too, so huddle cell status said every
// healthy member was MISCONFIGURED, confirmed, and told the operator to
// remove and re-add them: done, that loses the cell. When a majority of
// the members answer with configurations that all name the key for that
// address, it is the daemon at the address that is not the member: said
// so, with what to do, and no member is called misconfigured.
func TestCellStatusStrangerAtMemberAddress(t *testing.T) {
	a, b, c, stranger := wire.Fingerprint{1}, wire.Fingerprint{2}, wire.Fingerprint{3}, wire.Fingerprint{9}
	members := []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: a}, {Addr: "10.0.0.2:7374", Fingerprint: b}, {Addr: "10.0.0.3:7374", Fingerprint: c}}
	at := func(by wire.Replica) wire.CellKeyMismatch {
		return wire.CellKeyMismatch{Member: by, Addr: members[2].Addr, Named: &c, Presented: stranger}
	}
	status := func(self wire.Replica, state string) *client.CellStatus {
		return &client.CellStatus{Self: self, State: state, Term: 2, AppliedIndex: 7, Members: members,
			KeyMismatches: []wire.CellKeyMismatch{at(members[0]), at(members[1])}}
	}
	leader := status(wire.Replica{Addr: members[0].Addr, Fingerprint: a, Leader: true}, "leader")
	follower := status(members[1], "follower")
	// The stranger's key refused by the leader, as a member may report
	// (the stranger, a hostile member's other key at its own address, say).
	follower.KeyMismatches = append(follower.KeyMismatches, wire.CellKeyMismatch{Member: members[0], Addr: members[2].Addr, Presented: stranger})
	views := []memberView{
		{replica: members[0], status: leader},
		{replica: members[1], status: follower},
		{replica: members[2], err: errors.New("10.0.0.3:7374 presented another key")},
	}
	out := cellStatusOut(t, *leader, views, false)
	if strings.Contains(out, "MISCONFIGURED") || strings.Contains(out, "cell remove it and cell add it again") {
		t.Errorf("huddle cell status with a stranger at a member's address:\n%s\nwant no member called misconfigured", out)
	}
	for _, want := range []string{"NOT AT ITS ADDRESS", "every configuration names " + c.String() + " for 10.0.0.3:7374, where a daemon presenting " + stranger.String() + " answers"} {
		if !strings.Contains(out, want) {
			t.Errorf("huddle cell status:\n%s\nwant it to say %q", out, want)
		}
	}
	out = cellStatusOut(t, *leader, views, true)
	var got struct {
		KeyMismatches []struct {
			Member string
			Absent bool `json:"member_absent"`
		} `json:"key_mismatches"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(got.KeyMismatches) != 3 || !got.KeyMismatches[0].Absent || !got.KeyMismatches[1].Absent || !got.KeyMismatches[2].Absent {
		t.Errorf("--json: %s, want the three mismatches marked member_absent", out)
	}
}

// cellStatusOut returns what huddle cell status prints (asJSON: with
// --json) from first, the status of the member asked first, and views.
func cellStatusOut(t *testing.T, first client.CellStatus, views []memberView, asJSON bool) string {
	t.Helper()
	var out, errb strings.Builder
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	if err := printCellStatus(env, first, views, asJSON); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestCellStatusLeaderByTerm: when more than one member claims to lead,
// huddle cell status names the one in the highest term the leader (the
// cell elects one per term; the other was deposed and has not heard of
// it: cut off), measures lag from it, and shows the disagreement, in text
// and in --json. It took whichever claim came last in the configuration's
// order, a deposed member's as readily as the leader's, and said nothing
// of the other. Two claims in one term, which the cell never makes, name
// no leader.
func TestCellStatusLeaderByTerm(t *testing.T) {
	a, b, c := wire.Fingerprint{1}, wire.Fingerprint{2}, wire.Fingerprint{3}
	members := []wire.Replica{{Addr: "10.0.0.2:7374", Fingerprint: b}, {Addr: "10.0.0.3:7374", Fingerprint: c}, {Addr: "10.0.0.1:7374", Fingerprint: a}}
	status := func(self wire.Replica, state string, term, applied uint64) *client.CellStatus {
		return &client.CellStatus{Self: self, State: state, Term: term, AppliedIndex: applied, Members: members}
	}
	current := status(members[0], "leader", 7, 90)
	deposed := status(members[2], "leader", 5, 40) // cut off since term 5
	views := []memberView{
		{replica: members[0], status: current},
		{replica: members[1], status: status(members[1], "follower", 7, 88)},
		{replica: members[2], status: deposed},
	}
	out := cellStatusOut(t, *deposed, views, false)
	for _, want := range []string{"leader " + b.Short() + " at 10.0.0.2:7374, term 7",
		"LEADERS DISAGREE: 2 members claim to lead: " + b.Short() + " at 10.0.0.2:7374 in term 7, " + a.Short() + " at 10.0.0.1:7374 in term 5",
		a.Short() + "  10.0.0.1:7374  leader (old term)  5     40       50   -\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("huddle cell status:\n%s\nwant it to say %q", out, want)
		}
	}

	out = cellStatusOut(t, *deposed, views, true)
	var got struct {
		Leader struct{ Fingerprint string }
		Term   uint64
		Claims []struct {
			Fingerprint string
			Term        uint64
		} `json:"leader_claims"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.Leader.Fingerprint != b.String() || got.Term != 7 || len(got.Claims) != 2 ||
		got.Claims[0].Fingerprint != b.String() || got.Claims[0].Term != 7 || got.Claims[1].Fingerprint != a.String() || got.Claims[1].Term != 5 {
		t.Errorf("--json: %s, want %s leading in term 7, and both claims, the newer first", out, b)
	}

	// Two claims in one term: one is false, and which cannot be told.
	views[2].status = status(members[2], "leader", 7, 40)
	out = cellStatusOut(t, *views[2].status, views, false)
	for _, want := range []string{"no leader can be told", "LEADERS DISAGREE: 2 members claim to lead in the same term", "leader (disputed)"} {
		if !strings.Contains(out, want) {
			t.Errorf("huddle cell status with two leaders in term 7:\n%s\nwant it to say %q", out, want)
		}
	}
	if strings.Contains(out, "; leader ") {
		t.Errorf("huddle cell status with two leaders in term 7 names one:\n%s", out)
	}
	out = cellStatusOut(t, *views[2].status, views, true)
	if strings.Contains(out, `"leader":`) || !strings.Contains(out, `"leader_claims":`) {
		t.Errorf("--json with two leaders in term 7: %s, want no leader and both claims", out)
	}

	// One claim: no disagreement shown.
	views[2].status = status(members[2], "follower", 7, 40)
	if out := cellStatusOut(t, *current, views, false); strings.Contains(out, "DISAGREE") {
		t.Errorf("huddle cell status with one leader:\n%s", out)
	}
	if out := cellStatusOut(t, *current, views, true); strings.Contains(out, "leader_claims") {
		t.Errorf("--json with one leader: %s", out)
	}
}

// TestCellStatusOtherDaemonAtMemberAddress: a member whose address is
// answered by a daemon presenting another key (the member down, and a
// group daemon without --cell-peer started on its port) is said not to be
// at its address, with what to do, not only "server presented
// fingerprint X, expected Y". The members cannot tell (such a daemon
// shows them no key: cell's TestPlainDaemonAtMemberAddressNotARefusal),
// so the command's own handshake is what says it.
func TestCellStatusOtherDaemonAtMemberAddress(t *testing.T) {
	a, b, c, other := wire.Fingerprint{1}, wire.Fingerprint{2}, wire.Fingerprint{3}, wire.Fingerprint{9}
	members := []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: a}, {Addr: "10.0.0.2:7374", Fingerprint: b}, {Addr: "10.0.0.3:7374", Fingerprint: c}}
	status := func(self wire.Replica, state string) *client.CellStatus {
		return &client.CellStatus{Self: self, State: state, Term: 2, AppliedIndex: 4, Members: members}
	}
	views := []memberView{
		{replica: members[0], status: status(members[0], "leader")},
		{replica: members[1], status: status(members[1], "follower")},
		{replica: members[2], err: fmt.Errorf("cell status %s: %w", members[2].Addr, &identity.MismatchError{Want: c, Got: other})},
	}
	out := cellStatusOut(t, *views[0].status, views, false)
	want := "  " + c.Short() + ": not at its address: the daemon at 10.0.0.3:7374 presents " + other.String() + ", not this member's key"
	if !strings.Contains(out, want) || !strings.Contains(out, "cell remove its old key, then cell add the new one") {
		t.Errorf("huddle cell status with another daemon at a member's address:\n%s\nwant it to say %q, and how to replace the member", out, want)
	}
}
