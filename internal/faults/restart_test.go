//go:build unix

package faults

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// restartable is a group daemon process that can be killed and started
// again on the same address with the same state directory, as a service
// manager restarts one.
type restartable struct {
	t        *testing.T
	registry string
	dir      string
	listen   string
	p        *proc
}

func startRestartable(t *testing.T, registry string) *restartable {
	t.Helper()
	r := &restartable{t: t, registry: registry, dir: t.TempDir(), listen: "127.0.0.1:0"}
	r.start()
	return r
}

func (r *restartable) start() {
	r.t.Helper()
	r.p = start(r.t, "serve", "--no-mdns", "--registry", r.registry, "--listen", r.listen,
		"--group", "alpha", "--state-dir", r.dir)
	r.listen = r.p.line(r.t, listening)[1]
}

// restart kills the daemon with SIGKILL and starts it again after down
// (the time a service manager takes to notice and restart it; part of the
// fault, not a wait for an event).
func (r *restartable) restart(down time.Duration) {
	r.t.Helper()
	r.p.kill(syscall.SIGKILL)
	<-time.After(down)
	r.start()
}

// TestRecoveryAcrossRestart kills a group daemon with SIGKILL and starts it
// again at once on the same address, while a watcher follows its group
// and senders, batching and not, send with a deadline of their own. Each
// send in flight across the restart must be stored (or fail with a clear
// error), not run out its deadline; batched sends must fare as unbatched
// ones do. The watcher must learn of the restart from the daemon's reset
// or its own probe of a late heartbeat, not from its last resort, three
// heartbeats of silence, and then resume (the log is on disk: no reset)
// and deliver what is sent to the new daemon.
func TestRecoveryAcrossRestart(t *testing.T) {
	regAddr, _, reg := startRegistry(t, "127.0.0.1:0", t.TempDir())
	defer reg.kill(syscall.SIGTERM)
	d := startRestartable(t, regAddr)
	defer func() { d.p.kill(syscall.SIGTERM) }()
	u := newUser(t)
	var entry wire.GroupEntry
	eventually(t, "the group listed", func() bool { entry = u.listed(regAddr)["alpha"]; return entry.Fingerprint != wire.Fingerprint{} })

	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	newGroup := func(name string, batching bool) *client.Group {
		g, _ := groupOfNewUser(t, entry, batching)
		if _, err := g.Join(ctx, name, nil); err != nil {
			t.Fatal(err)
		}
		return g
	}
	watcher := newGroup("watcher", false)
	events := make(chan client.Event, 64)
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWatch()
	wg.Go(func() {
		for ev, err := range watcher.Watch(wctx, client.Query{Status: true}) {
			if err != nil {
				return
			}
			select {
			case events <- ev:
			case <-wctx.Done():
				return // the test has stopped reading: never block its end
			}
		}
	})
	next := func(kind client.EventKind) client.Event {
		t.Helper()
		for {
			select {
			case ev := <-events:
				if ev.Kind == kind {
					return ev
				}
				if ev.Kind == client.EventReset {
					t.Fatalf("the watch was reset (epoch %d): the log is on disk, its history and epoch survive a SIGKILL", ev.Epoch)
				}
				if ev.Kind == client.EventInterrupted && kind != client.EventInterrupted {
					t.Logf("watch interrupted: %v", ev.Err)
				}
			case <-ctx.Done():
				t.Fatalf("no %v event", kind)
			}
		}
	}
	next(client.EventLive)

	// Two clients, one batching and one not, each with callers that keep
	// a send in flight, across the restart.
	const callers = 16
	type outcome struct {
		failed, expired int
		worst           time.Duration
	}
	var omu sync.Mutex
	var outcomes [2]outcome // by batching
	sctx, stopSending := context.WithCancel(ctx)
	defer stopSending() // a failed check must not leave the callers sending
	for k, batching := range []bool{false, true} {
		g := newGroup(fmt.Sprint("sender", k), batching)
		for i := range callers {
			wg.Go(func() {
				for n := 0; sctx.Err() == nil; n++ {
					start := time.Now()
					c, cancel := context.WithTimeout(sctx, 15*time.Second)
					_, err := g.Send(c, fmt.Appendf(nil, "%d/%d/%d", k, i, n))
					cancel()
					if sctx.Err() != nil {
						return
					}
					omu.Lock()
					o := &outcomes[k]
					o.worst = max(o.worst, time.Since(start))
					if err != nil {
						o.failed++
						if errors.Is(err, context.DeadlineExceeded) {
							o.expired++
						}
					}
					omu.Unlock()
					if err != nil {
						<-time.After(100 * time.Millisecond) // a caller backing off
					}
				}
			})
		}
	}
	before := time.Now()
	d.restart(2 * time.Second)
	back := time.Now()
	t.Logf("daemon back %v after the kill", back.Sub(before).Round(time.Millisecond))

	ev := next(client.EventInterrupted)
	t.Logf("the watch was interrupted %v after the daemon was back: %v", time.Since(back).Round(time.Millisecond), ev.Err)
	if strings.Contains(ev.Err.Error(), "no word from the daemon") {
		t.Errorf("the watcher learned of the restart from its last-resort silence timer (%v)", ev.Err)
	}
	next(client.EventLive)
	t.Logf("the watch resumed %v after the daemon was back, with no reset", time.Since(back).Round(time.Millisecond))
	if _, err := newGroup("late", false).Send(ctx, []byte("after the restart")); err != nil {
		t.Fatal(err)
	}
	for {
		m := next(client.EventMessage)
		if string(m.Message.Body) == "after the restart" {
			break
		}
	}
	stopSending()

	omu.Lock()
	defer omu.Unlock()
	for k, o := range outcomes {
		t.Logf("batching %v: slowest send %v, %d failed with a clear error", k == 1, o.worst.Round(time.Millisecond), o.failed-o.expired)
		if o.expired > 0 {
			t.Errorf("batching %v: %d sends ran out their deadline across the restart", k == 1, o.expired)
		}
	}
}
