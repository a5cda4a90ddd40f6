// Package discovery finds the huddle registry on the local network with
// mDNS (DNS-SD service _huddle._udp), so group daemons and the CLI need no
// configuration.
//
// # Advertising
//
// An Advertiser runs one mDNS responder per selected interface. Each
// responder answers only queries that arrive on its own interface, and only
// with the addresses of that interface, so a host on two LANs never tells
// one LAN an address from the other. Every RescanInterval it re-reads the
// interfaces and restarts the responders whose addresses changed.
//
// The responder is ours, not hashicorp/mdns's Server, for one reason: on
// Linux a socket bound to 0.0.0.0:5353 receives the group's packets from
// every interface where any socket joined it (IP_MULTICAST_ALL defaults to
// 1), and mdns.Server gives no access to its socket, so one Server per
// interface would answer queries from the other LANs with the wrong
// addresses. Our responder sets IP_MULTICAST_ALL to 0 on its socket. The
// records themselves come from hashicorp/mdns's MDNSService zone.
//
// The TXT record always carries v=<version>, proto=huddle/1 and
// fp=<fingerprint>. No goodbye packet is sent on shutdown: the registry's
// QUIC lease, not mDNS, tells whether it is alive.
//
// # Browsing
//
// Find, Browse and Diagnose query with hashicorp/mdns's client, one query
// loop per selected interface (mdns.QueryParam.Interface), so every answer
// is attributed to the interface it was asked on. A query asks once and then
// listens for its whole timeout, so the loops ask again: at once, then after
// 100 ms, doubling up to QueryInterval. Answers are streamed through a
// buffered channel that a dedicated goroutine drains, because the client's
// send is non-blocking and drops what a slow reader does not take.
// The client cannot end a query early (it returns only when its timeout has
// passed), so Find returns without waiting for the query in flight; that
// goroutine, and the client's receive goroutines, end within 250 ms.
// Queries use IPv4 only: the client fails a whole query when an IPv6 send
// fails, which is common on hosts without IPv6 multicast routes.
//
// An answer is only a claim. Nothing is returned to the caller until the
// caller's Verify (a QUIC handshake checking the fingerprint) succeeded on
// one of the answer's addresses; answers that fail are logged and skipped,
// and asked about again only after a pause.
//
// The client also keeps updating an entry after handing it over when a
// second packet about the same instance arrives during one query (a data
// race inside hashicorp/mdns). Entries are converted at once by the draining
// goroutine; the advertiser sends everything in one packet per query and
// per interface, so this does not happen between our own programs.
//
// Addresses are ordered so that those on a subnet of the interface the
// answer came from are tried first. hashicorp/mdns keeps only the last A and
// the last AAAA record of an answer, which is one more reason the
// advertiser sends only the addresses of the interface asked on.
//
// # Interfaces
//
// With no interface names configured, every interface that is up, can
// multicast, is not loopback and has an IPv4 address is used. If there is
// none, loopback is used if it can multicast (Linux's lo cannot unless
// configured to, as in test namespaces). SelectInterfaces reports the choice
// and the reason for every interface left out, for huddle doctor.
//
// hashicorp/mdns logs through the standard log package; this package gives
// it a *log.Logger whose lines go to the configured *slog.Logger at debug
// level.
package discovery
