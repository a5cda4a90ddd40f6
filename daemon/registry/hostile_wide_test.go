package registry

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/wire"
)

// Hostile peers at the registry, beyond daemon/groupd's TestHostilePeers
// (session 22, H): each request is raw bytes a peer of another stack may
// send, and the registry must answer what PROTOCOL.md says, and change
// nothing else.

// rawCall writes item as a request frame on a new stream of p and returns
// its one reply frame.
func rawCall(t *testing.T, p *peertest.Peer, item []byte) peertest.Frame {
	t.Helper()
	fr := append([]byte{byte(len(item) >> 24), byte(len(item) >> 16), byte(len(item) >> 8), byte(len(item))}, item...)
	fs := p.Frames(p.Open(fr))
	if len(fs) != 1 {
		t.Fatalf("%x: %d reply frames, want 1", item, len(fs))
	}
	return fs[0]
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	peertest.Must(t, err)
	return b
}

// TestWideListEmptyCursor: a list whose after is the empty byte string is
// the first page, as an absent after is (PROTOCOL.md §4: encoders send an
// empty byte string for an empty field, never null; §6: an absent field is
// its zero value, empty). Until session 22 the registry refused it as a
// cursor it did not issue (bad_request), so a client of another stack that
// always sends after, empty at first, could list nothing. Cursors it did
// not issue (a UUID with no name, longer than any it issues) are still
// bad_request, and a well-formed one naming a position no group holds (a
// name of invalid UTF-8) is a page after it: none is internal.
func TestWideListEmptyCursor(t *testing.T) {
	r := startRegistry(t, Config{})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	for _, name := range []string{"alpha", "beta"} {
		peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: uuid.New(), Name: name, Port: 7400}, nil))
	}
	want := listGroups(t, p)

	f := rawCall(t, p, unhex(t, "a2 00 04 01 a1 01 40")) // {0: 4, 1: {1: h''}}
	if f.Kind != wire.KindResult {
		t.Fatalf("list after h'': %v, want the first page", f.Err)
	}
	var got wire.Groups
	f.Decode(t, &got)
	if len(got.Groups) != len(want.Groups) || got.Groups[0].Name != "alpha" || got.Next != nil {
		t.Fatalf("list after h'': %+v, want the first page %+v", got, want)
	}

	for what, after := range map[string][]byte{
		"a UUID with no name":       bytes.Repeat([]byte{1}, 16),
		"longer than any it issues": bytes.Repeat([]byte{'a'}, 16+wire.MaxNameBytes+1),
		"one byte":                  {0},
	} {
		var we *wire.Error
		if err := p.Call(wire.OpList, wire.List{After: after}, nil); !errors.As(err, &we) || we.Code != wire.CodeBadRequest {
			t.Fatalf("list after a cursor %s: %v, want bad_request", what, err)
		}
	}
	// A position past every name: an empty last page. One of invalid
	// UTF-8 before every name: the whole listing.
	var g wire.Groups
	peertest.Must(t, p.Call(wire.OpList, wire.List{After: append(bytes.Repeat([]byte{0xff}, 16), 0xff, 0xfe)}, &g))
	if len(g.Groups) != 0 || g.Next != nil {
		t.Fatalf("list after a position past every name: %+v, want an empty last page", g)
	}
	peertest.Must(t, p.Call(wire.OpList, wire.List{After: append(make([]byte, 16), 0x80)}, &g))
	if len(g.Groups) != 0 {
		// 0x80 sorts after "alpha" and "beta" bytewise: still none.
		t.Fatalf("list after a name of invalid UTF-8: %+v", g)
	}
	peertest.Must(t, p.Call(wire.OpList, wire.List{After: append(make([]byte, 16), 0x01)}, &g))
	if len(g.Groups) != 2 {
		t.Fatalf("list after a name before every name: %d groups, want 2", len(g.Groups))
	}
	if after := listGroups(t, p); len(after.Groups) != len(want.Groups) {
		t.Fatalf("the listing changed: %+v, was %+v", after, want)
	}
}

// TestWideRenewEpochFirst: a renew checks the epoch before anything else
// (PROTOCOL.md §7.2), at its extremes too, whoever holds the lease, and
// names the registry's own epoch, never the one asked; the lease is
// untouched.
func TestWideRenewEpochFirst(t *testing.T) {
	r := startRegistry(t, Config{})
	owner := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	stranger := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	g := uuid.New()
	peertest.Must(t, owner.Call(wire.OpRegister, wire.Register{Group: g, Name: "held", Port: 7400, Members: 2, LastSeq: 5}, nil))
	for _, p := range []*peertest.Peer{owner, stranger} {
		for _, epoch := range []uint64{math.MaxUint64, r.epoch + 1, r.epoch - 1} {
			we := peertest.WantCode(t, p.Call(wire.OpRenew, wire.Renew{Group: g, Epoch: epoch, Members: 99, LastSeq: 99}, nil), wire.CodeEpochMismatch)
			if we.Epoch != r.epoch {
				t.Fatalf("renew in epoch %d: epoch_mismatch names %d, want the registry's %d", epoch, we.Epoch, r.epoch)
			}
		}
	}
	// In the right epoch, the stranger is unauthorized; nothing changed.
	peertest.WantCode(t, stranger.Call(wire.OpRenew, wire.Renew{Group: g, Epoch: r.epoch, Members: 99, LastSeq: 99}, nil), wire.CodeUnauthorized)
	e := listGroups(t, stranger).Groups[0]
	if e.Members != 2 || e.LastSeq != 5 || e.Fingerprint != owner.ID.Fingerprint() {
		t.Fatalf("after the refused renewals the entry is %+v, want members 2, last_seq 5, the owner's key", e)
	}
}
