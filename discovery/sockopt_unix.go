//go:build unix

package discovery

import "syscall"

// shareAddr lets several sockets bind the mDNS port: ours in this and
// other processes, and other mDNS programs (Avahi sets SO_REUSEADDR).
// Multicast reaches every one of them. Not SO_REUSEPORT: Linux puts the
// sockets of one user that set it in a group and hands each multicast
// packet to one of them, so a process with a socket per interface would
// lose most queries (seen: one answered in ten seconds).
func shareAddr(network, address string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
