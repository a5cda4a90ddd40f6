//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
)

// TestRestartInPlace kills a lone group daemon (SIGKILL: it says nothing
// to its clients) while a program's calls wait on it, and starts it again
// on the same address with the same state, as a supervisor restarts a
// crashed daemon:
//   - a Fetch whose reply was half read (its program slow to take the
//     messages) goes on within about a second of the restart, each
//     message once, in order, instead of waiting 30 s for the idle
//     timeout: after the kill the client sent only packets too short for
//     the restarted daemon to answer with a reset, until the client's
//     liveness probe (an info request) drew one. Its epoch not known (a
//     first page), it asks again from the last message delivered, which
//     the restarted daemon holds as it was: the same log (until session
//     15 it ended with ErrUnreachable);
//   - the same fetch of a known epoch (Query.Epoch: a program that keeps
//     its cursor) goes on after the last message delivered, each message
//     once, in order;
//   - a send whose request the daemon never read (frozen, then killed) is
//     retried with its message ID and stored once;
//   - a watch follows the restarted daemon (within its heartbeat and a
//     quarter: a watch is probed by its heartbeats, not every second).
//
// The test log names how long each waited after the restart.
func TestRestartInPlace(t *testing.T) {
	t.Parallel()
	h := startInPlace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A history larger than the fetch's flow-control window, so that the
	// daemon is still sending when it is killed.
	msgs := make([]client.Outgoing, 200)
	for range 2 {
		for i := range msgs {
			msgs[i] = client.Outgoing{ID: client.NewID(), Body: make([]byte, 4000)}
		}
		if _, err := h.g.SendMessages(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	info, err := h.g.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fetched := make(chan error, 1)
	// Without its epoch (a first page), then with it (a program that
	// keeps its cursor): each goes on across the restart, each message
	// once, in order.
	for _, epoch := range []uint64{0, info.Epoch} {
		fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
		defer fcancel()
		holding, release := make(chan struct{}), make(chan struct{})
		var seqs []uint64
		var cur client.Cursor
		go func() {
			var err error
			cur, err = h.g.Fetch(fctx, client.Query{Epoch: epoch}, func(m client.Message) bool {
				if seqs = append(seqs, m.Seq); len(seqs) == 1 {
					close(holding)
					<-release
				}
				return true
			})
			fetched <- err
		}()
		<-holding
		back := h.restart()
		close(release)
		err := <-fetched
		t.Logf("a fetch of epoch %d whose reply was half read ended %v after the restart: %v", epoch, time.Since(back).Round(time.Millisecond), err)
		if err != nil {
			t.Errorf("the fetch of epoch %d across the restart: %v", epoch, err)
		}
		for i, seq := range seqs {
			if seq != uint64(i+1) {
				t.Fatalf("the fetch of epoch %d across the restart delivered message %d as its #%d: want each once, in order", epoch, seq, i+1)
			}
		}
		if uint64(len(seqs)) != info.Last || cur.Epoch != info.Epoch {
			t.Errorf("the fetch of epoch %d across the restart delivered %d messages, its cursor in epoch %d, want %d in epoch %d", epoch, len(seqs), cur.Epoch, info.Last, info.Epoch)
		}
	}

	// A send whose request waits, unread, in the frozen daemon's socket.
	resume := freeze(t, h.gd.proc)
	defer resume()
	id := client.NewID()
	sent := make(chan error, 1)
	go func() {
		_, err := h.g.SendWithID(ctx, id, []byte("in flight"))
		sent <- err
	}()
	if !eventually(t, waitTimeout, h.unread) {
		t.Fatal("the send's request never reached the frozen daemon's socket")
	}
	back := h.restart()
	if err := <-sent; err != nil {
		t.Fatalf("the send in flight when its daemon was killed: %v", err)
	}
	t.Logf("a send whose request the daemon never read was acknowledged %v after the restart", time.Since(back).Round(time.Millisecond))
	n := 0
	if _, err := h.other.Fetch(ctx, client.Query{}, func(m client.Message) bool {
		if m.ID == id {
			n++
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("the send retried across the restart is stored %d times, want once", n)
	}

	// A watch.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	live := make(chan struct{}, 1)
	watched := make(chan error, 1)
	go func() {
		var last error
		for ev, err := range h.g.Watch(wctx, client.Query{After: 1, Status: true}) {
			if err != nil {
				last = err
				break
			}
			if ev.Kind == client.EventLive {
				select {
				case live <- struct{}{}:
				case <-wctx.Done():
				}
			}
		}
		watched <- last
	}()
	<-live
	back = h.restart()
	select {
	case <-live:
	case <-ctx.Done():
		t.Fatal("the watch never came back after the restart")
	}
	t.Logf("a watch was live again %v after the restart", time.Since(back).Round(time.Millisecond))
	stopWatch()
	if err := <-watched; err != nil {
		t.Errorf("watch ended with %v", err)
	}
}

// inPlace is a lone group daemon (huddle serve, its registry apart) that a
// test kills and starts again on the same address and state, and two
// programs' handles on its group, opened through the registry.
type inPlace struct {
	t     *testing.T
	reg   *daemon
	args  []string
	gd    *daemon
	g     *client.Group // alice's
	other *client.Group // bob's, on a Client of his own
}

func startInPlace(t *testing.T) *inPlace {
	t.Helper()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	t.Cleanup(func() { reg.stop(t) })
	h := &inPlace{t: t, reg: reg}
	h.args = []string{"--group", "lobby", "--registry", reg.registry, "--listen", "127.0.0.1:0", "--state-dir", t.TempDir()}
	h.start()
	h.args[5] = h.gd.addr // from now on, in place
	h.g, h.other = h.handle("alice"), h.handle("bob")
	return h
}

// start starts the daemon, which is stopped (SIGTERM) at the test's end
// if it still runs.
func (h *inPlace) start() {
	h.t.Helper()
	d := startDaemon(h.t, "serve", h.args...)
	h.t.Cleanup(func() {
		if d.running() {
			d.stop(h.t)
		}
	})
	h.gd = d
}

// restart kills the daemon (SIGKILL) and starts it again in place, and
// returns when the new one listens.
func (h *inPlace) restart() time.Time {
	h.t.Helper()
	h.gd.proc.stop(h.t, syscall.SIGKILL)
	h.start()
	return time.Now()
}

// handle returns a new Client's handle on lobby, joined as name.
func (h *inPlace) handle(name string) *client.Group {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	key, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Identity: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	regFP, err := client.ParseFingerprint(h.reg.regFP)
	if err != nil {
		t.Fatal(err)
	}
	r, err := cl.Registry(ctx, h.reg.registry, regFP)
	if err != nil {
		t.Fatal(err)
	}
	for {
		list, err := r.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Groups {
			if e.Name != "lobby" {
				continue
			}
			g, err := r.Group(e)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := g.Join(ctx, name, nil); err != nil {
				t.Fatal(err)
			}
			return g
		}
		select {
		case <-ctx.Done():
			t.Fatal("lobby never listed")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// unread reports whether the daemon's UDP socket holds datagrams it has not
// read (a frozen daemon's): /proc/net/udp's rx_queue for its port.
func (h *inPlace) unread() bool {
	_, port, _ := strings.Cut(h.gd.addr, ":")
	raw, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		h.t.Fatal(err)
	}
	var p int
	fmt.Sscan(port, &p)
	local := fmt.Sprintf(":%04X", p)
	for _, l := range strings.Split(string(raw), "\n")[1:] {
		// sl local_address rem_address st tx_queue:rx_queue ...
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasSuffix(f[1], local) {
			_, rx, _ := strings.Cut(f[4], ":")
			return strings.Trim(rx, "0") != ""
		}
	}
	return false
}
