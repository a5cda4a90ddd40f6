package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/identity"
)

// What the examples talk to: real servers in this process, on 127.0.0.1,
// with mDNS off. A program would find its registry on the LAN (huddle
// doctor shows where) or be told its address.

// exampleServers starts a registry and a group daemon hosting "lobby" and
// the private "ops" (secret "hunter2"), waits until the registry lists
// both, and returns the registry's address and a function that stops
// everything and removes its state.
func exampleServers() (registryAddr string, stop func()) {
	addrs, stop := startExampleServers(groupd.Config{}, 1)
	return addrs[0], stop
}

// exampleTwoRegistries is exampleServers with two registries, the daemon
// registered with both.
func exampleTwoRegistries() (registryAddrs []string, stop func()) {
	return startExampleServers(groupd.Config{}, 2)
}

// exampleRateLimitedServers is exampleServers with each member limited to
// one message a second, in bursts of two.
func exampleRateLimitedServers() (registryAddr string, stop func()) {
	addrs, stop := startExampleServers(groupd.Config{SendRate: 1, SendBurst: 2, MaxBatch: 2}, 1)
	return addrs[0], stop
}

func startExampleServers(gcfg groupd.Config, registries int) ([]string, func()) {
	dir, err := os.MkdirTemp("", "huddle-example")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan struct{}
	stop := func() {
		cancel()
		for _, d := range done {
			<-d
		}
		os.RemoveAll(dir)
	}
	serve := func(listen func() error, run func(context.Context) error) {
		if err := listen(); err != nil {
			stop()
			log.Fatal(err)
		}
		d := make(chan struct{})
		done = append(done, d)
		go func() { defer close(d); run(ctx) }()
	}

	var regs []*registry.Daemon
	for i := range registries {
		reg, err := registry.New(registry.Config{Listen: "127.0.0.1:0", StateDir: fmt.Sprintf("%s/registry%d", dir, i)})
		if err != nil {
			log.Fatal(err)
		}
		serve(reg.Listen, reg.Serve)
		regs = append(regs, reg)
		gcfg.Registries = append(gcfg.Registries, reg.Addr().String())
	}
	gcfg.Listen, gcfg.StateDir = "127.0.0.1:0", dir+"/daemon"
	gcfg.Groups = []groupd.Spec{{Name: "lobby"}, {Name: "ops", Secret: []byte("hunter2")}}
	gcfg.Storage.Memory = true
	gcfg.MaxMessageBytes = 4096
	gd, err := groupd.New(gcfg)
	if err != nil {
		log.Fatal(err)
	}
	serve(gd.Listen, gd.Serve)

	// Registration takes a moment after the daemon starts.
	c := exampleClient()
	defer c.Close()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	for _, reg := range regs {
		if err := waitListed(wctx, c, reg, len(gcfg.Groups)); err != nil {
			stop()
			log.Fatalf("the example's group daemon did not register: %v", err)
		}
	}
	return gcfg.Registries, stop
}

// waitListed waits until reg lists n groups.
func waitListed(ctx context.Context, c *client.Client, reg *registry.Daemon, n int) error {
	h, err := c.Registry(ctx, reg.Addr().String(), reg.Fingerprint())
	for err == nil {
		var l client.Listing
		if l, err = h.List(ctx); err == nil && len(l.Groups) == n {
			return nil
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return err
}

// exampleClient returns a client with a new key of its own.
func exampleClient() *client.Client {
	id, err := identity.Generate()
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(client.Config{Identity: id})
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// exampleGroup opens the group called name through the registry at addr.
func exampleGroup(c *client.Client, addr, name string) *client.Group {
	ctx := context.Background()
	reg, err := c.Registry(ctx, addr, client.Fingerprint{})
	if err != nil {
		log.Fatal(err)
	}
	list, err := reg.List(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range list.Groups {
		if e.Name == name {
			g, err := reg.Group(e)
			if err != nil {
				log.Fatal(err)
			}
			return g
		}
	}
	log.Fatalf("no group %q listed", name)
	return nil
}
