package discovery

import (
	"net"
	"net/netip"
	"syscall"
)

// ipMulticastAll is IP_MULTICAST_ALL from linux/in.h (the syscall package
// lacks it).
const ipMulticastAll = 49

// onlyJoinedGroups makes conn receive multicast only for the memberships
// conn itself holds (group and interface), instead of Linux's default of
// every group any socket on the host joined, on any interface.
func onlyJoinedGroups(conn *net.UDPConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipMulticastAll, 0)
	}); err != nil {
		return err
	}
	return serr
}

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

// bindGroupAddr is the address a group socket binds: on Linux the group
// itself, which filters out unicast to port 5353.
func bindGroupAddr() netip.Addr { return mdnsGroup }
