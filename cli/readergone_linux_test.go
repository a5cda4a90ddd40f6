package cli

import (
	"os"
	"syscall"
	"testing"
)

// TestReaderGone: readerGone tells of a pipe whose reader closed and of a
// Unix socket whose peer closed, not of one whose reader is there, and
// stop ends its poller in every case (goleak checks the package).
func TestReaderGone(t *testing.T) {
	pipe := func(t *testing.T) (w, r *os.File) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		return w, r
	}
	socket := func(t *testing.T) (w, r *os.File) {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return os.NewFile(uintptr(fds[0]), "out"), os.NewFile(uintptr(fds[1]), "reader")
	}
	for _, tc := range []struct {
		name string
		open func(*testing.T) (w, r *os.File)
	}{{"pipe", pipe}, {"unix socket", socket}} {
		t.Run(tc.name, func(t *testing.T) {
			w, r := tc.open(t)
			defer w.Close()
			gone, stop := readerGone(w)
			select {
			case <-gone:
				t.Fatal("reader reported gone while it is there")
			default:
			}
			r.Close()
			<-gone // the test's deadline if never
			stop()
			stop() // twice

			w, r = tc.open(t)
			defer w.Close()
			defer r.Close()
			gone, stop = readerGone(w)
			stop()
			select {
			case <-gone:
				t.Fatal("reader reported gone while it is there")
			default:
			}
		})
	}
}
