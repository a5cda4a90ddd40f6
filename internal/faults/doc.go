// Package faults holds huddle's process-level fault tests: real registry
// and group daemon processes (the huddle binary, built once per run) killed
// with SIGKILL and started again, with the Go client checking what users
// see. Everything listens on 127.0.0.1 and mDNS is off (--no-mdns), so no
// packet leaves loopback. Settings of the run (HUDDLE_<FLAG>) reach every
// process; one for a flag a test gives itself is an error (procEnv).
//
// The package has no code besides this comment; everything is in _test.go
// files. The tests are Linux and macOS only (SIGKILL).
package faults
