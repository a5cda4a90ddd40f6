// Package wire is huddle's protocol: frame layout, the CBOR codec, the frame
// types of every operation, peer identities (fingerprints) and the error
// codes that travel between peers. PROTOCOL.md at the repository root is the
// contract for other implementations; this comment is the short version.
//
// # Transport
//
// QUIC v1 with TLS 1.3 and ALPN "huddle/1". Every peer presents a
// self-signed certificate; its identity is the SHA-256 of the certificate's
// SubjectPublicKeyInfo (a Fingerprint). Clients pin the server's fingerprint;
// servers require a client certificate and key everything (membership, lease
// ownership, the sender of a message) by the client's fingerprint.
//
// # Streams and frames
//
// One bidirectional QUIC stream carries one operation. The client writes one
// request frame and closes its send side; the server answers with one or more
// frames and closes its send side. A frame is
//
//	+----------------------+--------------------------------------+
//	| length: uint32, BE   | exactly one CBOR data item (length B) |
//	+----------------------+--------------------------------------+
//
// with 1 <= length <= MaxFrameSize. The length is checked before anything is
// allocated. Decoding is strict: duplicate map keys, indefinite lengths, tags,
// invalid UTF-8, nesting deeper than MaxNesting, more than MaxArrayItems array
// elements or MaxMapPairs map pairs, and bytes after the item are rejected.
//
// A request is the map {0: op, 1: args}; a response frame is the map
// {0: kind, 1: body}. Args and bodies are maps with small integer keys, listed
// on each Go type below; keys a peer does not know are ignored, so fields can
// be added without a new ALPN.
//
// # Flows
//
//	register, renew, deregister, list,
//	info, join, leave, members, send:  request -> Result | Error
//	fetch:  request -> Messages* -> End        | Error
//	watch:  request -> Start -> (Messages | Gap | Heartbeat)* ... until the
//	        client cancels or the server ends it with an Error frame
//
// An Error frame is always the last frame on a stream. Error codes map to the
// sentinel errors of this package (ErrNotMember and the rest) in both
// directions, so errors.Is works across the network.
package wire
