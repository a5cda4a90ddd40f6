//go:build unix

package faults

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestGracefulStop sends SIGTERM to a group daemon while 64 callers send as
// fast as they can, half through a batching client and half through one
// without: each caller's first error must be unavailable (the daemon said
// it is stopping), never its own deadline passing or a redial to a daemon
// that is gone; and the daemon exits 0.
func TestGracefulStop(t *testing.T) {
	regAddr, _, reg := startRegistry(t, "127.0.0.1:0", t.TempDir())
	defer reg.kill(syscall.SIGTERM)
	groups := startGroups(t, regAddr, t.TempDir())
	u := newUser(t)
	var listed map[string]wire.GroupEntry
	eventually(t, "the groups listed", func() bool { listed = u.listed(regAddr); return len(listed) == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	const callers = 64
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		first   = make([]error, callers)
		sent    int
		started = make(chan struct{}, callers)
	)
	// Every caller joins before any sends: joined one by one while the
	// callers before them sent as fast as they could, 64 joins took the
	// whole waitTimeout on a loaded machine (make test, load 25: 52 joined
	// in 30 s), and the test failed on a join's deadline.
	handles := make([]*client.Group, callers)
	for i := range callers {
		id, err := identity.Generate()
		if err != nil {
			t.Fatal(err)
		}
		cl, err := client.New(client.Config{Identity: id, NoBatching: i%2 == 1,
			KnownHosts: identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known_registries"))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		g, err := cl.Group(listed["alpha"])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Join(ctx, fmt.Sprint("caller", i), nil); err != nil {
			t.Fatal(err)
		}
		handles[i] = g
	}
	// The sends get a deadline of their own: the joins' may be mostly
	// spent on a loaded machine (CI #3 of session 8: a caller's first
	// error was that deadline, 23 s of it gone to the joins).
	ctx, cancel = context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for i, g := range handles {
		wg.Go(func() {
			started <- struct{}{}
			for n := 0; ; n++ {
				_, err := g.Send(ctx, fmt.Appendf(nil, "%d/%d", i, n))
				if wait, ok := client.RetryAfter(err); ok && errors.Is(err, client.ErrRateLimited) {
					<-time.After(wait) // the member's send rate: not what this test is about
					continue
				}
				if err != nil {
					first[i] = err
					return
				}
				mu.Lock()
				sent++
				mu.Unlock()
			}
		})
	}
	for range callers {
		<-started
	}
	eventually(t, "the callers to be sending", func() bool { mu.Lock(); defer mu.Unlock(); return sent > 10*callers })
	groups.kill(syscall.SIGTERM)
	wg.Wait()
	if code := groups.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the daemon exited %d after SIGTERM, want 0", code)
	}
	for i, err := range first {
		if !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("caller %d (batching %v): %v, want unavailable", i, i%2 == 0, err)
		}
	}
	if !t.Failed() {
		t.Logf("%d sends acknowledged before the stop; all %d callers told unavailable", sent, callers)
	}
}
