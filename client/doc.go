// Package client is huddle's Go API: what the CLI, group daemons (talking to
// their registry) and other programs use to speak the protocol.
//
// A Client owns one UDP socket and keeps one QUIC connection per server it
// talks to, opened on first use and opened again if it drops. Each call is
// one QUIC stream, as PROTOCOL.md describes. Every call takes a context
// first; cancelling it cancels the stream.
//
// Servers are always pinned: a registry by the fingerprint given, or else by
// the known-registries file (trust on first use, like ssh's known_hosts); a
// group daemon by the fingerprint the registry lists for it.
//
// The package speaks its own vocabulary: a program imports client (and
// identity, for its key) and nothing else of huddle's. Where the protocol's
// type already says the right thing it is re-exported under the same name
// (Fingerprint, UUID, ID, GroupEntry); results that the wire carries in
// protocol units (Unix nanoseconds, milliseconds) come as time.Time and
// time.Duration (Info, Limits, Member, Lease).
//
// Errors a server returns match this package's sentinels (the wire
// package's) with errors.Is, for example errors.Is(err, client.ErrNotMember).
// A server that cannot be reached gives an error matching ErrUnreachable;
// a Config that cannot be used, one matching ErrInvalidConfig.
//
// # Connect, join, send, fetch, watch
//
// A program's key is its member ID in every group: identity.LoadOrCreate
// makes it in a directory of the program's on first use, and loads it
// after. With it, a program connects to a registry (huddle up starts one
// on port 7373; discovery finds them over mDNS), takes a handle on a
// group it lists, and uses it:
//
//	id, err := identity.LoadOrCreate(dir)
//	c, err := client.New(client.Config{Identity: id, KnownHosts: identity.OpenKnownHosts(filepath.Join(dir, identity.KnownHostsFile))})
//	defer c.Close()
//	reg, err := c.Registry(ctx, "192.168.1.20:7373", client.Fingerprint{}) // pinned on first use
//	list, err := reg.List(ctx)                                             // list.Groups: each a GroupEntry, e.Name, e.Group (its UUID)
//	g, err := reg.Group(list.Groups[0])                                    // no I/O yet; g.Close() when done
//	_, err = g.Join(ctx, "buildbot", nil)                                  // the secret, for a private group
//	ack, err := g.Send(ctx, []byte("build 1234 passed"))                   // ack.Seq: its place in the group's log
//	cur, err := g.Fetch(ctx, client.Query{Since: time.Now().Add(-time.Hour)}, func(m client.Message) bool { return true })
//	for ev, err := range g.Watch(ctx, client.Query{After: cur.Next, Epoch: cur.Epoch}) { // live, reconnecting by itself
//		if err != nil {
//			break // an end for good: not a member... (ctx ending ends the loop with no error)
//		}
//		fmt.Println(ev.Message.Seq, string(ev.Message.Body))
//	}
//
// (A program checks each err, which the snippet leaves out; a test
// compiles the snippet as it stands here.)
//
// Send, Fetch, Watch and Members are for members only (ErrNotMember). A send
// whose outcome is unknown matches ErrInDoubt: retried with SendWithID
// under its ack's ID, it is stored once. The package's examples run each
// of these calls against a registry and a group daemon in the test's own
// process (Example, ExampleGroup_Fetch, ExampleGroup_Watch; pkg.go.dev
// shows them, and README's "Go API" says more).
package client
