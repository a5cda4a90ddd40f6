//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// requireOwnNetNS skips t (fails it under CI=true) unless the tests run in
// a network namespace of their own. Outside it, a verb without a registry
// would browse mDNS on the machine's interfaces: never do that.
func requireOwnNetNS(t *testing.T) {
	t.Helper()
	if os.Getenv(netnsEnv) != "" {
		return
	}
	const msg = "needs the test's own network namespace (root, with ip and unshare)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true, so this is a failure, not a skip)")
	}
	t.Skip(msg)
}

// TestLocalRegistryWithoutMulticast runs a client verb with no registry
// address on a machine where mDNS cannot work (this test's own network
// namespace: loopback only, without multicast), next to huddle up on the
// default address. Discovery fails at once; the verb must still find the
// registry on this machine, and return.
func TestLocalRegistryWithoutMulticast(t *testing.T) {
	requireOwnNetNS(t)
	d := startDaemon(t, "up", "--listen", "127.0.0.1:7373", "--state-dir", filepath.Join(t.TempDir(), "state"))
	u := newUser(t, "alice", d.registry)
	// The daemon registers lobby a moment after it prints it: under load
	// (20) over a second later, after a verb run at once had listed
	// nothing. Wait for the listing, through the registry's address.
	waitListed(t, u, d.groups["lobby"])
	env := []string{}
	for _, e := range u.env(t) {
		if !strings.HasPrefix(e, "HUDDLE_REGISTRY=") {
			env = append(env, e)
		}
	}
	p := startProc(t, "huddle groups (no registry given)", env, false, endsItself, "groups", "--json", "--timeout", "5s")
	if code := p.wait(t); code != 0 {
		t.Fatalf("huddle groups with no registry given: exit %d\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stdout.String(), `"name":"lobby"`) {
		t.Errorf("huddle groups printed %q, want the local registry's lobby", p.stdout)
	}
	d.stop(t)
}
