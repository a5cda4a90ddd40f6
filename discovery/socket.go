package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"
)

// mDNS's IPv4 group and port (RFC 6762 §3). IPv6 (ff02::fb) is not used.
var (
	mdnsGroup = netip.AddrFrom4([4]byte{224, 0, 0, 251})
	mdnsDest  = netip.AddrPortFrom(mdnsGroup, mdnsPort)
)

const mdnsPort = 5353

// maxPacket is the largest mDNS packet read; RFC 6762 §17 allows 9000
// bytes.
const maxPacket = 9000

// SocketError says which step of using an interface's mDNS socket failed.
// Advice says what to do about it.
type SocketError struct {
	Iface string // the interface's name
	Op    string // "open", "join", "send"
	Err   error
}

func (e *SocketError) Error() string {
	switch e.Op {
	case "join":
		return fmt.Sprintf("join %s on %s: %v", mdnsGroup, e.Iface, e.Err)
	case "send":
		return fmt.Sprintf("send to %s on %s: %v", mdnsDest, e.Iface, e.Err)
	}
	return fmt.Sprintf("open an mDNS socket for %s: %v", e.Iface, e.Err)
}

func (e *SocketError) Unwrap() error { return e.Err }

// Advice says, for a person, what most likely causes the error and how to
// fix it.
func (e *SocketError) Advice() string {
	var errno syscall.Errno
	errors.As(e.Err, &errno)
	switch {
	case e.Op == "open" && errno == syscall.EADDRINUSE:
		return "another program holds UDP port 5353 without sharing it (SO_REUSEADDR): stop it or make it share the port"
	case e.Op == "open" && (errno == syscall.EACCES || errno == syscall.EPERM):
		return "the system refuses UDP port 5353 to this program (a security policy): allow it"
	case errno == syscall.ENODEV || errno == syscall.ENXIO:
		return fmt.Sprintf("the interface %s vanished or cannot take multicast memberships: check 'ip link show %s'", e.Iface, e.Iface)
	case errno == syscall.ENOBUFS && e.Op == "join":
		return "the host's limit of multicast memberships is reached: raise sysctl net.ipv4.igmp_max_memberships"
	case errno == syscall.EINVAL && e.Op == "join":
		return fmt.Sprintf("%s cannot join multicast groups: turn multicast on ('ip link set %s multicast on')", e.Iface, e.Iface)
	case errno == syscall.EPERM || errno == syscall.EACCES:
		return "a firewall refuses to send multicast (an OUTPUT rule of nftables or iptables, or a security policy): allow UDP to 224.0.0.251 port 5353"
	case errno == syscall.ENETUNREACH || errno == syscall.ENETDOWN || errno == syscall.EHOSTUNREACH || errno == syscall.EADDRNOTAVAIL:
		return fmt.Sprintf("%s is down or has no IPv4 address: bring it up with an address ('ip addr show %s')", e.Iface, e.Iface)
	}
	return "give the registry's address explicitly (--registry HOST:PORT) to work without discovery"
}

// cause is what an error comes down to, for logging a failure once: its
// errno when it has one (a send error's text names each destination).
func cause(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// conn is an mDNS socket tied to one interface: it sends out of that
// interface (IP_MULTICAST_IF by index, with the interface's index in each
// packet's IP_PKTINFO, so no route is needed, not even for multicast) with
// TTL 255 as RFC 6762 §11 asks, and when it is a group socket it hears the
// group on that interface only.
type conn struct {
	ifc net.Interface
	udp *net.UDPConn
	pc  *ipv4.PacketConn
}

// listenGroup opens a socket on the mDNS port, shared with other mDNS
// programs (SO_REUSEADDR), joined to the group on ifc by
// interface index. On Linux it hears only the memberships it holds itself
// (IP_MULTICAST_ALL off), not every group any socket of the host joined on
// any interface. Errors are *SocketError.
func listenGroup(ifc net.Interface) (*conn, error) {
	lc := net.ListenConfig{Control: shareAddr}
	// Bound to the group address, the socket gets the group's packets and
	// no unicast sent to port 5353 (which only one sharing socket would
	// get).
	pc, err := lc.ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(bindGroupAddr(), mdnsPort).String())
	if err != nil {
		return nil, &SocketError{Iface: ifc.Name, Op: "open", Err: err}
	}
	c, err := newConn(ifc, pc.(*net.UDPConn))
	if err != nil {
		return nil, err
	}
	if err := c.pc.JoinGroup(&c.ifc, &net.UDPAddr{IP: mdnsGroup.AsSlice()}); err != nil {
		c.close()
		return nil, &SocketError{Iface: ifc.Name, Op: "join", Err: err}
	}
	return c, nil
}

// listenQuery opens a socket on a port of its own for querying on ifc.
// Queries from a port other than 5353 are "legacy unicast" queries (RFC
// 6762 §6.7): responders answer them to the sender directly, so this
// socket needs no group membership and shares its answers with nobody.
// Errors are *SocketError.
func listenQuery(ifc net.Interface) (*conn, error) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		return nil, &SocketError{Iface: ifc.Name, Op: "open", Err: err}
	}
	return newConn(ifc, udp)
}

func newConn(ifc net.Interface, udp *net.UDPConn) (*conn, error) {
	c := &conn{ifc: ifc, udp: udp, pc: ipv4.NewPacketConn(udp)}
	for _, set := range []func() error{
		func() error { return c.pc.SetMulticastInterface(&c.ifc) },
		func() error { return c.pc.SetMulticastTTL(255) },
		func() error { return c.pc.SetMulticastLoopback(true) },
		func() error { return onlyJoinedGroups(udp) },
	} {
		if err := set(); err != nil {
			udp.Close()
			return nil, &SocketError{Iface: ifc.Name, Op: "open", Err: err}
		}
	}
	// Where the system cannot say which interface a packet came in on
	// (Windows), the membership alone decides.
	c.pc.SetControlMessage(ipv4.FlagInterface, true)
	return c, nil
}

// read reads one packet and says which interface it came in on (0 if the
// system does not tell).
func (c *conn) read(buf []byte) (int, netip.AddrPort, int, error) {
	n, cm, src, err := c.pc.ReadFrom(buf)
	if err != nil {
		return 0, netip.AddrPort{}, 0, err
	}
	ua, _ := src.(*net.UDPAddr)
	if ua == nil {
		return 0, netip.AddrPort{}, 0, fmt.Errorf("packet from %v", src)
	}
	from := ua.AddrPort()
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	ifindex := 0
	if cm != nil {
		ifindex = cm.IfIndex
	}
	return n, from, ifindex, nil
}

// send sends b to dst out of the socket's interface. Errors are
// *SocketError.
func (c *conn) send(b []byte, dst netip.AddrPort) error {
	cm := &ipv4.ControlMessage{IfIndex: c.ifc.Index}
	if _, err := c.pc.WriteTo(b, cm, net.UDPAddrFromAddrPort(dst)); err != nil {
		return &SocketError{Iface: c.ifc.Name, Op: "send", Err: err}
	}
	return nil
}

// heard reports whether a packet that arrived on ifindex belongs to this
// socket's interface (0: the system did not say, so trust the membership).
func (c *conn) heard(ifindex int) bool { return ifindex == 0 || ifindex == c.ifc.Index }

func (c *conn) close() { c.udp.Close() }
