package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
)

// A bot that joins a group, posts a line and reads the last hour back.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	registryAddr, stop := exampleServers() // a registry and a group daemon on 127.0.0.1
	defer stop()

	home, err := os.MkdirTemp("", "buildbot") // a real bot keeps a home, e.g. /var/lib/buildbot
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(home)
	id, err := identity.LoadOrCreate(home) // the bot's key: its member ID
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(client.Config{
		Identity:   id,
		KnownHosts: identity.OpenKnownHosts(filepath.Join(home, identity.KnownHostsFile)),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	reg, err := c.Registry(ctx, registryAddr, client.Fingerprint{}) // pinned on first use
	if err != nil {
		log.Fatal(err)
	}
	list, err := reg.List(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range list.Groups {
		if e.Name != "lobby" {
			continue
		}
		g, err := reg.Group(e)
		if err != nil {
			log.Fatal(err)
		}
		if _, err := g.Join(ctx, "buildbot", nil); err != nil {
			log.Fatal(err)
		}
		ack, err := g.Send(ctx, []byte("build 1234 passed"))
		if errors.Is(err, client.ErrTooLarge) {
			log.Fatal("message over the group's limit: see g.Info")
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("stored as", ack.Seq)
		_, err = g.Fetch(ctx, client.Query{Since: time.Now().Add(-time.Hour)}, func(m client.Message) bool {
			fmt.Printf("%d %s: %s\n", m.Seq, m.Name, m.Body)
			return true
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// stored as 1
	// 1 buildbot: build 1234 passed
}

// A registry's listing: every group whose daemon keeps its lease alive.
func ExampleRegistry_List() {
	ctx := context.Background()
	registryAddr, stop := exampleServers()
	defer stop()
	c := exampleClient()
	defer c.Close()

	reg, err := c.Registry(ctx, registryAddr, client.Fingerprint{})
	if err != nil {
		log.Fatal(err)
	}
	list, err := reg.List(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range list.Groups {
		fmt.Printf("%s at %d address(es), daemon %v\n", e.Name, len(e.Addrs), !e.Fingerprint.IsZero())
	}
	// Output:
	// lobby at 1 address(es), daemon true
	// ops at 1 address(es), daemon true
}

// Several registries asked at once, so that none is a single point of
// failure: Listed merges their answers (a registry that does not answer is
// skipped, unless none does) and says which registries list each group.
func ExampleListed() {
	ctx := context.Background()
	registryAddrs, stop := exampleTwoRegistries()
	defer stop()
	c := exampleClient()
	defer c.Close()

	var regs client.Registries
	for _, addr := range registryAddrs {
		reg, err := c.Registry(ctx, addr, client.Fingerprint{})
		if err != nil {
			log.Fatal(err)
		}
		regs = append(regs, reg)
	}
	groups, err := client.Listed(regs.List(ctx))
	if err != nil {
		log.Fatal(err) // matches client.ErrNoListing: no registry answered
	}
	for _, g := range groups {
		fmt.Printf("%s, listed by %d registries\n", g.Name, len(g.ListedBy))
	}
	// Output:
	// lobby, listed by 2 registries
	// ops, listed by 2 registries
}

// Joining a private group takes its secret; joining again is harmless.
func ExampleGroup_Join() {
	ctx := context.Background()
	registryAddr, stop := exampleServers()
	defer stop()
	c := exampleClient()
	defer c.Close()
	ops := exampleGroup(c, registryAddr, "ops")

	_, err := ops.Join(ctx, "alice", nil)
	fmt.Println("without the secret:", errors.Is(err, client.ErrUnauthorized))
	j, err := ops.Join(ctx, "alice", []byte("hunter2"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("joined; a member already:", j.Already)
	j, err = ops.Join(ctx, "alice (away)", []byte("hunter2")) // a new display name
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("joined again; a member already:", j.Already)
	// Output:
	// without the secret: true
	// joined; a member already: false
	// joined again; a member already: true
}

// A send whose outcome is unknown (a timeout, a dropped connection) is
// retried with its ID: the group stores it once and acknowledges the retry
// as a duplicate of the first.
func ExampleGroup_SendWithID() {
	ctx := context.Background()
	registryAddr, stop := exampleServers()
	defer stop()
	c := exampleClient()
	defer c.Close()
	g := exampleGroup(c, registryAddr, "lobby")
	if _, err := g.Join(ctx, "alice", nil); err != nil {
		log.Fatal(err)
	}

	id := client.NewID()
	first, err := g.SendWithID(ctx, id, []byte("deploy started"))
	if err != nil {
		log.Fatal(err)
	}
	again, err := g.SendWithID(ctx, id, []byte("deploy started"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("first:", first.Seq, first.Duplicate)
	fmt.Println("again:", again.Seq, again.Duplicate, again.Time.Equal(first.Time))
	// Output:
	// first: 1 false
	// again: 1 true true
}

// A batch is stored all or nothing, in order.
func ExampleGroup_SendMessages() {
	ctx := context.Background()
	registryAddr, stop := exampleServers()
	defer stop()
	c := exampleClient()
	defer c.Close()
	g := exampleGroup(c, registryAddr, "lobby")
	if _, err := g.Join(ctx, "importer", nil); err != nil {
		log.Fatal(err)
	}

	var batch []client.Outgoing
	for _, line := range []string{"one", "two", "three"} {
		batch = append(batch, client.Outgoing{ID: client.NewID(), Body: []byte(line)})
	}
	acks, err := g.SendMessages(ctx, batch)
	if err != nil {
		log.Fatal(err)
	}
	for i, a := range acks {
		fmt.Printf("%s stored as %d\n", batch[i].Body, a.Seq)
	}
	// Output:
	// one stored as 1
	// two stored as 2
	// three stored as 3
}

// Reading a group page by page: the Cursor of one Fetch is where the next
// one starts, in the same log epoch.
func ExampleGroup_Fetch() {
	ctx := context.Background()
	registryAddr, stop := exampleServers()
	defer stop()
	c := exampleClient()
	defer c.Close()
	g := exampleGroup(c, registryAddr, "lobby")
	if _, err := g.Join(ctx, "reader", nil); err != nil {
		log.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if _, err := g.Send(ctx, fmt.Appendf(nil, "line %d", i)); err != nil {
			log.Fatal(err)
		}
	}

	q := client.Query{Limit: 2}
	for {
		var page []string
		cur, err := g.Fetch(ctx, q, func(m client.Message) bool {
			page = append(page, string(m.Body))
			return true
		})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%q, more: %v\n", page, cur.More)
		if !cur.More {
			break
		}
		q.After, q.Epoch = cur.Next, cur.Epoch
	}
	// Output:
	// ["line 1" "line 2"], more: true
	// ["line 3" "line 4"], more: true
	// ["line 5"], more: false
}

// Following a group live. The watch reconnects and resumes by itself, says
// when retention dropped messages it had not delivered, and when the
// daemon restarted with a new, empty log.
func ExampleGroup_Watch() {
	registryAddr, stop := exampleServers()
	defer stop()
	c := exampleClient()
	defer c.Close()
	g := exampleGroup(c, registryAddr, "lobby")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := g.Join(ctx, "watcher", nil); err != nil {
		log.Fatal(err)
	}
	if _, err := g.Send(ctx, []byte("sent before the watch")); err != nil {
		log.Fatal(err)
	}

	var sends sync.WaitGroup
	defer sends.Wait()
	for ev, err := range g.Watch(ctx, client.Query{Status: true}) {
		if err != nil {
			log.Fatal(err) // e.g. client.ErrNotMember after leaving
		}
		switch ev.Kind {
		case client.EventLive: // the daemon follows the group for us now
			sends.Go(func() { g.Send(ctx, []byte("sent while watching")) })
		case client.EventMessage:
			fmt.Printf("%d %s: %s\n", ev.Message.Seq, ev.Message.Name, ev.Message.Body)
			if ev.Message.Seq == 2 {
				cancel() // ends the watch
			}
		case client.EventGap:
			fmt.Printf("missed %d..%d (retention)\n", ev.From, ev.To)
		case client.EventReset:
			fmt.Println("history was reset")
		}
	}
	// Output:
	// 1 watcher: sent before the watch
	// 2 watcher: sent while watching
}

// Who is in a group, and whether they are watching it now.
func ExampleGroup_Members() {
	ctx := context.Background()
	registryAddr, stop := exampleServers()
	defer stop()
	for _, name := range []string{"bob", "alice"} {
		c := exampleClient()
		defer c.Close()
		if _, err := exampleGroup(c, registryAddr, "lobby").Join(ctx, name, nil); err != nil {
			log.Fatal(err)
		}
	}
	c := exampleClient()
	defer c.Close()
	g := exampleGroup(c, registryAddr, "lobby")
	_, err := g.Members(ctx)
	fmt.Println("asked by a stranger:", errors.Is(err, client.ErrNotMember))
	if _, err := g.Join(ctx, "carol", nil); err != nil {
		log.Fatal(err)
	}
	ms, err := g.Members(ctx)
	if err != nil {
		log.Fatal(err)
	}
	slices.SortFunc(ms, func(a, b client.Member) int { return strings.Compare(a.Name, b.Name) })
	for _, m := range ms {
		fmt.Printf("%s online=%v you=%v\n", m.Name, m.Online, m.Fingerprint == c.Fingerprint())
	}
	// Output:
	// asked by a stranger: true
	// alice online=false you=false
	// bob online=false you=false
	// carol online=false you=true
}

// A group's description and limits: anyone may ask, member or not.
func ExampleGroup_Info() {
	ctx := context.Background()
	registryAddr, stop := exampleServers()
	defer stop()
	c := exampleClient()
	defer c.Close()
	g := exampleGroup(c, registryAddr, "ops")

	in, err := g.Info(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(in.Name, "private:", in.Private, "member:", in.Member, "messages:", in.Last)
	fmt.Println("storage:", in.Storage)
	fmt.Println("largest message:", in.Limits.MaxMessageBytes, "bytes")
	// Output:
	// ops private: true member: false messages: 0
	// storage: memory
	// largest message: 4096 bytes
}

// A member over the group's send rate is told how long to wait.
func ExampleRetryAfter() {
	ctx := context.Background()
	registryAddr, stop := exampleRateLimitedServers() // 1 message a second, bursts of 2
	defer stop()
	c := exampleClient()
	defer c.Close()
	g := exampleGroup(c, registryAddr, "lobby")
	if _, err := g.Join(ctx, "chatty", nil); err != nil {
		log.Fatal(err)
	}

	for i := 1; ; i++ { // the group allows a burst of 2, then 1 a second
		_, err := g.Send(ctx, []byte("hello"))
		if wait, ok := client.RetryAfter(err); ok {
			fmt.Printf("send %d: rate limited (%v), retry within a second: %v\n",
				i, errors.Is(err, client.ErrRateLimited), wait > 0 && wait <= time.Second)
			break
		}
		if err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// send 3: rate limited (true), retry within a second: true
}

// A cursor kept across a daemon restart belongs to the log it came from:
// a query that names the epoch fails instead of matching sequence numbers
// of another log, and the error carries the current epoch.
func ExampleEpochOf() {
	ctx := context.Background()
	registryAddr, stop := exampleServers()
	defer stop()
	c := exampleClient()
	defer c.Close()
	g := exampleGroup(c, registryAddr, "lobby")
	joined, err := g.Join(ctx, "reader", nil)
	if err != nil {
		log.Fatal(err)
	}

	saved := client.Query{After: 0, Epoch: joined.Epoch + 1} // from a log since lost
	_, err = g.Fetch(ctx, saved, func(client.Message) bool { return true })
	epoch, ok := client.EpochOf(err)
	fmt.Println(errors.Is(err, client.ErrEpochMismatch), ok, epoch == joined.Epoch)
	// Output:
	// true true true
}

// A program tells a server's refusals apart by sentinel (errors.Is), and
// reads the code and the server's own words with errors.As.
func ExampleError() {
	ctx := context.Background()
	registryAddr, stop := exampleServers()
	defer stop()
	c := exampleClient()
	defer c.Close()
	g := exampleGroup(c, registryAddr, "ops")

	_, err := g.Send(ctx, []byte("hello")) // not joined yet
	var se *client.Error
	if errors.As(err, &se) {
		fmt.Println(errors.Is(err, client.ErrNotMember), se.Code, se.Code == client.CodeNotMember)
	}
	_, err = g.Join(ctx, "guest", []byte("wrong"))
	switch {
	case errors.Is(err, client.ErrUnauthorized):
		fmt.Println("wrong secret")
	case err != nil:
		log.Fatal(err)
	}
	// Output:
	// true not_member true
	// wrong secret
}

// A bot that watches several groups at once: one Watch per group, each on
// its own goroutine, all ended by one context.
func ExampleGroup_Watch_severalGroups() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	registryAddr, stop := exampleServers()
	defer stop()
	bot, user := exampleClient(), exampleClient()
	defer bot.Close()
	defer user.Close()
	secrets := map[string][]byte{"ops": []byte("hunter2")}

	heard := make(chan string)
	var wg sync.WaitGroup
	ready := make(chan error)
	for _, name := range []string{"lobby", "ops"} {
		g := exampleGroup(bot, registryAddr, name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			joined, err := g.Join(ctx, "bot", secrets[name])
			ready <- err
			if err != nil {
				return
			}
			// From the join on: nothing sent after it is missed.
			for ev, err := range g.Watch(ctx, client.Query{After: joined.Last, Epoch: joined.Epoch}) {
				if err != nil {
					log.Print(err) // not a member any more, ...
					return
				}
				if ev.Kind == client.EventMessage {
					select {
					case heard <- fmt.Sprintf("%s: %s", name, ev.Message.Body):
					case <-ctx.Done():
					}
				}
			}
		}()
	}
	for range 2 {
		if err := <-ready; err != nil {
			log.Fatal(err)
		}
	}
	for _, name := range []string{"lobby", "ops"} {
		g := exampleGroup(user, registryAddr, name)
		if _, err := g.Join(ctx, "user", secrets[name]); err != nil {
			log.Fatal(err)
		}
		if _, err := g.Send(ctx, []byte("hello "+name)); err != nil {
			log.Fatal(err)
		}
		fmt.Println(<-heard)
	}
	cancel() // ends both watches
	wg.Wait()
	// Output:
	// lobby: hello lobby
	// ops: hello ops
}
