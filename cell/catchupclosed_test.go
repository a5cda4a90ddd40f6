package cell

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// TestCatchUpFromClosedLogNotEnded: a member whose group log is closed
// (store.ErrClosed: the member closes) answers a catch-up by resetting the
// stream, with no header and no end ('e'), so that the asker tries another
// member. Until session 19 its closed log answered an empty page (a disk
// log) or everything (a memory log) as if open: the copy ended ('e') where
// the log seemed to, and the asker took it from there.
func TestCatchUpFromClosedLogNotEnded(t *testing.T) {
	c := newTestCell(t, 3, false, nil)
	l := c.leader()
	g := l.group("lobby")
	c.send(g.ID, alice, [][16]byte{newID(1), newID(2), newID(3)}, []string{"a", "b", "c"})
	l.waitLast(g.ID, 3)
	if err := l.host.replica(g.ID).log.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}

	tr, _ := newTransport(t, l.id, []Peer{{Addr: l.addr, Fingerprint: l.id.Fingerprint()}}, false)
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	str, _, err := tr.open(ctx, l.addr, []byte{kindCatchUp})
	if err != nil {
		t.Fatal(err)
	}
	defer str.CancelRead(streamClosed)
	req := catchUpRequest(g.ID, g.Epoch, 0, 3)
	str.Write(req[:])
	str.Close()
	str.SetReadDeadline(time.Now().Add(waitTimeout))
	got, err := io.ReadAll(str)
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != streamClosed {
		t.Fatalf("catch-up from a member whose log is closed: %d bytes (% x), then %v; want the stream reset, nothing said", len(got), got[:min(len(got), 16)], err)
	}
}
