package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// CellStatus is one member's view of its cell (PROTOCOL.md §13,
// cell_status).
type CellStatus = wire.CellStatus

// CellStatus asks the group daemon at addr, a member of a cell, for its
// view of the cell. pin, if not zero, is the key the daemon must present.
// Errors: ErrUnsupported (the daemon is not a member of a cell),
// ErrUnreachable, ErrProtocol (the answer's Self names another key than
// the one the daemon presented; or it lists more than wire.MaxCellGroups
// groups, with ErrTooLarge: a member lists the first of them by name, and
// GroupsOmitted says how many more it hosts; or it says some were left out
// while listing fewer). The connection closes with the call,
// unless a Group handle on the daemon holds it.
//
// Self is checked because a program takes an answer as the view of the
// member it names (huddle cell status asks each other member, and takes
// the first answer for its Self's): a daemon answering as another member
// made its own word that member's, its state, its stall and the
// mismatches of its own configuration it reports, and that member was
// never asked.
func (c *Client) CellStatus(ctx context.Context, addr string, pin Fingerprint) (CellStatus, error) {
	return c.cellStatusAt(ctx, []string{addr}, pin)
}

// cellStatusAt is CellStatus of the daemon at any of addrs, dialled as a
// group's daemon is: the next one too after 250 ms of silence, the first
// handshake completed answering.
func (c *Client) cellStatusAt(ctx context.Context, addrs []string, pin Fingerprint) (CellStatus, error) {
	// The addresses may be a listing's (CellMembers), or the user's: shown.
	addr := strings.Join(shownAll(addrs), ", ")
	p, err := c.groupPeer(addrs, pin, wire.UUID{})
	if err != nil {
		return CellStatus{}, err
	}
	defer c.releaseGroup(p)
	var st CellStatus
	seen, err := p.singleFrom(ctx, wire.OpCellStatus, wire.CellQuery{}, &st)
	if err != nil {
		return st, namedOnce(wire.OpCellStatus, err)
	}
	if st.Self.Fingerprint != seen {
		return CellStatus{}, fmt.Errorf("cell status of %s: the daemon presented key %s and names itself %s: %w", addr, seen.Short(), st.Self.Fingerprint.Short(), ErrProtocol)
	}
	if st.GroupsOmitted > 0 && len(st.Groups) < wire.MaxCellGroups {
		// A member leaves groups out only past the first MaxCellGroups by
		// name: one listing fewer and counting others left out says two
		// things of its groups that cannot both be true, and the count it
		// names was shown as the groups left out (huddle cell status: "and
		// N more groups not listed"), whatever it was.
		return CellStatus{}, fmt.Errorf("cell status of %s: %d groups listed and %d more left out; a member leaves groups out only past the first %d: %w",
			addr, len(st.Groups), st.GroupsOmitted, wire.MaxCellGroups, ErrProtocol)
	}
	return st, nil
}

// CellAdd asks the cell the daemon at addr belongs to to add member (its
// daemon must be running, started to join the cell), and returns the
// cell's members once the change is committed. The request is sent on to
// the leader if addr does not lead, asked again while the cell elects one,
// and asked of addr again if the leader it named does not answer (gone as
// the change was sent on), until ctx ends. This client's key must be one
// of the cell's members' (run it with a member daemon's state directory
// as HUDDLE_HOME). Errors: ErrUnauthorized, ErrBadRequest, ErrUnavailable,
// ErrUnsupported, ErrUnreachable (addr does not answer).
//
// The whole call is bounded: by ctx, or, when ctx has no deadline, by a
// minute (cellChangeFor); a member's retry_after_ms is honoured up to 2 s
// (cellChangeRetryMax) and at most 64 redirects are followed. A member
// asking for an hour between 64 redirects held a program without a
// deadline for up to 64 hours (until session 17).
//
// A call that ends (ctx, or that minute) while it waits to ask again, or
// while it dials to ask again, ends with the last refusal
// (ErrUnavailable), which wraps ctx's error too. One that ends while an
// ask is out unanswered ends with ctx's error, not a refusal: the cell
// may have made that change (CellStatus tells; adding a member already in
// changes nothing).
//
// A call that fails after an ask that may have made the change (one left
// unanswered, or refused unavailable or internal without unchanged, as a
// leader that lost its office as it committed the change answers) fails
// with ErrInDoubt too, whatever the later asks were told: the change may
// have been made. One whose every refusal was marked unchanged (a member
// that does not lead: PROTOCOL.md §9, key 7), or refused it whole, made
// no change. Until session 20 a call never said so, and the daemons
// marked no refusal of a change.
func (c *Client) CellAdd(ctx context.Context, addr string, pin Fingerprint, member Replica) ([]Replica, error) {
	return c.cellChange(ctx, wire.OpCellAdd, addr, pin, wire.CellMember{Addr: member.Addr, Fingerprint: member.Fingerprint})
}

// CellRemove asks the cell to remove the member whose key is fp; as
// CellAdd otherwise. Each request's connection closes with it, unless a
// Group handle on that daemon holds it.
func (c *Client) CellRemove(ctx context.Context, addr string, pin Fingerprint, fp Fingerprint) ([]Replica, error) {
	return c.cellChange(ctx, wire.OpCellRemove, addr, pin, wire.CellMember{Fingerprint: fp})
}

// cellChangeFor bounds a CellAdd or CellRemove whose context has no
// deadline: the change is committed within a second or two of an
// election; a minute leaves room for a slow one and a leader lost on the way.
const cellChangeFor = time.Minute

// cellChangeRetryMax caps the wait a member's refusal of a cell change
// asks for (retry_after_ms, up to wire.MaxRetryAfter, an hour): the
// reference daemons ask for 200 ms while the cell elects a leader.
const cellChangeRetryMax = 2 * time.Second

func (c *Client) cellChange(ctx context.Context, op wire.Op, addr string, pin Fingerprint, req wire.CellMember) ([]Replica, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cellChangeFor)
		defer cancel()
	}
	// The member the caller named: asked again when the leader it named
	// does not answer (killed as the change was sent on, and the cell
	// electing the next): it names the next one. Only that member's
	// silence fails the change as unreachable.
	asked, askedPin := addr, pin
	// The last refusal that had the change asked again: the call's
	// answer if it ends before another ask is answered or goes out.
	var refused error
	// doubt: an ask may have made the change (changeDoubt).
	doubt := false
	for redirects := 0; ; redirects++ {
		// Held for the one request: a program that operates many cells
		// keeps no connection to them.
		p, err := c.groupPeer([]string{addr}, pin, wire.UUID{})
		if err != nil {
			return nil, changeDoubt(doubt, err)
		}
		var out wire.CellChanged
		unanswered, err := p.singleOut(ctx, op, req, &out)
		c.releaseGroup(p)
		doubt = doubt || unanswered || (serverSaid(err) && !refusedWhole(err))
		if err != nil && refused != nil && !unanswered && !serverSaid(err) && ctx.Err() != nil {
			// The call ended as it asked again, before that ask went out
			// (each ask dials anew, and its dial may take the rest of the
			// call): the cell's last word is the refusal. That ask's
			// error (unreachable, the call's deadline passed) told the
			// caller the member never answered (until session 19). One
			// that went out unanswered is no refusal: the change may
			// have been made.
			return nil, changeDoubt(doubt, fmt.Errorf("%w; asked again until the call ended (%w): %v", refused, ctx.Err(), err))
		}
		var we *wire.Error
		if errors.As(err, &we) && we.Code == wire.CodeUnavailable && redirects < 64 {
			refused = namedOnce(op, err)
			if we.Leader != nil {
				addr, pin = we.Leader.Addr, we.Leader.Fingerprint
				if redirects < 2 {
					continue
				}
			}
			// An election under way (or a leader just deposed): ask
			// again shortly, until ctx ends.
			wait := min(max(cellRetryMin, we.RetryAfter()), cellChangeRetryMax)
			if sleep(ctx, jitter(wait)) {
				continue
			}
			return nil, changeDoubt(doubt, fmt.Errorf("%w; asked again until the call ended (%w)", refused, ctx.Err()))
		}
		if errors.Is(err, ErrUnreachable) && (addr != asked || pin != askedPin) && redirects < 64 {
			addr, pin = asked, askedPin
			if sleep(ctx, jitter(cellRetryMin)) {
				continue
			}
		}
		if err != nil {
			return nil, changeDoubt(doubt, namedOnce(op, err))
		}
		return out.Members, nil
	}
}

// changeDoubt marks err, a cell change's, as one whose outcome is unknown
// (ErrInDoubt) if doubt: an ask of it may have made the change.
func changeDoubt(doubt bool, err error) error {
	if !doubt || errors.Is(err, ErrInDoubt) {
		return err
	}
	return &changeDoubtError{err}
}

// changeDoubtError is a cell change's error whose outcome is unknown
// (changeDoubt).
type changeDoubtError struct{ err error }

func (e *changeDoubtError) Error() string {
	return "outcome unknown (the cell may have made the change; its status shows its members): " + e.err.Error()
}
func (e *changeDoubtError) Unwrap() []error { return []error{ErrInDoubt, e.err} }

// namedOnce returns err naming op, unless it does already: the daemons'
// refusals ("cell_add: unauthorized: ...") do, and were shown as
// "cell_add: cell_add: ..." (until session 17). The call's own errors
// name no operation (peer.stream), as Group.fail and Registry.fail
// expect too.
func namedOnce(op wire.Op, err error) error {
	if serverSaid(err) {
		return err
	}
	return fmt.Errorf("%v: %w", op, err)
}

// cellAskWait bounds each cell_status question CellMembers asks of a
// member.
const cellAskWait = 2 * time.Second

// cellAskAddrs bounds the addresses CellMembers tries for one member
// from at (the listings).
const cellAskAddrs = 4

// CellMembers asks the members of recorded, the replica set of a cell's
// group a program recorded when its user joined it (their keys; at most
// MaxReplicas), for the cell's members now: cell_status (CellStatus), at
// the addresses at gives for each (the first cellAskAddrs of them, the
// next one dialled too after 250 ms of silence; 2 s in all), its key
// pinned, and, for a member not answering there, at the address each
// member that answered names it at. It
// returns the set of keys that a majority of recorded answered alike
// (each key once, in the reference order), and the key of a member of
// recorded that answered it and is among it (else one that answered it).
// Errors: ErrCellUnconfirmed (no majority answered alike before ctx
// ended), ErrBadRequest (recorded is empty or too large). Every question
// has ended when it returns.
//
// Why a majority: a member removed from the cell (a host taken out, its
// key stolen since) is still in the set recorded until the program
// follows the cell; taking the first member's answer, as huddle did, let
// it answer a set of its own keys, which the program then dialled and
// sent to. Raft changes a cell's members one at a time, each change
// committed by a majority: a majority of the set recorded answers the new
// set, a removed member alone never does.
//
// Why the members' addresses too: at comes from registries' listings,
// and a rogue registry listing a member as the group's leader at 16
// addresses that never answer (its lease the longest, so they come
// first) kept that member from being asked at all; with another member
// gone (the one being replaced) no majority answered, and the set was
// never followed (until session 16). The addresses a member answering
// (its key pinned) names are the cell's own word, and each is asked
// under the key it is named for. And a member's listed addresses are
// raced, as a group's daemon's are: asked one after the other, 2 s each,
// a rogue registry's address listed first for each member that never
// answers held every answer 2 s, half the CLI's whole wait.
func (c *Client) CellMembers(ctx context.Context, recorded []Fingerprint, at map[Fingerprint][]string) ([]Fingerprint, Fingerprint, error) {
	var keys []Fingerprint
	for _, fp := range recorded {
		if !slices.Contains(keys, fp) {
			keys = append(keys, fp)
		}
	}
	if len(keys) == 0 || len(keys) > wire.MaxReplicas || slices.ContainsFunc(keys, Fingerprint.IsZero) {
		return nil, Fingerprint{}, fmt.Errorf("a recorded replica set of %d keys: %w", len(keys), ErrBadRequest)
	}
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		from  Fingerprint
		set   []Fingerprint // nil: no answer at the addresses asked
		named []wire.Replica
	}
	// Each key is asked once at its listed addresses, and at most once
	// more for each member an answer names (at most MaxReplicas), each
	// key's answer counted once: the channel holds every answer.
	answers := make(chan answer, len(keys)*(1+wire.MaxReplicas))
	tried := make(map[Fingerprint][]string, len(keys))
	pending := 0
	ask := func(fp Fingerprint, addrs []string) {
		tried[fp] = append(tried[fp], addrs...)
		pending++
		wg.Go(func() {
			qctx, qcancel := context.WithTimeout(ctx, c.cellAskWait)
			st, err := c.cellStatusAt(qctx, addrs, fp)
			qcancel()
			if err != nil || len(st.Members) == 0 {
				answers <- answer{from: fp}
				return
			}
			var set []Fingerprint
			for _, m := range st.Members {
				if !slices.Contains(set, m.Fingerprint) {
					set = append(set, m.Fingerprint)
				}
			}
			slices.SortFunc(set, func(a, b Fingerprint) int { return bytes.Compare(a[:], b[:]) })
			answers <- answer{fp, set, st.Members}
		})
	}
	for _, fp := range keys {
		addrs := at[fp]
		if len(addrs) > cellAskAddrs {
			addrs = addrs[:cellAskAddrs]
		}
		ask(fp, addrs)
	}
	var got []answer
	answered := make(map[Fingerprint]bool, len(keys))
	for pending > 0 {
		a := <-answers
		pending--
		if a.set == nil || answered[a.from] {
			continue
		}
		answered[a.from] = true
		got = append(got, a)
		var alike []Fingerprint
		for _, o := range got {
			if slices.Equal(o.set, a.set) {
				alike = append(alike, o.from)
			}
		}
		if len(alike) > len(keys)/2 {
			from := alike[0]
			if i := slices.IndexFunc(alike, func(fp Fingerprint) bool { return slices.Contains(a.set, fp) }); i >= 0 {
				from = alike[i]
			}
			return a.set, from, nil
		}
		for _, m := range a.named {
			// Not at an address not to dial (box:http, 0.0.0.0:7001),
			// which a status may name (wire.Dialable): no member is
			// dialled there.
			if slices.Contains(keys, m.Fingerprint) && !answered[m.Fingerprint] && m.Addr != "" && wire.Dialable(m.Addr) && !slices.Contains(tried[m.Fingerprint], m.Addr) {
				ask(m.Fingerprint, []string{m.Addr})
			}
		}
	}
	return nil, Fingerprint{}, fmt.Errorf("cell members, %d of %d recorded answering: %w", len(got), len(keys), ErrCellUnconfirmed)
}
