package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/metrics"
)

// TestGroupCloseReleasesConnection: closing the last handle on a daemon
// closes the client's connection to it, but not while another handle holds
// it, nor while a Watch runs on the closed handle (the watch goes on until
// its context ends). Before Group.Close a program that opened handles on
// groups as listings came and went kept a connection, alive by keepalive,
// to every daemon it had ever asked.
func TestGroupCloseReleasesConnection(t *testing.T) {
	m := metrics.New("test")
	r, d, _ := setup(t, groupd.Config{Metrics: m})
	ctx := testCtx(t)
	c, sender := newClient(t), newClient(t)
	entry := listed(t, c, r.Addr().String(), "lobby")
	conns := func() int { return connections(t, m) }
	waitConns := func(want int) {
		t.Helper()
		for conns() != want {
			select {
			case <-ctx.Done():
				t.Fatalf("the daemon holds %d connections, want %d", conns(), want)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	_ = d

	g1, err := c.Group(entry)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := c.Group(entry)
	if err != nil {
		t.Fatal(err)
	}
	joined, err := g1.Join(ctx, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitConns(1)
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := g1.Info(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("info on a closed handle: %v, want ErrClosed", err)
	}
	if _, err := g1.Send(ctx, []byte("late")); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("send on a closed handle: %v, want ErrClosed", err)
	}
	// g2 holds the same connection.
	if _, err := g2.Send(ctx, []byte("still here")); err != nil {
		t.Fatalf("another handle on the daemon, after the first closed: %v", err)
	}

	// A watch on g2, which is then closed: it goes on.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events := make(chan client.Event)
	ended := make(chan error, 1)
	go func() {
		var last error
		for ev, err := range g2.Watch(wctx, client.Query{After: joined.Last + 1, Epoch: joined.Epoch, Status: true}) {
			if err != nil {
				last = err
				break
			}
			select {
			case events <- ev:
			case <-wctx.Done():
			}
		}
		ended <- last
	}()
	if ev := <-events; ev.Kind != client.EventLive {
		t.Fatalf("first event %+v, want EventLive", ev)
	}
	g2.Close()
	sg, err := sender.Group(entry)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sg.Join(ctx, "sender", nil); err != nil {
		t.Fatal(err)
	}
	ack, err := sg.Send(ctx, []byte("after close"))
	if err != nil {
		t.Fatal(err)
	}
	for ev := range events {
		if ev.Kind == client.EventMessage && ev.Message.ID == ack.ID {
			break
		}
	}
	if conns() != 2 {
		t.Fatalf("the daemon holds %d connections while the watch runs, want 2 (the watch's and the sender's)", conns())
	}
	stopWatch()
	if err := <-ended; err != nil {
		t.Fatalf("watch ended with %v", err)
	}
	waitConns(1) // the sender's
}

// listed returns the registry's entry for the group called name.
func listed(t *testing.T, c *client.Client, regAddr, name string) client.GroupEntry {
	t.Helper()
	ctx := testCtx(t)
	reg, err := c.Registry(ctx, regAddr, client.Fingerprint{})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for {
		list, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Groups {
			if e.Name == name {
				return e
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("group %q never registered", name)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestCellStatusLeavesNoConnection: a program that asks daemons for their
// cell's status (a monitor, huddle cell status) holds no connection to them
// afterwards; each call's stayed open, alive by keepalive, until the Client
// closed.
func TestCellStatusLeavesNoConnection(t *testing.T) {
	m := metrics.New("test")
	_, d, _ := setup(t, groupd.Config{Metrics: m})
	ctx := testCtx(t)
	c := newClient(t)
	if _, err := c.CellStatus(ctx, d.Addr().String(), d.Fingerprint()); !errors.Is(err, client.ErrUnsupported) {
		t.Fatalf("cell status of a daemon in no cell: %v, want ErrUnsupported", err)
	}
	for connections(t, m) != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("the daemon holds %d connections after the call", connections(t, m))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// connections is the daemon's huddle_connections gauge.
func connections(t *testing.T, m *metrics.Metrics) int {
	t.Helper()
	fams, err := m.Prometheus().Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, f := range fams {
		if f.GetName() == "huddle_connections" {
			for _, mm := range f.GetMetric() {
				n += mm.GetGauge().GetValue()
			}
		}
	}
	return int(n)
}
