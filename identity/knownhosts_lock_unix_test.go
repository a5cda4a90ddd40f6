//go:build unix

package identity

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// TestKnownHostsWithoutLocks: on a file system that has no locks (flock
// answers ENOLCK: NFS without its lock service), a new registry is still
// pinned, unlocked, as before the writers' lock. With the lock's error
// every first use of a registry there failed.
func TestKnownHostsWithoutLocks(t *testing.T) {
	flock = func(int, int) error { return syscall.ENOLCK }
	t.Cleanup(func() { flock = syscall.Flock })
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	if err := OpenKnownHosts(path).Check("reg:7373", wire.Fingerprint{1}); err != nil {
		t.Fatalf("Check of a new name where flock answers ENOLCK: %v", err)
	}
	if got, ok, err := OpenKnownHosts(path).Lookup("reg:7373"); err != nil || !ok || got != (wire.Fingerprint{1}) {
		t.Fatalf("Lookup after it = %v %v %v, want the pin", got, ok, err)
	}
	if _, err := OpenKnownHosts(path).Forget("reg:7373"); err != nil {
		t.Fatalf("Forget where flock answers ENOLCK: %v", err)
	}
}
