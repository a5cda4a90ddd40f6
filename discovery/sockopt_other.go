//go:build unix && !linux

package discovery

import (
	"net"
	"net/netip"
	"syscall"
)

// onlyJoinedGroups does nothing: BSD-derived stacks already deliver
// multicast only to sockets holding the matching membership.
func onlyJoinedGroups(*net.UDPConn) error { return nil }

// shareAddr lets several sockets bind the mDNS port.
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

// bindGroupAddr is the address a group socket binds: the unspecified
// address, which every system accepts.
func bindGroupAddr() netip.Addr { return netip.IPv4Unspecified() }
