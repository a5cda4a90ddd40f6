package discovery

import (
	"net"
	"net/netip"
	"syscall"
)

// onlyJoinedGroups does nothing: Windows delivers multicast only to
// sockets holding the matching membership.
func onlyJoinedGroups(*net.UDPConn) error { return nil }

// shareAddr lets several sockets bind the mDNS port.
func shareAddr(network, address string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// bindGroupAddr is the address a group socket binds: Windows refuses to
// bind a multicast address.
func bindGroupAddr() netip.Addr { return netip.IPv4Unspecified() }
