package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"path/filepath"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// A bot that joins a group, posts a line and prints the last hour.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	home := "/var/lib/buildbot/huddle"
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

	reg, err := c.Registry(ctx, "192.168.1.20:7373", wire.Fingerprint{}) // pinned on first use
	if err != nil {
		log.Fatal(err)
	}
	list, err := reg.List(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range list.Groups {
		if e.Name != "builds" {
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
		for m, err := range g.Messages(ctx, client.Query{Since: time.Now().Add(-time.Hour)}) {
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("%d %s: %s\n", m.Seq, m.Name, m.Body)
		}
	}
}

// Following a group live: the watch reconnects and resumes by itself, and
// says when the daemon restarted with a new, empty log.
func ExampleGroup_Watch() {
	var g *client.Group // from Registry.Group
	ctx := context.Background()
	for ev, err := range g.Watch(ctx, client.Query{}) {
		if err != nil {
			log.Fatal(err) // e.g. client.ErrNotMember after leaving
		}
		switch ev.Kind {
		case client.EventMessage:
			fmt.Printf("%s: %s\n", ev.Message.Name, ev.Message.Body)
		case client.EventGap:
			fmt.Printf("missed %d..%d (retention)\n", ev.From, ev.To)
		case client.EventReset:
			fmt.Println("history was reset")
		}
	}
}
