package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

type config struct {
	duration time.Duration
	sample   time.Duration
	users    int
	watchers int
	groups   int
}

// counters are what the users did, for throughput.
type counters struct {
	joins, leaves, sent, fetched, watched, rateLimited, errs atomic.Int64
}

// sample is the process at one instant.
type sample struct {
	at         time.Duration
	goroutines int
	heap       uint64 // bytes, after a GC
	sent       int64
}

func measure(start time.Time, c *counters) sample {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return sample{at: time.Since(start), goroutines: runtime.NumGoroutine(), heap: ms.HeapAlloc, sent: c.sent.Load()}
}

// run runs the soak and reports; it fails if memory or goroutines grow
// after warm-up, or do not come back down once everything has stopped.
func run(ctx context.Context, cfg config, out io.Writer) error {
	base := measure(time.Now(), &counters{})
	start := time.Now()
	var c counters
	// load owns the daemons: once it returns they are closed and nothing
	// of ours refers to them, so what the heap still holds after it is
	// what they failed to give back.
	problems := load(ctx, cfg, out, start, &c)

	// Everything the run started has stopped: goroutines and the heap come
	// back to where they were (give the runtime a moment to reap).
	var end sample
	deadline := time.Now().Add(10 * time.Second)
	for {
		end = measure(start, &c)
		if (end.goroutines <= base.goroutines && end.heap <= base.heap+heapLeftover) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(out, "after: %d goroutines (%d before), heap %.1f MiB (%.1f before)\n",
		end.goroutines, base.goroutines, float64(end.heap)/(1<<20), float64(base.heap)/(1<<20))
	if end.goroutines > base.goroutines {
		problems = append(problems, fmt.Errorf("%d goroutines left after everything stopped, %d before", end.goroutines, base.goroutines))
	}
	if end.heap > base.heap+heapLeftover {
		problems = append(problems, fmt.Errorf("heap %.1f MiB after everything stopped, %.1f MiB before: more than %d MiB was not given back",
			float64(end.heap)/(1<<20), float64(base.heap)/(1<<20), heapLeftover>>20))
	}
	return errors.Join(problems...)
}

// heapLeftover is what the heap may hold after the run beyond what it held
// before: the pools (calls, buffers, scratch) that a burst leaves, which
// the next two collections empty, and the runtime's own tables. The issue
// that asked for this check (15.20) saw 54 MiB left, against 0.3 MiB before.
const heapLeftover = 4 << 20

// load starts a registry and a group daemon, runs the users against them
// for cfg.duration, sampling as it goes, then closes the daemons. It
// returns what went wrong.
func load(ctx context.Context, cfg config, out io.Writer, start time.Time, c *counters) []error {
	dir, err := os.MkdirTemp("", "huddle-soak-")
	if err != nil {
		return []error{err}
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.DiscardHandler)

	r, err := registry.New(registry.Config{Listen: "127.0.0.1:0", StateDir: dir + "/registry", Logger: quiet})
	if err != nil {
		return []error{err}
	}
	if err := r.Listen(); err != nil {
		return []error{err}
	}
	var specs []groupd.Spec
	for i := range cfg.groups {
		specs = append(specs, groupd.Spec{Name: fmt.Sprintf("soak-%d", i)})
	}
	d, err := groupd.New(groupd.Config{
		Listen: "127.0.0.1:0", StateDir: dir + "/daemon", Groups: specs,
		Registries: []string{r.Addr().String()}, RegistryFingerprints: []wire.Fingerprint{r.Fingerprint()},
		// Retention small enough that the logs fill during warm-up: after
		// it, memory can only stay flat if nothing else grows.
		Retention: store.Config{MaxMessages: 20_000},
		Logger:    quiet,
	})
	if err != nil {
		r.Close()
		return []error{err}
	}
	if err := d.Listen(); err != nil {
		r.Close()
		return []error{err}
	}
	var servers sync.WaitGroup
	sctx, stopServers := context.WithCancel(context.Background())
	servers.Go(func() { r.Serve(sctx) })
	servers.Go(func() { d.Serve(sctx) })
	defer func() { stopServers(); servers.Wait() }()

	fmt.Fprintf(out, "soak: %d users, %d watchers, %d groups for %v; registry %s, group daemon %s\n",
		cfg.users, cfg.watchers, cfg.groups, cfg.duration, r.Addr(), d.Addr())
	lctx, stopLoad := context.WithTimeout(ctx, cfg.duration)
	defer stopLoad()
	var users sync.WaitGroup
	for i := range cfg.users {
		users.Go(func() { user(lctx, i, r, c) })
	}
	for i := range cfg.watchers {
		users.Go(func() { watcher(lctx, i, r, c) })
	}

	const row = "%6s %10s %8s %7s %7s %7s %9s %9s %12s %6s\n"
	fmt.Fprintf(out, row, "time", "goroutines", "heap MiB", "msgs/s", "joins", "leaves", "fetched", "watched", "rate-limited", "errors")
	var samples []sample
	prev := measure(start, c)
	tick := time.NewTicker(cfg.sample)
	for running := true; running; {
		select {
		case <-tick.C:
		case <-lctx.Done():
			running = false
			continue // the users are leaving: not a sample of the load
		}
		s := measure(start, c)
		rate := float64(s.sent-prev.sent) / (s.at - prev.at).Seconds()
		fmt.Fprintf(out, row, s.at.Round(time.Second), fmt.Sprint(s.goroutines), fmt.Sprintf("%.1f", float64(s.heap)/(1<<20)),
			fmt.Sprintf("%.0f", rate), fmt.Sprint(c.joins.Load()), fmt.Sprint(c.leaves.Load()), fmt.Sprint(c.fetched.Load()),
			fmt.Sprint(c.watched.Load()), fmt.Sprint(c.rateLimited.Load()), fmt.Sprint(c.errs.Load()))
		samples = append(samples, s)
		prev = s
	}
	tick.Stop()
	users.Wait()
	elapsed := time.Since(start)
	fmt.Fprintf(out, "sent %d messages in %v: %.0f msgs/s; %d joins, %d leaves, %d messages fetched, %d watched, %d sends rate-limited, %d errors\n",
		c.sent.Load(), elapsed.Round(time.Second), float64(c.sent.Load())/elapsed.Seconds(),
		c.joins.Load(), c.leaves.Load(), c.fetched.Load(), c.watched.Load(), c.rateLimited.Load(), c.errs.Load())

	var problems []error
	if err := flat(samples, out); err != nil {
		problems = append(problems, err)
	}
	if c.errs.Load() > 0 {
		problems = append(problems, fmt.Errorf("%d operations failed", c.errs.Load()))
	}
	return problems
}

// flat compares the medians of the last third of the samples with those of
// the middle third (the first third is warm-up: the logs fill). A leak
// moves the median; a passing spike (a burst of fetches in flight, a
// watcher catching up) does not. The heap may grow by a quarter plus
// 16 MiB, the goroutines by a fifth plus 32 (users come and go).
func flat(samples []sample, out io.Writer) error {
	n := len(samples)
	if n < 6 {
		return fmt.Errorf("only %d samples: run longer or sample more often", n)
	}
	mid, last := samples[n/3:2*n/3], samples[2*n/3:]
	median := func(ss []sample, f func(sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	heap := func(s sample) float64 { return float64(s.heap) / (1 << 20) }
	gor := func(s sample) float64 { return float64(s.goroutines) }
	mh, lh := median(mid, heap), median(last, heap)
	mg, lg := median(mid, gor), median(last, gor)
	fmt.Fprintf(out, "medians: heap %.1f MiB (middle third), %.1f MiB (last third); goroutines %.0f, %.0f\n", mh, lh, mg, lg)
	var errs []error
	if lh > mh*1.25+16 {
		errs = append(errs, fmt.Errorf("heap grew after warm-up: median %.1f MiB, then %.1f MiB", mh, lh))
	}
	if lg > mg*1.2+32 {
		errs = append(errs, fmt.Errorf("goroutines grew after warm-up: median %.0f, then %.0f", mg, lg))
	}
	return errors.Join(errs...)
}

// newClient returns a client with a new key.
func newClient() (*client.Client, error) {
	id, err := identity.Generate()
	if err != nil {
		return nil, err
	}
	return client.New(client.Config{Identity: id})
}

// pick returns a handle on a random group of the registry's listing.
func pick(ctx context.Context, cl *client.Client, r *registry.Daemon) (*client.Group, error) {
	reg, err := cl.Registry(ctx, r.Addr().String(), r.Fingerprint())
	if err != nil {
		return nil, err
	}
	l, err := reg.List(ctx)
	if err != nil {
		return nil, err
	}
	if len(l.Groups) == 0 {
		return nil, errNotListed
	}
	return reg.Group(l.Groups[rand.IntN(len(l.Groups))])
}

var errNotListed = errors.New("no group listed yet")

// user is one user slot: a new key each round, which joins a group, sends,
// fetches what is new, watches briefly, and leaves.
func user(ctx context.Context, n int, r *registry.Daemon, c *counters) {
	for ctx.Err() == nil {
		if err := round(ctx, n, r, c); err != nil && ctx.Err() == nil {
			if errors.Is(err, errNotListed) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			c.errs.Add(1)
			fmt.Fprintf(os.Stderr, "user %d: %v\n", n, err)
		}
	}
}

func round(ctx context.Context, n int, r *registry.Daemon, c *counters) error {
	cl, err := newClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	g, err := pick(ctx, cl, r)
	if err != nil {
		return err
	}
	joined, err := g.Join(ctx, fmt.Sprintf("user-%d", n), nil)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	c.joins.Add(1)
	cursor := joined.Last
	body := make([]byte, 64+rand.IntN(448))
	for range 20 + rand.IntN(40) {
		msgs := make([]client.Outgoing, 1+rand.IntN(8))
		for i := range msgs {
			msgs[i] = client.Outgoing{ID: client.NewID(), Body: body}
		}
		if _, err := g.SendMessages(ctx, msgs); err != nil {
			var we *wire.Error
			if errors.As(err, &we) && we.Code == wire.CodeRateLimited {
				c.rateLimited.Add(1)
				sleep(ctx, we.RetryAfter())
				continue
			}
			return ignoreEnd(ctx, fmt.Errorf("send: %w", err))
		}
		c.sent.Add(int64(len(msgs)))
		if rand.IntN(4) == 0 {
			cur, err := g.Fetch(ctx, client.Query{After: cursor, Limit: 500}, func(client.Message) bool { c.fetched.Add(1); return true })
			if err != nil {
				return ignoreEnd(ctx, fmt.Errorf("fetch: %w", err))
			}
			cursor = cur.Next
		}
	}
	if rand.IntN(4) == 0 {
		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		for ev, err := range g.Watch(wctx, client.Query{After: cursor}) {
			if err != nil {
				break
			}
			if ev.Kind == client.EventMessage {
				c.watched.Add(1)
			}
		}
		cancel()
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := g.Leave(lctx); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	c.leaves.Add(1)
	return nil
}

// watcher follows one group for the whole run.
func watcher(ctx context.Context, n int, r *registry.Daemon, c *counters) {
	cl, err := newClient()
	if err != nil {
		c.errs.Add(1)
		return
	}
	defer cl.Close()
	var g *client.Group
	for g == nil && ctx.Err() == nil {
		if g, err = pick(ctx, cl, r); err != nil {
			g = nil
			sleep(ctx, 50*time.Millisecond)
		}
	}
	if g == nil {
		return
	}
	if _, err := g.Join(ctx, fmt.Sprintf("watcher-%d", n), nil); err != nil {
		if ctx.Err() == nil {
			c.errs.Add(1)
		}
		return
	}
	for ev, err := range g.Watch(ctx, client.Query{}) {
		if err != nil {
			if ctx.Err() == nil {
				c.errs.Add(1)
				fmt.Fprintf(os.Stderr, "watcher %d: %v\n", n, err)
			}
			return
		}
		if ev.Kind == client.EventMessage {
			c.watched.Add(1)
		}
	}
}

// ignoreEnd drops an error caused by the run ending.
func ignoreEnd(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
