//go:build unix && !linux

package discovery

import (
	"net"
	"net/netip"
)

// onlyJoinedGroups does nothing: BSD-derived stacks already deliver
// multicast only to sockets holding the matching membership.
func onlyJoinedGroups(*net.UDPConn) error { return nil }

// bindGroupAddr is the address a group socket binds: the unspecified
// address, which every system accepts.
func bindGroupAddr() netip.Addr { return netip.IPv4Unspecified() }
