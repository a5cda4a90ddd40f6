package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// runCell runs huddle cell status|add|remove: operating a cell of group
// daemons that replicates their groups (README, "A three-host cell").
func runCell(ctx context.Context, env Env, args []string) int {
	const synopsis = "status|add|remove --server HOST:PORT [FINGERPRINT@HOST:PORT | FINGERPRINT]"
	if len(args) == 0 || (args[0] != "status" && args[0] != "add" && args[0] != "remove") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			// The flags are every subcommand's: listed here too (until
			// session 21 huddle cell --help named none of them).
			var f cellCommandFlags
			fs := newFlags(env, "cell", synopsis, cellAbout, cellExample)
			f.register(fs)
			fs.Usage()
			return ExitOK
		}
		return usageErr(env, "cell", "say status, add or remove")
	}
	sub := args[0]
	var f cellCommandFlags
	fs := newFlags(env, "cell "+sub, cellSynopses[sub], cellAbout, cellExample)
	f.register(fs)
	if code, ok := parse(fs, args[1:]); !ok {
		return code
	}
	verb := "cell " + sub
	if f.server == "" {
		return usageErr(env, verb, "name a member of the cell with --server HOST:PORT")
	}
	host, port, err := net.SplitHostPort(f.server)
	if err != nil || port == "" {
		// A bare host would be dialled at the registry's port, 7373.
		return usageErr(env, verb, "--server %q: want HOST:PORT of a member of the cell (its huddle serve --listen address)", f.server)
	}
	if ip, err := netip.ParseAddr(host); err == nil && manyHosts(ip) {
		// Dialled as given until session 23: QUIC Initials to every host
		// of the link.
		return usageErr(env, verb, "--server %q: %s is a multicast or broadcast address, which no member has: give a member's own address (its huddle serve --listen address)", f.server, host)
	}
	var pin wire.Fingerprint
	if f.fingerprint != "" {
		var err error
		if pin, err = wire.ParseFingerprint(f.fingerprint); err != nil {
			return usageErr(env, verb, "--fingerprint %q: want a daemon's fingerprint", f.fingerprint)
		}
	}
	want := 0
	if sub != "status" {
		want = 1
	}
	if fs.NArg() != want {
		return usageErr(env, verb, "want %d argument(s), got %d", want, fs.NArg())
	}
	s, err := open(ctx, env, verb, &clientFlags{json: f.json, timeout: f.timeout})
	if err != nil {
		return fail(env, verb, err)
	}
	defer s.Close()
	base := ctx // add's wait for the new member has a bound of its own
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	switch sub {
	case "status":
		wait := min(f.timeout, cellMemberWait)
		if fs.Changed("timeout") {
			wait = f.timeout
		}
		err = cellStatus(ctx, env, s.client, f.server, pin, f.json, wait)
	case "add":
		p, perr := cell.ParsePeer(fs.Arg(0))
		if perr != nil {
			return usageErr(env, verb, "%q: want FINGERPRINT@HOST:PORT of the daemon to add", fs.Arg(0))
		}
		var members []client.Replica
		members, err = s.client.CellAdd(ctx, f.server, pin, client.Replica{Addr: p.Addr, Fingerprint: p.Fingerprint})
		if err == nil && f.wait > 0 && catchingUp(members, p.Fingerprint) {
			wctx, cancel := context.WithTimeout(base, f.wait)
			members, err = awaitVoter(wctx, env, s.client, f.server, pin, p, f.json)
			cancel()
		}
		if err == nil {
			err = printMembers(env, members, f.json)
		}
	case "remove":
		fp, perr := wire.ParseFingerprint(fs.Arg(0))
		if perr != nil {
			return usageErr(env, verb, "%q: want the fingerprint of the member to remove", fs.Arg(0))
		}
		var members []client.Replica
		members, err = s.client.CellRemove(ctx, f.server, pin, fp)
		if err == nil {
			err = printMembers(env, members, f.json)
		}
	}
	if err != nil {
		var we *wire.Error
		if errors.As(err, &we) && we.Code == wire.CodeUnsupported {
			err = &refusal{fmt.Sprintf("%s is no member of a cell: a registry, or a group daemon started without --cell-peer (it answered: %v); "+
				"--server names a member's address ('huddle groups' shows where a cell's groups are)", f.server, we)}
		}
		if sub != "status" {
			err = cellChangeOutcome(err, f.server)
		}
		if sub != "status" && errors.As(err, &we) && we.Code == wire.CodeUnauthorized {
			// Not advice(we)'s: a cell has no secret to give, only keys.
			err = &refusal{fmt.Sprintf("%v; run it with a member daemon's key: HUDDLE_HOME=that daemon's --state-dir (this key, %s, is no member's)",
				we, s.client.Fingerprint().Short())}
		}
		return fail(env, verb, err)
	}
	return ExitOK
}

// cellChangeOutcome is the error cell add or remove reports for err,
// CellAdd's or CellRemove's: what is known of the change. One an ask of
// which may have made it (client.ErrInDoubt: left unanswered, or refused
// by a member that may have taken it, a leader that lost its office)
// says its outcome is unknown and exits 3, as a send in doubt; explain's
// words are a send's. One refused unavailable until --timeout, and never
// in doubt (every refusal marked unchanged: PROTOCOL.md §9, key 7), made
// no change, and says so as the refusal it is (exit 1): it read "timed
// out; is the daemon running and reachable?" (until session 20), though
// the member answered each ask.
func cellChangeOutcome(err error, server string) error {
	var we *wire.Error
	refused := errors.As(err, &we)
	last := shown(withoutGoText(err))
	if refused {
		last = shown(we.Error())
	}
	switch {
	case errors.Is(err, client.ErrInDoubt):
		return &explainedUnreachable{fmt.Sprintf("outcome unknown: the cell may have made the change (an ask of it was left unanswered, or refused by a member that may have taken it: a leader that lost its office); the last answer: %s; "+
			"huddle cell status --server %s shows the cell's members, and asking again is safe (a member added already, or removed already, is left as it is)", last, shellWord(server))}
	case refused && we.Code == wire.CodeUnavailable && errors.Is(err, context.DeadlineExceeded):
		return &refusal{fmt.Sprintf("%s; asked again until --timeout ended: the cell made no change; try again shortly", last)}
	}
	return err
}

// cellSynopses are each subcommand's synopsis, for its --help (until
// session 21 each repeated the verb's: "huddle cell add status|add|remove").
var cellSynopses = map[string]string{
	"status": "--server HOST:PORT [--fingerprint FINGERPRINT] [--json]",
	"add":    "--server HOST:PORT [--wait DURATION] [--json] FINGERPRINT@HOST:PORT",
	"remove": "--server HOST:PORT [--json] FINGERPRINT",
}

const cellAbout = `Operate a cell: 3 or 5 group daemons (huddle serve --cell-peer ...) that replicate their groups.
  status   the cell as each member sees it: leader, term, each member's applied index, lag and last contact
  add      add a daemon started with --cell-join (FINGERPRINT@HOST:PORT). It joins as a member that does not
           vote (the cell's majority is unchanged) while it is brought up to date, and the leader makes it a
           voter once it has caught up; add waits for that, printing its progress, up to --wait (0: return
           once it is added, catching up; huddle cell status shows it)
  remove   remove a member (FINGERPRINT)
add and remove must be run with a member daemon's key: HUDDLE_HOME=that daemon's --state-dir.`

const cellExample = `  huddle cell status --server 10.0.0.1:7374
  HUDDLE_HOME=/var/lib/huddle huddle cell add --server 10.0.0.1:7374 ie6o-...-fy4q@10.0.0.4:7374`

type cellCommandFlags struct {
	server, fingerprint string
	json                bool
	timeout, wait       time.Duration
}

func (f *cellCommandFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.server, "server", "", "HOST:PORT of a member of the cell")
	fs.StringVar(&f.fingerprint, "fingerprint", "", "the fingerprint that member must present (default: any)")
	fs.BoolVar(&f.json, "json", false, "print one JSON object")
	fs.Var(newDuration(&f.timeout, 10*time.Second, time.Millisecond, false), "timeout", "give up after this long")
	fs.Var(newDuration(&f.wait, cellAddWait, time.Millisecond, true), "wait", "add: how long to wait for the new member to catch up and vote (0: do not wait)")
}

// cellAddWait is how long huddle cell add waits for the new member to
// catch up by default: a member that copies gigabytes of history over a
// LAN takes minutes.
const cellAddWait = 10 * time.Minute

// catchingUp reports whether fp is among members, catching up.
func catchingUp(members []client.Replica, fp wire.Fingerprint) bool {
	return slices.ContainsFunc(members, func(m client.Replica) bool { return m.Fingerprint == fp && m.CatchingUp })
}

// awaitVoter waits until the member p added votes, asking server (and
// whichever member leads) for the cell's configuration and p for how far
// it got every second, and printing its progress when it changes (to
// stderr under --json). It returns the cell's members once p votes.
func awaitVoter(ctx context.Context, env Env, c *client.Client, server string, pin wire.Fingerprint, p cell.Peer, asJSON bool) ([]client.Replica, error) {
	out := env.Stdout
	if asJSON {
		out = env.Stderr
	}
	ask := func(addr string, pin wire.Fingerprint) (client.CellStatus, error) {
		ctx, cancel := context.WithTimeout(ctx, cellMemberWait)
		defer cancel()
		return c.CellStatus(ctx, addr, pin)
	}
	said := ""
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		st, err := ask(server, pin)
		if err == nil && st.Leader != nil && st.Leader.Fingerprint != st.Self.Fingerprint && wire.Dialable(st.Leader.Addr) {
			if lst, lerr := ask(st.Leader.Addr, st.Leader.Fingerprint); lerr == nil {
				st = lst // the leader knows the configuration first
			}
		}
		if err == nil {
			if !catchingUp(st.Members, p.Fingerprint) {
				if !slices.ContainsFunc(st.Members, func(m client.Replica) bool { return m.Fingerprint == p.Fingerprint }) {
					return nil, fmt.Errorf("%s is no longer a member of the cell (removed meanwhile?)", p.Fingerprint.Short())
				}
				fmt.Fprintf(out, "%s caught up and votes now\n", p.Fingerprint.Short())
				return st.Members, nil
			}
			progress := "catching up: not answering yet"
			if nst, nerr := ask(p.Addr, p.Fingerprint); nerr == nil {
				progress = fmt.Sprintf("catching up: applied %d of the cell's %d raft entries", nst.AppliedIndex, st.CommitIndex)
			}
			if progress != said {
				fmt.Fprintf(out, "%s %s\n", p.Fingerprint.Short(), progress)
				said = progress
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			// Timed out (exit code 3), with what to do already said.
			return nil, &explainedUnreachable{fmt.Sprintf("%s was added but is still catching up (%s); the leader makes it a voter by itself once it has: huddle cell status shows it, huddle cell add again waits again",
				p.Fingerprint.Short(), strings.TrimPrefix(said, "catching up: "))}
		}
	}
}

// errNoAnswer is the cause of a member's wait running out.
var errNoAnswer = errors.New("no answer")

// explainedUnreachable is a server that did not answer, with what to do
// about it already said: printed as it is (exit code ExitUnreachable).
type explainedUnreachable struct{ msg string }

func (e *explainedUnreachable) Error() string { return e.msg }

// undialableError is why a member at an address not to dial
// (wire.Dialable: not host:port, as "box:http" in a configuration made
// before session 20, or an unspecified, multicast or broadcast host, as
// "0.0.0.0:7001" in one made before session 22) was not asked, and how to
// move it.
type undialableError struct{ m wire.Replica }

func (e *undialableError) Error() string {
	return fmt.Sprintf("not asked: its address %q is not one to dial (not host:port, or an unspecified, multicast or broadcast host); move it: on a member's host, "+
		"HUDDLE_HOME=ITS_STATE_DIR huddle cell add --server MEMBER %s@HOST:PORT", shown(e.m.Addr), e.m.Fingerprint)
}

// memberView is one member's status, or why it could not be had.
type memberView struct {
	replica wire.Replica
	status  *client.CellStatus
	err     error
}

// cellMemberWait bounds how long huddle cell status waits for each member
// (unless --timeout says otherwise): a cell's members share a LAN, where a
// member that has not answered within it is down or cut off (raft gives up
// on one after a few hundred milliseconds), and the status of the others
// should not wait on it.
const cellMemberWait = 2 * time.Second

// cellStatus asks server for the cell's members, then each member for its
// own view, waiting for each at most wait, and prints them: the lag of a
// member is how many raft entries the leader applied that it has not.
func cellStatus(ctx context.Context, env Env, c *client.Client, server string, pin wire.Fingerprint, asJSON bool, wait time.Duration) error {
	ask := func(addr string, pin wire.Fingerprint) (client.CellStatus, error) {
		ctx, cancel := context.WithTimeoutCause(ctx, wait, errNoAnswer)
		defer cancel()
		start := time.Now()
		st, err := c.CellStatus(ctx, addr, pin)
		if err != nil && (errors.Is(context.Cause(ctx), errNoAnswer) || errors.Is(err, client.ErrUnreachable)) {
			// The wait that ran out is what the user set (or the default); the
			// clock read after it only adds how late this process was scheduled.
			waited := wait
			if !errors.Is(context.Cause(ctx), errNoAnswer) {
				waited = time.Since(start).Round(100 * time.Millisecond)
			}
			err = &explainedUnreachable{fmt.Sprintf("%s: no answer after %v: is it running, and reachable from here? (--timeout waits longer)",
				addr, waited)}
		}
		return st, err
	}
	first, err := ask(server, pin)
	if err != nil {
		return err
	}
	views := make([]memberView, len(first.Members))
	var wg sync.WaitGroup
	for i, m := range first.Members {
		views[i].replica = m
		if m.Fingerprint == first.Self.Fingerprint {
			st := first
			views[i].status = &st
			continue
		}
		if !wire.Dialable(m.Addr) {
			// Listed as the configuration has it, and not dialled there:
			// shown marked, with how to move it (until session 22 the
			// whole status was refused for it).
			views[i].err = &undialableError{m}
			continue
		}
		wg.Go(func() {
			st, err := ask(m.Addr, m.Fingerprint)
			if err != nil {
				views[i].err = err
				return
			}
			views[i].status = &st
		})
	}
	wg.Wait()
	return printCellStatus(env, first, views, asJSON)
}

// printCellStatus prints the views of a cell's members that cellStatus
// gathered, first being the answer of the member asked first.
func printCellStatus(env Env, first client.CellStatus, views []memberView, asJSON bool) error {
	leader, claims := cellLeader(views)
	lag := func(st *client.CellStatus) (uint64, bool) {
		if leader == nil || st == nil {
			return 0, false
		}
		return leader.AppliedIndex - min(leader.AppliedIndex, st.AppliedIndex), true
	}
	// A daemon started to join a cell (--cell-join) that no member has
	// added yet knows of no configuration at all; one removed from the
	// cell still answers with the configuration it last applied, which no
	// longer lists it. Say which, rather than show the cell as if the
	// daemon asked were part of it.
	waiting := len(first.Members) == 0
	removed := !waiting && !slices.ContainsFunc(first.Members, func(m wire.Replica) bool { return m.Fingerprint == first.Self.Fingerprint })
	if asJSON {
		out := cellStatusJSON{Members: []cellMemberJSON{}}
		for _, v := range views {
			m := cellMemberJSON{Addr: v.replica.Addr, Fingerprint: v.replica.Fingerprint.String(), Voter: !v.replica.CatchingUp, CatchingUp: v.replica.CatchingUp}
			if v.err != nil {
				m.Error = plainErr(v.err)
			} else {
				st := v.status
				m.cellFiguresJSON = &cellFiguresJSON{State: st.State, Term: st.Term, AppliedIndex: st.AppliedIndex, CommitIndex: st.CommitIndex,
					LastIndex: st.LastIndex, LastContactMS: st.LastContact}
				if l, ok := lag(st); ok {
					m.Lag = &l
				}
				if s := st.Stall; s != nil {
					m.Stall = &cellStallJSON{StalledMS: s.StalledMS, Index: s.Index, Group: s.Group, Cause: s.Cause}
				}
			}
			out.Members = append(out.Members, m)
		}
		for _, k := range keyMismatches(views) {
			km := keyMismatchJSON{Member: k.Member.Fingerprint.String(), MemberAddr: k.Member.Addr, Addr: k.Addr,
				Presented: k.Presented.String(), SeenBy: k.seenBy, Confirmed: k.confirmed, MemberAbsent: k.absent}
			if k.Named != nil {
				km.Named = k.Named.String()
			}
			out.KeyMismatches = append(out.KeyMismatches, km)
		}
		if waiting || removed {
			out.Asked = &cellAskedJSON{Addr: first.Self.Addr, Fingerprint: first.Self.Fingerprint.String(), Waiting: waiting}
		}
		if len(claims) > 1 {
			for _, st := range claims {
				out.LeaderClaims = append(out.LeaderClaims, cellClaimJSON{Addr: st.Self.Addr, Fingerprint: st.Self.Fingerprint.String(), Term: st.Term})
			}
		}
		if leader != nil {
			out.Leader = &cellAddrJSON{Addr: leader.Self.Addr, Fingerprint: leader.Self.Fingerprint.String()}
			out.Term = leader.Term
			groups := cellGroupsJSON(leader.Groups)
			out.Groups = &groups
			out.GroupsOmitted = leader.GroupsOmitted
		}
		return printJSON(env.Stdout, out)
	}
	if waiting {
		fmt.Fprintf(env.Stdout, "%s at %s is waiting to be added to a cell (it knows of no member yet): on a member's host, HUDDLE_HOME=ITS_STATE_DIR huddle cell add --server MEMBER %s@%s\n",
			first.Self.Fingerprint.Short(), shown(first.Self.Addr), first.Self.Fingerprint, shown(first.Self.Addr))
		return nil
	}
	if removed {
		fmt.Fprintf(env.Stdout, "%s at %s is not a member of this cell (it was removed); the cell it left:\n", first.Self.Fingerprint.Short(), shown(first.Self.Addr))
	}
	switch {
	case leader != nil:
		fmt.Fprintf(env.Stdout, "cell of %s; leader %s at %s, term %d\n", count(uint64(len(views)), "member", "members"), leader.Self.Fingerprint.Short(), shown(leader.Self.Addr), leader.Term)
	case len(claims) > 1:
		fmt.Fprintf(env.Stdout, "cell of %s; no leader can be told (two members claim the same term)\n", count(uint64(len(views)), "member", "members"))
	default:
		fmt.Fprintf(env.Stdout, "cell of %s; no member leads now (an election, or no majority)\n", count(uint64(len(views)), "member", "members"))
	}
	if len(claims) > 1 {
		var list []string
		for _, st := range claims {
			list = append(list, fmt.Sprintf("%s at %s in term %d", st.Self.Fingerprint.Short(), shown(st.Self.Addr), st.Term))
		}
		if leader != nil {
			fmt.Fprintf(env.Stdout, "LEADERS DISAGREE: %d members claim to lead: %s. The cell elects one leader per term, so the highest term's is shown; the others were deposed and have not heard of it yet (cut off from the cell, or an election just ended): run huddle cell status again, and if one still claims an older term, look at its network\n",
				len(claims), strings.Join(list, ", "))
		} else {
			fmt.Fprintf(env.Stdout, "LEADERS DISAGREE: %d members claim to lead in the same term: %s. The cell never elects two leaders in one term, so one of their statuses is false: trust neither\n",
				len(claims), strings.Join(list, ", "))
		}
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tSTATE\tTERM\tAPPLIED\tLAG\tLAST CONTACT")
	var unreachable, notAsked, stalled []string
	for _, v := range views {
		if v.err != nil {
			state := "unreachable"
			var ua *undialableError
			switch {
			case errors.As(v.err, &ua):
				state = "not asked: address not to dial"
			case v.replica.CatchingUp:
				// Added and not caught up yet (its daemon down, or never
				// started): say so, or it looks like a voter that is down.
				state = "unreachable, catching up (no vote)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\n", v.replica.Fingerprint.Short(), shown(v.replica.Addr), state)
			why := plainErr(v.err)
			if mm := (*identity.MismatchError)(nil); errors.As(v.err, &mm) {
				// Not the member: what the members' own MEMBER NOT AT
				// ITS ADDRESS says, which they cannot tell of a daemon
				// without the cell protocol (it shows them no key).
				why = fmt.Sprintf("not at its address: the daemon at %s presents %s, not this member's key: the member is down and another daemon took its address "+
					"(stop that one, or move it, and start the member), or its host was reinstalled with a new key (then replace the member: "+
					"cell remove its old key, then cell add the new one, huddle id on that host prints it, once its daemon runs with --cell-join)",
					shown(v.replica.Addr), mm.Got)
			}
			if ua != nil {
				notAsked = append(notAsked, fmt.Sprintf("  %s: %s", v.replica.Fingerprint.Short(), why))
				continue
			}
			unreachable = append(unreachable, fmt.Sprintf("  %s: %s", v.replica.Fingerprint.Short(), why))
			continue
		}
		st := v.status
		state := st.State
		switch {
		case st.State != "leader" || st == leader:
		case leader != nil:
			state = "leader (old term)" // deposed, and not told yet
		default:
			state = "leader (disputed)"
		}
		if v.replica.CatchingUp {
			state = "catching up (no vote)"
		}
		if s := st.Stall; s != nil {
			state += ", stalled"
			stalled = append(stalled, fmt.Sprintf("  %s: for %v, at raft entry %d: group %s's log refuses appends: %s",
				st.Self.Fingerprint.Short(), shownMS(s.StalledMS).Round(100*time.Millisecond), s.Index, shown(s.Group), shown(s.Cause)))
		}
		lagText := "?"
		if l, ok := lag(st); ok {
			lagText = fmt.Sprint(l)
		}
		contact := "-"
		switch {
		case st.State == "leader" && st != leader:
			// A claim in an older term (or disputed): its contact with the
			// cell is what is in doubt.
		case st.State == "leader":
			contact = "(leader)"
		case st.LastContact == 0:
			contact = "under 1ms ago" // the status is in whole milliseconds
		case st.LastContact > 0:
			contact = shownMS(uint64(st.LastContact)).String() + " ago"
		case st.LastContact < 0:
			contact = "never"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", st.Self.Fingerprint.Short(), shown(st.Self.Addr), shown(state), st.Term, st.AppliedIndex, lagText, contact)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(unreachable) > 0 {
		fmt.Fprintf(env.Stdout, "unreachable:\n%s\n", strings.Join(unreachable, "\n"))
	}
	if len(notAsked) > 0 {
		// A member of the configuration all the same: it counts toward
		// the cell's majority, whether or not it runs.
		fmt.Fprintf(env.Stdout, "not asked (listed at an address not to dial; a member all the same, counted in the cell's majority):\n%s\n", strings.Join(notAsked, "\n"))
	}
	if len(stalled) > 0 {
		// What README's "A member whose disk fills up" says to do.
		fmt.Fprintf(env.Stdout, "stalled (cannot apply what the cell commits; it catches up once its disk takes writes again, or replace it: cell add a new member, cell remove it):\n%s\n",
			strings.Join(stalled, "\n"))
	}
	if ks := keyMismatches(views); len(ks) > 0 {
		var confirmed, unconfirmed, absent []string
		for _, k := range ks {
			if k.absent {
				line := fmt.Sprintf("  every configuration names %s for %s, where a daemon presenting %s answers (seen by %s)", k.agreed, shown(k.Addr), k.Presented, strings.Join(k.seenBy, ", "))
				if !slices.Contains(absent, line) {
					absent = append(absent, line)
				}
				continue
			}
			what := fmt.Sprintf("refuses the key of %s at %s: its configuration does not list it", k.Presented.Short(), shown(k.Addr))
			if k.Named != nil {
				what = fmt.Sprintf("names %s for %s, where the daemon presents %s", k.Named, shown(k.Addr), k.Presented)
			}
			line := fmt.Sprintf("  %s at %s %s (seen by %s)", k.Member.Fingerprint.Short(), shown(k.Member.Addr), what, strings.Join(k.seenBy, ", "))
			if k.confirmed {
				confirmed = append(confirmed, line)
			} else {
				unconfirmed = append(unconfirmed, line)
			}
		}
		if len(confirmed) > 0 {
			// What README's "A member started with a wrong --cell-peer" says to do.
			fmt.Fprintf(env.Stdout, "MISCONFIGURED: a member's raft configuration names a wrong key (a wrong --cell-peer when the cell was created); the cell may not survive the loss of its leader. Correct that member's --cell-peer, then cell remove it and cell add it again (README: A member started with a wrong --cell-peer):\n%s\n",
				strings.Join(confirmed, "\n"))
		}
		if len(absent) > 0 {
			// README's "A member started with a wrong --cell-peer" says
			// what this is not.
			fmt.Fprintf(env.Stdout, "MEMBER NOT AT ITS ADDRESS: the members agree on a member's key, and the daemon at its address presents another: its host was reinstalled with a new key (then replace it: cell remove the old key, and cell add the new one, huddle id on that host prints it, once its daemon runs with --cell-join), or another daemon took its address; no member's configuration is wrong:\n%s\n",
				strings.Join(absent, "\n"))
		}
		if len(unconfirmed) > 0 {
			fmt.Fprintf(env.Stdout, "UNCONFIRMED: other members report that a member's raft configuration names a wrong key, and that member's own status does not (it may not have checked yet, or could not be asked: run huddle cell status again in 15 s; or the members reporting it are wrong): remove no member on their word alone:\n%s\n",
				strings.Join(unconfirmed, "\n"))
		}
	}
	if leader != nil && len(leader.Groups) > 0 {
		var names []string
		for _, g := range leader.Groups {
			names = append(names, fmt.Sprintf("%s (%s, %s)", shown(g.Name), count(g.Last, "message", "messages"), count(uint64(g.Members), "member", "members")))
		}
		if leader.GroupsOmitted > 0 {
			// cell_status lists the first wire.MaxCellGroups by name.
			names = append(names, fmt.Sprintf("and %s not listed", count(leader.GroupsOmitted, "more group", "more groups")))
		}
		fmt.Fprintf(env.Stdout, "groups: %s\n", strings.Join(names, ", "))
	}
	return nil
}

// cellLeader returns the status of the member that leads the cell, of
// the members that claim to: the one in the highest term. The cell elects
// at most one leader per term, and a member that claims an older one was
// deposed and has not heard of it yet (cut off from the others, or an
// election just ended while it was asked). claims lists every member that
// claims to lead, highest term first, when more than one does: the output
// shows the disagreement. Two claims in the same highest term, which the
// cell never makes, leave no leader: one of them is false, and which one
// cannot be told.
func cellLeader(views []memberView) (leader *client.CellStatus, claims []*client.CellStatus) {
	for _, v := range views {
		if v.status != nil && v.status.State == "leader" {
			claims = append(claims, v.status)
		}
	}
	if len(claims) == 0 {
		return nil, nil
	}
	slices.SortStableFunc(claims, func(a, b *client.CellStatus) int { return cmp.Compare(b.Term, a.Term) })
	if len(claims) == 1 {
		return claims[0], nil
	}
	if claims[0].Term == claims[1].Term {
		return nil, claims
	}
	return claims[0], claims
}

// keyMismatch is a mismatch of the members' keys, the members that
// reported it, and whether it is confirmed: the member whose
// configuration it is reports a mismatch of its own configuration.
type keyMismatch struct {
	wire.CellKeyMismatch
	seenBy    []string
	confirmed bool
	// absent: the configurations of a majority of the members, all those
	// that answered, name one key for Addr, not the one presented there,
	// so it is the daemon at Addr
	// that is not the member they name (a host reinstalled with a new
	// key, or another daemon at its address), not Member's configuration
	// that is wrong. Each member's check then reports its own
	// configuration and every other's as naming another key than the
	// daemon there presents: huddle cell status called every healthy
	// member misconfigured, and advised removing them. agreed is the key
	// they name.
	absent bool
	agreed wire.Fingerprint
}

// agreed returns the key the members' configurations agree on for addr,
// if a majority of the members answered and every one's configuration
// names that key there.
func agreed(views []memberView, addr string) (wire.Fingerprint, bool) {
	var key wire.Fingerprint
	answered := 0
	for _, v := range views {
		if v.status == nil {
			continue
		}
		i := slices.IndexFunc(v.status.Members, func(m wire.Replica) bool { return m.Addr == addr })
		if i < 0 || answered > 0 && v.status.Members[i].Fingerprint != key {
			return wire.Fingerprint{}, false
		}
		key = v.status.Members[i].Fingerprint
		answered++
	}
	return key, answered > len(views)/2
}

// keyMismatches returns the mismatches of the members' keys the views
// report, each once, in the order first reported.
//
// A report that another member's configuration is wrong is the reporting
// member's word (a hostile member's key may say anything of a healthy
// leader), so it is confirmed only if the accused member reports the same
// mismatch of its own configuration (the same address and key presented,
// and the same key named, unless the report is of a refusal, which names
// none): each member checks its own configuration by dialling the
// addresses it names, and a wrong key there fails that member's
// handshake, so a member whose configuration is wrong reports it itself
// (keycheck.go), within the rounds it takes. (Each view's Self is the key
// its daemon presented: client.CellStatus checks.)
func keyMismatches(views []memberView) []keyMismatch {
	var own []wire.CellKeyMismatch // the members' reports of their own configurations
	for _, v := range views {
		if v.status == nil {
			continue
		}
		for _, k := range v.status.KeyMismatches {
			if k.Member.Fingerprint == v.status.Self.Fingerprint {
				own = append(own, k)
			}
		}
	}
	confirmed := func(k wire.CellKeyMismatch) bool {
		return slices.ContainsFunc(own, func(o wire.CellKeyMismatch) bool {
			return o.Member.Fingerprint == k.Member.Fingerprint && o.Addr == k.Addr && o.Presented == k.Presented &&
				(k.Named == nil || o.Named != nil && *o.Named == *k.Named)
		})
	}
	var out []keyMismatch
	for _, v := range views {
		if v.status == nil {
			continue
		}
		for _, k := range v.status.KeyMismatches {
			i := slices.IndexFunc(out, func(o keyMismatch) bool {
				return o.Member == k.Member && o.Addr == k.Addr && o.Presented == k.Presented &&
					(o.Named == nil) == (k.Named == nil) && (o.Named == nil || *o.Named == *k.Named)
			})
			if i < 0 {
				km := keyMismatch{CellKeyMismatch: k, confirmed: confirmed(k)}
				if key, ok := agreed(views, k.Addr); ok && key != k.Presented {
					km.absent, km.agreed = true, key
				}
				out = append(out, km)
				i = len(out) - 1
			}
			if by := v.status.Self.Fingerprint.Short(); !slices.Contains(out[i].seenBy, by) {
				out[i].seenBy = append(out[i].seenBy, by)
			}
		}
	}
	return out
}

func printMembers(env Env, members []client.Replica, asJSON bool) error {
	if asJSON {
		var out cellMembersJSON
		for _, m := range members {
			out.Members = append(out.Members, cellChangedJSON{Addr: m.Addr, Fingerprint: m.Fingerprint.String(), Leader: m.Leader, Voter: !m.CatchingUp})
		}
		return printJSON(env.Stdout, out)
	}
	fmt.Fprintf(env.Stdout, "the cell's members now:\n")
	for _, m := range members {
		leader := ""
		switch {
		case m.Leader:
			leader = "  (leader)"
		case m.CatchingUp:
			leader = "  (catching up: no vote yet)"
		}
		fmt.Fprintf(env.Stdout, "  %s@%s%s\n", m.Fingerprint, shown(m.Addr), leader)
	}
	return nil
}

// cellGroupsJSON is the "groups" of huddle cell status --json: the groups
// the leader hosts: a list, empty (not null) when it hosts none.
func cellGroupsJSON(gs []wire.CellGroup) []cellGroupJSON {
	groups := make([]cellGroupJSON, 0, len(gs))
	for _, g := range gs {
		groups = append(groups, cellGroupJSON{UUID: g.Group.String(), Name: g.Name, Epoch: g.Epoch, LastSeq: g.Last, Members: g.Members})
	}
	return groups
}

// The objects of huddle cell status, add and remove --json, their keys
// in the order README.md lists them. Until session 23 they were maps,
// whose keys encoding/json writes sorted ({asked, groups, ...,
// leader, leader_claims, members, term}; a group {epoch, last_seq,
// members, name, uuid}), where README lists {leader, term, ...} and
// {uuid, name, epoch, last_seq, members}.
type (
	// cellStatusJSON is cell status's one object. Leader, Term and Groups
	// are absent while no member leads; Groups is a list then, empty (not
	// null) when the leader hosts none.
	cellStatusJSON struct {
		Leader        *cellAddrJSON     `json:"leader,omitempty"`
		Term          uint64            `json:"term,omitempty"` // a leader's: raft's terms start at 1
		LeaderClaims  []cellClaimJSON   `json:"leader_claims,omitempty"`
		Members       []cellMemberJSON  `json:"members"`
		Groups        *[]cellGroupJSON  `json:"groups,omitempty"`
		GroupsOmitted uint64            `json:"groups_omitted,omitempty"`
		KeyMismatches []keyMismatchJSON `json:"key_mismatches,omitempty"`
		Asked         *cellAskedJSON    `json:"asked,omitempty"`
	}
	cellAddrJSON struct {
		Addr        string `json:"addr"`
		Fingerprint string `json:"fingerprint"`
	}
	cellClaimJSON struct {
		Addr        string `json:"addr"`
		Fingerprint string `json:"fingerprint"`
		Term        uint64 `json:"term"`
	}
	// cellAskedJSON is the daemon asked, when it is no member: waiting to
	// be added, or removed.
	cellAskedJSON struct {
		Addr        string `json:"addr"`
		Fingerprint string `json:"fingerprint"`
		Member      bool   `json:"member"` // always false
		Waiting     bool   `json:"waiting,omitempty"`
	}
	// cellMemberJSON is a member: its figures, or the error it answered
	// with instead.
	cellMemberJSON struct {
		Addr        string `json:"addr"`
		Fingerprint string `json:"fingerprint"`
		Voter       bool   `json:"voter"`
		CatchingUp  bool   `json:"catching_up,omitempty"`
		*cellFiguresJSON
		Error string `json:"error,omitempty"`
	}
	cellFiguresJSON struct {
		State         string         `json:"state"`
		Term          uint64         `json:"term"`
		AppliedIndex  uint64         `json:"applied_index"`
		CommitIndex   uint64         `json:"commit_index"`
		LastIndex     uint64         `json:"last_index"`
		LastContactMS int64          `json:"last_contact_ms"`
		Lag           *uint64        `json:"lag,omitempty"` // only with a leader
		Stall         *cellStallJSON `json:"stall,omitempty"`
	}
	cellStallJSON struct {
		StalledMS uint64 `json:"stalled_ms"`
		Index     uint64 `json:"index"`
		Group     string `json:"group"`
		Cause     string `json:"cause"`
	}
	keyMismatchJSON struct {
		Member       string   `json:"member"`
		MemberAddr   string   `json:"member_addr"`
		Addr         string   `json:"addr"`
		Named        string   `json:"named,omitempty"`
		Presented    string   `json:"presented"`
		SeenBy       []string `json:"seen_by"`
		Confirmed    bool     `json:"confirmed"`
		MemberAbsent bool     `json:"member_absent"`
	}
	cellGroupJSON struct {
		UUID    string `json:"uuid"`
		Name    string `json:"name"`
		Epoch   uint64 `json:"epoch"`
		LastSeq uint64 `json:"last_seq"`
		Members uint64 `json:"members"`
	}
	// cellMembersJSON is cell add's and cell remove's object.
	cellMembersJSON struct {
		Members []cellChangedJSON `json:"members"`
	}
	cellChangedJSON struct {
		Addr        string `json:"addr"`
		Fingerprint string `json:"fingerprint"`
		Leader      bool   `json:"leader"`
		Voter       bool   `json:"voter"`
	}
)
