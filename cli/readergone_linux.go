//go:build linux

package cli

import (
	"errors"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// readerGone returns a channel closed when w is a pipe or a socket whose
// reading end has gone away (huddle watch --json | head -1, once head has
// its line), and stop, which ends the looking and waits for it. A command
// that writes only when something happens (watch) would otherwise learn
// it by SIGPIPE at its next write, however long that takes. For anything
// else (a terminal, a file, a writer of a test) the channel is never
// closed. Linux marks a pipe with no reader POLLERR and a Unix socket
// whose peer closed POLLHUP, whatever the events asked for: poll waits
// for them, beside a pipe of its own that stop closes. (A TCP socket
// whose peer closed is marked only once a write has drawn its reset: a
// watch writing to one learns it at its next write, as without this.)
func readerGone(w io.Writer) (gone <-chan struct{}, stop func()) {
	f, ok := w.(*os.File)
	if !ok {
		return nil, func() {}
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&(os.ModeNamedPipe|os.ModeSocket) == 0 {
		return nil, func() {}
	}
	var wake [2]int
	if err := unix.Pipe2(wake[:], unix.O_CLOEXEC); err != nil {
		return nil, func() {}
	}
	// The descriptor, not f.Fd(): Fd would put the file in blocking mode.
	raw, err := f.SyscallConn()
	if err != nil {
		unix.Close(wake[0])
		unix.Close(wake[1])
		return nil, func() {}
	}
	var fd int
	raw.Control(func(d uintptr) { fd = int(d) })
	ch := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer unix.Close(wake[0])
		fds := []unix.PollFd{{Fd: int32(fd)}, {Fd: int32(wake[0]), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || fds[1].Revents != 0 || fds[0].Revents&unix.POLLNVAL != 0 {
				return
			}
			if fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
				close(ch)
				return
			}
		}
	})
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			unix.Close(wake[1])
			wg.Wait()
		})
	}
}
