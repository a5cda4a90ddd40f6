package web

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/internal/udpproxy"
)

type pageReply struct {
	Messages []messageJSON `json:"messages"`
	Epoch    string        `json:"epoch"`
	First    uint64        `json:"first"`
	Last     uint64        `json:"last"`
	More     bool          `json:"more"`
}

func seqsOf(ms []messageJSON) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

// TestAPIConversation joins, sends and pages through history as a script
// would, and checks the daemon's refusals arrive as the protocol's codes
// with the right HTTP status.
func TestAPIConversation(t *testing.T) {
	r := startRegistry(t)
	startGroups(t, r, groupd.Config{MaxMessageBytes: 1000, SendRate: 5, SendBurst: 30, MaxBatch: 30})
	c := newClient(t)
	a := newAPI(t, startWeb(t, c, r.Addr().String()))
	id := a.groupID("lobby")

	var e errorReply
	if st := a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": "too early"}, e.reset()); st != 403 || e.Error.Code != "not_member" {
		t.Fatalf("send before joining: HTTP %d %+v, want 403 not_member", st, e.Error)
	}
	if st := a.do("POST", "/api/groups/"+id+"/join", map[string]string{"name": "bad\u202ename"}, e.reset()); st != 400 || e.Error.Code != "bad_request" {
		t.Fatalf("join with a bidi control in the name: HTTP %d %+v, want 400", st, e.Error)
	}
	var joined struct {
		Epoch   string `json:"epoch"`
		LastSeq uint64 `json:"last_seq"`
		Already bool   `json:"already"`
	}
	if st := a.do("POST", "/api/groups/"+id+"/join", map[string]string{"name": "scripty"}, &joined); st != 200 || joined.Already || joined.Epoch == "" {
		t.Fatalf("join: HTTP %d %+v", st, joined)
	}
	var g groupJSON
	a.do("GET", "/api/groups/"+id, nil, &g)
	if !g.Member || g.MaxMessageBytes != 1000 || strconv.FormatUint(g.Epoch, 10) != joined.Epoch {
		t.Fatalf("group after joining: %+v", g)
	}
	// groupd checks a retry's position (info key 15): the page goes on
	// retrying a message in doubt against it.
	if !g.SendAfter {
		t.Errorf("group after joining: send_after absent, though its daemon says it checks a retry's position: %+v", g)
	}

	for i := 1; i <= 25; i++ {
		var ack sentJSON
		if st := a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": fmt.Sprint("m", i)}, &ack); st != 200 || ack.Seq != uint64(i) {
			t.Fatalf("send %d: HTTP %d %+v", i, st, ack)
		}
	}
	// A retried send with the same ID is stored once.
	const msgID = "01933ba0-1c2d-7e3f-8a4b-5c6d7e8f9a01"
	var first, again sentJSON
	a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": "once", "id": msgID}, &first)
	a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": "once", "id": msgID}, &again)
	if first.Duplicate || !again.Duplicate || again.Seq != first.Seq || first.Seq != 26 {
		t.Fatalf("retried send: %+v then %+v, want seq 26 stored once", first, again)
	}

	// Paging back from the end in pages of 10, then forward.
	var p pageReply
	if st := a.do("GET", "/api/groups/"+id+"/messages?limit=10", nil, &p); st != 200 || p.Epoch != joined.Epoch {
		t.Fatalf("last page: HTTP %d %+v", st, p)
	}
	var got []uint64
	for {
		got = append(seqsOf(p.Messages), got...)
		if !p.More {
			break
		}
		a.do("GET", fmt.Sprintf("/api/groups/%s/messages?before=%d&limit=10&epoch=%s", id, p.Messages[0].Seq, p.Epoch), nil, &p)
	}
	if len(got) != 26 || got[0] != 1 || got[25] != 26 {
		t.Fatalf("paged back through %v, want 1..26", got)
	}
	for i, s := range got {
		if s != uint64(i+1) {
			t.Fatalf("paged back out of order at %d: %v", i, got)
		}
	}
	a.do("GET", "/api/groups/"+id+"/messages?after=20&limit=3", nil, &p)
	if s := seqsOf(p.Messages); len(s) != 3 || s[0] != 21 || !p.More {
		t.Fatalf("after=20&limit=3: %v more %v", s, p.More)
	}
	if p.Messages[0].Text != "m21" || p.Messages[0].From != fp(c) || p.Messages[0].Name != "scripty" {
		t.Fatalf("message 21 as the API shows it: %+v", p.Messages[0])
	}
	if st := a.do("GET", "/api/groups/"+id+"/messages?before=5&epoch=42", nil, e.reset()); st != 409 || e.Error.Code != "epoch_mismatch" || e.Error.Epoch != joined.Epoch {
		t.Fatalf("a page of another epoch: HTTP %d %+v, want 409 with the epoch", st, e.Error)
	}
	for _, q := range []string{"before=1&after=2", "limit=0", "limit=10001", "before=x"} {
		if st := a.do("GET", "/api/groups/"+id+"/messages?"+q, nil, e.reset()); st != 400 || e.Error.Code != "bad_request" {
			t.Errorf("messages?%s: HTTP %d %+v, want 400", q, st, e.Error)
		}
	}

	// Refusals in the protocol's words.
	if st := a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": strings.Repeat("x", 1001)}, e.reset()); st != 413 || e.Error.Code != "too_large" {
		t.Fatalf("a message over the group's limit: HTTP %d %+v, want 413 too_large", st, e.Error)
	}
	if st := a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": "  \n"}, e.reset()); st != 400 {
		t.Fatalf("a blank message: HTTP %d, want 400", st)
	}
	if st := a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": "x", "extra": "y"}, e.reset()); st != 400 {
		t.Fatalf("an unknown field: HTTP %d, want 400", st)
	}
	if st := a.do("GET", "/api/groups/not-a-uuid/members", nil, e.reset()); st != 400 {
		t.Fatalf("a bad group: HTTP %d, want 400", st)
	}
	// The burst (30) is spent: 27 sends so far, then the bucket (refilled
	// at 5 a second) runs dry.
	var limited bool
	for i := 0; i < 100 && !limited; i++ {
		req, st := rawSend(t, a, id, "hurry")
		if st == http.StatusTooManyRequests {
			limited = true
			if req.Error.Code != "rate_limited" || req.Error.RetryAfterMS == 0 {
				t.Fatalf("rate limited: %+v, want retry_after_ms", req.Error)
			}
		}
	}
	if !limited {
		t.Fatal("never rate limited")
	}

	// A group no registry lists (after waiting a moment for one to).
	if st := a.do("GET", "/api/groups/00000000-0000-4000-8000-000000000000/members", nil, e.reset()); st != 404 || e.Error.Code != "not_found" {
		t.Fatalf("an unlisted group: HTTP %d %+v, want 404", st, e.Error)
	}

	// Members, with presence: an event stream watching the group makes us
	// online.
	s := a.events("watch=" + id)
	s.next("status")
	var ms struct {
		Members []memberJSON `json:"members"`
	}
	deadline := time.Now().Add(testTimeout)
	for {
		a.do("GET", "/api/groups/"+id+"/members", nil, &ms)
		if len(ms.Members) == 1 && ms.Members[0].Online {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members %+v, want scripty online", ms.Members)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m := ms.Members[0]; !m.You || m.Name != "scripty" || m.Short != c.Fingerprint().Short() || m.LastSeen == nil {
		t.Fatalf("member %+v", m)
	}

	var left map[string]bool
	if a.do("POST", "/api/groups/"+id+"/leave", nil, &left); !left["was_member"] {
		t.Fatalf("leave: %v", left)
	}
	if ev := s.next("status"); ev.data["state"] != "ended" || ev.data["error"].(map[string]any)["code"] != "not_member" {
		t.Fatalf("the stream after leaving: %s %s, want status ended, not_member", ev.name, ev.raw)
	}
}

func rawSend(t *testing.T, a *api, id, text string) (errorReply, int) {
	var e errorReply
	st := a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": text}, &e)
	return e, st
}

// TestAPIWrongKey lists a group whose address is answered by a daemon of
// another key than the one the registry lists for it (a stale listing after
// a reinstall, or an impostor at the address). huddle web answered it as
// 500 internal, "server presented fingerprint ...", which the page showed as
// "Something went wrong": it is wrong_key, 502, saying what happened.
func TestAPIWrongKey(t *testing.T) {
	r := startRegistry(t)
	other, _ := startGroups(t, r, groupd.Config{Groups: []groupd.Spec{{Name: "elsewhere"}}})
	path, err := udpproxy.New(other.Addr().String())
	must(t, err)
	t.Cleanup(func() { path.Close() })
	listed, _ := startGroups(t, r, groupd.Config{Advertise: []string{path.Addr()}})
	c := newClient(t)
	a := newAPI(t, startWeb(t, c, r.Addr().String()))
	id := a.groupID("lobby")
	var e errorReply
	st := a.do("POST", "/api/groups/"+id+"/join", map[string]string{"name": "web"}, e.reset())
	if st != http.StatusBadGateway || e.Error.Code != "wrong_key" {
		t.Fatalf("join where another key answers: HTTP %d %+v, want 502 wrong_key", st, e.Error)
	}
	for _, want := range []string{other.Fingerprint().Short(), listed.Fingerprint().Short(), "not the one the registry lists"} {
		if !strings.Contains(e.Error.Message, want) {
			t.Errorf("message %q does not say %q", e.Error.Message, want)
		}
	}
	if st := a.do("GET", "/api/groups/"+id+"/members", nil, e.reset()); st != http.StatusBadGateway || e.Error.Code != "wrong_key" {
		t.Errorf("members where another key answers: HTTP %d %+v, want 502 wrong_key", st, e.Error)
	}
}

// TestAPIMeName: the server says the name its join form offers
// (Config.Name: huddle join's default), in /api/me and the stream's
// hello; the page offered none, so a user new to a browser typed theirs
// each time.
func TestAPIMeName(t *testing.T) {
	r := startRegistry(t)
	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{r.Addr().String()},
		Secret: testSecret, Logger: testLogger(t), Name: "alice"})
	must(t, err)
	serve(t, s)
	a := newAPI(t, s)
	var me map[string]string
	if st := a.do("GET", "/api/me", nil, &me); st != 200 || me["name"] != "alice" {
		t.Errorf("GET /api/me: HTTP %d %v, want the name alice", st, me)
	}
	if hello := a.events("").next("hello"); hello.data["name"] != "alice" {
		t.Errorf("hello %s, want the name alice", hello.raw)
	}
}
