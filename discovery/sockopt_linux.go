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

// bindGroupAddr is the address a group socket binds: on Linux the group
// itself, which filters out unicast to port 5353.
func bindGroupAddr() netip.Addr { return mdnsGroup }
