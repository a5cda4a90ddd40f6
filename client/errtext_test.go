package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// unshownRune reports the first character of s a terminal or a web page
// would take for more than text (a control or format character, a line or
// paragraph separator), if any.
func unshownRune(s string) (rune, bool) {
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			return r, true
		}
	}
	return 0, false
}

// TestListedTextShownInErrors: a group's name and its daemon's addresses
// as a registry listed them (a listing holds them to lengths only) reach
// the errors of calls on the group with their control and format
// characters as U+FFFD, so that a program printing the error (huddle web's
// API messages, a log line) shows one line of text, not a rogue
// registry's line breaks or bidirectional overrides. (Group.fail,
// NotListedError and the dial's errors quoted them as listed.)
//
// A listing's addresses are host:port since session 18 (a page listing
// another is refused: wire's Groups.check), so the addresses here are a
// program's own entry's; a listed name is still held to its length only.
func TestListedTextShownInErrors(t *testing.T) {
	const name = "lobby\n\u202eevil"
	addrs := []string{"127.0.0.1:9\nfake line", "host\u202e:1"}
	e := wire.GroupEntry{Group: wire.UUID{7}, Name: name, Addrs: []string{"127.0.0.1:9"}, Fingerprint: wire.Fingerprint{9}, ExpiresMS: 60_000}
	cl, r := hostileRegistry(t, func([]byte) wire.Groups { return wire.Groups{Epoch: 1, Groups: []wire.GroupEntry{e}} })
	list, err := r.List(t.Context())
	if err != nil || len(list.Groups) != 1 {
		t.Fatalf("list the hostile registry: %v, %d groups", err, len(list.Groups))
	}
	listed, err := r.Group(list.Groups[0])
	if err != nil {
		t.Fatalf("a handle on the listed group: %v", err)
	}
	mine := e // e is the registry's still: a copy
	mine.Addrs = addrs
	own, err := cl.Group(mine)
	if err != nil {
		t.Fatalf("a handle on the group at addresses of a program's own: %v", err)
	}
	for _, g := range []*client.Group{listed, own} {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		_, err = g.Info(ctx)
		cancel()
		if err == nil {
			t.Fatal("info of a group at no address that answers: no error")
		}
		if c, bad := unshownRune(err.Error()); bad {
			t.Errorf("info's error holds %U as listed: %q", c, err)
		}
		if !strings.Contains(err.Error(), "group lobby\uFFFD\uFFFDevil") {
			t.Errorf("info's error does not name the group as shown: %q", err)
		}
	}

	nl := &client.NotListedError{Group: name, Addrs: addrs, Registries: []string{"10.0.0.1:7373\r\n"}}
	if c, bad := unshownRune(nl.Error()); bad {
		t.Errorf("a NotListedError holds %U as listed: %q", c, nl)
	}
	if !errors.Is(nl, client.ErrUnreachable) {
		t.Errorf("a NotListedError is not ErrUnreachable: %v", nl)
	}
}

// TestErrorTextNamesOnce: an error of a cell change named the operation
// twice ("cell_add: cell_add: ..."), and a reply cut short after frames
// came said the server closed the stream "without a reply".
func TestErrorTextNamesOnce(t *testing.T) {
	e := hostileDaemon(t, func(ctx context.Context, c *server.Call) error {
		switch c.Op() {
		case wire.OpCellAdd:
			return fmt.Errorf("%v: %w: only the key of one of the cell's members may change it", c.Op(), wire.ErrUnauthorized)
		case wire.OpCellRemove:
			return nil // the stream closed, no reply
		case wire.OpFetch:
			msg := wire.Message{Seq: 1, Time: 1, ID: wire.ID{1}, From: wire.Fingerprint{1}, Name: "x", Body: []byte("hi")}
			return c.Send(wire.KindMessages, wire.Messages{Messages: []wire.Message{msg}}) // and no End
		}
		return &wire.Error{Code: wire.CodeUnsupported}
	})
	c := newClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := c.CellAdd(ctx, e.Addrs[0], e.Fingerprint, client.Replica{Addr: "127.0.0.1:1", Fingerprint: wire.Fingerprint{5}})
	if err == nil || strings.Count(err.Error(), "cell_add") != 1 {
		t.Errorf("cell_add refused: %v, want the operation named once", err)
	}
	_, err = c.CellRemove(ctx, e.Addrs[0], e.Fingerprint, wire.Fingerprint{5})
	if err == nil || strings.Count(err.Error(), "cell_remove") != 1 {
		t.Errorf("cell_remove unanswered: %v, want the operation named once", err)
	}
	g, err := c.Group(e)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	_, err = g.Fetch(ctx, client.Query{}, func(client.Message) bool { n++; return true })
	if n != 1 || !errors.Is(err, client.ErrProtocol) || strings.Contains(err.Error(), "without a reply") {
		t.Errorf("fetch whose page ended after a message, no End: %d messages, %v; want one, and ErrProtocol not saying there was no reply", n, err)
	}
}
