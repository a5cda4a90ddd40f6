// Package conformance proves that PROTOCOL.md is enough to write a huddle/1
// client: its tests hold a second, independent client, written from the
// document alone, and run it against real huddle daemons (a `huddle up`, and
// a cell of three `huddle serve` processes) on 127.0.0.1.
//
// The client shares no code with huddle's own: its QUIC is
// golang.org/x/net/quic (not quic-go), its TLS is crypto/tls set up by the
// rules of PROTOCOL.md §2, its CBOR is a small strict codec of its own (not
// fxamacker/cbor), and it imports none of huddle's packages but
// internal/testbin, which builds the binary it runs (deps_test.go keeps it
// so). Where the document was not enough to write it, the document was
// fixed.
//
// HUDDLE_CONFORMANCE_QLOG=DIR writes a qlog trace of each of the client's
// connections in DIR, for looking into a failure at the QUIC level.
//
// The package has no code outside its tests.
package conformance
