// Package server is the QUIC server machinery huddle's daemons share: it
// listens, accepts connections and streams within their limits, reads each
// stream's request, hands it to the daemon's Handler as a Call, writes
// errors, and shuts down. It knows nothing of what the operations mean.
//
//	s := server.New(cfg, server.Setup{Listen: addr, Role: "groups"}, handle)
//	err := s.Listen(id) // binds the socket
//	err = s.Start()     // accepts until Close
//	s.Close()           // graceful: see Shutdown
//
// # The house
//
// By concern: configuration and construction (server.go), listening and
// accepting connections (accept.go), reading requests and finishing
// streams (request.go), one operation's state and replies (call.go), fair
// shares of what peers hold (shares.go), stream credit (credit.go), reused
// stream workers (workers.go), shutdown (shutdown.go), what peers can make
// it hold and giving memory back (memory.go), and telemetry
// (telemetry.go).
//
// # Streams
//
// Each QUIC stream carries one operation. The server reads the request frame
// (within RequestTimeout), requires the client's end of stream right after
// it, dispatches to the Handler and closes its side after the last reply
// frame. A malformed request gets an Error frame (bad_request or
// too_large); a stream whose request could not be read at all (deadline,
// reset) is cancelled in both directions with stream error code 0x2
// (timeout) or 0x3 (protocol violation), so the peer's stream credit is
// always returned. Identity is never taken from a peer's fields: a Call's
// Peer is the fingerprint of the certificate on the connection.
//
// # Shutdown
//
// Close lets single-reply operations in flight finish (bounded by
// ShutdownTimeout); handlers of long operations (watches) end on
// Call.Stopping with an Error frame carrying CodeUnavailable. Meanwhile the
// server refuses what it will no longer serve, at once: a new stream gets
// an unavailable Error frame, and a new connection is closed after its
// handshake with application code 0x2 ("server shutting down"). Then it
// closes every connection with code 0x2 and waits for every goroutine,
// except handlers still running stuckWait (3 s) later, stuck in something
// that never returns (a disk that does not answer): Close leaves them, and
// Stuck says so.
package server
