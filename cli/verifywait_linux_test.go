package cli

import (
	"os"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/netlab"
)

// TestNewRegistryWaitedForWhileVerified: a registry found over mDNS is
// awaited from the start of the handshake that verifies its answer, so a
// registry new to the cached listing is in the first run's listing even
// when the cached registry answers before that verification ends. It was
// awaited only once verified and asked: a run ended as soon as the cached
// registry answered, and at load a new registry took 1 to 4 runs to be
// listed. Here every verification waits until the cached registry has
// answered and browseAtLeast has passed (as a slow handshake at load
// would): without the hold, the run ends then, without the new registry.
// (Linux only: netlab.)
func TestNewRegistryWaitedForWhileVerified(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		a := startVerb(t, nil, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
		a.waitLine(t, upLine)
		u := &testUser{home: t.TempDir()} // no registry given: it browses
		if err := os.MkdirAll(u.home, 0o700); err != nil {
			t.Fatal(err)
		}
		u.ok(t, "groups") // caches the first registry
		if c, err := loadListCache(u.home, scopeOf(nil)); err != nil || c == nil || len(c.Registries) != 1 {
			t.Fatalf("the first run's cached listing: %+v, %v; want the first registry", c, err)
		}
		b := startVerb(t, nil, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
		b.waitLine(t, upLine)

		slowed := make(chan struct{}, 64)
		u.beforeVerify = func(g *gatherer) {
			// Polled: gather's state has no event to wait on, and this
			// stands for a handshake slower than the cached registry's.
			for until := time.Now().Add(waitTimeout); time.Now().Before(until); time.Sleep(time.Millisecond) {
				if g.inflight.Load() == 0 && time.Since(g.start) >= browseAtLeast {
					break
				}
			}
			select {
			case slowed <- struct{}{}:
			default:
			}
		}
		code, out, errs := u.run(t, "groups", "--timeout", "20s")
		if code != ExitOK {
			t.Fatalf("huddle groups with a registry cached and another new: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
		if len(slowed) == 0 {
			t.Fatalf("no mDNS answer was verified during the run; stderr:\n%s", errs)
		}
		c, err := loadListCache(u.home, scopeOf(nil))
		if err != nil || c == nil || len(c.Registries) != 2 {
			t.Fatalf("the run after a second registry started listed %+v (%v); want both registries: the new one, its verification slower than the cached one's answer, was not waited for", c, err)
		}
	})
}
