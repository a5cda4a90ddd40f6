package discovery

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// Names and TTLs of the records (RFC 6763 DNS-SD over RFC 6762 mDNS).
const (
	serviceName = Service + ".local."
	enumName    = "_services._dns-sd._udp.local." // DNS-SD service enumeration (RFC 6763 §9)
	recordTTL   = 120                             // seconds; every record, as the registry's QUIC lease, not mDNS, says whether it lives
)

// zone is one registry's records as advertised on one interface: the
// DNS-SD PTR, SRV and TXT records of its instance, and A and AAAA records of
// its host name holding that interface's addresses only.
type zone struct {
	instance string       // the instance name, unescaped ("huddle registry on box (abcd-efgh)")
	host     string       // the host name, a fully qualified domain name ("box-abcdefgh.local.")
	port     uint16       // the registry's port
	txt      []string     // v=, proto=, fp=
	addrs    []netip.Addr // the addresses advertised on this interface
}

// instanceFQDN is the instance's domain name in miekg/dns's presentation
// format: the instance name is one label, so its dots and backslashes are
// escaped.
func (z *zone) instanceFQDN() string { return escapeLabel(z.instance) + "." + serviceName }

// answer returns the records that answer q, or none.
func (z *zone) answer(q dns.Question) []dns.RR {
	if q.Qclass&0x7fff != dns.ClassINET && q.Qclass&0x7fff != dns.ClassANY {
		return nil
	}
	name := strings.ToLower(q.Name)
	want := func(t uint16) bool { return q.Qtype == t || q.Qtype == dns.TypeANY }
	switch name {
	case enumName:
		if want(dns.TypePTR) {
			return []dns.RR{&dns.PTR{Hdr: z.hdr(enumName, dns.TypePTR), Ptr: serviceName}}
		}
	case serviceName:
		if want(dns.TypePTR) {
			return z.all()
		}
	case strings.ToLower(z.instanceFQDN()):
		var rrs []dns.RR
		if want(dns.TypeSRV) {
			rrs = append(rrs, z.srv())
		}
		if want(dns.TypeTXT) {
			rrs = append(rrs, z.txtRR())
		}
		if len(rrs) > 0 {
			rrs = append(rrs, z.addrRRs()...)
		}
		return rrs
	case strings.ToLower(z.host):
		var rrs []dns.RR
		for _, rr := range z.addrRRs() {
			if want(rr.Header().Rrtype) {
				rrs = append(rrs, rr)
			}
		}
		return rrs
	}
	return nil
}

// all returns every record, the PTR first: an answer to a browse, and an
// announcement.
func (z *zone) all() []dns.RR {
	rrs := []dns.RR{&dns.PTR{Hdr: z.hdr(serviceName, dns.TypePTR), Ptr: z.instanceFQDN()}, z.srv(), z.txtRR()}
	return append(rrs, z.addrRRs()...)
}

func (z *zone) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: recordTTL}
}

func (z *zone) srv() dns.RR {
	return &dns.SRV{Hdr: z.hdr(z.instanceFQDN(), dns.TypeSRV), Port: z.port, Target: z.host}
}

func (z *zone) txtRR() dns.RR {
	return &dns.TXT{Hdr: z.hdr(z.instanceFQDN(), dns.TypeTXT), Txt: z.txt}
}

func (z *zone) addrRRs() []dns.RR {
	var rrs []dns.RR
	for _, a := range z.addrs {
		if a.Is4() {
			rrs = append(rrs, &dns.A{Hdr: z.hdr(z.host, dns.TypeA), A: net.IP(a.AsSlice())})
		} else {
			rrs = append(rrs, &dns.AAAA{Hdr: z.hdr(z.host, dns.TypeAAAA), AAAA: net.IP(a.AsSlice())})
		}
	}
	return rrs
}

// advert is what one response says about one instance of the service.
type advert struct {
	instance string // unescaped
	host     string // SRV target, lower case
	port     uint16
	txt      []string
	addrs    []netip.Addr // every A and AAAA record of host in the response
	hasSRV   bool
	hasTXT   bool
}

// adverts returns what a response says about each instance of the service
// it names, by PTR, SRV or TXT record. Records of every section count: a
// responder may put the address records among the additional ones.
func adverts(m *dns.Msg) []*advert {
	var rrs []dns.RR
	rrs = append(append(append(rrs, m.Answer...), m.Ns...), m.Extra...)
	byName := make(map[string]*advert)
	var order []*advert
	get := func(fqdn string) *advert {
		k := strings.ToLower(fqdn)
		if !strings.HasSuffix(k, "."+serviceName) {
			return nil
		}
		a := byName[k]
		if a == nil {
			a = &advert{instance: instanceName(fqdn)}
			byName[k] = a
			order = append(order, a)
		}
		return a
	}
	hosts := make(map[string][]netip.Addr)
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *dns.PTR:
			if strings.EqualFold(rr.Hdr.Name, serviceName) {
				get(rr.Ptr)
			}
		case *dns.SRV:
			if a := get(rr.Hdr.Name); a != nil {
				a.host, a.port, a.hasSRV = strings.ToLower(rr.Target), rr.Port, true
			}
		case *dns.TXT:
			if a := get(rr.Hdr.Name); a != nil {
				a.txt, a.hasTXT = rr.Txt, true
			}
		case *dns.A:
			if ip, ok := netip.AddrFromSlice(rr.A); ok {
				k := strings.ToLower(rr.Hdr.Name)
				hosts[k] = appendNew(hosts[k], ip.Unmap())
			}
		case *dns.AAAA:
			if ip, ok := netip.AddrFromSlice(rr.AAAA); ok && !ip.Is4In6() {
				k := strings.ToLower(rr.Hdr.Name)
				hosts[k] = appendNew(hosts[k], ip)
			}
		}
	}
	for _, a := range order {
		a.addrs = hosts[a.host]
	}
	return order
}

func appendNew(s []netip.Addr, a netip.Addr) []netip.Addr {
	if slices.Contains(s, a) {
		return s
	}
	return append(s, a)
}

// escapeLabel writes s as one label of a name in miekg/dns's presentation
// format.
func escapeLabel(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// instanceName strips the service and domain from an instance's domain name
// and undoes miekg/dns's presentation escapes ("\ " and "\DDD").
func instanceName(name string) string {
	if len(name) > len(serviceName) && strings.EqualFold(name[len(name)-len(serviceName)-1:], "."+serviceName) {
		name = name[:len(name)-len(serviceName)-1]
	}
	if !strings.Contains(name, `\`) {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] != '\\' || i+1 >= len(name) {
			b.WriteByte(name[i])
			continue
		}
		if i+3 < len(name) {
			if n, err := strconv.Atoi(name[i+1 : i+4]); err == nil && n < 256 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(name[i+1])
		i++
	}
	return b.String()
}
