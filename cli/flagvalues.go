package cli

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// Flag values that check what was typed as it is parsed, so a mistake is a
// usage error (exit 2) naming the flag and the value, before anything
// starts, whether it came from the command line or the environment. pflag
// prints their errors as: invalid argument "10x" for "--max-batch" flag:
// want a whole number from 1 to 1024.

// countValue is a whole number within [min, max].
type countValue struct {
	p        *int
	min, max int
}

func newCount(p *int, def, min, max int) *countValue {
	*p = def
	return &countValue{p: p, min: min, max: max}
}

func (v *countValue) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < int64(v.min) || n > int64(v.max) {
		if v.max == math.MaxInt {
			return fmt.Errorf("want a whole number of at least %d", v.min)
		}
		return fmt.Errorf("want a whole number from %d to %d", v.min, v.max)
	}
	*v.p = int(n)
	return nil
}

func (v *countValue) String() string { return strconv.Itoa(*v.p) }
func (v *countValue) Type() string   { return "int" }

// sizeValue is a byte count (bytes, or a number with KiB, MiB, GiB) within
// [min, max]; zero is allowed when zeroOK (it means the default).
type sizeValue struct {
	p        *int64
	min, max int64
	zeroOK   bool
}

func newSize(p *int64, def, min, max int64, zeroOK bool) *sizeValue {
	*p = def
	return &sizeValue{p: p, min: min, max: max, zeroOK: zeroOK}
}

func (v *sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return fmt.Errorf("want bytes, or a number with KiB, MiB or GiB (like 64KiB)")
	}
	if (n != 0 || !v.zeroOK) && (n < v.min || n > v.max) {
		return fmt.Errorf("want %s to %s", sizeText(v.min), sizeText(v.max))
	}
	*v.p = n
	return nil
}

func (v *sizeValue) String() string {
	if *v.p == 0 {
		return ""
	}
	return sizeText(*v.p)
}
func (v *sizeValue) Type() string { return "size" }

// sizeText writes n the way parseSize reads it, in the largest unit that
// divides it.
func sizeText(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%d", n)
}

// durationValue is a duration of at least min (zero allowed when zeroOK).
type durationValue struct {
	p      *time.Duration
	min    time.Duration
	zeroOK bool
}

func newDuration(p *time.Duration, def, min time.Duration, zeroOK bool) *durationValue {
	*p = def
	return &durationValue{p: p, min: min, zeroOK: zeroOK}
}

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	switch {
	case err != nil:
		return fmt.Errorf("want a duration such as 500ms, 30s, 5m or 2h")
	case d == 0 && v.zeroOK:
	case d < v.min || d <= 0:
		return fmt.Errorf("want a duration of at least %v", max(v.min, time.Nanosecond))
	}
	*v.p = d
	return nil
}

// String is the value as help shows it: "0" for none, which pflag takes
// for a zero default and leaves to the flag's text (time.Duration says
// "0s", which help would print as "(default 0s)" after that text).
func (v *durationValue) String() string {
	if *v.p == 0 {
		return "0"
	}
	return v.p.String()
}
func (v *durationValue) Type() string { return "duration" }

// rateValue is a non-negative number of messages a second.
type rateValue struct{ p *float64 }

func newRate(p *float64, def float64) *rateValue {
	*p = def
	return &rateValue{p: p}
}

func (v *rateValue) Set(s string) error {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("want a number of messages a second, 0 or more (0: unlimited)")
	}
	*v.p = f
	return nil
}

func (v *rateValue) String() string { return strconv.FormatFloat(*v.p, 'g', -1, 64) }
func (v *rateValue) Type() string   { return "float" }

// udpAddrValue is a UDP address HOST:PORT (to listen on when listen is
// set: the port may be 0, meaning any free port, and the host empty,
// meaning every address).
type udpAddrValue struct {
	p      *string
	listen bool
}

func newUDPAddr(p *string, def string, listen bool) *udpAddrValue {
	*p = def
	return &udpAddrValue{p: p, listen: listen}
}

func (v *udpAddrValue) Set(s string) error {
	if err := checkUDPAddr(s, v.listen); err != nil {
		return err
	}
	*v.p = s
	return nil
}

func (v *udpAddrValue) String() string { return *v.p }
func (v *udpAddrValue) Type() string   { return "addr" }

// checkUDPAddr checks HOST:PORT. A listening address may have an empty host
// and port 0; one to give others (listen false: --advertise) must name one
// host they can dial. An IP that names no one host is refused either way
// (multicast, the broadcast address), and 0.0.0.0 or :: is refused to give
// others: registries refuse such an address (wire.Dialable, since session
// 22), so a daemon given --advertise 0.0.0.0:7374 started, and its groups
// were never listed, said only in its log (until session 23).
func checkUDPAddr(s string, listen bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil && listen {
		return fmt.Errorf("want HOST:PORT, like 127.0.0.1:7374")
	}
	if err != nil {
		return fmt.Errorf("want HOST:PORT, like 192.168.1.20:7374")
	}
	if host == "" && !listen {
		return fmt.Errorf("want HOST:PORT with a host, like 192.168.1.20:7374")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		switch {
		case manyHosts(ip):
			return fmt.Errorf("%s is a multicast or broadcast address, which no one host has: give an address of this host, like 192.168.1.20:7374", host)
		case ip.IsUnspecified() && !listen:
			return fmt.Errorf("%s means every address of this host, to listen on, and clients cannot dial it (registries refuse it): give the address clients reach this host at, like 192.168.1.20:7374, or leave --advertise out (the --listen address if it names one IP, else the address the registry sees this daemon come from)", host)
		}
	}
	return checkPort(port, listen)
}

// manyHosts reports whether ip is a multicast address or the IPv4
// broadcast address: one no single host has, where a packet sent goes to
// every host of the link (wire.Dialable refuses them from peers).
func manyHosts(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// checkPort checks a UDP port number (0 only to listen on any free port).
func checkPort(port string, listen bool) error {
	least := 1
	if listen {
		least = 0
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < least || n > 65535 {
		return fmt.Errorf("port %q: want a number from %d to 65535", port, least)
	}
	return nil
}

// registryAddrsValue is a list of registry addresses, HOST or HOST:PORT:
// the flag may be repeated, and each value may be a comma-separated list.
type registryAddrsValue []string

func (v *registryAddrsValue) Set(s string) error {
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if err := checkRegistryAddr(a); err != nil {
			return fmt.Errorf("%q: %w", a, err)
		}
		*v = append(*v, a)
	}
	return nil
}

func (v *registryAddrsValue) String() string { return strings.Join(*v, ",") }
func (v *registryAddrsValue) Type() string   { return "addrs" }

// checkRegistryAddr checks HOST[:PORT]; an empty address means "find one".
func checkRegistryAddr(s string) error {
	if s == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: a host name or an address, bracketed or not for IPv6.
		host, port = strings.Trim(s, "[]"), strconv.Itoa(wire.DefaultRegistryPort)
		if strings.ContainsAny(host, "[]/ ") {
			return fmt.Errorf("want HOST or HOST:PORT, like 192.168.1.20:7373")
		}
	}
	if host == "" {
		return fmt.Errorf("want HOST or HOST:PORT with a host, like 192.168.1.20:7373")
	}
	// Dialled as given, a multicast registry address sent QUIC Initials
	// to every host of the link (until session 23).
	if ip, err := netip.ParseAddr(host); err == nil && manyHosts(ip) {
		return fmt.Errorf("%s is a multicast or broadcast address, which no registry has: give the registry's own address, like 192.168.1.20:7373 (registries on the LAN are found over mDNS without --registry)", host)
	}
	return checkPort(port, false)
}

// groupNamesValue is a repeatable group name, each a valid name (§6 of
// PROTOCOL.md) and none twice.
type groupNamesValue struct {
	p       *[]string
	changed bool
}

func newGroupNames(p *[]string, def []string) *groupNamesValue {
	*p = def
	return &groupNamesValue{p: p}
}

func (v *groupNamesValue) Set(s string) error {
	if err := wire.CheckName(s); err != nil {
		return fmt.Errorf("not a group name: %v", err)
	}
	if !v.changed {
		*v.p, v.changed = nil, true // the first value given replaces the default
	}
	for _, g := range *v.p {
		if g == s {
			return fmt.Errorf("group %q is named twice", s)
		}
	}
	*v.p = append(*v.p, s)
	return nil
}

func (v *groupNamesValue) String() string { return "[" + strings.Join(*v.p, ",") + "]" }
func (v *groupNamesValue) Type() string   { return "stringArray" }
