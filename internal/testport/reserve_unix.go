//go:build unix

package testport

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// reserve takes port for this process among the test processes on this
// host: an exclusive lock on a file named for it, held until the process
// exits. It reports false if another process holds it. A port Cell returns
// is free when it returns, and bound only when the member starts: go test
// runs packages in processes of their own at once (-p), each drawing from
// the same ports, and another package's member took a port this one had
// drawn for a cell it was starting (cell's TestHandoverSlowTransfer at load
// ~50, session 18: "a --cell-peer names another key than the daemon at its
// address presents"). Where no lock can be taken, the port counts as
// reserved, as before.
func reserve(port int) bool {
	f, ok := lock(port)
	if f != nil {
		reserved[port] = f // open until the process exits, or giveBack: the lock with it
	}
	return ok
}

// unreserve lets go of port's reservation (given.mu).
func unreserve(port int) {
	if f := reserved[port]; f != nil {
		f.Close()
		delete(reserved, port)
	}
}

// lock takes port's lock among the test processes on this host, and
// returns the file that holds it (closing it releases the lock), or ok
// false if another process holds it. Where no lock can be taken it
// returns nil and true: the port counts as taken, as before the locks.
func lock(port int) (f *os.File, ok bool) {
	dir := filepath.Join(os.TempDir(), "huddle-testport")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, true
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return nil, false
	}
	if err != nil {
		f.Close()
		return nil, true
	}
	return f, true
}

// reserved are the files whose locks hold this process's ports (given.mu).
var reserved = make(map[int]*os.File)
