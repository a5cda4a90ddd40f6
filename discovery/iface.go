package discovery

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// InterfaceReport says whether an interface would be used for mDNS and, if
// not, why; Diagnose adds what its sockets met there.
type InterfaceReport struct {
	Name   string
	Index  int          // the system's interface index, which sockets join and send by
	Used   bool         // selected for mDNS
	Reason string       // why it is not used: "down", "no multicast", "no IPv4 address", "not selected", "loopback", "no such interface"
	Addrs  []netip.Addr // every address on the interface

	// Filled by Diagnose for the interfaces it used.
	Joined    bool  // joined 224.0.0.251 on it: announcements are heard
	JoinErr   error // why not (a *SocketError, with Advice)
	SendErr   error // why the last query could not be sent, nil if it went out (a *SocketError)
	Queries   int   // queries sent
	Responses int   // mDNS responses heard, huddle's or not
}

// candidate is a usable interface with the prefixes of its addresses.
type candidate struct {
	iface    net.Interface
	prefixes []netip.Prefix
}

// addrs returns the addresses worth advertising on the interface: every
// IPv4 address and every IPv6 address that needs no zone.
func (c candidate) addrs() []netip.Addr {
	var out []netip.Addr
	for _, p := range c.prefixes {
		a := p.Addr()
		if a.Is4() || !a.IsLinkLocalUnicast() {
			out = append(out, a)
		}
	}
	return out
}

// onLink reports whether a is on one of the interface's subnets.
func (c candidate) onLink(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range c.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// SelectInterfaces reports which interfaces Find, Browse, Diagnose and
// Advertiser.Serve would use given names (empty: choose automatically, see
// the package comment), and why every other one is left out. It returns the
// reports and, when none is usable, an error wrapping ErrNoInterface that
// explains what to change. Other errors come from listing the interfaces.
func SelectInterfaces(names []string) ([]InterfaceReport, error) {
	_, reports, err := selectInterfaces(names)
	return reports, err
}

func selectInterfaces(names []string) ([]candidate, []InterfaceReport, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, nil, fmt.Errorf("discovery: list interfaces: %w", err)
	}
	var (
		reports []InterfaceReport
		used    []candidate
		loop    = -1 // index in reports of a usable loopback
		loopC   candidate
	)
	for _, ifc := range ifaces {
		r := InterfaceReport{Name: ifc.Name, Index: ifc.Index}
		c := candidate{iface: ifc}
		if as, err := ifc.Addrs(); err == nil {
			for _, a := range as {
				ipn, ok := a.(*net.IPNet)
				if !ok {
					continue
				}
				ip, ok := netip.AddrFromSlice(ipn.IP)
				if !ok {
					continue
				}
				ip = ip.Unmap()
				ones, _ := ipn.Mask.Size()
				if ip.Is6() && ip.IsLinkLocalUnicast() {
					ip = ip.WithZone(ifc.Name)
				}
				r.Addrs = append(r.Addrs, ip)
				c.prefixes = append(c.prefixes, netip.PrefixFrom(ip.WithZone(""), ones))
			}
		}
		has4 := slices.ContainsFunc(r.Addrs, netip.Addr.Is4)
		switch {
		case len(names) > 0 && !slices.Contains(names, ifc.Name):
			r.Reason = "not selected"
		case ifc.Flags&net.FlagUp == 0:
			r.Reason = "down"
		case ifc.Flags&net.FlagMulticast == 0:
			r.Reason = "no multicast"
		case !has4:
			r.Reason = "no IPv4 address"
		case len(names) == 0 && ifc.Flags&net.FlagLoopback != 0:
			r.Reason = "loopback"
			loop, loopC = len(reports), c
		default:
			r.Used = true
			used = append(used, c)
		}
		reports = append(reports, r)
	}
	for _, n := range names {
		if !slices.ContainsFunc(ifaces, func(i net.Interface) bool { return i.Name == n }) {
			reports = append(reports, InterfaceReport{Name: n, Reason: "no such interface"})
		}
	}
	if len(used) == 0 && loop >= 0 {
		reports[loop].Used, reports[loop].Reason = true, ""
		used = append(used, loopC)
	}
	if len(used) == 0 {
		var why []string
		for _, r := range reports {
			why = append(why, r.Name+": "+r.Reason)
		}
		return nil, reports, fmt.Errorf("%w (%s); mDNS needs an interface that is up, multicast-capable and has an IPv4 address; check the interface names given, or give the registry address explicitly", ErrNoInterface, strings.Join(why, ", "))
	}
	return used, reports, nil
}
