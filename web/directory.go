package web

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/client"
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
	// appears and after a join or leave through this server.
	infoEvery = 30 * time.Second
	// infoConcurrency bounds the info requests in flight at once.
	infoConcurrency = 4
	// demandWindow: the directory polls while an event stream is open, or
	// for this long after the last API request that read the list.
	demandWindow = 30 * time.Second
)

// directory keeps the groups every known registry lists, merged by UUID,
// with what each group's daemon says of it, and publishes the list when it
// changes.
type directory struct {
	c        *client.Client
	poll     time.Duration
	log      *slog.Logger
	discover func(context.Context, func(*client.Registry)) error

	refreshMu sync.Mutex // one refresh at a time

	mu        sync.Mutex
	regs      []*registryState // given first, in order, then discovered
	groups    map[wire.UUID]*groupState
	list      listJSON
	listBytes []byte
	changed   chan struct{} // closed and replaced when list changes
	refreshed time.Time     // when the last refresh ended
	streams   int           // event streams open
	demand    time.Time     // last API read of the list
}

type registryState struct {
	addr    string
	reg     *client.Registry // nil until opened
	entries []wire.GroupEntry
	at      time.Time // of entries
	err     error     // of the last attempt
}

type groupState struct {
	entry  wire.GroupEntry
	regs   []string // addresses of the registries listing it
	clash  bool     // another registry lists the UUID with another daemon key
	handle *client.Group
	info   *wire.Info
	infoAt time.Time
	infoOK bool // the last info request succeeded
}

// groupJSON is a group as the API lists it.
type groupJSON struct {
	UUID        string   `json:"uuid"`
	Name        string   `json:"name"`
	Fingerprint string   `json:"fingerprint"` // the group daemon's key
	Addrs       []string `json:"addrs"`
	Members     uint64   `json:"members"`
	LastSeq     uint64   `json:"last_seq"`
	Registries  []string `json:"registries"`
	// Clash: registries disagree on which daemon hosts this UUID; the
	// first registry's is used.
	Clash bool `json:"clash,omitempty"`
	// From the group's daemon (info); absent until it answered.
	Reachable       bool   `json:"reachable"`
	Member          bool   `json:"member"`
	Private         bool   `json:"private"`
	Epoch           uint64 `json:"epoch,string,omitempty"` // a string: it does not fit a JavaScript number
	FirstSeq        uint64 `json:"first_seq,omitempty"`
	MaxMessageBytes uint64 `json:"max_message_bytes,omitempty"`
}

// registryJSON is a registry and how its last request went.
type registryJSON struct {
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint,omitempty"`
	OK          bool   `json:"ok"`
	Error       string `json:"error,omitempty"`
}

type listJSON struct {
	Groups     []groupJSON    `json:"groups"`
	Registries []registryJSON `json:"registries"`
}

func newDirectory(cfg Config) *directory {
	d := &directory{c: cfg.Client, poll: cfg.PollInterval, log: cfg.Logger, discover: cfg.Discover,
		groups: make(map[wire.UUID]*groupState), changed: make(chan struct{})}
	for _, a := range cfg.Registries {
		d.regs = append(d.regs, &registryState{addr: a})
	}
	d.list = listJSON{Groups: []groupJSON{}, Registries: []registryJSON{}}
	return d
}

// run polls the registries while there is demand, and runs discovery,
// until ctx ends.
func (d *directory) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if d.discover != nil {
		wg.Go(func() {
			err := d.discover(ctx, d.addRegistry)
			if err != nil && ctx.Err() == nil {
				d.log.Warn("registry discovery ended", "err", err)
			}
		})
	}
	t := time.NewTicker(d.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		wanted := d.streams > 0 || time.Since(d.demand) < demandWindow
		d.mu.Unlock()
		if wanted {
			d.refresh(ctx)
		}
	}
}

func (d *directory) close() {}

// addRegistry adds a discovered registry, unless one at its address is
// known.
func (d *directory) addRegistry(r *client.Registry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, rs := range d.regs {
		if rs.addr == r.Addr() {
			return
		}
	}
	d.regs = append(d.regs, &registryState{addr: r.Addr(), reg: r})
	d.log.Info("registry found", "addr", r.Addr(), "fingerprint", r.Fingerprint().Short())
}

// stream counts an event stream as open until the returned func is called.
func (d *directory) stream() (done func()) {
	d.mu.Lock()
	d.streams++
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		d.streams--
		d.mu.Unlock()
	}
}

// current returns the list, refreshing it first if it is older than a poll
// interval, and the channel closed when it next changes.
func (d *directory) current(ctx context.Context) (listJSON, []byte, <-chan struct{}) {
	d.mu.Lock()
	d.demand = time.Now()
	fresh := time.Since(d.refreshed) < d.poll
	d.mu.Unlock()
	if !fresh {
		d.refresh(ctx)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.list, d.listBytes, d.changed
}

// watchList returns the list as JSON and the channel closed when it next
// changes, without refreshing.
func (d *directory) watchList() ([]byte, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.listBytes, d.changed
}

// group returns the handle of a listed group, refreshing the list once if
// it is not in it. Errors: wire.ErrNotFound.
func (d *directory) group(ctx context.Context, id wire.UUID) (*client.Group, error) {
	for attempt := 0; ; attempt++ {
		d.mu.Lock()
		var h *client.Group
		if gs := d.groups[id]; gs != nil {
			h = gs.handle
		}
		d.mu.Unlock()
		if h != nil {
			return h, nil
		}
		if attempt > 0 {
			return nil, fmt.Errorf("group %s: %w: no registry lists it", id, wire.ErrNotFound)
		}
		d.refresh(ctx)
	}
}

// refresh lists every registry, merges the listings, asks new and stale
// groups for their info, and publishes the list if it changed.
func (d *directory) refresh(ctx context.Context) {
	d.refreshMu.Lock()
	defer d.refreshMu.Unlock()

	d.mu.Lock()
	regs := slices.Clone(d.regs)
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, rs := range regs {
		wg.Go(func() { d.listRegistry(ctx, rs) })
	}
	wg.Wait()

	now := time.Now()
	d.mu.Lock()
	seen := make(map[wire.UUID]bool)
	for _, rs := range regs {
		if rs.at.IsZero() || now.Sub(rs.at) > staleListing {
			continue
		}
		for _, e := range rs.entries {
			gs := d.groups[e.Group]
			if !seen[e.Group] {
				seen[e.Group] = true
				if gs == nil || gs.entry.Fingerprint != e.Fingerprint {
					h, err := rs.reg.Group(e)
					if err != nil {
						continue
					}
					gs = &groupState{handle: h}
					d.groups[e.Group] = gs
				}
				gs.entry, gs.regs, gs.clash = e, []string{rs.addr}, false
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
	for id := range d.groups {
		if !seen[id] {
			delete(d.groups, id)
		}
	}
	var ask []*groupState
	for _, gs := range d.groups {
		if gs.info == nil || now.Sub(gs.infoAt) > infoEvery {
			ask = append(ask, gs)
		}
	}
	d.mu.Unlock()

	d.askInfo(ctx, ask)
	d.publish(regs)
}

// listRegistry opens rs if need be and lists its groups.
func (d *directory) listRegistry(ctx context.Context, rs *registryState) {
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	d.mu.Lock()
	reg := rs.reg
	d.mu.Unlock()
	var err error
	if reg == nil {
		reg, err = d.c.Registry(ctx, rs.addr, wire.Fingerprint{})
	}
	var list wire.Groups
	if err == nil {
		list, err = reg.List(ctx)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if reg != nil {
		rs.reg = reg
	}
	rs.err = err
	if err == nil {
		rs.entries, rs.at = list.Groups, time.Now()
	} else if ctx.Err() == nil || rs.at.IsZero() {
		d.log.Debug("registry did not list", "addr", rs.addr, "err", err)
	}
}

// askInfo asks each group's daemon for its info, a few at a time.
func (d *directory) askInfo(ctx context.Context, groups []*groupState) {
	sem := make(chan struct{}, infoConcurrency)
	var wg sync.WaitGroup
	for _, gs := range groups {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d.updateInfo(ctx, gs)
		})
	}
	wg.Wait()
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
	}
}

// refreshGroup asks one group's daemon for its info and publishes the list
// (after a join or leave).
func (d *directory) refreshGroup(ctx context.Context, id wire.UUID) {
	d.mu.Lock()
	gs := d.groups[id]
	regs := slices.Clone(d.regs)
	d.mu.Unlock()
	if gs == nil {
		return
	}
	d.updateInfo(ctx, gs)
	d.publish(regs)
}

// publish rebuilds the list and, if it changed, wakes whoever waits.
func (d *directory) publish(regs []*registryState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := listJSON{Groups: make([]groupJSON, 0, len(d.groups)), Registries: make([]registryJSON, 0, len(regs))}
	for id, gs := range d.groups {
		e := gs.entry
		g := groupJSON{UUID: id.String(), Name: e.Name, Fingerprint: e.Fingerprint.String(), Addrs: e.Addrs,
			Members: e.Members, LastSeq: e.LastSeq, Registries: gs.regs, Clash: gs.clash}
		if g.Addrs == nil {
			g.Addrs = []string{}
		}
		if in := gs.info; in != nil {
			g.Reachable = gs.infoOK
			g.Member, g.Private, g.Epoch, g.FirstSeq = in.Member, in.Private, in.Epoch, in.First
			g.MaxMessageBytes = in.Limits.MaxMessageBytes
			// The daemon knows better than the last renewal.
			g.Members, g.LastSeq = max(g.Members, in.Members), max(g.LastSeq, in.Last)
		}
		l.Groups = append(l.Groups, g)
	}
	slices.SortFunc(l.Groups, func(a, b groupJSON) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.UUID, b.UUID)) })
	for _, rs := range regs {
		r := registryJSON{Addr: rs.addr, OK: rs.err == nil && !rs.at.IsZero()}
		if rs.reg != nil {
			r.Fingerprint = rs.reg.Fingerprint().String()
		}
		if rs.err != nil {
			r.Error = rs.err.Error()
		}
		l.Registries = append(l.Registries, r)
	}
	b, err := json.Marshal(l)
	if err != nil {
		return // cannot happen: plain values
	}
	d.refreshed = time.Now()
	if bytes.Equal(b, d.listBytes) {
		return
	}
	d.list, d.listBytes = l, b
	close(d.changed)
	d.changed = make(chan struct{})
}
