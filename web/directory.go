package web

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// Timings of the directory.
const (
	// registryTimeout bounds opening and listing one registry.
	registryTimeout = 3 * time.Second
	// staleListing is how long a registry's last good listing stands in
	// for it while it does not answer (a registry restarting): its groups
	// do not blink out of the page.
	staleListing = 30 * time.Second
	// infoEvery is how often each listed group's info (membership,
	// privacy, limits) is asked again; a group is asked at once when it
	// appears, after a join or leave through this server, after a send
	// through it that could not reach its daemon and after a watch of it
	// drops or resumes (askAgain), and, at most once a poll interval,
	// when the registries' counts of it move or its last info failed.
	infoEvery = 30 * time.Second
	// infoConcurrency bounds the info requests in flight at once.
	infoConcurrency = 4
	// demandWindow: the directory polls while an event stream is open, or
	// for this long after the last API request that read the list.
	demandWindow = 30 * time.Second
	// missedFor is how long a wait of registryTimeout that ended with no
	// registry listing a group answers for it: an API request for the
	// group within it is answered not_found at once (listed).
	missedFor = 30 * time.Second
)

// directory keeps the groups every known registry lists, merged by UUID,
// with what each group's daemon says of it, and publishes the list when it
// changes. Each registry is polled by a goroutine of its own, so a registry
// that does not answer delays nothing but its own listing; each group's
// info is asked on a goroutine of its own too. run owns them all.
type directory struct {
	c        *client.Client
	poll     time.Duration
	maxHeld  int // Config.MaxListingBytes
	log      *slog.Logger
	discover func(context.Context, func(*client.Registry), func(wire.Fingerprint)) error
	joined   Joined // Config.Joined; nil if none

	ctx   context.Context // run's, once it started
	wg    sync.WaitGroup  // every goroutine run started
	info  chan struct{}   // a token per info request in flight
	every time.Duration   // infoEvery (tests lengthen it)

	mu     sync.Mutex
	regs   []*registryState // given first, in order, then discovered
	groups map[wire.UUID]*groupState
	// joinedNow is what Joined said at the last merge: each group joined
	// (its UUID and daemon key) and the name it was joined under.
	joinedNow map[groupKey]string
	// cellsNow is what Joined said at the last merge of the replica set
	// of each cell's group joined (JoinedCells), by UUID: nil for a group
	// without one.
	cellsNow map[wire.UUID][]wire.Fingerprint
	// followAt is when each joined cell's group's set was last asked of
	// its members (followLocked).
	followAt map[wire.UUID]time.Time
	// held are the groups the user joined that registries list only
	// under daemon keys they did not join them under (pickKeysLocked),
	// each with those keys: shown unlisted, never reached at those keys.
	held map[wire.UUID][]wire.Fingerprint
	// missed holds, for each group a wait for the registries to list
	// ended without them listing it, when it ended; merge forgets a group
	// once a registry lists it (listed).
	missed    map[wire.UUID]time.Time
	list      listJSON
	listBytes []byte
	changed   chan struct{} // closed and replaced when list changes
	merged    chan struct{} // closed and replaced after each merge
	mergedAny bool          // a merge has happened
	streams   int           // event streams open
	demand    time.Time     // last API read of the list
	wake      chan struct{} // closed and replaced to make pollers poll now
	// waitHook, a test hook, is called (d.mu held) when a request for a
	// group no registry lists begins to wait for one to list it.
	waitHook func(wire.UUID)
}

type registryState struct {
	addr       string           // a discovered one's moves with it (addRegistry)
	reg        *client.Registry // nil until opened
	discovered bool             // found over mDNS, not given
	entries    []wire.GroupEntry
	at         time.Time // of entries
	held       int       // bytes of entries (client.Registry.ListWithin's count)
	reading    int       // bytes of the listing being read, so far
	err        error     // of the last attempt
	polled     bool      // an attempt has ended
	leftOut    int       // entries its last listing left out (not host:port)
	leftOutLog bool      // that it leaves some out was logged
	stop       func()    // ends its poller; nil until it starts
}

// groupKey is a group as the user joins it: its UUID at one daemon's key.
type groupKey struct {
	group  wire.UUID
	daemon wire.Fingerprint
}

type groupState struct {
	entry   wire.GroupEntry
	entryAt time.Time // when entry's registry listed it
	regs    []string  // addresses of the registries listing it, each once
	// name is the name the group is shown under: the one the user joined
	// it under (Config.Joined), else that of its entry whose lease ends
	// last, as the CLI names it (client.Merge); otherNames are the other
	// names registries list it under (at the key used), in the order
	// found. A rogue registry may rename a group, or list one of its own
	// under the real one's name: the page shows, filters on and counts
	// every name, as the CLI resolves GROUP against every one.
	name       string
	otherNames []string
	clash      bool // another registry lists the UUID with another daemon key
	handle     *client.Group
	addrs      []string // the addresses handle dials (handleSource)
	info       *client.Info
	infoAt     time.Time
	infoOK     bool // the last info request succeeded
	asking     bool // an info request is in flight
	// moved: the registries' counts of the group (members, last
	// sequence) changed since its info was last asked. A daemon that
	// restarted with a new log between two polls shows only as that,
	// and its info (epoch, first sequence) is asked again at once.
	moved bool
	// members is the member count the daemon gave at membersAt (in its
	// info, or the member list a page asked for): it stands for the
	// registries' count until a listing newer than it comes.
	members   uint64
	membersAt time.Time
}

// groupJSON is a group as the API lists it.
type groupJSON struct {
	UUID string `json:"uuid"`
	// Name is the name the user joined the group under, else the one of
	// the registries' entries whose lease ends last (the name huddle
	// groups shows); OtherNames are the other names registries list it
	// under, as they came (huddle groups --json's other_names).
	Name        string   `json:"name"`
	OtherNames  []string `json:"other_names,omitempty"`
	Fingerprint string   `json:"fingerprint"` // the group daemon's key
	Addrs       []string `json:"addrs"`
	Members     uint64   `json:"members"`
	LastSeq     uint64   `json:"last_seq"`
	Registries  []string `json:"registries"`
	// Unlisted: a group the user joined (Config.Joined) that no registry
	// lists now (its daemon stopped, or has not registered again yet):
	// shown so that it is not lost from the page, Member set, Reachable
	// not.
	Unlisted bool `json:"unlisted,omitempty"`
	// Clash: registries disagree on which daemon hosts this UUID; the
	// one the user joined is used, else the first registry's
	// (Registries[0] lists the one used: pickKeysLocked). With Unlisted:
	// registries list the UUID, but only under daemon keys other than
	// those the user joined it under (OtherKeys), which are not used: its
	// daemon may be down and an impostor listed in its place, or its
	// daemon moved to a new key (joined at one of them, with huddle join
	// --daemon, it is used).
	Clash     bool     `json:"clash,omitempty"`
	OtherKeys []string `json:"other_keys,omitempty"`
	// Asking: its daemon has not answered since huddle web started, and
	// the first answer is awaited (Reachable false, for not known yet).
	// The page took reachable false alone for a daemon that did not
	// answer, and showed every group "unreachable" for the moment
	// between a page loaded at huddle web's start and the first answers.
	Asking bool `json:"asking,omitempty"`
	// From the group's daemon (info); absent until it answered.
	Reachable       bool   `json:"reachable"`
	Member          bool   `json:"member"`
	Private         bool   `json:"private"`
	Epoch           uint64 `json:"epoch,string,omitempty"` // a string: it does not fit a JavaScript number
	FirstSeq        uint64 `json:"first_seq,omitempty"`
	MaxMessageBytes uint64 `json:"max_message_bytes,omitempty"`
	// SendAfter: the daemon checks a retry's after_epoch/after_seq
	// (PROTOCOL.md §8.5, info key 15), so every retry of a message in
	// doubt is safe (refused window_passed rather than stored twice): the
	// page goes on retrying one while it says so, and stops after its
	// bound of tries against a daemon that does not.
	SendAfter bool `json:"send_after,omitempty"`
}

// registryJSON is a registry and how its last request went.
type registryJSON struct {
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint,omitempty"`
	OK          bool   `json:"ok"`
	Error       string `json:"error,omitempty"`
	// Code is too_large for a listing over the registry's part of
	// Config.MaxListingBytes (its groups are not shown), key_changed for
	// a registry that presented another key than the one pinned for its
	// name (Forget is then the command that accepts the new key, if the
	// change is expected), else empty.
	Code   string `json:"code,omitempty"`
	Forget string `json:"forget,omitempty"`
	// LeftOut counts the groups its listing names at an address that is
	// not host:port, which are not shown (client.Listing.Skipped).
	LeftOut int `json:"left_out,omitempty"`
}

type listJSON struct {
	Groups     []groupJSON    `json:"groups"`
	Registries []registryJSON `json:"registries"`
}

func newDirectory(cfg Config) *directory {
	d := &directory{c: cfg.Client, poll: cfg.PollInterval, maxHeld: cfg.MaxListingBytes, log: cfg.Logger, discover: cfg.Discover, joined: cfg.Joined,
		info: make(chan struct{}, infoConcurrency), every: infoEvery,
		groups: make(map[wire.UUID]*groupState), missed: make(map[wire.UUID]time.Time), changed: make(chan struct{}), merged: make(chan struct{}),
		wake: make(chan struct{})}
	for _, a := range cfg.Registries {
		d.regs = append(d.regs, &registryState{addr: a})
	}
	d.list = listJSON{Groups: []groupJSON{}, Registries: []registryJSON{}}
	d.listBytes, _ = json.Marshal(d.list)
	return d
}

// run polls every registry while there is demand, and runs discovery,
// until ctx ends; it returns once every goroutine it started has ended.
func (d *directory) run(ctx context.Context) {
	d.mu.Lock()
	d.ctx = ctx // addRegistry starts the pollers of those found from now on
	for _, rs := range d.regs {
		d.startPollLocked(ctx, rs)
	}
	d.mu.Unlock()
	if d.discover != nil {
		d.wg.Go(func() {
			err := d.discover(ctx, d.addRegistry, d.removeRegistry)
			if err != nil && ctx.Err() == nil {
				d.log.Warn("registry discovery ended", "err", err)
			}
		})
	}
	<-ctx.Done()
	d.wg.Wait()
	d.mu.Lock()
	for _, rs := range d.regs {
		if rs.reg != nil {
			rs.reg.Close()
		}
	}
	var handles []*client.Group
	for _, gs := range d.groups {
		handles = append(handles, gs.handle)
	}
	d.mu.Unlock()
	for _, h := range handles {
		h.Close()
	}
}

// startPollLocked starts rs's poller, which ends with ctx or rs.stop.
// d.mu is held.
func (d *directory) startPollLocked(ctx context.Context, rs *registryState) {
	pctx, stop := context.WithCancel(ctx)
	rs.stop = stop
	d.wg.Go(func() {
		defer stop()
		d.pollRegistry(pctx, rs)
	})
}

// pollRegistry lists rs every poll interval while the list is wanted.
func (d *directory) pollRegistry(ctx context.Context, rs *registryState) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		d.mu.Lock()
		wake := d.wake
		wanted := d.streams > 0 || time.Since(d.demand) < demandWindow
		d.mu.Unlock()
		if wanted {
			d.listRegistry(ctx, rs)
			d.merge()
		}
		t.Reset(d.poll)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
	}
}

// addRegistry adds a discovered registry, unless one at its address is
// known, and starts polling it. A registry is known by its key, as Browse
// bounds them: one found again at another address (it moved, or its key
// answers at several) is polled there from then on, and one whose key a
// registry given by address presents is that one. The directory owns r:
// it closes it when it drops it, or at once if it is not used.
func (d *directory) addRegistry(r *client.Registry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, rs := range d.regs {
		if rs.addr == r.Addr() {
			r.Close()
			return
		}
	}
	for _, rs := range d.regs {
		if rs.reg != nil && rs.reg.Fingerprint() == r.Fingerprint() {
			if !rs.discovered {
				r.Close()
				return
			}
			d.log.Debug("registry found at another address", "was", rs.addr, "addr", r.Addr(), "fingerprint", r.Fingerprint().Short())
			old := rs.reg
			rs.addr, rs.reg = r.Addr(), r
			old.Close() // a listing in flight through it fails, and is tried again at the new address
			return
		}
	}
	rs := &registryState{addr: r.Addr(), reg: r, discovered: true}
	d.regs = append(d.regs, rs)
	d.log.Info("registry found", "addr", r.Addr(), "fingerprint", r.Fingerprint().Short())
	if ctx := d.ctx; ctx != nil && ctx.Err() == nil {
		d.startPollLocked(ctx, rs)
	}
}

// removeRegistry drops the registry discovered with key fp, which
// discovery says is gone: its poller stops, its connection closes and its
// groups leave the list. A registry given by address is kept (it is
// polled until huddle web stops).
func (d *directory) removeRegistry(fp wire.Fingerprint) {
	d.mu.Lock()
	i := slices.IndexFunc(d.regs, func(rs *registryState) bool {
		return rs.discovered && rs.reg != nil && rs.reg.Fingerprint() == fp
	})
	if i < 0 {
		d.mu.Unlock()
		return
	}
	rs := d.regs[i]
	d.regs = slices.Delete(d.regs, i, i+1)
	if rs.stop != nil {
		rs.stop()
	}
	rs.reg.Close()
	d.mu.Unlock()
	d.log.Info("registry gone", "addr", rs.addr, "fingerprint", fp.Short())
	d.merge()
}

// stream counts an event stream as open until the returned func is called.
func (d *directory) stream() (done func()) {
	d.mu.Lock()
	d.streams++
	d.wakeLocked()
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		d.streams--
		d.mu.Unlock()
	}
}

// wakeLocked makes the pollers poll now, if the list was not wanted a
// moment ago (they poll on their own while it is).
func (d *directory) wakeLocked() {
	if d.streams > 1 || time.Since(d.demand) < d.poll {
		return
	}
	close(d.wake)
	d.wake = make(chan struct{})
}

// current returns the list (waiting for the first poll of every registry
// if none has ended yet, at most registryTimeout) and the channel closed
// when it next changes.
func (d *directory) current(ctx context.Context) (listJSON, []byte, <-chan struct{}) {
	d.mu.Lock()
	d.wakeLocked()
	d.demand = time.Now()
	first := !d.mergedAny
	d.mu.Unlock()
	if first {
		d.awaitMerge(ctx)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.list, d.listBytes, d.changed
}

// awaitMerge waits for the next merge, at most registryTimeout.
func (d *directory) awaitMerge(ctx context.Context) {
	d.mu.Lock()
	merged := d.merged
	d.mu.Unlock()
	t := time.NewTimer(registryTimeout)
	defer t.Stop()
	select {
	case <-merged:
	case <-t.C:
	case <-ctx.Done():
	}
}

// watchList returns the list as JSON and the channel closed when it next
// changes, without waiting.
func (d *directory) watchList() ([]byte, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.listBytes, d.changed
}

// group returns the handle of a listed group, waiting up to registryTimeout
// for the registries to list it (a daemon that just restarted registers
// again a moment after it serves). Errors: wire.ErrNotFound.
func (d *directory) group(ctx context.Context, id wire.UUID) (*client.Group, error) {
	h, _, err := d.find(ctx, id, true)
	return h, err
}

// listed is group for an API request, and also returns the group's state
// as the directory holds it now: joinedAt takes it, to record a join made
// through the handle only if the group is still the same one (of the same
// daemon, or cell) when the join returns. A group that a wait of
// registryTimeout found unlisted less than missedFor ago is answered
// not_found at once, the pollers woken: a page retrying a message to a
// group whose daemon is away waited 3 s for every try (session 22), and
// sent nothing else meanwhile. A group registered since is listed by the
// poll that the request wakes, and found by the next request.
func (d *directory) listed(ctx context.Context, id wire.UUID) (*client.Group, *groupState, error) {
	return d.find(ctx, id, false)
}

// find is group (patient: it always waits) or listed.
func (d *directory) find(ctx context.Context, id wire.UUID, patient bool) (*client.Group, *groupState, error) {
	deadline := time.Now().Add(registryTimeout)
	for attempt := 0; ; attempt++ {
		d.mu.Lock()
		var h *client.Group
		gs := d.groups[id]
		if gs != nil {
			h = gs.handle
		}
		if h == nil && attempt == 0 {
			d.wakeLocked()
			d.demand = time.Now()
			if at, ok := d.missed[id]; ok && !patient && time.Since(at) < missedFor {
				d.mu.Unlock()
				return nil, nil, fmt.Errorf("group %s: %w: no registry lists it", id, wire.ErrNotFound)
			}
			if d.waitHook != nil {
				d.waitHook(id)
			}
		}
		merged := d.merged
		d.mu.Unlock()
		if h != nil {
			return h, gs, nil
		}
		wait := time.Until(deadline)
		if wait <= 0 || ctx.Err() != nil {
			if ctx.Err() == nil {
				d.missedNow(id)
			}
			return nil, nil, fmt.Errorf("group %s: %w: no registry lists it", id, wire.ErrNotFound)
		}
		t := time.NewTimer(wait)
		select {
		case <-merged:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// missedNow records that a wait for the registries to list group id has
// just ended without them listing it, and forgets the groups recorded
// missedFor ago or more, so that the record holds no more groups than were
// asked for within missedFor.
func (d *directory) missedNow(id wire.UUID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.groups[id] != nil {
		return // listed meanwhile
	}
	now := time.Now()
	maps.DeleteFunc(d.missed, func(_ wire.UUID, at time.Time) bool { return now.Sub(at) >= missedFor })
	d.missed[id] = now
}

// handle returns the handle on a listed group the directory holds now, or
// nil if no registry lists the group.
func (d *directory) handle(id wire.UUID) *client.Group {
	d.mu.Lock()
	defer d.mu.Unlock()
	if gs := d.groups[id]; gs != nil {
		return gs.handle
	}
	return nil
}

// merge rebuilds the groups from every registry's last good listing, asks
// new and stale groups for their info (in the background), and publishes
// the list if it changed. The handles of groups no longer listed (or
// listed under another daemon key) are closed, so that a daemon no listed
// group and no running watch uses holds no connection of huddle web's: a
// watch on such a handle runs on (client.Group.Close).
func (d *directory) merge() {
	now := time.Now()
	var dropped []*client.Group
	defer func() {
		// Not under d.mu: closing a connection waits for a dial of it in
		// flight.
		for _, h := range dropped {
			h.Close()
		}
	}()
	var joined map[groupKey]string
	var cellSets map[wire.UUID][]wire.Fingerprint
	if d.joined != nil {
		// Not under d.mu: a Joined may read a file.
		groups := d.joined.Groups()
		joined = make(map[groupKey]string, len(groups))
		jc, _ := d.joined.(JoinedCells)
		cellSets = make(map[wire.UUID][]wire.Fingerprint)
		for _, e := range groups {
			joined[groupKey{e.Group, e.Fingerprint}] = e.Name
			if jc != nil {
				cellSets[e.Group] = jc.Cell(e.Group)
			}
		}
	}
	d.mu.Lock()
	d.joinedNow, d.cellsNow = joined, cellSets
	d.followLocked(now)
	cells := d.cellsLocked(now)
	pick, held := d.pickKeysLocked(now, cells)
	d.held = held
	sources := d.handleSourcesLocked(now, pick, cells)
	seen := make(map[wire.UUID]bool)
	names := make(map[wire.UUID]*listedNames)
	for i, rs := range d.regs {
		if rs.at.IsZero() || now.Sub(rs.at) > staleListing {
			continue
		}
		// A registry lists a group once (as handleSourcesLocked and
		// client.Merge take it): its later entries of the group named
		// it again in the group's registries, and gave it their names.
		listed := make(map[wire.UUID]bool)
		for _, e := range cells.entries(i, rs) {
			if k, ok := pick[e.Group]; ok && e.Fingerprint != k || held[e.Group] != nil {
				continue // after: the key used comes first; never: a key not joined
			}
			if listed[e.Group] {
				continue
			}
			listed[e.Group] = true
			n := names[e.Group]
			if n == nil {
				n = &listedNames{}
				names[e.Group] = n
			}
			n.add(e, rs.at)
			gs := d.groups[e.Group]
			if !seen[e.Group] {
				seen[e.Group] = true
				delete(d.missed, e.Group)
				src := sources[e.Group]
				if gs == nil || !sameGroup(gs.entry, e) || src != nil && !src.keeps(gs) {
					if src == nil {
						continue // its registry's handle is being replaced: the next merge
					}
					h, err := src.open(e)
					if err != nil {
						continue
					}
					if gs != nil {
						dropped = append(dropped, gs.handle)
					}
					if gs != nil && sameGroup(gs.entry, e) {
						gs.handle, gs.addrs = h, src.dials() // more addresses of the same daemon: what is known of it stays
					} else {
						gs = &groupState{handle: h, addrs: src.dials()}
						d.groups[e.Group] = gs
					}
				}
				if gs.info != nil && (e.LastSeq != gs.entry.LastSeq || e.Members != gs.entry.Members) {
					gs.moved = true
				}
				gs.entry, gs.entryAt, gs.regs, gs.clash = e, rs.at, []string{rs.addr}, false
				continue
			}
			if gs == nil {
				continue
			}
			gs.regs = append(gs.regs, rs.addr)
			if e.Fingerprint != gs.entry.Fingerprint {
				gs.clash = true
			}
		}
	}
	for i, rs := range d.regs {
		if rs.at.IsZero() || now.Sub(rs.at) > staleListing {
			continue
		}
		for _, e := range cells.entries(i, rs) {
			if k, ok := pick[e.Group]; ok && e.Fingerprint != k {
				if gs := d.groups[e.Group]; gs != nil && seen[e.Group] {
					if !slices.Contains(gs.regs, rs.addr) {
						gs.regs = append(gs.regs, rs.addr)
					}
					gs.clash = true
				}
			}
		}
	}
	for id, gs := range d.groups {
		if !seen[id] {
			delete(d.groups, id)
			dropped = append(dropped, gs.handle)
			continue
		}
		gs.name, gs.otherNames = names[id].pick(joined[joinedKey(joined, gs.entry)])
	}
	for _, gs := range d.groups {
		// A group whose counts moved is asked at most once a poll interval:
		// a busy group's move at every poll. So is one whose daemon did
		// not answer its last info, as one never reached is at every
		// merge: the page learns within a poll that it answers again, and
		// whether it checks retries (send_after: an older daemon may be
		// back in its place), not at the next infoEvery.
		if !gs.asking && (gs.info == nil || now.Sub(gs.infoAt) > d.every || (gs.moved || !gs.infoOK) && now.Sub(gs.infoAt) >= d.poll) {
			gs.moved = false
			d.askInfoLocked(gs)
		}
	}
	all := true
	for _, rs := range d.regs {
		all = all && rs.polled
	}
	d.publishLocked()
	if all {
		d.mergedAny = true
	}
	close(d.merged)
	d.merged = make(chan struct{})
	d.mu.Unlock()
}

// listedNames are the names registries list one group under (at the key
// merge uses), in the order found, and the one of the entry whose lease
// ends last.
type listedNames struct {
	all   []string
	last  string
	until time.Time // when last's lease ends
}

// maxLeaseMS bounds a lease as a registry gives it, so that it fits a
// time.Duration.
const maxLeaseMS = uint64(math.MaxInt64 / time.Millisecond)

// add counts e, listed by a registry at the time at.
func (n *listedNames) add(e wire.GroupEntry, at time.Time) {
	if !slices.Contains(n.all, e.Name) {
		n.all = append(n.all, e.Name)
	}
	// The CLI's rule (client.Merge): the name of the entry whose lease
	// has the most time left, the first found of equals. Registries are
	// polled at different times here, so the lease's end is compared.
	until := at.Add(time.Duration(min(e.ExpiresMS, maxLeaseMS)) * time.Millisecond)
	if n.until.IsZero() || until.After(n.until) {
		n.last, n.until = e.Name, until
	}
}

// pick returns the name a group is shown under, and its other names: the
// one the user joined it under (joinedAs, "" if none), as the CLI names a
// joined group by it whatever a registry lists it as now (resolveGroup),
// else the registries' name of the latest lease.
func (n *listedNames) pick(joinedAs string) (string, []string) {
	if n == nil {
		return joinedAs, nil
	}
	name := cmp.Or(joinedAs, n.last)
	var others []string
	for _, o := range n.all {
		if o != name {
			others = append(others, o)
		}
	}
	return name, others
}

// errListingTooLarge: a registry's listing is larger than its part of
// what the directory holds (Config.MaxListingBytes).
type errListingTooLarge struct {
	max, registries int
}

func (e errListingTooLarge) Error() string {
	size := fmt.Sprintf("%d MiB", e.max>>20)
	if e.max < 1<<20 {
		size = fmt.Sprintf("%d KiB", e.max>>10)
	}
	return fmt.Sprintf("its listing is larger than huddle web keeps: %s of listings in all, shared by the %d registries it knows "+
		"(its groups are not shown; give fewer registries, or the one you need alone with --registry)", size, e.registries)
}

// pickKeysLocked returns, for each UUID the registries' listings (those
// merge uses, as of now) name under more than one daemon key, the key
// merge uses: the first the user joined under (Config.Joined), else the
// first registry's. d.mu is held.
//
// Why: anyone on the LAN can advertise a registry, and any registry can
// list any UUID under a daemon key of its choosing; a group's UUID is
// public (list). The first registry's entry was used whatever the user
// joined: a rogue registry found over mDNS before the user's own (its
// answers came first) took the user's group to its impostor daemon, which
// got the messages the page sent there, private groups' included, and
// served a history of its making (the page only marked the group "two
// daemons"). The CLI resolved such a UUID to the key the user joined
// (joined file) already. A group joined under neither key takes the first
// registry's, as before: the registries the user gave come first; keeping
// the key used first in time instead would hand the group to whichever
// registry answered first, a discovered one before those given.
//
// It returns too, held, the UUIDs the user joined (as of the last merge)
// that registries list under none of the keys they joined them under,
// with the keys listed: merge uses none of them. While the daemon of a
// group the user joined was down (no registry listing it), a rogue
// registry listing its UUID under an impostor's key was its only listing,
// and was used: the page asked the impostor for the group's info, sent to
// it and read from it (until session 15). The CLI refuses such a UUID (a
// key clash) until the user takes the key (huddle join --daemon).
func (d *directory) pickKeysLocked(now time.Time, cells *cellViews) (pick map[wire.UUID]wire.Fingerprint, held map[wire.UUID][]wire.Fingerprint) {
	keys := make(map[wire.UUID][]wire.GroupEntry) // the first entry of each key
	for i, rs := range d.regs {
		if rs.at.IsZero() || now.Sub(rs.at) > staleListing {
			continue
		}
		for _, e := range cells.entries(i, rs) {
			ks := keys[e.Group]
			if !slices.ContainsFunc(ks, func(k wire.GroupEntry) bool { return k.Fingerprint == e.Fingerprint }) {
				keys[e.Group] = append(ks, e)
			}
		}
	}
	joinedIDs := make(map[wire.UUID]bool, len(d.joinedNow))
	for k := range d.joinedNow {
		joinedIDs[k.group] = true
	}
	pick, held = make(map[wire.UUID]wire.Fingerprint), make(map[wire.UUID][]wire.Fingerprint)
	for id, ks := range keys {
		i := slices.IndexFunc(ks, d.joinedUnder)
		if i < 0 && joinedIDs[id] {
			for _, e := range ks {
				held[id] = append(held[id], e.Fingerprint)
			}
			continue
		}
		if len(ks) < 2 {
			continue
		}
		k := ks[0].Fingerprint
		if i >= 0 {
			k = ks[i].Fingerprint
		}
		pick[id] = k
	}
	return pick, held
}

// handleSource is where a new handle on a group finds its daemon: the
// addresses every registry lists it at under the key used, the first
// registry's first, and those registries, which the handle asks where the
// daemon went when it cannot reach it.
//
// Why: a handle made from one registry's entry dialled only the addresses
// that registry listed, and asked only it. A rogue registry (anyone on the
// LAN can advertise one) polled first, listing the group under its real
// key at an address of its own, left the page unable to reach the group,
// the real registry's addresses unused; the client passes over an address
// where another key answers (client.Group), so one good address listed by
// any registry is enough.
type handleSource struct {
	addrs []string
	regs  client.Registries
	// members are, for a cell's group, the addresses every registry lists
	// each member's key at (cellViews), which the handle dials too.
	members map[wire.Fingerprint][]string
}

// open opens a handle on e's group with s's addresses and registries.
func (s *handleSource) open(e wire.GroupEntry) (*client.Group, error) {
	e.Addrs = s.addrs
	return s.regs.GroupListed(client.ListedGroup{GroupEntry: e, MemberAddrs: s.members})
}

// dials returns every address a handle opened from s dials: the group's,
// then its members' (a cell's), each once, in the order of e's replicas.
func (s *handleSource) dials() []string {
	if len(s.members) == 0 {
		return s.addrs
	}
	out := slices.Clone(s.addrs)
	fps := slices.Collect(maps.Keys(s.members))
	slices.SortFunc(fps, func(a, b wire.Fingerprint) int { return bytes.Compare(a[:], b[:]) })
	for _, fp := range fps {
		for _, a := range s.members[fp] {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// handleSourcesLocked returns the handleSource of each group listed (in
// the listings merge uses as of now), at the key merge uses for it: pick's,
// else the first registry's. d.mu is held.
func (d *directory) handleSourcesLocked(now time.Time, pick map[wire.UUID]wire.Fingerprint, cells *cellViews) map[wire.UUID]*handleSource {
	src := make(map[wire.UUID]*handleSource)
	key := make(map[wire.UUID]wire.Fingerprint)
	for i, rs := range d.regs {
		if rs.reg == nil || rs.at.IsZero() || now.Sub(rs.at) > staleListing {
			continue
		}
		// A registry lists a group once: a rogue one listing a real group
		// again and again, 16 new addresses each time, put them all before
		// the real one (each dialed for up to 5 s in turn) and had each
		// compared with all the others, at every merge.
		listed := make(map[wire.UUID]bool)
		for _, e := range cells.entries(i, rs) {
			if listed[e.Group] {
				continue
			}
			k, ok := key[e.Group]
			if !ok {
				k = e.Fingerprint
				if p, picked := pick[e.Group]; picked {
					k = p
				}
				key[e.Group] = k
			}
			if e.Fingerprint != k {
				continue
			}
			listed[e.Group] = true
			s := src[e.Group]
			if s == nil {
				s = &handleSource{members: cells.members[cellOf(e)]}
				src[e.Group] = s
			}
			if !slices.Contains(s.regs, rs.reg) {
				s.regs = append(s.regs, rs.reg)
			}
			for _, a := range e.Addrs {
				if !slices.Contains(s.addrs, a) {
					s.addrs = append(s.addrs, a)
				}
			}
		}
	}
	return src
}

// keeps reports whether gs's handle (of the key s is for) may stay: it
// dials every address of s, or s still lists an address it dials and its
// daemon answered its last info. Otherwise a
// registry lists the group at an address the handle lacks (one polled
// after the handle was opened), and merge opens another.
//
// Why the second: a rogue registry listing the group at a new address at
// every poll had merge open a handle at every poll and close the one
// before, so that an API call (a send, the info itself) that had taken it
// failed (not_found), and the next dialed the rogue's newest address
// first: at a poll shorter than a dial there, the group was never
// reached. A handle that reaches its daemon gains nothing from more
// addresses; one that stops reaching it shows so at its next info (asked
// every infoEvery, and when the registries' counts of the group move),
// and is opened again then, with every address listed. A handle whose
// daemon has not answered is not kept while an info is asked: a rogue
// registry polled first, listing the group at an address where another
// key answers, had the page's handle on that address alone kept (its info
// in flight, as it is most of the time: a group not reached is asked at
// every merge) once the real registry listed the group too, and a join
// then failed (502, wrong_key) until an info ended between two merges
// (until session 15). An info in flight on a handle replaced goes on, and
// a handle whose info answered is kept from the next merge on.
func (s *handleSource) keeps(gs *groupState) bool {
	addrs := s.dials()
	if !slices.ContainsFunc(addrs, func(a string) bool { return !slices.Contains(gs.addrs, a) }) {
		return true
	}
	return gs.infoOK && slices.ContainsFunc(gs.addrs, func(a string) bool { return slices.Contains(addrs, a) })
}

// joinedUnder reports whether the user joined e's group (Config.Joined):
// under its daemon's key, or, a cell's group (PROTOCOL.md §13), under any
// of its replicas' keys. A cell's group is recorded under the key of the
// member that led it when the user joined, and listed under the one that
// leads it now: until session 15, after an election, the page no longer
// took it for the user's, and a rogue registry polled first listing its
// UUID under an impostor's key had the page use the impostor's (as the
// CLI, cli.joinedSet.find). d.mu is held.
func (d *directory) joinedUnder(e wire.GroupEntry) bool {
	if d.joined == nil {
		return false
	}
	if d.joined.Has(e.Group, e.Fingerprint) {
		return true
	}
	for _, r := range e.Replicas {
		if r.Fingerprint != e.Fingerprint && d.joined.Has(e.Group, r.Fingerprint) {
			return true
		}
	}
	return false
}

// joinedKey returns the key of joined (the joined file as merge read it)
// that records e's group, as joinedUnder finds it; e's own if none does.
func joinedKey(joined map[groupKey]string, e wire.GroupEntry) groupKey {
	k := groupKey{e.Group, e.Fingerprint}
	if _, ok := joined[k]; ok {
		return k
	}
	for _, r := range e.Replicas {
		if _, ok := joined[groupKey{e.Group, r.Fingerprint}]; ok {
			return groupKey{e.Group, r.Fingerprint}
		}
	}
	return k
}

// unresolvedClash reports whether registries list id under several daemon
// keys, the directory's handle on it being g, and the user joined it under
// none (Config.Joined): the page's first registry's key would be a guess,
// the impostor's as likely as the owner's (anyone may list a UUID under a
// daemon of their own), so joining is refused, as the CLI refuses such a
// UUID as ambiguous. Until session 14 the page joined the first registry's.
func (d *directory) unresolvedClash(id wire.UUID, g *client.Group) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	gs := d.groups[id]
	return gs != nil && gs.handle == g && gs.clash && !d.joinedUnder(gs.entry)
}

// joinedAt records in Config.Joined that the user joined (or, with left,
// left) id at the daemon of was, the group's state when the join began
// (listed). A merge meanwhile may have replaced the state's handle (more
// addresses of the same daemon, or cell): the group is the same, and the
// join is recorded. Until session 16 the handle was compared, and a join
// through a handle replaced meanwhile (the info refreshGroup asks first
// widened the window) was never recorded: the CLI then did not know the
// group as joined.
//
// It returns the record's error, if it failed: the page says it (until
// session 17 only huddle web's log did, once).
func (d *directory) joinedAt(id wire.UUID, was *groupState, left bool) error {
	if d.joined == nil {
		return nil
	}
	d.mu.Lock()
	gs := d.groups[id]
	var e wire.GroupEntry
	ok := gs != nil && gs == was
	if ok {
		e = gs.entry
		// The name the page showed it under, if its daemon gives it that
		// name too (its info, asked after the join), as the CLI records
		// it (e58d680): the page's name for a group the user had not
		// joined is a registry's word, and a rogue registry renaming the
		// user's lobby "dev" (its lease the longest) at the time of a join
		// through the page had "dev" recorded for it, and from then on
		// resolve to it in the CLI, before the user's real dev group if
		// that was not recorded yet. Else it is recorded with no name (it
		// resolves by its UUID).
		if gs.info != nil && gs.infoOK && gs.info.Name == gs.name {
			e.Name = gs.name
		} else {
			e.Name = ""
		}
	}
	d.mu.Unlock()
	switch {
	case !ok: // listed anew meanwhile (maybe at another key): the next merge says under which key
		return nil
	case left:
		return d.joined.Remove(e)
	default:
		return d.joined.Add(e)
	}
}

// room is ListWithin's check for rs: the listing being read may hold
// bytes if that fits both rs's part of maxHeld (an equal share of the
// registries known: one registry, however large its listings, leaves the
// others theirs) and what the others hold now. A registry counts the
// larger of the listing it keeps and the one being read. d.mu is not
// held.
func (d *directory) room(rs *registryState, bytes int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	total := 0
	for _, o := range d.regs {
		if o != rs {
			total += max(o.held, o.reading)
		}
	}
	share := d.maxHeld / max(len(d.regs), 1)
	if bytes > share || total+max(rs.held, bytes) > d.maxHeld {
		return errListingTooLarge{max: d.maxHeld, registries: len(d.regs)}
	}
	rs.reading = bytes
	return nil
}

// listRegistry opens rs if need be and lists its groups.
func (d *directory) listRegistry(ctx context.Context, rs *registryState) {
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	d.mu.Lock()
	reg, addr := rs.reg, rs.addr
	d.mu.Unlock()
	var err error
	if reg == nil {
		reg, err = d.c.Registry(ctx, addr, wire.Fingerprint{})
	}
	var list client.Listing
	if err == nil {
		list, err = reg.ListWithin(ctx, func(bytes int) error { return d.room(rs, bytes) })
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	read := rs.reading
	rs.reading = 0
	switch {
	case rs.reg == nil:
		rs.reg = reg // opened now
	case reg != rs.reg && reg != nil:
		// A discovered one moved meanwhile, and addRegistry closed the
		// handle on its old address: what failed through it is not the
		// registry's failure (the next poll asks the new address).
		if err != nil {
			return
		}
	}
	rs.err, rs.polled = err, true
	switch {
	case err == nil:
		rs.entries, rs.at, rs.held, rs.leftOut = list.Groups, time.Now(), read, list.Skipped
		if why := list.SkippedError(); why != nil && !rs.leftOutLog {
			// Logged once (it polls every few seconds), and counted on
			// the page: entries a registry of before session 12 took
			// from anyone; the rest is shown.
			rs.leftOutLog = true
			d.log.Warn("registry listing: groups left out", "addr", rs.addr, "why", why)
		}
	case time.Since(rs.at) > staleListing:
		// No longer shown (merge): no longer held either.
		rs.entries, rs.held = nil, 0
		fallthrough
	default:
		d.log.Debug("registry did not list", "addr", rs.addr, "err", err)
	}
}

// askInfoLocked asks gs's daemon for its info on a goroutine of run's, at
// most infoConcurrency at once, and publishes the list when it answers.
// d.mu is held.
func (d *directory) askInfoLocked(gs *groupState) {
	ctx := d.ctx
	if ctx == nil || ctx.Err() != nil {
		return
	}
	gs.asking = true
	d.wg.Go(func() {
		select {
		case d.info <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-d.info }()
		d.updateInfo(ctx, gs)
		d.mu.Lock()
		gs.asking = false
		d.publishLocked()
		d.mu.Unlock()
	})
}

// updateInfo asks gs's daemon for its info now.
func (d *directory) updateInfo(ctx context.Context, gs *groupState) {
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	d.mu.Lock()
	h := gs.handle
	d.mu.Unlock()
	info, err := h.Info(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	gs.infoAt, gs.infoOK = time.Now(), err == nil
	if err == nil {
		gs.info = &info
		gs.members, gs.membersAt = info.Members, gs.infoAt
	}
}

// askAgain asks group id's daemon for its info now, if h is still the
// directory's handle on it: a send through h could not reach the
// daemon, or may not have (in doubt), or a watch through h dropped or
// resumed. The list said the daemon reachable, and what it said of
// retries (send_after), until its next info, up to infoEvery later: a
// daemon killed and an older one back in its place were one to the page
// meanwhile.
func (d *directory) askAgain(id wire.UUID, h *client.Group) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if gs := d.groups[id]; gs != nil && gs.handle == h && !gs.asking {
		d.askInfoLocked(gs)
	}
}

// countMembers records the member count a group's daemon just gave (the
// length of a member list), and publishes the list if it changed.
func (d *directory) countMembers(id wire.UUID, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if gs := d.groups[id]; gs != nil {
		gs.members, gs.membersAt = uint64(n), time.Now()
		d.publishLocked()
	}
}

// refreshGroup asks one group's daemon for its info now and publishes the
// list (after a join or leave).
func (d *directory) refreshGroup(ctx context.Context, id wire.UUID) {
	d.mu.Lock()
	gs := d.groups[id]
	d.mu.Unlock()
	if gs == nil {
		return
	}
	d.updateInfo(ctx, gs)
	d.mu.Lock()
	d.publishLocked()
	d.mu.Unlock()
}

// publishLocked rebuilds the list and, if it changed, wakes whoever waits.
// d.mu is held.
func (d *directory) publishLocked() {
	l := listJSON{Groups: make([]groupJSON, 0, len(d.groups)), Registries: make([]registryJSON, 0, len(d.regs))}
	for id, gs := range d.groups {
		e := gs.entry
		g := groupJSON{UUID: id.String(), Name: gs.name, OtherNames: gs.otherNames, Fingerprint: e.Fingerprint.String(), Addrs: e.Addrs,
			Members: e.Members, LastSeq: e.LastSeq, Registries: gs.regs, Clash: gs.clash}
		if g.Addrs == nil {
			g.Addrs = []string{}
		}
		if _, ok := d.joinedNow[joinedKey(d.joinedNow, e)]; ok && gs.info == nil {
			// Joined, and its daemon has not answered since huddle web
			// started (it is down, or slow): a member until it says
			// otherwise, so that the group is among the user's, not
			// offered to join as a stranger's.
			g.Member = true
		}
		g.Asking = gs.info == nil && gs.infoAt.IsZero()
		if in := gs.info; in != nil {
			g.Reachable = gs.infoOK
			g.Member, g.Private, g.Epoch, g.FirstSeq = in.Member, in.Private, in.Epoch, in.First
			g.MaxMessageBytes, g.SendAfter = in.Limits.MaxMessageBytes, in.SendAfter
			// The last sequence only grows: the larger is the later.
			g.LastSeq = max(g.LastSeq, in.Last)
		}
		// The member count goes both ways: the later word stands, the
		// daemon's (its info, or a member list asked through this
		// server) or the registry's (as of the daemon's last renewal).
		if gs.membersAt.After(gs.entryAt) {
			g.Members = gs.members
		}
		l.Groups = append(l.Groups, g)
	}
	// A group joined that no registry lists now: its daemon stopped (or
	// a registry restarted). A page loaded meanwhile showed nothing of it
	// ("no groups yet"), though the CLI still knew it. One entry a UUID
	// (joined at two keys: the first key).
	unlisted := make(map[wire.UUID]groupKey)
	for k := range d.joinedNow {
		if u, ok := unlisted[k.group]; d.groups[k.group] == nil && (!ok || bytes.Compare(k.daemon[:], u.daemon[:]) < 0) {
			unlisted[k.group] = k
		}
	}
	for id, k := range unlisted {
		name := cmp.Or(d.joinedNow[k], id.String())
		g := groupJSON{UUID: id.String(), Name: name, Fingerprint: k.daemon.String(),
			Addrs: []string{}, Registries: []string{}, Unlisted: true, Member: true}
		for _, fp := range d.held[id] {
			g.Clash = true
			g.OtherKeys = append(g.OtherKeys, fp.String())
		}
		l.Groups = append(l.Groups, g)
	}
	slices.SortFunc(l.Groups, func(a, b groupJSON) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.UUID, b.UUID)) })
	for _, rs := range d.regs {
		r := registryJSON{Addr: rs.addr, OK: rs.err == nil && !rs.at.IsZero(), LeftOut: rs.leftOut}
		if rs.reg != nil {
			r.Fingerprint = rs.reg.Fingerprint().String()
		}
		if rs.err != nil {
			r.Error = rs.err.Error()
			var ce *identity.ChangedError
			switch {
			case errors.As(rs.err, new(errListingTooLarge)):
				r.Code = "too_large"
			case errors.As(rs.err, &ce):
				r.Code, r.Forget = "key_changed", ce.ForgetCommand()
			}
		}
		l.Registries = append(l.Registries, r)
	}
	b, err := json.Marshal(l)
	if err != nil || bytes.Equal(b, d.listBytes) {
		return // err cannot happen: plain values
	}
	d.list, d.listBytes = l, b
	close(d.changed)
	d.changed = make(chan struct{})
}

// cellViews are the registries' listings as merge takes a cell's groups
// (PROTOCOL.md §13): as one group per UUID and set of replicas, whichever
// leader each registry names, as the CLI merges them (client.Merge). Of
// a group's entries, the one whose lease ends last gives the leader, its
// addresses and the replicas to every other (each keeps its name, lease
// and counts), and every registry's addresses of each member are kept
// (members), for the group's handle to dial.
//
// Why: the page keyed a cell's group by the leader each registry names,
// as a group of one daemon by its key. Two registries naming two leaders
// (one not yet told of an election, or a rogue one naming another real
// member, anyone can read the replicas from a listing) made the group
// "two daemons", a join refused (clash); and the handle dialled only the
// addresses the first registry listed: a rogue one polled first, listing
// the real members' keys at addresses of its own, left the group
// unreachable (until session 15).
type cellViews struct {
	// views holds, by the index of its registry in d.regs, a listing
	// whose cell entries were rewritten (nil: the listing as it is).
	views   map[int][]wire.GroupEntry
	members map[cellKey]map[wire.Fingerprint][]string
}

// cellKey is a cell's group: its UUID and the set of its replicas' keys,
// named as client.Merge names it (client.ReplicaSet), so that the page
// and the CLI take the same entries for one group.
type cellKey struct {
	group wire.UUID
	set   wire.Fingerprint
}

// cellOf returns e's cellKey, the zero one for a group of one daemon.
func cellOf(e wire.GroupEntry) cellKey {
	if len(e.Replicas) == 0 {
		return cellKey{}
	}
	return cellKey{e.Group, client.ReplicaSet(e.Replicas)}
}

// sameGroup reports whether a and b, two listings of one UUID, are of the
// same group: of one daemon, by its key; a cell's, by its set of replicas,
// whichever leader each names. A handle on a cell's group follows the
// leader by itself: one opened again at each election (or at each poll of a
// rogue registry naming another member every time, its lease the longest)
// lost what the page knew of the group (its info, its member count), and
// the calls that had taken it (sends queued on it) failed, until session 15.
func sameGroup(a, b wire.GroupEntry) bool {
	ka, kb := cellOf(a), cellOf(b)
	if ka != (cellKey{}) || kb != (cellKey{}) {
		return ka == kb
	}
	return a.Fingerprint == b.Fingerprint
}

// trustedCellsLocked returns, by the index of its registry in d.regs, a
// copy of each listing merge uses (as of now) that lists a cell's group
// the user joined whose replica set the Joined records (d.cellsNow), its
// entries of that group that name a member of the set made one
// (client.TrustedCell over every registry's, in order), each keeping its
// name and lease. d.mu is held.
//
// Why: a rogue registry listing the UUID with a set of one real member's
// key and one of its own counted as the group joined, and the page took
// the first registry's: the rogue's key was dialled, and got what the
// page sent.
func (d *directory) trustedCellsLocked(now time.Time) map[int][]wire.GroupEntry {
	var base map[int][]wire.GroupEntry
	usable := func(rs *registryState) bool { return !rs.at.IsZero() && now.Sub(rs.at) <= staleListing }
	names := func(e wire.GroupEntry, cell []wire.Fingerprint) bool {
		return slices.ContainsFunc(e.Replicas, func(r wire.Replica) bool { return slices.Contains(cell, r.Fingerprint) })
	}
	for id, cell := range d.cellsNow {
		if cell == nil {
			continue
		}
		var es []wire.GroupEntry
		for _, rs := range d.regs {
			if usable(rs) {
				for _, e := range rs.entries {
					if e.Group == id && names(e, cell) {
						es = append(es, e)
					}
				}
			}
		}
		t, ok := client.TrustedCell(es, cell)
		if !ok {
			continue
		}
		for i, rs := range d.regs {
			if !usable(rs) {
				continue
			}
			for j, e := range rs.entries {
				if e.Group != id || !names(e, cell) {
					continue
				}
				if base == nil {
					base = make(map[int][]wire.GroupEntry)
				}
				if _, ok := base[i]; !ok {
					base[i] = slices.Clone(rs.entries)
				}
				base[i][j].Fingerprint, base[i][j].Addrs, base[i][j].Replicas = t.Fingerprint, t.Addrs, t.Replicas
			}
		}
	}
	return base
}

// followEvery bounds how often the members of a joined cell's group are
// asked for its replica set while registries list another (followLocked).
const followEvery = 10 * time.Second

// followWait bounds each follow's questions, all of them: less than
// followEvery, so that a group has one follow at a time.
const followWait = 2 * registryTimeout

// followLocked asks, for each cell's group the user joined whose
// listings (those merge uses, as of now) name another set of replicas
// than the Joined records for it (JoinedCells; none recorded is another),
// the members of the recorded set (its joined keys for a group without
// one) for their view of the cell (cell_status, each key pinned, at the
// addresses the listings name: client.CellMembers), on a goroutine of
// run's, at most followWait, and records the members a majority of them
// answer alike (JoinedCells.Follow): the next merge takes them. At most
// every followEvery per group. d.mu is held.
//
// Why a majority: a member removed from the cell (its host taken out,
// its key stolen since) is in the recorded set until it is followed; the
// page took the first member's answer, and a rogue registry listing the
// group at that key alone had the thief's set, of its own keys, recorded
// and dialled. And a follow asked every address listed, 3 s each, one
// after the other: a rogue registry listing a member's key at many
// addresses that never answer kept each follow's goroutine for minutes,
// one more started every followEvery.
func (d *directory) followLocked(now time.Time) {
	jc, ok := d.joined.(JoinedCells)
	ctx := d.ctx
	if !ok || ctx == nil || ctx.Err() != nil {
		return
	}
	for id, cell := range d.cellsNow {
		if now.Sub(d.followAt[id]) < followEvery {
			continue
		}
		var listed []wire.Fingerprint
		at := make(map[wire.Fingerprint][]string)
		for _, rs := range d.regs {
			if rs.at.IsZero() || now.Sub(rs.at) > staleListing {
				continue
			}
			for _, e := range rs.entries {
				if e.Group != id || !slices.ContainsFunc(e.Replicas, func(r wire.Replica) bool { return d.joined.Has(id, r.Fingerprint) }) {
					continue
				}
				for _, r := range e.Replicas {
					if !slices.Contains(listed, r.Fingerprint) {
						listed = append(listed, r.Fingerprint)
					}
				}
				// Each member of the set recorded at every address the
				// entry lists it at, the leader's listed addresses too,
				// as the CLI asks it (client.AddMemberAddrs): until
				// session 16 only at its Replica.Addr.
				all := make(map[wire.Fingerprint][]string)
				client.AddMemberAddrs(all, e)
				for fp, addrs := range all {
					if d.joined.Has(id, fp) {
						for _, a := range addrs {
							if a != "" && !slices.Contains(at[fp], a) {
								at[fp] = append(at[fp], a)
							}
						}
					}
				}
			}
		}
		if len(at) == 0 || len(listed) == len(cell) && !slices.ContainsFunc(listed, func(fp wire.Fingerprint) bool { return !slices.Contains(cell, fp) }) {
			continue
		}
		recorded := cell
		if recorded == nil {
			for k := range d.joinedNow {
				if k.group == id {
					recorded = append(recorded, k.daemon)
				}
			}
		}
		if d.followAt == nil {
			d.followAt = make(map[wire.UUID]time.Time)
		}
		d.followAt[id] = now
		d.wg.Go(func() {
			qctx, cancel := context.WithTimeout(ctx, followWait)
			keys, from, err := d.c.CellMembers(qctx, recorded, at)
			cancel()
			if err == nil {
				jc.Follow(id, from, keys)
			}
		})
	}
}

// entries returns the listing of rs, the i-th of d.regs, as merge takes
// it.
func (c *cellViews) entries(i int, rs *registryState) []wire.GroupEntry {
	if v, ok := c.views[i]; ok {
		return v
	}
	return rs.entries
}

// cellsLocked returns the cellViews of the listings merge uses as of now.
// A registry's entries of a group after its first are left as they are
// (merge skips them). d.mu is held.
func (d *directory) cellsLocked(now time.Time) *cellViews {
	c := &cellViews{members: make(map[cellKey]map[wire.Fingerprint][]string)}
	base := d.trustedCellsLocked(now)
	type latest struct {
		e     wire.GroupEntry
		until time.Time
	}
	last := make(map[cellKey]*latest)
	usable := func(rs *registryState) bool { return !rs.at.IsZero() && now.Sub(rs.at) <= staleListing }
	entries := func(i int, rs *registryState) []wire.GroupEntry {
		if v, ok := base[i]; ok {
			return v
		}
		return rs.entries
	}
	for i, rs := range d.regs {
		if !usable(rs) {
			continue
		}
		listed := make(map[cellKey]bool)
		for _, e := range entries(i, rs) {
			k := cellOf(e)
			if k == (cellKey{}) || listed[k] {
				continue
			}
			listed[k] = true
			until := rs.at.Add(time.Duration(min(e.ExpiresMS, maxLeaseMS)) * time.Millisecond)
			if l := last[k]; l == nil || until.After(l.until) {
				last[k] = &latest{e, until}
			}
		}
	}
	if len(last) == 0 {
		if len(base) > 0 {
			c.views = base
		}
		return c
	}
	for k, l := range last {
		at := make(map[wire.Fingerprint][]string)
		client.AddMemberAddrs(at, l.e)
		c.members[k] = at
	}
	c.views = make(map[int][]wire.GroupEntry)
	for i, rs := range d.regs {
		if !usable(rs) {
			continue
		}
		listed := make(map[cellKey]bool)
		var view []wire.GroupEntry
		if v, ok := base[i]; ok {
			view = v // its own copy
		}
		for j, e := range entries(i, rs) {
			k := cellOf(e)
			if k == (cellKey{}) || listed[k] {
				continue
			}
			listed[k] = true
			client.AddMemberAddrs(c.members[k], e)
			l := last[k].e
			if e.Fingerprint == l.Fingerprint && slices.Equal(e.Addrs, l.Addrs) && slices.Equal(e.Replicas, l.Replicas) {
				continue
			}
			if view == nil {
				view = slices.Clone(entries(i, rs))
			}
			view[j].Fingerprint, view[j].Addrs, view[j].Replicas = l.Fingerprint, l.Addrs, l.Replicas
		}
		if view != nil {
			c.views[i] = view
		}
	}
	return c
}
