//go:build linux

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// hostileName is a name a rogue registry and daemon send where the page
// shows names: a bidirectional override that turns the text after it
// around, a line separator, and controls.
const hostileName = "mallory\u202e\u2028\x1b[2Jx"

// hostileGroup runs a registry and group daemon in one server of the
// test's own making that lists one group named hostileName, says the
// user is a member, and answers its members and messages under that name
// too (a watch is refused). It returns its address and the group's UUID.
func hostileGroup(t *testing.T) (string, wire.UUID) {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	group := wire.UUID{0xe1, 0xe2, 3, 4, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16}
	var s *server.Server
	const epoch = 7
	s = server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		fp := id.Fingerprint()
		now := time.Now().UnixNano()
		switch c.Op() {
		case wire.OpList:
			return c.Result(wire.Groups{Epoch: 1, Groups: []wire.GroupEntry{{
				Group: group, Name: hostileName, Addrs: []string{s.Addr().String()}, Fingerprint: fp, Members: 1, LastSeq: 1, ExpiresMS: 15000,
			}}})
		case wire.OpInfo:
			return c.Result(wire.Info{Group: group, Name: hostileName, Epoch: epoch, First: 1, Last: 1, Members: 1, Member: true,
				Fingerprint: fp, Limits: wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16, FetchPage: 100}})
		case wire.OpMembers:
			return c.Result(wire.MemberList{Members: []wire.Member{{Fingerprint: fp, Name: hostileName, Joined: now, LastSeen: now}}})
		case wire.OpFetch:
			msg := wire.Message{Seq: 1, Time: now, ID: wire.ID{1}, From: fp, Name: hostileName, Body: []byte("hello")}
			if err := c.Send(wire.KindMessages, wire.Messages{Messages: []wire.Message{msg}}); err != nil {
				return err
			}
			return c.Send(wire.KindEnd, wire.End{Next: 1, First: 1, Last: 1, Epoch: epoch})
		}
		return &wire.Error{Code: wire.CodeUnauthorized, Message: "not here"}
	})
	if err := s.Listen(id); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s.Addr().String(), group
}

// TestWebHostileNames opens a group whose rogue registry and daemon name
// it, and its one member, with a bidirectional override, a line separator
// and controls. The page showed them as they came in the window's title,
// the composer's placeholder, the conversation's and the members panel's
// names (the sidebar and the head showed them through fmt.shown): the
// override turned the text after it around. Every place shows U+FFFD for
// each, as the CLI does.
func TestWebHostileNames(t *testing.T) {
	t.Parallel()
	addr, group := hostileGroup(t)
	alice := newUser(t, "alice", addr)
	b := newBrowser(t, 1000, 700)
	b.open(alice.web(t))
	sel := fmt.Sprintf(`[data-group="%s"]`, group)
	b.waitFor("the group listed", fmt.Sprintf(`!!document.querySelector(%s)`, jsString(sel)))
	b.clickUntil("open it", sel, fmt.Sprintf(`window.huddle.state.active === %s`, jsString(group.String())))
	b.waitFor("its message and its member shown", `document.getElementById('messages').textContent.includes('hello') && document.getElementById('members').textContent.includes('mallory')`)
	for what, expr := range map[string]string{
		"the window's title":  `document.title`,
		"the placeholder":     `document.getElementById('input').placeholder`,
		"the conversation":    `document.getElementById('messages').textContent`,
		"the members panel":   `document.getElementById('members').textContent`,
		"the members' labels": `[...document.querySelectorAll('#members [aria-label]')].map(e => e.getAttribute('aria-label')).join('|')`,
		"the head":            `document.getElementById('conv-head').textContent`,
	} {
		got := eval[string](b, expr)
		if i := strings.IndexFunc(got, func(r rune) bool { return r == '\u202e' || r == '\u2028' || r < 0x20 && r != '\n' }); i >= 0 {
			t.Errorf("%s holds %q: %q", what, []rune(got[i:])[0], got)
		}
	}
}
