// Package discovery finds huddle registries on the local network with
// mDNS (DNS-SD service _huddle._udp, RFC 6762 and 6763), so group daemons
// and the CLI need no configuration. It speaks IPv4 mDNS (224.0.0.251,
// port 5353) with its own sockets and miekg/dns's message format.
//
// # Sockets, one interface at a time
//
// Every socket belongs to one interface and says so by index: a group
// socket joins 224.0.0.251 on that interface (MCAST_JOIN_GROUP with the
// interface index), and every packet leaves through it (IP_MULTICAST_IF by
// index, and the index in the packet's IP_PKTINFO), with TTL 255. So
// discovery needs no default route and no multicast route: a join or send
// that names no interface asks the routing table, and fails with ENODEV
// on a host that has neither (issue 17.3, which hashicorp/mdns's client,
// used before, cannot avoid: it joins with imr_interface 0.0.0.0). On
// Linux a group socket also turns IP_MULTICAST_ALL off, so it hears only
// its own memberships, not every group any socket of the host joined on
// any interface. Group sockets share port 5353 with other mDNS programs
// (SO_REUSEADDR; not SO_REUSEPORT, with which Linux hands each multicast
// packet to one socket of a group).
//
// What fails (a join, a send, a socket) is a *SocketError that names the
// interface and the step, and whose Advice says how to fix it. It is
// logged at warn level once, and again only when it changes; Diagnose
// reports it per interface for huddle doctor.
//
// # Advertising
//
// An Advertiser runs one responder per selected interface. Each answers
// only queries that arrive on its own interface, and only with the
// addresses of that interface the registry's socket accepts (Listen): a
// host on two LANs never tells one LAN an address from the other, and a
// registry bound to 127.0.0.1 advertises nothing on the LAN, and says so.
// A responder announces its records twice, a second apart, when it starts
// (RFC 6762 §8.3), so browsers that listen learn of a new or restarted
// registry at once. Every RescanInterval the Advertiser re-reads the
// interfaces and restarts the responders whose addresses changed.
//
// Instance and host names are unique by construction: the instance name
// carries the first two groups of the registry's fingerprint ("huddle
// registry on box (abcd-efgh)") and the host name its first 8 letters
// ("box-abcdefgh.local."), so two hosts of one name never share them.
// Only a copy of the same key can still collide; for that, each responder
// watches the responses it hears (RFC 6762 §9): another advertiser using
// our instance name with other records is a conflict, which both sides
// settle the same way: the one whose fingerprint, addresses, port and host
// sort lower renames ("... #2") and announces again, the other defends its
// name by announcing it. Copies of ourselves (our own responder on another
// interface of the same link) are not conflicts.
//
// The TXT record always carries v=<version>, proto=huddle/1 and
// fp=<fingerprint>. Records live 120 s. No goodbye packet is sent on
// shutdown: the registry's QUIC lease, not mDNS, tells whether it is alive.
//
// # Browsing
//
// Find, Browse and Diagnose run one query loop per selected interface.
// Queries go from a socket of their own, on a port other than 5353 (a
// "legacy unicast" query, RFC 6762 §6.7): responders answer it directly,
// so answers need no group membership and reach no other program. They
// are sent at once, then after 100 ms, the pause doubling up to
// QueryInterval. A second socket joined to the group on the interface
// hears announcements and answers to others' queries; if the join fails,
// queries still work. Every answer is attributed to the interface it came
// in on, and keeps every address record of its host.
//
// An answer is only a claim. Nothing is returned to the caller until the
// caller's Verify (a QUIC handshake checking the fingerprint) succeeded on
// one of the answer's addresses; answers that fail are logged and skipped,
// and asked about again only after a pause. Addresses on a subnet of the
// interface the answer came from are tried first.
//
// Browse reports each registry by instance name, fingerprint and
// interface, and again only when it moves: two registries, even under one
// name, are two reports, never one that flaps between them. It reports at
// most MaxRegistries keys, MaxRegistriesPerSource from one source address,
// each holding its place while it verifies: one that has not verified for
// ForgetAfter (its answers, or Browse's own check at its address when they
// do not get their turn) is forgotten, and Gone says so.
//
// # Interfaces
//
// With no interface names configured, every interface that is up, can
// multicast, is not loopback and has an IPv4 address is used. If there is
// none, loopback is used if it can multicast (Linux's lo cannot unless
// configured to, as in test namespaces). SelectInterfaces reports the choice
// and the reason for every interface left out, for huddle doctor.
package discovery
