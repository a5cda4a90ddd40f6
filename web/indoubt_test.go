package web

import (
	"context"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestAPISendInDoubt: a send the daemon took and left unanswered when it
// closed the connection as it stopped (code 0x2, past its grace period)
// may be stored: the API's error says in_doubt, with the message's ID
// (drawn by huddle web when the caller gave none), so that a retry with
// it is stored once. The error said unavailable alone: a caller that gave
// no id could not retry it safely, and the page, told a code it takes as
// final, said "not sent".
func TestAPISendInDoubt(t *testing.T) {
	dk, err := identity.Generate()
	must(t, err)
	group := wire.UUID{5, 5}
	taken, release := make(chan struct{}, 1), make(chan struct{})
	var s *server.Server
	s = server.New(server.Config{ShutdownTimeout: 100 * time.Millisecond}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		switch c.Op() {
		case wire.OpList:
			return c.Result(wire.Groups{Epoch: 1, Groups: []wire.GroupEntry{{Group: group, Name: "builds", Addrs: []string{s.Addr().String()}, Fingerprint: dk.Fingerprint(), ExpiresMS: 15000}}})
		case wire.OpInfo:
			return c.Result(wire.Info{Group: group, Name: "builds", Epoch: 1, Members: 1, Member: true, Fingerprint: dk.Fingerprint(), Limits: wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16}})
		case wire.OpSend:
			var req wire.Send
			if err := c.Decode(&req); err != nil {
				return err
			}
			taken <- struct{}{}
			<-release // past the grace period, until the connection is closed
			return &wire.Error{Code: wire.CodeUnavailable, Message: "too late"}
		}
		return &wire.Error{Code: wire.CodeUnsupported}
	})
	must(t, s.Listen(dk))
	must(t, s.Start())
	t.Cleanup(s.Close)
	a := newAPI(t, startWeb(t, newClient(t), s.Addr().String()))
	id := a.groupID("builds")
	// A daemon whose info does not say send_after (one older than session
	// 21) is listed without it: the page bounds its retries in doubt.
	var g groupJSON
	if a.do("GET", "/api/groups/"+id, nil, &g); g.SendAfter || !g.Reachable {
		t.Errorf("a daemon that does not say send_after is listed %+v, want reachable, send_after absent", g)
	}

	type reply struct {
		Error struct {
			Code    string `json:"code"`
			InDoubt bool   `json:"in_doubt"`
			ID      string `json:"id"`
		} `json:"error"`
	}
	var got reply
	status := make(chan int, 1)
	go func() { status <- a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": "hi"}, &got) }()
	ctx := testCtx(t)
	select {
	case <-taken:
	case code := <-status:
		t.Fatalf("the send ended (HTTP %d, %+v) before the daemon took it", code, got)
	case <-ctx.Done():
		t.Fatal("the daemon never took the send")
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	var code int
	select {
	case code = <-status:
	case <-ctx.Done():
		t.Fatal("the send never ended")
	}
	close(release)
	<-closed
	if !got.Error.InDoubt || got.Error.ID == "" {
		t.Errorf("a send cut by the daemon's stop: HTTP %d, %+v; want in_doubt with the message's id", code, got.Error)
	}
}
