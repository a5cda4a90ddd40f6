package discovery

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
)

var (
	mdnsGroup4 = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}
	mdnsDest4  = netip.AddrPortFrom(netip.AddrFrom4([4]byte{224, 0, 0, 251}), 5353)
)

// responder answers mDNS queries that arrive on one interface from a zone.
// It replaces mdns.Server, whose socket also hears other interfaces' queries
// (see the package comment). Only IPv4 is served.
type responder struct {
	name string
	sig  string // the addresses it was started with, to notice changes
	conn *net.UDPConn
	zone mdns.Zone
	log  *slog.Logger
	done chan struct{}
}

// startResponder joins the mDNS group on ifc and answers from zone until
// stop. It returns an error if the socket cannot be made.
func startResponder(ifc *net.Interface, sig string, zone mdns.Zone, log *slog.Logger) (*responder, error) {
	conn, err := net.ListenMulticastUDP("udp4", ifc, mdnsGroup4)
	if err != nil {
		return nil, err
	}
	if err := onlyJoinedGroups(conn); err != nil {
		// Not fatal: answers may then carry this interface's addresses to
		// other LANs, where the browser's on-link ordering and Verify
		// still protect the caller.
		log.Warn("discovery: cannot restrict mDNS socket to its interface", "iface", ifc.Name, "err", err)
	}
	r := &responder{name: ifc.Name, sig: sig, conn: conn, zone: zone, log: log, done: make(chan struct{})}
	go r.serve()
	return r, nil
}

// stop closes the socket and waits for the serving goroutine.
func (r *responder) stop() {
	r.conn.Close()
	<-r.done
}

func (r *responder) serve() {
	defer close(r.done)
	buf := make([]byte, 9000)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Debug("discovery: mDNS read", "iface", r.name, "err", err)
			continue
		}
		r.answer(buf[:n], from)
	}
}

// answer replies to one query: to the querier directly when it asked from a
// port other than 5353 (a "legacy unicast" query, RFC 6762 6.7, which is
// what hashicorp/mdns sends) or set the unicast-response bit, otherwise to
// the group.
func (r *responder) answer(pkt []byte, from netip.AddrPort) {
	var q dns.Msg
	if err := q.Unpack(pkt); err != nil {
		r.log.Debug("discovery: undecodable mDNS packet", "iface", r.name, "from", from, "err", err)
		return
	}
	// RFC 6762 18: ignore responses, non-zero opcodes and rcodes. Truncated
	// queries promise known answers in a later packet; answering at once
	// just costs a duplicate answer.
	if q.Response || q.Opcode != dns.OpcodeQuery || q.Rcode != 0 {
		return
	}
	legacy := from.Port() != 5353
	unicast := legacy
	var answers []dns.RR
	for _, qq := range q.Question {
		if qq.Qclass&(1<<15) != 0 {
			unicast = true
		}
		answers = append(answers, r.zone.Records(qq)...)
	}
	if len(answers) == 0 {
		return
	}
	resp := &dns.Msg{
		MsgHdr:   dns.MsgHdr{Response: true, Authoritative: true},
		Compress: true,
		Answer:   answers,
	}
	if legacy {
		resp.Id = q.Id
		resp.Question = q.Question
	}
	out, err := resp.Pack()
	if err != nil {
		r.log.Warn("discovery: pack mDNS answer", "err", err)
		return
	}
	dst := from
	if !unicast {
		dst = mdnsDest4
	}
	if _, err := r.conn.WriteToUDPAddrPort(out, dst); err != nil {
		r.log.Debug("discovery: send mDNS answer", "iface", r.name, "to", dst, "err", err)
	}
}
