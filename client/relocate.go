package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// A daemon killed and started again elsewhere (another port, another host)
// under the same key registers its groups at the new address at once, but
// a listing read before that still names the old one, which answers
// nothing: a dial there waits out DialTimeout and fails. A handle from a
// registry listing (Registries.Group) therefore, when a call needs a new
// connection to a group of one daemon (none yet, or the one it held died
// under the call: redial), dials the listed addresses and,
// for as long as no dial succeeds, asks the registries every
// relookEvery where the group is now: listed under the same key at other
// addresses, the handle dials there too and the first connection made
// wins; listed nowhere, the call fails at once, saying so; listed where
// it was, the handle keeps dialling until the call's context ends (a
// context without a deadline: until one dial of the addresses listed has
// failed), and the error says the registries still list it there. A
// group replicated by a cell follows its replicas instead (cell.go).

// relookEvery is how long a dial goes unanswered before the registries
// are asked again where the group is. A live daemon completes the
// handshake in a round trip; one restarted registers within a moment.
const relookEvery = time.Second

// reach returns the peer to call for g, connected if g's daemon was found:
// the handle's peer as it is when it has a connection, or when the handle
// has no registries to ask or follows a cell's replicas; otherwise the
// result of looking for the daemon as above (locate). The peers it uses
// are added to u, in use until the call gives them back (doneAll).
// Errors: those of a dial (ErrUnreachable, a key mismatch,
// ErrShuttingDown, ErrClosed).
func (g *Group) reach(ctx context.Context, u *inUse) (*peer, error) {
	p := g.use()
	*u = append(*u, p)
	if len(g.regs) == 0 || p.connected() || g.replicated() {
		return p, nil
	}
	return g.locate(ctx, p, u)
}

// redial returns where the second attempt of a call whose connection died
// goes (peer.callThen): for a handle that follows its daemon, reach (its
// peers added to u), so that the daemon's addresses are dialled again
// and, while they do not answer, the registries asked where the group is
// now (a daemon killed and started elsewhere); else nil, the same peer
// dialled again.
func (g *Group) redial(u *inUse) func(context.Context) (*peer, error) {
	if len(g.regs) == 0 || g.replicated() {
		return nil
	}
	return func(ctx context.Context) (*peer, error) { return g.reach(ctx, u) }
}

// dialled is the outcome of one dial of locate's.
type dialled struct {
	p   *peer
	err error
}

// locate dials p's addresses, and those the registries list g at while
// no dial succeeds, as the comment at the top of this file says. The peer
// that connects becomes the handle's. The peers it dials are added to u.
func (g *Group) locate(ctx context.Context, p *peer, u *inUse) (*peer, error) {
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: every dial has ended when locate returns
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan dialled)
	inflight := make(map[*peer]bool)
	dial := func(p *peer) {
		inflight[p] = true
		wg.Go(func() {
			_, err := p.get(ctx)
			select {
			case results <- dialled{p, err}:
			case <-ctx.Done():
			}
		})
	}
	_, deadline := ctx.Deadline()
	cur, fp := p, p.pin
	failed := false   // a dial of cur's addresses failed
	var listed string // what the registries said when last asked
	dial(cur)
	tick := time.NewTicker(relookEvery)
	defer tick.Stop()
	for {
		select {
		case d := <-results:
			delete(inflight, d.p)
			switch {
			case d.err == nil:
				g.mu.Lock()
				g.p = d.p
				g.mu.Unlock()
				return d.p, nil
			case !errors.Is(d.err, ErrUnreachable):
				return nil, d.err // a wrong key, a server shutting down, a closed client
			case ctx.Err() != nil || !deadline && len(inflight) == 0:
				return nil, withListing(d.err, listed)
			}
			failed = failed || d.p == cur
		case <-tick.C:
			addrs, left, found, asked := g.listedAt(ctx, fp)
			switch {
			case found == listedNowhere:
				return nil, &NotListedError{Group: g.name, Daemon: fp, Addrs: cur.addrs, Registries: asked}
			case found == listedThere && !slices.Equal(addrs, cur.addrs):
				np, err := g.peerAt(addrs, fp)
				if err != nil {
					return nil, err
				}
				*u = append(*u, np)
				g.cl.cfg.Logger.Debug("group listed at other addresses; dialling them", "group", g.id, "from", cur.addrs, "to", addrs)
				cur, failed, listed = np, false, ""
			case found == listedThere:
				listed = fmt.Sprintf("the registries still list it there, for another %v: its daemon may have stopped without deregistering, or be cut off from here", left.Round(time.Second))
			}
			if !inflight[cur] && (!failed || deadline) {
				dial(cur) // where it moved, or again where it is listed: a daemon may come back there
			}
		case <-ctx.Done():
			return nil, withListing(fmt.Errorf("%w: %s: %w", ErrUnreachable, strings.Join(shownAll(cur.addrs), ","), ctx.Err()), listed)
		}
	}
}

// withListing adds what the registries said of the group to a dial's
// error.
func withListing(err error, listed string) error {
	if listed == "" {
		return err
	}
	return fmt.Errorf("%w (%s)", err, listed)
}

// NotListedError is the error of a call on a handle from a registry
// listing whose daemon did not answer, when the registries that answered
// no longer list the group under that daemon's key: the daemon stopped
// and deregistered, or its listing lapsed. It matches ErrUnreachable.
type NotListedError struct {
	Group      string      // the group's name
	Daemon     Fingerprint // the key it was listed under
	Addrs      []string    // where it was listed, and dialled
	Registries []string    // the addresses of the registries that answered
}

func (e *NotListedError) Error() string {
	return fmt.Sprintf("%v: %s: group %s of daemon %s is no longer listed by the registries that answered (%s): its daemon stopped, or no longer reaches them",
		ErrUnreachable, strings.Join(shownAll(e.Addrs), ","), wire.Shown(e.Group), e.Daemon.Short(), strings.Join(shownAll(e.Registries), ", "))
}

// Unwrap makes errors.Is(err, ErrUnreachable) true.
func (e *NotListedError) Unwrap() error { return ErrUnreachable }

// Where the registries list a group (listedAt).
const (
	listedUnknown = iota // no registry answered
	listedThere          // listed under the daemon's key
	listedNowhere        // the registries that answered do not list it under that key
)

// listedAt asks g's registries where its daemon, key fp, is listed now:
// the addresses, most time left first, as Merge gives them, and the time
// left on that listing; and the addresses of the registries that
// answered.
func (g *Group) listedAt(ctx context.Context, fp Fingerprint) (addrs []string, left time.Duration, found int, answered []string) {
	ctx, cancel := context.WithTimeout(ctx, relookEvery)
	defer cancel()
	answers := g.regs.List(ctx)
	found = listedUnknown
	for _, a := range answers {
		if a.Err == nil {
			found = listedNowhere
			answered = append(answered, a.Registry.Addr())
		}
	}
	for _, e := range Merge(answers) {
		if e.Group == g.id && e.Fingerprint == fp && len(e.Replicas) == 0 {
			return e.Addrs, ms(e.ExpiresMS), listedThere, answered
		}
	}
	return nil, 0, found, answered
}
