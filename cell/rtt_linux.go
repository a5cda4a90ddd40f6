//go:build linux

package cell

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// connRTT returns the kernel's smoothed round trip of c, a TCP
// connection, plus twice its mean deviation, if c received data within
// window; false otherwise, or if the kernel does not say.
func connRTT(c net.Conn, window time.Duration) (time.Duration, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	if cerr := raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil || err != nil || info.Rtt == 0 {
		return 0, false
	}
	if time.Duration(info.Last_data_recv)*time.Millisecond > window {
		return 0, false
	}
	return time.Duration(info.Rtt+2*info.Rttvar) * time.Microsecond, true
}
