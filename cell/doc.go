// Package cell replicates a group daemon's groups over a cell of 3 or 5
// daemons on hashicorp/raft: one raft group per cell carries the creates,
// sends, joins and leaves of every group the cell hosts (PROTOCOL.md §13,
// README "Replicated groups").
//
// A Node is one member. New does no I/O; Start opens raft's state (package
// raftlog, and raft's snapshot store beside it) and starts raft, bootstrapping
// a new cell from Config.Peers; Close leaves the cell and waits for every
// goroutine. Only the leader runs sends, joins and leaves: it stamps each
// send's sequence numbers and time (propose.go) and proposes a command
// (command.go, the byte layouts), gathering the sends of a group into one
// raft entry; every member's state machine (fsm.go) applies the commands to
// its own durable group logs, in raft's order. A member that does not lead
// answers a *NotLeaderError naming the leader; one that leads but cannot have
// an operation committed within Config.CommitWait answers ErrUnavailable,
// its outcome unknown. Handover hands the leadership to another voter, for a
// daemon that stops on purpose.
//
// A raft snapshot records what is applied (each group's position and
// members), not the histories (snapshot.go): a member whose group log lacks
// what its snapshot covers copies the messages from a peer (catchup.go).
// Members are added as non-voters and promoted once caught up, and removed
// (members.go); a member that knows of no leader asks the members it knows
// for the cell's configuration (learn.go).
//
// The cell's traffic has two carriers, both mutual TLS with the daemons' keys,
// accepting only the keys of the cell's members (Transport; which members, as
// a member's raft configuration changes, is node.go's accepted): raft's RPCs ride
// TCP under RaftALPN (tcp.go, raftnet.go, raftwire.go, the frame layout), and
// the rest rides QUIC streams under ALPN on the group daemon's UDP port
// (transport.go: catch-ups, progress, members, probes). Both bound what one
// member's key may make another hold (SECURITY.md, "Cells").
package cell
