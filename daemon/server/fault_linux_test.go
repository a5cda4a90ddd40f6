package server

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/wire"
)

// TestHandlerReadFault: a handler that faults reading memory (a group's
// history is its files, mapped: a page the disk can no longer read is a
// SIGBUS when a fetch encodes it; here a page past the end of a file cut
// shorter under its mapping, which the kernel answers the same way)
// answers internal, and the server goes on. The fault crashed the daemon
// ("unexpected fault address"; here, the test binary).
func TestHandlerReadFault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mapped")
	if err := os.WriteFile(path, make([]byte, 2*os.Getpagesize()), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := syscall.Mmap(int(f.Fd()), 0, 2*os.Getpagesize(), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(p)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	var sink byte
	_, peer := startTestServer(t, 0, func(ctx context.Context, c *Call) error {
		if c.Op() == wire.OpInfo {
			sink += p[os.Getpagesize()] // faults
		}
		return c.Result(wire.Left{WasMember: true})
	})
	peertest.WantCode(t, peer.Call(wire.OpInfo, wire.GroupRef{}, nil), wire.CodeInternal)
	var l wire.Left
	peertest.Must(t, peer.Call(wire.OpLeave, wire.GroupRef{}, &l))
	if !l.WasMember {
		t.Fatal("the call after the fault not served")
	}
}
