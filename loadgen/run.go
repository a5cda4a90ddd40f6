package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// setupTimeout bounds each setup step (connecting, joining, finding the
// group), so an unreachable daemon fails the run instead of hanging it.
const setupTimeout = 30 * time.Second

// Run applies cfg's load and reports what it measured. It returns
// cfg.Validate's error, or the first error of the setup (the registry or
// group unreachable, the group not listed); errors during the window are
// counted in the Result instead. It blocks for about the warm-up and the
// window (plus, for fetch, the time to fill the log); ctx cuts it short.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	cfg = cfg.withDefaults()
	r := &runner{cfg: cfg}
	defer r.close()
	res := Result{Scenario: string(cfg.Scenario), Conns: cfg.Conns, InFlight: cfg.InFlight, Size: cfg.Size}
	if err := r.findGroup(ctx); err != nil {
		return res, err
	}
	var err error
	switch cfg.Scenario {
	case Send, SendBatched:
		err = r.send(ctx, &res)
	case Fetch:
		err = r.fetch(ctx, &res)
	case Fanout:
		err = r.fanout(ctx, &res)
	case Idle:
		err = r.idle(ctx, &res)
	case Recovery:
		err = r.recovery(ctx, &res)
	}
	return res, err
}

// runner holds one run's clients; close closes them all.
type runner struct {
	cfg   Config
	entry wire.GroupEntry // the group, as the registry lists it

	mu      sync.Mutex
	clients []*client.Client
	joined  []*client.Group
	owner   map[*client.Group]*client.Client // each joined group's client
}

// newClient returns a client with a fresh key, closed by r.close.
func (r *runner) newClient(batching bool) (*client.Client, error) {
	id, err := identity.Generate()
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Config{Identity: id, NoBatching: !batching})
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.clients = append(r.clients, c)
	r.mu.Unlock()
	return c, nil
}

// close makes every member it made leave, then closes every client.
func (r *runner) close() {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, g := range r.joined {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			g.Leave(ctx)
		})
	}
	wg.Wait()
	for _, c := range r.clients {
		wg.Go(func() { c.Close() })
	}
	wg.Wait()
}

// findGroup asks the registry for the group, waiting for it to be listed
// (a daemon just started registers its groups a moment after it listens).
func (r *runner) findGroup(ctx context.Context) error {
	c, err := r.newClient(false)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	reg, err := c.Registry(ctx, r.cfg.Registry, r.cfg.RegistryFingerprint)
	if err != nil {
		return err
	}
	for {
		list, err := reg.List(ctx)
		if err != nil {
			return err
		}
		for _, e := range list.Groups {
			if e.Name == r.cfg.Group {
				r.entry = e
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("group %q is not listed by registry %s: %w", r.cfg.Group, r.cfg.Registry, client.ErrNotFound)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// member connects a new client and joins the group with it.
func (r *runner) member(ctx context.Context, batching bool, name string) (*client.Group, error) {
	c, err := r.newClient(batching)
	if err != nil {
		return nil, err
	}
	g, err := c.Group(r.entry)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	if _, err := g.Join(ctx, name, nil); err != nil {
		return nil, fmt.Errorf("join %s: %w", r.cfg.Group, err)
	}
	r.mu.Lock()
	r.joined = append(r.joined, g)
	if r.owner == nil {
		r.owner = make(map[*client.Group]*client.Client)
	}
	r.owner[g] = c
	r.mu.Unlock()
	return g, nil
}

// caughtUp waits until g's replica holds message last: a follower
// applies what the leader commits a moment later.
func caughtUp(ctx context.Context, g *client.Group, last uint64) error {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	for {
		held := false
		_, err := g.Fetch(ctx, client.Query{After: last - 1, Limit: 1}, func(client.Message) bool { held = true; return false })
		if err == nil && held {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("message %d not held after %v: %w", last, setupTimeout, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// readers returns handles on gs's members that read from the replica
// cfg.Replica names: gs themselves for the leader, else handles of the
// same clients on a follower alone (no other replica to fall back on, so
// that every read is the follower's), and that replica's address.
func (r *runner) readers(gs []*client.Group) ([]*client.Group, string, error) {
	if r.cfg.Replica != ReplicaFollower {
		return gs, "", nil
	}
	var follower *wire.Replica
	for i := range r.entry.Replicas {
		if !r.entry.Replicas[i].Leader {
			follower = &r.entry.Replicas[i]
			break
		}
	}
	if follower == nil {
		return nil, "", fmt.Errorf("--replica follower: group %q is not replicated by a cell (the registry lists no follower)", r.cfg.Group)
	}
	e := wire.GroupEntry{Group: r.entry.Group, Name: r.entry.Name, Addrs: []string{follower.Addr}, Fingerprint: follower.Fingerprint}
	out := make([]*client.Group, len(gs))
	for i, g := range gs {
		r.mu.Lock()
		c := r.owner[g]
		r.mu.Unlock()
		fg, err := c.Group(e)
		if err != nil {
			return nil, "", err
		}
		out[i] = fg
	}
	return out, follower.Addr, nil
}

// members makes n members, joining a few at a time.
func (r *runner) members(ctx context.Context, n int, batching bool) ([]*client.Group, error) {
	gs := make([]*client.Group, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range gs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			gs[i], errs[i] = r.member(ctx, batching, fmt.Sprintf("bench-%d", i+1))
		})
	}
	wg.Wait()
	return gs, errors.Join(errs...)
}

// send: Conns clients x InFlight goroutines, one message each at a time.
func (r *runner) send(ctx context.Context, res *Result) error {
	gs, err := r.members(ctx, r.cfg.Conns, r.cfg.Scenario == SendBatched)
	if err != nil {
		return err
	}
	body := make([]byte, r.cfg.Size)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	ph := newPhase()
	hists := make([]*hist, len(gs)*r.cfg.InFlight)
	var wg sync.WaitGroup
	for i, g := range gs {
		for j := range r.cfg.InFlight {
			wg.Go(func() {
				h := new(hist)
				buf := make([]time.Duration, 0, 512)
				// One clock read per send, a monotonic one: a send's
				// latency runs from the end of the one before (the
				// loop's own few ns included) to its own end.
				base := time.Now()
				last := time.Since(base)
				for !ph.stop.Load() && ctx.Err() == nil {
					_, err := g.Send(ctx, body)
					now := time.Since(base)
					d := now - last
					last = now
					counted := ph.measuring.Load()
					if err != nil {
						ph.fail(err)
						ph.ended(counted)
						continue
					}
					if counted {
						if buf = append(buf, d); len(buf) == cap(buf) {
							h.addAll(buf)
							buf = buf[:0]
						}
					}
					ph.ended(counted)
				}
				h.addAll(buf)
				hists[i*r.cfg.InFlight+j] = h
			})
		}
	}
	w := measure(ctx, ph, r.cfg)
	wg.Wait()
	fill(res, hists, w, ph)
	res.MsgsPerSec = res.OpsPerSec
	return ctx.Err()
}

// fetch: fill the log to Messages, then fetch the last 1% over and over.
func (r *runner) fetch(ctx context.Context, res *Result) error {
	gs, err := r.members(ctx, r.cfg.Conns, false)
	if err != nil {
		return err
	}
	if err := r.fill(ctx, gs[0]); err != nil {
		return err
	}
	info, err := gs[0].Info(ctx)
	if err != nil {
		return err
	}
	want := max(r.cfg.Messages/100, 1)
	// The selection is by time, as a user's "since" is: the timestamp of
	// the first message of the last 1%.
	var since time.Time
	if _, err := gs[0].Fetch(ctx, client.Query{After: info.Last - uint64(want), Limit: 1}, func(m client.Message) bool {
		since = m.Time
		return false
	}); err != nil {
		return err
	}
	if since.IsZero() {
		return fmt.Errorf("fetch setup: message %d is not held", info.Last-uint64(want)+1)
	}
	gs, from, err := r.readers(gs)
	if err != nil {
		return err
	}
	if from != "" {
		if err := caughtUp(ctx, gs[0], info.Last); err != nil {
			return fmt.Errorf("fetch setup: the follower at %s: %w", from, err)
		}
	}
	ph := newPhase()
	hists := make([]*hist, len(gs)*r.cfg.InFlight)
	var wg sync.WaitGroup
	for i, g := range gs {
		for j := range r.cfg.InFlight {
			wg.Go(func() {
				h := new(hist)
				for !ph.stop.Load() && ctx.Err() == nil {
					n := 0
					t0 := time.Now()
					_, err := g.Fetch(ctx, client.Query{Since: since}, func(client.Message) bool { n++; return true })
					d := time.Since(t0)
					counted := ph.measuring.Load()
					switch {
					case err != nil:
						ph.fail(err)
					case n < want:
						ph.fail(fmt.Errorf("fetch returned %d messages, want %d", n, want))
					case counted:
						h.add(d)
					}
					ph.ended(counted)
				}
				hists[i*r.cfg.InFlight+j] = h
			})
		}
	}
	w := measure(ctx, ph, r.cfg)
	wg.Wait()
	fill(res, hists, w, ph)
	res.Messages = int64(want)
	res.MsgsPerSec = res.OpsPerSec * float64(want)
	res.Note = fmt.Sprintf("each op fetches the %d messages since the timestamp of message %d of %d", want, info.Last-uint64(want)+1, info.Last)
	if from != "" {
		res.Note += ", from the follower at " + from
	}
	return ctx.Err()
}

// fill sends what the group lacks of Messages, max_batch messages per
// operation, from a few goroutines.
func (r *runner) fill(ctx context.Context, g *client.Group) error {
	info, err := g.Info(ctx)
	if err != nil {
		return err
	}
	missing := r.cfg.Messages - int(info.Last)
	if missing <= 0 {
		return nil
	}
	batch := int(max(info.Limits.MaxBatch, 1))
	r.cfg.Logger.Info("filling the log", "group", r.cfg.Group, "messages", missing, "batch", batch)
	body := make([]byte, r.cfg.Size)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	t0 := time.Now()
	work := make(chan int)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for k := range errs {
		wg.Go(func() {
			for n := range work {
				msgs := make([]client.Outgoing, n)
				for i := range msgs {
					msgs[i] = client.Outgoing{ID: client.NewID(), Body: body}
				}
				if _, err := g.SendMessages(ctx, msgs); err != nil && errs[k] == nil {
					errs[k] = err
				}
			}
		})
	}
	for left := missing; left > 0 && ctx.Err() == nil; left -= batch {
		work <- min(left, batch)
	}
	close(work)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fill the log: %w", err)
	}
	el := time.Since(t0)
	r.cfg.Logger.Info("log filled", "messages", missing, "seconds", el.Seconds(), "msgs_per_sec", float64(missing)/el.Seconds())
	return ctx.Err()
}

// fanout: Conns watchers, one sender at Rate; latency is send to receipt.
func (r *runner) fanout(ctx context.Context, res *Result) error {
	watchers, err := r.members(ctx, r.cfg.Conns, false)
	if err != nil {
		return err
	}
	sender, err := r.member(ctx, false, "bench-sender")
	if err != nil {
		return err
	}
	info, err := sender.Info(ctx)
	if err != nil {
		return err
	}
	wctx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	ph := newPhase()
	hists := make([]*hist, len(watchers))
	var started, wg sync.WaitGroup
	for i, g := range watchers {
		started.Add(1)
		wg.Go(func() {
			h := new(hist)
			defer func() { hists[i] = h }()
			first := true
			for ev, err := range g.Watch(wctx, client.Query{After: info.Last, Epoch: info.Epoch}) {
				if err != nil {
					ph.fail(err)
					ph.ended(ph.measuring.Load())
					break
				}
				if first {
					started.Done()
					first = false
				}
				if ev.Kind != client.EventMessage || len(ev.Message.Body) < 8 {
					continue
				}
				sentAt := int64(binary.BigEndian.Uint64(ev.Message.Body))
				if sentAt == 0 {
					continue // the marker that tells watchers they are live
				}
				d := time.Duration(time.Now().UnixNano() - sentAt)
				counted := ph.measuring.Load()
				if counted {
					h.add(d)
				}
				ph.ended(counted)
			}
			if first {
				started.Done()
			}
		})
	}
	// A watch reports nothing until a message arrives: send a marker and
	// wait until every watcher has it, so no watcher is still connecting
	// when the load starts.
	body := make([]byte, r.cfg.Size)
	if _, err := sender.Send(ctx, body); err != nil {
		return err
	}
	started.Wait()

	// The sender is open-loop: a send starts on schedule whether or not
	// the previous one has been acknowledged (at most maxOutstanding are),
	// as a sender's rate does not depend on the daemon's speed.
	const maxOutstanding = 256
	var sent atomic.Int64
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		var sends sync.WaitGroup
		defer sends.Wait()
		slots := make(chan struct{}, maxOutstanding)
		interval := time.Second / time.Duration(r.cfg.Rate)
		next := time.Now()
		for !ph.stop.Load() && ctx.Err() == nil {
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			next = next.Add(interval)
			slots <- struct{}{}
			b := make([]byte, r.cfg.Size)
			binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
			counted := ph.measuring.Load()
			sends.Go(func() {
				defer func() { <-slots }()
				if _, err := sender.Send(ctx, b); err != nil {
					ph.fail(err)
					ph.ended(counted) // a delivery is the outcome of a send that worked
				} else if counted {
					sent.Add(1)
				}
			})
		}
	}()
	w := measure(ctx, ph, r.cfg)
	<-senderDone
	// Let the watchers take what is still on its way, then stop them.
	time.Sleep(200 * time.Millisecond)
	stopWatching()
	wg.Wait()
	fill(res, hists, w, ph)
	res.Messages = sent.Load()
	res.MsgsPerSec = float64(res.Messages) / res.Seconds
	res.Note = fmt.Sprintf("%d watchers, one sender at %d msgs/s; ops are deliveries, latency is send to receipt", len(watchers), r.cfg.Rate)
	return ctx.Err()
}

// idle: Conns clients connect (each asks the group's info) and stay idle.
func (r *runner) idle(ctx context.Context, res *Result) error {
	pid := r.cfg.ServerPID
	var rss0 int64
	if pid > 0 {
		rss0, _ = procRSS(pid)
	}
	ph := newPhase()
	var mu sync.Mutex // guards connected
	connected := new(hist)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range r.cfg.Conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := r.newClient(false)
			if err != nil {
				ph.fail(err)
				return
			}
			g, err := c.Group(r.entry)
			if err != nil {
				ph.fail(err)
				return
			}
			cctx, cancel := context.WithTimeout(ctx, setupTimeout)
			defer cancel()
			t0 := time.Now()
			if _, err := g.Info(cctx); err != nil {
				ph.fail(err)
				return
			}
			d := time.Since(t0)
			mu.Lock()
			connected.add(d)
			mu.Unlock()
		})
	}
	wg.Wait()
	// The window: every connection open, none doing anything.
	var w window
	w.start(ctx, r.cfg)
	select {
	case <-time.After(r.cfg.Duration):
	case <-ctx.Done():
	}
	w.end(ctx, r.cfg)
	fill(res, []*hist{connected}, w, ph)
	res.OpsPerSec = 0 // connections are not operations per second
	if w.serverMeasured && res.Ops > 0 {
		res.ServerBytesPerConn = (w.srvRSS - rss0) / res.Ops
		res.ServerCPUusPerOp = 0
	}
	res.Note = fmt.Sprintf("%d connections open and idle; latency is each one's connect + info", res.Ops)
	return ctx.Err()
}
