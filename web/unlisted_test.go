package web

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/internal/udpproxy"
	"github.com/huddle-chat/huddle/metrics"
	"github.com/huddle-chat/huddle/wire"
)

// TestDirectoryLetsUnlistedDaemonsGo: once no registry lists a group, huddle
// web closes its connection to the group's daemon, as soon as no watch
// runs on it: a watch that runs goes on meanwhile. It kept a connection,
// alive by keepalive, to the daemon of every group any registry had ever
// listed.
func TestDirectoryLetsUnlistedDaemonsGo(t *testing.T) {
	r, err := registry.New(registry.Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), LeaseTTL: 600 * time.Millisecond})
	must(t, err)
	must(t, r.Listen())
	rctx, stopRegistry := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() { r.Serve(rctx); close(rdone) }()
	t.Cleanup(func() { stopRegistry(); <-rdone })
	// The daemon registers through a path the test cuts: its lease then
	// lapses, and the group leaves the listing, while the daemon runs on.
	path, err := udpproxy.New(r.Addr().String())
	must(t, err)
	t.Cleanup(func() { path.Close() })
	m := metrics.New("test")
	d, err := groupd.New(groupd.Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), Groups: []groupd.Spec{{Name: "lobby"}},
		Registries: []string{path.Addr()}, RegistryFingerprints: []wire.Fingerprint{r.Fingerprint()}, Metrics: m})
	must(t, err)
	must(t, d.Listen())
	dctx, stopDaemon := context.WithCancel(context.Background())
	ddone := make(chan struct{})
	go func() { d.Serve(dctx); close(ddone) }()
	t.Cleanup(func() { stopDaemon(); <-ddone })

	ctx := testCtx(t)
	conns := func() int {
		t.Helper()
		fams, err := m.Prometheus().Gather()
		must(t, err)
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
	waitConns := func(want int, why string) {
		t.Helper()
		for conns() != want {
			select {
			case <-ctx.Done():
				t.Fatalf("the daemon holds %d connections, want %d (%s)", conns(), want, why)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	c := newClient(t)
	s := startWeb(t, c, r.Addr().String())
	a := newAPI(t, s)
	id := a.groupID("lobby")
	if st := a.do("POST", "/api/groups/"+id+"/join", map[string]string{"name": "web"}, nil); st != 200 {
		t.Fatalf("join: HTTP %d", st)
	}
	list := a.events("")
	list.waitGroups("lobby reachable", func(l listJSON) bool { return names(l)["lobby"].Reachable })
	waitConns(1, "huddle web's")

	w := a.events("watch=" + id)
	if ev := w.next("status"); ev.data["state"] != "live" {
		t.Fatalf("watch: %s", ev.raw)
	}
	path.Cut()
	list.waitGroups("lobby unlisted", func(l listJSON) bool { _, ok := names(l)["lobby"]; return !ok })

	// The watch goes on: a message sent straight to the daemon reaches it.
	sender := newClient(t)
	sg, err := sender.Group(client.GroupEntry{Group: uuid.MustParse(id), Name: "lobby", Addrs: []string{d.Addr().String()}, Fingerprint: d.Fingerprint()})
	must(t, err)
	_, err = sg.Join(ctx, "sender", nil)
	must(t, err)
	_, err = sg.Send(ctx, []byte("after unlisting"))
	must(t, err)
	if ev := w.next("message"); ev.data["text"] != "after unlisting" {
		t.Fatalf("watch: %s", ev.raw)
	}
	if n := conns(); n != 2 {
		t.Fatalf("the daemon holds %d connections while huddle web watches, want 2 (huddle web's and the sender's)", n)
	}
	w.close()
	waitConns(1, "the sender's: huddle web's closes with its last watch")
}

// TestUnlistedGroupAnsweredAtOnce: a request for a group no registry lists
// waits up to registryTimeout for one to list it (a daemon that restarted
// registers a moment after it serves), but once such a wait has found the
// group unlisted, the next requests for it are answered not_found at once:
// a page retrying a message to a group whose daemon is away waited those
// 3 s for every try (session 22). A group registered again is found by the
// next request, and a group unlisted again is waited for again.
func TestUnlistedGroupAnsweredAtOnce(t *testing.T) {
	r := startRegistry(t)
	state := t.TempDir()
	d, stop := startGroups(t, r, groupd.Config{StateDir: state})
	addr := d.Addr().String()
	s := startWeb(t, newClient(t), r.Addr().String())
	waits := make(chan wire.UUID, 16)
	s.dir.mu.Lock()
	s.dir.waitHook = func(id wire.UUID) { waits <- id }
	s.dir.mu.Unlock()
	a := newAPI(t, s)
	id := a.groupID("lobby")
	list := a.events("")
	listed := func(l listJSON) bool { _, ok := names(l)["lobby"]; return ok }
	// ask asks for lobby's members (not_member: listed; not_found: not)
	// and returns the error's code, and how many requests have waited
	// for a registry to list it so far.
	ask := func() (string, int) {
		t.Helper()
		var e errorReply
		a.do("GET", "/api/groups/"+id+"/members", nil, &e)
		return e.Error.Code, len(waits)
	}

	stop() // it deregisters lobby
	list.waitGroups("lobby unlisted", func(l listJSON) bool { return !listed(l) })
	if code, n := ask(); code != "not_found" || n != 1 {
		t.Fatalf("lobby unlisted, first request: %q after %d waits, want not_found after 1", code, n)
	}
	for range 3 {
		if code, n := ask(); code != "not_found" || n != 1 {
			t.Fatalf("lobby unlisted, a request after a wait found it so: %q after %d waits, want not_found at once (still 1 wait)", code, n)
		}
	}

	_, stop = startGroups(t, r, groupd.Config{StateDir: state, Listen: addr})
	list.waitGroups("lobby listed again", listed)
	if code, n := ask(); code != "not_member" || n != 1 {
		t.Fatalf("lobby listed again: %q after %d waits, want not_member (found) with no wait", code, n)
	}

	stop()
	list.waitGroups("lobby unlisted again", func(l listJSON) bool { return !listed(l) })
	if code, n := ask(); code != "not_found" || n != 2 {
		t.Fatalf("lobby unlisted again: %q after %d waits, want not_found after a wait (2 in all)", code, n)
	}
}

// TestSendUnreachableAsksInfoAgain: a send that cannot reach the daemon of
// a group still listed (its path cut, as a daemon killed within its lease)
// has huddle web ask the daemon's info again at once, and a group whose
// info failed is asked again each poll: the list says the daemon
// unreachable, then reachable again once it answers, with what it now
// says (send_after: an older daemon may be back in its place). The list
// said reachable, with the gone daemon's send_after, until the next
// periodic info (30 s; here lengthened to an hour, so that only the send
// and the failed info can be what asks).
func TestSendUnreachableAsksInfoAgain(t *testing.T) {
	r := startRegistry(t)
	listen := testport.Cell(t)
	path, err := udpproxy.New(listen)
	must(t, err)
	t.Cleanup(func() { path.Close() })
	startGroups(t, r, groupd.Config{Listen: listen, Advertise: []string{path.Addr()}})
	s := startWeb(t, newClient(t), r.Addr().String())
	s.dir.mu.Lock()
	s.dir.every = time.Hour
	s.dir.mu.Unlock()
	a := newAPI(t, s)
	id := a.groupID("lobby")
	list := a.events("")
	reachable := func(l listJSON) bool { return names(l)["lobby"].Reachable }
	list.waitGroups("lobby reachable", reachable)

	path.Cut()
	var e struct {
		Error apiError `json:"error"`
	}
	if st := a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": "into the cut"}, &e); st == http.StatusOK || e.Error.Code != "unreachable" && !e.Error.InDoubt {
		t.Fatalf("a send over the cut path: HTTP %d %+v, want unreachable or in doubt", st, e.Error)
	}
	list.waitGroups("lobby listed, unreachable", func(l listJSON) bool { g, ok := names(l)["lobby"]; return ok && !g.Reachable })
	path.Restore()
	list.waitGroups("lobby reachable again", reachable)
}

// TestWatchDropAsksInfoAgain: a watch that drops (its daemon's path cut,
// as a daemon killed within its lease), and again one that resumes, has
// huddle web ask the group's info at once, with no send to fail: the list
// says the daemon unreachable (the page's send_after: not known), then
// reachable again, with what the daemon back says. The list said
// reachable, with the gone daemon's send_after, until the next periodic
// info (30 s), so an older daemon back in its place before any send
// failed had its predecessor's word. Here the periodic info and the
// registry polls (which ask a failed info again) wait an hour, so that
// only the watch can be what asks.
func TestWatchDropAsksInfoAgain(t *testing.T) {
	r := startRegistry(t)
	listen := testport.Cell(t)
	path, err := udpproxy.New(listen)
	must(t, err)
	t.Cleanup(func() { path.Close() })
	// Heartbeats every 200 ms: the watch sees the cut within a second.
	startGroups(t, r, groupd.Config{Listen: listen, Advertise: []string{path.Addr()}, HeartbeatInterval: 200 * time.Millisecond})
	// Listed before huddle web's first poll: the next is an hour later.
	ctx := testCtx(t)
	reg, err := newClient(t).Registry(ctx, r.Addr().String(), r.Fingerprint())
	must(t, err)
	for {
		l, err := reg.List(ctx)
		must(t, err)
		if len(l.Groups) == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("lobby never registered")
		case <-time.After(20 * time.Millisecond):
		}
	}
	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{r.Addr().String()}, Secret: testSecret,
		PollInterval: time.Hour, Logger: testLogger(t)})
	must(t, err)
	s.dir.every = time.Hour
	serve(t, s)
	a := newAPI(t, s)
	id := a.groupID("lobby")
	if st := a.do("POST", "/api/groups/"+id+"/join", map[string]string{"name": "web"}, nil); st != http.StatusOK {
		t.Fatalf("join: HTTP %d", st)
	}
	list := a.events("")
	reachable := func(l listJSON) bool { return names(l)["lobby"].Reachable }
	list.waitGroups("lobby reachable", reachable)
	w := a.events("watch=" + id)
	if ev := w.next("status"); ev.data["state"] != "live" {
		t.Fatalf("watch: %s", ev.raw)
	}

	path.Cut()
	if ev := w.next("status"); ev.data["state"] != "reconnecting" {
		t.Fatalf("watch over the cut path: %s, want reconnecting", ev.raw)
	}
	list.waitGroups("lobby listed, unreachable", func(l listJSON) bool { g, ok := names(l)["lobby"]; return ok && !g.Reachable })
	path.Restore()
	for ev := w.next("status"); ev.data["state"] != "live"; ev = w.next("status") {
		if ev.data["state"] != "reconnecting" {
			t.Fatalf("watch: %s, want reconnecting until live", ev.raw)
		}
	}
	list.waitGroups("lobby reachable again", reachable)
}
