// Package daemon runs huddle's two servers: the Registry, which lists the
// groups group daemons host (each under a lease they renew), and the
// GroupDaemon, which hosts groups: their members, their message logs, and
// the operations of PROTOCOL.md (info, join, leave, members, send, fetch,
// watch).
//
// # The house
//
// Three concerns live here, each in files of its own. The QUIC server
// machinery both servers share: configuration and construction (server.go),
// listening and accepting connections (accept.go), reading requests
// (request.go), one operation's state and replies (call.go), fair shares of
// what peers hold (shares.go), stream credit (credit.go), reused stream
// workers (workers.go), shutdown (shutdown.go) and telemetry
// (telemetry.go). The registry: registry.go and its leases (leases.go).
// The group daemon: groupdaemon.go, its groups (group.go), the operations
// (ops.go), membership (members.go), the log it needs (log.go) and the one
// sequencing step (sequence.go), storage (storage.go), state files
// (state.go, statelock*.go) and registration with registries
// (registration.go). Both servers use the lifecycle helpers
// (lifecycle.go) and the package's errors (errors.go).
//
// # Lifecycle
//
// Both servers follow the same shape:
//
//	d, err := daemon.NewGroupDaemon(cfg) // validates cfg; no I/O
//	err = d.Listen()                     // optional: loads state, binds the socket
//	fmt.Println(d.Addr(), d.Fingerprint())
//	err = d.Serve(ctx)                   // blocks until ctx ends or Close is called
//
// Serve calls Listen itself if it was not called, so a caller that does not
// need the address before serving can skip it; one that runs Serve on
// another goroutine calls Listen first, and knows the address once it
// returns. When ctx
// ends, Serve shuts down gracefully (as Close) and returns nil once every
// goroutine has stopped. Close is safe to call twice and from any goroutine;
// it waits for every goroutine the server started. Listen and Serve after
// Close return ErrClosed.
//
// Shutdown lets single-reply operations in flight finish (bounded by
// ShutdownTimeout) and ends watches with an Error frame carrying
// CodeUnavailable. Meanwhile it refuses what it will no longer serve, at
// once: a new stream gets an unavailable Error frame, and a new connection
// is closed after its handshake with application code 0x2 ("server
// shutting down"). Then it closes every connection with code 0x2 and waits
// for every goroutine.
//
// # Streams
//
// Each QUIC stream carries one operation. The server reads the request frame
// (within RequestTimeout), requires the client's end of stream right after
// it, dispatches by op and closes its side after the last reply frame. A
// malformed request gets an Error frame (bad_request or too_large); a stream
// whose request could not be read at all (deadline, reset) is cancelled in
// both directions with stream error code 0x2 (timeout) or 0x3 (protocol
// violation), so the peer's stream credit is always returned. Identity is
// never taken from a peer's fields: the sender of a message, lease
// ownership and membership are keyed by the fingerprint of the certificate
// on the connection, and sequence numbers and timestamps are the server's.
package daemon
