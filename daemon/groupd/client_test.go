package groupd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// TestClientAgainstDaemons runs the Go client against a registry and a group
// daemon, as the CLI does: find the group, join, send, fetch, watch, leave.
func TestClientAgainstDaemons(t *testing.T) {
	r := startRegistry(t, registry.Config{})
	d, _ := startGroupDaemon(t, Config{Registries: []string{r.Addr().String()}, RegistryFingerprints: []wire.Fingerprint{r.Fingerprint()}})
	ctx := testCtx(t)

	cl, err := client.New(client.Config{Identity: newKey(t), Logger: testLogger(t)})
	must(t, err)
	t.Cleanup(func() { cl.Close() })
	reg, err := cl.Registry(ctx, r.Addr().String(), r.Fingerprint())
	must(t, err)
	var found bool
	eventually(t, "the group listed", func() bool {
		l, err := reg.List(ctx)
		found = err == nil && len(l.Groups) == 1
		return found
	})
	list, err := reg.List(ctx)
	must(t, err)
	g, err := reg.Group(list.Groups[0])
	must(t, err)
	if g.ID() != gid(d) {
		t.Fatalf("listed %v, hosted %v", g.ID(), gid(d))
	}

	_, err = g.Send(ctx, []byte("too early"))
	if !errors.Is(err, client.ErrNotMember) {
		t.Fatalf("send before join: %v, want ErrNotMember", err)
	}
	_, err = g.Join(ctx, "me", nil)
	must(t, err)
	ack, err := g.Send(ctx, []byte("hello"))
	must(t, err)

	var got []string
	if _, err := g.Fetch(ctx, client.Query{}, func(m client.Message) bool {
		got = append(got, string(m.Body))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "hello" {
		t.Fatalf("fetched %q", got)
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sent := make(chan error, 1)
	go func() { _, err := g.Send(ctx, []byte("live")); sent <- err }()
	for ev, err := range g.Watch(wctx, client.Query{After: ack.Seq}) {
		must(t, err)
		if ev.Kind != client.EventMessage {
			continue
		}
		if string(ev.Message.Body) != "live" || ev.Message.Seq != ack.Seq+1 || ev.Message.Name != "me" {
			t.Fatalf("watched %+v", ev.Message)
		}
		cancel()
	}
	must(t, <-sent)

	was, err := g.Leave(ctx)
	must(t, err)
	if !was {
		t.Fatal("leave: want was a member")
	}
}

// TestClientWatchGapOnce resumes a watch into history retention has
// dropped: the client reports the gap once (the daemon's Gap frame), not a
// second time from the Start frame's first sequence.
func TestClientWatchGapOnce(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{Retention: store.Config{MaxMessages: 4}, HeartbeatInterval: time.Hour})
	ctx := testCtx(t)
	g, err := newTestClient(t).Group(wire.GroupEntry{Group: gid(d), Name: "general", Addrs: []string{d.Addr().String()}, Fingerprint: d.Fingerprint()})
	must(t, err)
	_, err = g.Join(ctx, "watcher", nil)
	must(t, err)
	for i := range 10 {
		_, err := g.Send(ctx, []byte(fmt.Sprint(i+1)))
		must(t, err)
	}
	info, err := g.Info(ctx)
	must(t, err)
	first := info.First
	if first < 4 {
		t.Fatalf("info %+v: want the first messages evicted", info)
	}
	for _, tc := range []struct {
		q    client.Query
		gaps []string // want, before the first message
	}{
		{client.Query{After: 2}, []string{fmt.Sprintf("3..%d", first-1)}},
		{client.Query{}, nil},
		{client.Query{After: first - 1}, nil},
	} {
		var gaps []string
		wctx, cancel := context.WithCancel(ctx)
	events:
		for ev, err := range g.Watch(wctx, tc.q) {
			must(t, err)
			switch ev.Kind {
			case client.EventGap:
				gaps = append(gaps, fmt.Sprintf("%d..%d", ev.From, ev.To))
			case client.EventMessage:
				if ev.Message.Seq != first {
					t.Fatalf("watch %+v: first message %d, want %d", tc.q, ev.Message.Seq, first)
				}
				break events
			}
		}
		cancel()
		if !slices.Equal(gaps, tc.gaps) {
			t.Fatalf("watch %+v: gaps %q, want %q", tc.q, gaps, tc.gaps)
		}
	}
}
