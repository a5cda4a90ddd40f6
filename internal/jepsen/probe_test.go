package jepsen

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// probe is a member of the group that speaks to one member of the cell at
// a time, on a connection of its own, and never follows the leader: it
// stands for a client that can reach only that member. (The Go client
// follows: a refusal names the cell's members, and it asks the others,
// which the nemesis's partitions leave reachable from the clients' host.)
type probe struct {
	name string
	id   *identity.Identity
}

// joinProbe joins a new key to the group as name, through the cell (so
// that every member knows it), and returns it as a probe.
func joinProbe(ctx context.Context, t *testing.T, entry wire.GroupEntry, name string) *probe {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Identity: id, DialTimeout: 2 * time.Second,
		KnownHosts: identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known_registries"))})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	g, err := cl.Group(entry)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(waitTimeout); ; {
		c, cancel := context.WithTimeout(ctx, attemptTimeout)
		_, err := g.Join(c, name, nil)
		cancel()
		if err == nil {
			return &probe{name: name, id: id}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("join %s: %v", name, err)
		}
	}
}

// send sends one message to the one member only names (its first address
// and its key), and returns its ack and the log's epoch, or the member's
// refusal (a *wire.Error), or what kept it from answering.
func (p *probe) send(ctx context.Context, only wire.GroupEntry, id wire.ID, body []byte) (wire.Ack, uint64, error) {
	if len(only.Addrs) == 0 {
		return wire.Ack{}, 0, errors.New("probe: no address")
	}
	conn, err := quic.DialAddr(ctx, only.Addrs[0], p.id.ClientTLS(only.Fingerprint, nil), &quic.Config{MaxIdleTimeout: attemptTimeout})
	if err != nil {
		return wire.Ack{}, 0, err
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return wire.Ack{}, 0, err
	}
	if d, ok := ctx.Deadline(); ok {
		str.SetDeadline(d)
	}
	req, err := wire.AppendFrame(nil, uint64(wire.OpSend), &wire.Send{Group: only.Group, Messages: []wire.Outgoing{{ID: id, Body: body}}})
	if err != nil {
		return wire.Ack{}, 0, err
	}
	if _, err := str.Write(req); err != nil {
		return wire.Ack{}, 0, err
	}
	str.Close()
	kind, raw, err := wire.ReadResponse(str, nil)
	if err != nil {
		return wire.Ack{}, 0, err // a refusal is a *wire.Error
	}
	var sent wire.Sent
	if err := raw.Decode(&sent); err != nil || kind != wire.KindResult || len(sent.Acks) != 1 {
		return wire.Ack{}, 0, errors.Join(errors.New("probe: not a send's result"), err)
	}
	return sent.Acks[0], sent.Epoch, nil
}
