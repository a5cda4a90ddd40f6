package web

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestAPIBadBodies: a body that is not one JSON object of the fields the
// route takes (malformed, of the wrong types, two values, another content
// type, over maxBody) is refused with the API's error (400 bad_request or
// 413 too_large) and changes nothing: no join, no message.
func TestAPIBadBodies(t *testing.T) {
	r := startRegistry(t)
	startGroups(t, r, groupd.Config{})
	c := newClient(t)
	a := newAPI(t, startWeb(t, c, r.Addr().String()))
	id := a.groupID("lobby")
	join := "/api/groups/" + id + "/join"
	send := "/api/groups/" + id + "/messages"

	huge := `{"text": "` + strings.Repeat("x", maxBody) + `"}`
	tests := []struct {
		name, path, ctype, body string
		status                  int
		code                    string
	}{
		{"malformed", join, "application/json", `{"name": "mallory"`, 400, "bad_request"},
		{"not an object", join, "application/json", `["mallory"]`, 400, "bad_request"},
		{"a number for a name", join, "application/json", `{"name": 7}`, 400, "bad_request"},
		{"two values", join, "application/json", `{"name": "mallory"} {"name": "eve"}`, 400, "bad_request"},
		{"a form, as another site would post it", join, "application/x-www-form-urlencoded", `name=mallory`, 400, "bad_request"},
		{"text/plain JSON", join, "text/plain", `{"name": "mallory"}`, 400, "bad_request"},
		{"invalid UTF-8", join, "application/json", "{\"name\": \"\xff\xfe\"}", 400, "bad_request"},
		{"invalid UTF-8 in a message", send, "application/json", "{\"text\": \"caf\xe9\"}", 400, "bad_request"},
		{"over the body limit", send, "application/json", huge, 413, "too_large"},
		{"deeply nested", send, "application/json", strings.Repeat("[", 100000), 400, "bad_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(testCtx(t), "POST", a.base+tt.path, strings.NewReader(tt.body))
			must(t, err)
			req.Header.Set("Authorization", "Bearer "+testSecret)
			req.Header.Set("Content-Type", tt.ctype)
			res, err := http.DefaultClient.Do(req)
			must(t, err)
			defer res.Body.Close()
			var e errorReply
			if err := json.NewDecoder(res.Body).Decode(&e); err != nil {
				t.Fatalf("HTTP %d, body not the API's error: %v", res.StatusCode, err)
			}
			if res.StatusCode != tt.status || e.Error.Code != tt.code || e.Error.Message == "" {
				t.Fatalf("HTTP %d %+v, want %d %s with a message", res.StatusCode, e.Error, tt.status, tt.code)
			}
		})
	}

	var g groupJSON
	a.do("GET", "/api/groups/"+id, nil, &g)
	if g.Member {
		t.Fatalf("a refused body joined the group: %+v", g)
	}
	var e errorReply
	if st := a.do("POST", send, map[string]string{"text": "after all that"}, e.reset()); st != 403 || e.Error.Code != "not_member" {
		t.Fatalf("send: HTTP %d %+v, want 403 not_member: nothing refused may have joined", st, e.Error)
	}
}

// TestEventStreamLimits: one client opening event streams gets
// DefaultMaxStreams, then 503 unavailable until one closes; a stream
// asking for more than maxWatches groups, or one group twice, is refused
// (400) before it takes a place.
func TestEventStreamLimits(t *testing.T) {
	r := startRegistry(t)
	c := newClient(t)
	a := newAPI(t, startWeb(t, c, r.Addr().String()))
	get := func(query string) (int, errorReply) {
		t.Helper()
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", a.base+"/api/events?"+query, nil)
		must(t, err)
		req.Header.Set("Authorization", "Bearer "+testSecret)
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		defer res.Body.Close()
		var e errorReply
		if res.StatusCode != http.StatusOK {
			must(t, json.NewDecoder(res.Body).Decode(&e))
		}
		return res.StatusCode, e
	}

	var many []string
	for range maxWatches + 1 {
		many = append(many, uuid.NewString())
	}
	if st, e := get("watch=" + strings.Join(many, ",")); st != 400 || e.Error.Code != "bad_request" {
		t.Fatalf("%d groups in one stream: HTTP %d %+v, want 400 bad_request", len(many), st, e.Error)
	}
	if st, e := get("watch=" + many[0] + "&watch=" + many[0]); st != 400 || e.Error.Code != "bad_request" {
		t.Fatalf("a group watched twice: HTTP %d %+v, want 400 bad_request", st, e.Error)
	}

	var open []*sse
	for range DefaultMaxStreams {
		open = append(open, a.events(""))
	}
	defer func() {
		for _, s := range open {
			s.close()
		}
	}()
	if st, e := get(""); st != 503 || e.Error.Code != "unavailable" || e.Error.Message == "" {
		t.Fatalf("stream %d: HTTP %d %+v, want 503 unavailable", DefaultMaxStreams+1, st, e.Error)
	}
	open[0].close()
	open = open[1:]
	for deadline := time.Now().Add(10 * time.Second); ; {
		ctx, cancel := context.WithCancel(testCtx(t))
		req, err := http.NewRequestWithContext(ctx, "GET", a.base+"/api/events", nil)
		must(t, err)
		req.Header.Set("Authorization", "Bearer "+testSecret)
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		st := res.StatusCode
		res.Body.Close()
		cancel()
		if st == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a place freed by a closed stream: still HTTP %d", st)
		}
		time.Sleep(10 * time.Millisecond) // the server notices the closed stream
	}
}

// strangerConns opens n connections to s as another user of the machine
// would: each asks for the page's public files once and stays open, as
// keep-alive lets it (2 minutes). It returns a func counting how many of
// them the server has not closed.
func strangerConns(t *testing.T, s *Server, n int) (open func() int) {
	t.Helper()
	conns := make([]net.Conn, n)
	closed := make([]bool, n)
	for i := range conns {
		c, err := net.Dial("tcp", s.Addr().String())
		must(t, err)
		t.Cleanup(func() { c.Close() })
		conns[i] = c
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", s.Addr())
		if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			io.Copy(io.Discard, res.Body) // all of it: the connection is idle now
			res.Body.Close()
		} else {
			closed[i] = true // closed for a newer one before it was answered
		}
	}
	var b [1]byte
	return func() int {
		n := 0
		for i, c := range conns {
			if closed[i] {
				continue
			}
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			_, err := c.Read(b[:])
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				n++
				continue
			}
			closed[i] = true // EOF or reset: the server closed it
		}
		return n
	}
}

// TestConnectionFlood: another user of the machine opening connections to
// huddle web's port (without the secret, each asking for the page's files
// once and kept alive) is held to MaxConns in all, and never closes the
// page's connections or stops it from opening new ones. huddle web held
// every connection, each with its goroutine and buffers, for 2 minutes.
func TestConnectionFlood(t *testing.T) {
	c := newClient(t)
	s, err := New(Config{Listen: "127.0.0.1:0", Client: c, Registries: []string{"127.0.0.1:1"}, Secret: testSecret,
		MaxConns: 8, Logger: testLogger(t)})
	must(t, err)
	serve(t, s)
	a := newAPI(t, s)
	// The owner's script, on a connection of its own kept alive.
	owner := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(owner.CloseIdleConnections)
	me := func(cl *http.Client) (status int, reused bool) {
		t.Helper()
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(testCtx(t), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
		}), "GET", a.base+"/api/me", nil)
		must(t, err)
		req.Header.Set("Authorization", "Bearer "+testSecret)
		res, err := cl.Do(req)
		must(t, err)
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, reused
	}
	if st, _ := me(owner); st != 200 {
		t.Fatalf("the owner before the flood: HTTP %d", st)
	}
	stream := a.events("")
	stream.next("hello")

	open := strangerConns(t, s, 100)
	// The owner's two connections are kept: the strangers share the rest.
	until(t, "the strangers' connections held to MaxConns", func() bool { return open() <= 8-2 })
	if st, reused := me(owner); st != 200 || !reused {
		t.Errorf("the owner after the flood: HTTP %d on its connection kept alive: %v; want 200 on it", st, reused)
	}
	fresh := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(fresh.CloseIdleConnections)
	if st, _ := me(fresh); st != 200 {
		t.Errorf("the owner on a new connection, the strangers holding the rest: HTTP %d", st)
	}
	select {
	case _, ok := <-stream.events:
		if !ok {
			t.Error("the owner's event stream was closed for the strangers")
		}
	default:
	}
	t.Logf("%d of the strangers' 100 connections open", open())
}

// TestSlowRequestBody: a request whose body trickles in is cut off after
// the server's read timeout, and an event stream outlives it. huddle web
// read a body for as long as its sender kept it coming: a handler and a
// connection held for each.
func TestSlowRequestBody(t *testing.T) {
	r := startRegistry(t)
	c := newClient(t)
	s, err := New(Config{Listen: "127.0.0.1:0", Client: c, Registries: []string{r.Addr().String()}, Secret: testSecret,
		PollInterval: 100 * time.Millisecond, Logger: testLogger(t)})
	must(t, err)
	s.readTimeout = 500 * time.Millisecond
	serve(t, s)
	a := newAPI(t, s)
	stream := a.events("")
	stream.next("groups")

	conn, err := net.Dial("tcp", s.Addr().String())
	must(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/groups/%s/messages HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{", uuid.New(), s.Addr(), testSecret)
	// One more byte every 100 ms until the server stops reading.
	cut := make(chan struct{})
	go func() {
		defer close(cut)
		io.Copy(io.Discard, conn) // the server's answer, if any, then its close
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	ctx := testCtx(t)
trickle:
	for {
		select {
		case <-cut:
			break trickle
		case <-tick.C:
			conn.Write([]byte(" "))
		case <-ctx.Done():
			t.Fatal("the server read a trickling body for the whole test")
		}
	}
	// The stream, opened before the read timeout, still runs: a group
	// registered now is listed on it.
	startGroups(t, r, groupd.Config{})
	for {
		ev := stream.next("groups")
		if strings.Contains(ev.raw, `"lobby"`) {
			break
		}
	}
}

// serve runs s until the test ends.
func serve(t *testing.T, s *Server) {
	t.Helper()
	must(t, s.Listen())
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		must(t, s.Close())
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// TestEventStreamQueueBounded: the messages an event stream holds for a
// page that does not read are bounded in bytes, not only in number. A
// daemon sending messages of 256 KiB (of 1 MiB, its frames' bound, past
// its own limit) filled a stream's 1024 places: 256 MiB (1 GiB) for each
// of 64 streams, while the page did not read.
func TestEventStreamQueueBounded(t *testing.T) {
	id, err := identity.Generate()
	must(t, err)
	const n, size = 200, 256 << 10
	var sent atomic.Int64
	allSent := make(chan struct{})
	daemon := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		if c.Op() != wire.OpWatch {
			return &wire.Error{Code: wire.CodeUnsupported}
		}
		if err := c.Send(wire.KindStart, wire.Start{Epoch: 3, First: 1, HeartbeatMS: 60_000}); err != nil {
			return err
		}
		body := []byte(strings.Repeat("x", size))
		for seq := uint64(1); seq <= n; seq++ {
			m := wire.Message{Seq: seq, Time: int64(seq), ID: wire.ID{byte(seq), byte(seq >> 8)}, From: wire.Fingerprint{1}, Name: "x", Body: body}
			if err := c.Send(wire.KindMessages, wire.Messages{Messages: []wire.Message{m}}); err != nil {
				return err
			}
			if sent.Add(1) == n {
				close(allSent)
			}
		}
		<-c.Gone()
		return c.Lost()
	})
	must(t, daemon.Listen(id))
	must(t, daemon.Start())
	t.Cleanup(daemon.Close)
	group := wire.UUID(uuid.New())
	reg := listingRegistry(t, []wire.GroupEntry{{Group: group, Name: "big", Addrs: []string{daemon.Addr().String()},
		Fingerprint: id.Fingerprint(), ExpiresMS: 60_000}})

	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{reg}, Secret: testSecret,
		PollInterval: 100 * time.Millisecond, Logger: testLogger(t)})
	must(t, err)
	const bound = 4 << 20
	s.queueBytes = bound
	full := make(chan struct{})
	var once sync.Once
	s.queueWait = func() { once.Do(func() { close(full) }) }
	serve(t, s)
	newAPI(t, s).groupID("big")

	// A page that asks for the group's messages and never reads them.
	conn, err := net.Dial("tcp", s.Addr().String())
	must(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/events?watch=%s:0:0 HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", uuid.UUID(group), s.Addr(), testSecret)
	select {
	case <-full:
		if q := s.queued.Load(); q > bound {
			t.Errorf("%d bytes of messages queued for the stream, over its bound of %d", q, bound)
		}
	case <-allSent:
		t.Fatalf("the daemon sent all %d messages of %d KiB to a stream nobody reads: %d MiB queued", n, size>>10, s.queued.Load()>>20)
	case <-testCtx(t).Done():
		t.Fatal("neither the stream's queue filled nor the daemon sent everything")
	}
	t.Logf("%d of %d messages sent, %d KiB queued", sent.Load(), n, s.queued.Load()>>10)
}
