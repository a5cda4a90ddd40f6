//go:build unix

package faults

import (
	"regexp"
	"syscall"
	"testing"
)

// TestRegistryReinstalled kills the registry and installs another on its
// address with a new key, as issue 15.10 found: a group daemon given the
// registry by address alone (no fingerprint) says at error level that the
// key changed, and registers its groups with the new registry, where a
// user (who trusts the new key) lists them.
func TestRegistryReinstalled(t *testing.T) {
	regAddr, oldFP, reg := startRegistry(t, "127.0.0.1:0", t.TempDir())
	groups := startGroups(t, regAddr, t.TempDir())
	defer groups.kill(syscall.SIGTERM)
	before := newUser(t)
	eventually(t, "both groups listed", func() bool { return len(before.listed(regAddr)) == 2 })

	reg.kill(syscall.SIGKILL)
	_, newFP, reg2 := startRegistry(t, regAddr, t.TempDir())
	defer reg2.kill(syscall.SIGTERM)
	if newFP == oldFP {
		t.Fatal("the reinstalled registry has the old key")
	}
	groups.line(t, regexp.MustCompile(`level=ERROR msg="REGISTRY KEY CHANGED.*was=`+oldFP.String()+` now=`+newFP.String()))
	after := newUser(t) // a user who trusts the new key
	back := eventually(t, "both groups listed by the new registry", func() bool { return len(after.listed(regAddr)) == 2 })
	t.Logf("groups listed by the reinstalled registry %v after it started", back)
}
