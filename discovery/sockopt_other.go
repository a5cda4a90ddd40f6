//go:build !linux

package discovery

import "net"

// onlyJoinedGroups does nothing: BSD-derived stacks already deliver
// multicast only to sockets holding the matching membership.
func onlyJoinedGroups(*net.UDPConn) error { return nil }
