// Package jepsen holds huddle's Jepsen-style fault tests: a LAN of network
// namespaces (internal/netlab) with a registry and group daemons on hosts
// of their own, run as real processes (the huddle binary, built once per
// run); a workload of Go clients that records every send attempt, fetch
// result and watch delivery into an internal/history.History; a nemesis
// that injects faults while the workload runs (SIGKILL and restart,
// partitions and 5% packet loss with nftables inside the namespaces, a
// member's disks, or its group logs' alone, filling up on small tmpfs
// mounts, SIGSTOP pauses, and the network's
// delay, jitter, reordering and duplication; and faults combined: the
// leader killed during a change of the cell's members, a member restarted
// in place while cut off from the others, the leader killed together with
// a follower; and a leader's wall clock jumping back or ahead, through
// the build tag huddle_testclock, with which a daemon's clock is its state
// directory's to move); and the history's checker over all of it once the faults
// stop and every replica has caught up.
//
// The test process itself runs in a namespace of its own (RunInLoopbackNS)
// joined to the LAN as the host "ctl", where the clients live, so no packet
// reaches the machine's interfaces. There is no sch_netem in the kernels
// this runs on: loss is an nftables `numgen random` drop on each host's
// input, a partition an nftables drop of the peers' addresses, duplication
// nftables' `dup to ip daddr` on each host's output, and delay (with
// jitter, which reorders) internal/netlab's Delayer: an iptables NFQUEUE
// rule in each host's namespace hands the packets it receives to this
// process, which lets each go once its delay has passed
// (TestCellNetworkFaults).
//
// Every process is started by testbin.Start, so it dies with the test
// process and with nothing else; one that ends without the nemesis ending
// it (a crash, an exit of its own, a signal from elsewhere) fails the run
// when it ends, naming it, how it ended, the signals the test sent it and
// any OOM kill of it in the kernel log, rather than leave the cell a
// member short to fail a minute later on "no leader" (lab_test.go,
// onUnseenEnd).
//
// HUDDLE_JEPSEN_ROUNDS sets a schedule's rounds, HUDDLE_JEPSEN_FAULTS
// replaces a cell schedule's faults with a comma-separated list (one kind
// over and over), HUDDLE_JEPSEN_HEARTBEAT gives the cell's members another
// --cell-heartbeat, HUDDLE_JEPSEN_BINARY puts another build through the
// faults, and HUDDLE_JEPSEN_CLIENT_LOG writes the clients' debug events to
// a file. Daemon settings (HUDDLE_<FLAG>) reach every daemon; one for a
// flag the harness gives itself is an error (lab_test.go, daemonEnv).
//
// The package has no code besides this comment; everything is in _test.go
// files. It needs root, ip(8), unshare(1), nft(8), iptables-restore(8)
// (for the delays) and mount(8): without them the tests skip, except under
// CI=true, where they fail.
package jepsen
