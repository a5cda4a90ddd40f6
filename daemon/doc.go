// Package daemon runs huddle's two servers: the Registry, which lists the
// groups group daemons host (each under a lease they renew), and the
// GroupDaemon, which hosts groups: their members, their message logs, and
// the operations of PROTOCOL.md (info, join, leave, members, send, fetch,
// watch).
//
// # The house
//
// The QUIC server machinery both daemons share is package server
// (daemon/server): each daemon gives it a Handler and serves its
// operations from a server.Call. Here, the registry: registry.go and its
// leases (leases.go). The group daemon: groupdaemon.go, its groups
// (group.go), the operations (ops.go), membership (members.go), the log it
// needs (log.go) and the one sequencing step (sequence.go), storage
// (storage.go), state files (state.go, statelock*.go), registration with
// registries (registration.go) and a cell's replication (cell.go,
// cellops.go). Both daemons use the lifecycle helpers (lifecycle.go), the
// memory budget (memory.go) and the package's errors (errors.go).
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
// Shutdown is the server's (package server): operations in flight finish
// within ShutdownTimeout, watches end with CodeUnavailable, new streams
// and connections are refused at once, then every connection is closed
// with code 0x2. The server's package comment says how each stream is
// read and answered.
package daemon
