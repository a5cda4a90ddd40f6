package registry

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/huddle-chat/huddle/daemon/internal/peertest"
)

// TestListenBusyPortCreatesNothing: a registry whose port is taken refuses
// to start before it writes anything: it created its state directory and
// key first, so a mistyped --listen left them behind.
func TestListenBusyPortCreatesNothing(t *testing.T) {
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	peertest.Must(t, err)
	defer busy.Close()
	dir := filepath.Join(t.TempDir(), "state")
	r, err := New(Config{StateDir: dir, Listen: busy.LocalAddr().String(), Logger: peertest.Logger(t)})
	peertest.Must(t, err)
	defer r.Close()
	if err := r.Listen(); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Listen on a port in use: %v, want EADDRINUSE", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the state directory after Listen failed: %v, want none created", err)
	}
}
