// Package groupd is huddle's group daemon: it hosts groups, their
// members, their message logs, and the operations of PROTOCOL.md (info,
// join, leave, members, send, fetch, watch), and registers its groups with
// registries (package daemon/registry, which it never imports: it speaks
// to them as a client).
//
// # The house
//
// The QUIC server machinery the daemons share is package server
// (daemon/server): the daemon gives it a Handler and serves each
// operation from a server.Call. Here: the daemon, its configuration and
// lifecycle (daemon.go), its groups (group.go), the operations (ops.go),
// membership (members.go), the log it needs (log.go) and the one
// sequencing step (sequence.go), storage (storage.go), state files
// (state.go), registration with registries (registration.go), a cell's
// replication (cell.go, cellops.go), the memory budget (memory.go) and
// telemetry (telemetry.go). What it shares with the registry besides the
// server is in daemon/internal: its lifecycle, the state directory's
// lock, pacing of like log lines.
//
// # Lifecycle
//
// The daemons (this one and the registry) follow the same shape:
//
//	d, err := groupd.New(cfg) // validates cfg; no I/O
//	err = d.Listen()          // optional: loads state, binds the socket
//	fmt.Println(d.Addr(), d.Fingerprint())
//	err = d.Serve(ctx)        // blocks until ctx ends or Close is called
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
// A member of a cell that leads it hands the leadership over to another
// member first (cell.Node.Handover), while it still serves: the cell then
// has its next leader within a transfer, and the sends refused meanwhile
// name it, rather than a leader that vanished and an election.
//
// Shutdown is the server's (package server): operations in flight finish
// within ShutdownTimeout, watches end with CodeUnavailable, new streams
// and connections are refused at once, then every connection is closed
// with code 0x2. The server's package comment says how each stream is
// read and answered.
package groupd
