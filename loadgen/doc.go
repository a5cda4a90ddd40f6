// Package loadgen is the load generator behind `huddle bench`: it drives a
// group daemon the way users would, through the Go client, and reports what
// they would feel (operations per second, latency percentiles) beside what
// it cost the daemon (CPU per operation, memory).
//
// # Scenarios
//
//	send          C clients x P goroutines, each sending one message at a time
//	              (batching off: every message is its own send operation)
//	send-batched  the same with client batching on: each client gathers its
//	              goroutines' concurrent sends into shared operations
//	fetch         the group is filled to Messages (default 1,000,000) with
//	              batched sends; C x P goroutines then fetch every message
//	              since the timestamp of the last 1%, over and over
//	fanout        C watchers follow the group; one sender sends at Rate
//	              messages per second; latency is send to receipt
//	idle          C clients connect and stay idle; the daemon's memory per
//	              connection is the growth of its RSS divided by C
//	recovery      the group is filled to Messages; the daemon (one the run
//	              started) is killed with SIGKILL and started again on the
//	              same state directory and addresses; the one operation is
//	              the restart until the first fetch of the last 1% (by time)
//	              is answered whole
//
// Every client is a client.Client of its own: its own key, UDP socket and
// QUIC connection. Each joins the group (idle clients only ask its info), and
// leaves it at the end.
//
// # Measurement
//
// Workers run through a warm-up, then a measured window; only operations
// completed inside the window count (the warm-up lasts until one operation
// ended, the window until one ended inside it: a stalled machine cannot
// make a run that measured nothing), and their latencies are counted in
// log-linear histograms (exact below 256 ns, within 0.4% above), whose
// memory does not grow with the run. When the daemon's process ID is known
// (Config.ServerPID, or a daemon started by StartDaemon) its CPU time is
// read from /proc/PID/stat before and after the window and its RSS from
// /proc/PID/status; the load generator's own CPU is getrusage(RUSAGE_SELF).
// Nothing here browses mDNS: the registry is always named.
package loadgen
