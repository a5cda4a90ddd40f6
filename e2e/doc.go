// Package e2e holds huddle's end-to-end tests: they build the huddle binary
// once, run real daemons (huddle up, registry, serve) and real client verbs
// as separate processes, talking QUIC over 127.0.0.1, and check what a user
// or a script sees: output, --json objects field by field, exit codes, and
// the chat command on a pipe and on a terminal (through tmux).
//
// The package has no code besides this comment; everything is in _test.go
// files. A few rules keep the tests safe and honest:
//
//   - Every client verb names its registry (HUDDLE_REGISTRY is always set),
//     so no test ever browses mDNS. Run as root, the whole test binary also
//     re-runs itself inside a fresh network namespace holding only lo, so not
//     one packet can reach the machine's real interfaces.
//   - Daemons listen on 127.0.0.1 only, on port 0 or on the port they had
//     before a restart, and every daemon is stopped with SIGTERM and must
//     exit 0; whatever is still running when a test ends is killed.
//   - Nothing sleeps to assert timing: tests poll for a condition with a
//     deadline, which only bounds how long a bug may hang the run.
//
// The tests are Linux only (network namespaces, SIGTERM, tmux). Under
// CI=true a missing tmux fails the chat test instead of skipping it.
package e2e
