//go:build linux

package testbin

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// AwaitExit waits until every process in pids has exited, or until
// deadline, and returns those still running then (none: all exited). The
// processes need not be this process's children, which it could wait for
// otherwise: each is watched through a pidfd (pidfd_open(2)), which poll(2)
// reports readable once the process has exited, whether or not anyone has
// reaped it yet. A process already gone counts as exited.
func AwaitExit(deadline time.Time, pids ...int) (running []int, err error) {
	var fds []unix.PollFd
	defer func() {
		for _, p := range fds {
			unix.Close(int(p.Fd))
		}
	}()
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
		}
		fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		running = append(running, pid)
	}
	for len(fds) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return running, nil
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("poll pidfds: %w", err)
		}
		if n == 0 {
			continue // the deadline, checked above
		}
		for i := len(fds) - 1; i >= 0; i-- {
			if fds[i].Revents != 0 {
				unix.Close(int(fds[i].Fd))
				fds = slices.Delete(fds, i, i+1)
				running = slices.Delete(running, i, i+1)
			}
		}
	}
	return nil, nil
}
