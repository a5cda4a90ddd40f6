package web

import (
	"fmt"
	"testing"

	"github.com/huddle-chat/huddle/daemon/groupd"
)

// sendN sends texts prefix1..prefixN through the API.
func (a *api) sendN(id, prefix string, from, to int) {
	a.t.Helper()
	for i := from; i <= to; i++ {
		var ack sentJSON
		if st := a.do("POST", "/api/groups/"+id+"/messages", map[string]string{"text": fmt.Sprint(prefix, i)}, &ack); st != 200 {
			a.t.Fatalf("send %s%d: HTTP %d", prefix, i, st)
		}
	}
}

// expectMessages reads message events until texts prefix from..to have
// arrived, failing on anything out of order or repeated.
func (s *sse) expectMessages(prefix string, from, to int) (epoch string, last uint64) {
	s.t.Helper()
	for i := from; i <= to; i++ {
		ev := s.next("message")
		if want := fmt.Sprint(prefix, i); ev.data["text"] != want {
			s.t.Fatalf("message event %s, want text %q", ev.raw, want)
		}
		epoch, last = ev.data["epoch"].(string), uint64(ev.data["seq"].(float64))
	}
	return epoch, last
}

// TestEventsResumeByCursor checks that an event stream reopened with the
// cursor of the last message it delivered resumes exactly after it: what
// was sent while it was closed arrives once, then live messages.
func TestEventsResumeByCursor(t *testing.T) {
	r := startRegistry(t)
	startGroups(t, r, groupd.Config{})
	a := newAPI(t, startWeb(t, newClient(t), r.Addr().String()))
	id := a.groupID("lobby")
	a.do("POST", "/api/groups/"+id+"/join", map[string]string{"name": "me"}, nil)
	a.sendN(id, "before", 1, 3)

	s := a.events("watch=" + id + ":0:0") // everything held
	if ev := s.next("hello", "groups"); ev.name != "hello" || ev.data["fingerprint"] == "" {
		t.Fatalf("first event %s %s, want hello", ev.name, ev.raw)
	}
	if ev := s.next("groups"); len(ev.data["groups"].([]any)) != 1 {
		t.Fatalf("groups event %s", ev.raw)
	}
	if ev := s.next("status"); ev.data["state"] != "live" {
		t.Fatalf("status %s, want live", ev.raw)
	}
	epoch, last := s.expectMessages("before", 1, 3)
	s.close()

	a.sendN(id, "while closed", 1, 5)
	s = a.events(fmt.Sprintf("watch=%s:%s:%d", id, epoch, last))
	s.expectMessages("while closed", 1, 5)
	a.sendN(id, "live", 1, 2)
	s.expectMessages("live", 1, 2)

	// New messages only, with no cursor: from where the log ended when the
	// watch went live.
	s2 := a.events("watch=" + id)
	if ev := s2.next("status"); ev.data["state"] != "live" {
		t.Fatalf("status %s, want live", ev.raw)
	}
	a.sendN(id, "new", 1, 1)
	s2.expectMessages("new", 1, 1)

	var e errorReply
	for _, q := range []string{"watch=nope", "watch=" + id + ":1", "watch=" + id + ":x:1", "watch=" + id + "&watch=" + id} {
		if st := a.do("GET", "/api/events?"+q, nil, e.reset()); st != 400 || e.Error.Code != "bad_request" {
			t.Errorf("events?%s: HTTP %d %+v, want 400", q, st, e.Error)
		}
	}
}

// TestEventsDaemonRestart restarts the group daemon (in-memory log: a new
// epoch) under an open event stream: the stream says it is reconnecting,
// then reports the reset and goes live on the new log, with nothing of the
// new log lost or repeated.
func TestEventsDaemonRestart(t *testing.T) {
	r := startRegistry(t)
	state := t.TempDir()
	memory := groupd.StorageConfig{Memory: true}
	d, stop := startGroups(t, r, groupd.Config{StateDir: state, Storage: memory})
	addr := d.Addr().String()
	a := newAPI(t, startWeb(t, newClient(t), r.Addr().String()))
	id := a.groupID("lobby")
	a.do("POST", "/api/groups/"+id+"/join", map[string]string{"name": "me"}, nil)
	s := a.events("watch=" + id + ":0:0")
	a.sendN(id, "old", 1, 2)
	oldEpoch, _ := s.expectMessages("old", 1, 2)

	stop()
	if ev := s.next("status"); ev.data["state"] != "reconnecting" {
		t.Fatalf("after the daemon stopped: %s, want reconnecting", ev.raw)
	}
	startGroups(t, r, groupd.Config{StateDir: state, Listen: addr, Storage: memory})
	ev := s.next("reset")
	if ev.data["epoch"] == oldEpoch {
		t.Fatalf("reset to the same epoch %s", ev.raw)
	}
	if ev := s.next("status"); ev.data["state"] != "live" {
		t.Fatalf("after the restart: %s, want live", ev.raw)
	}
	a.sendN(id, "new", 1, 3)
	if epoch, last := s.expectMessages("new", 1, 3); epoch != ev.data["epoch"] || last != 3 {
		t.Fatalf("new log: epoch %s last %d, want %s and 3", epoch, last, ev.data["epoch"])
	}
}

// TestEventsDaemonRestartDisk restarts the group daemon (its log on disk,
// the default) under an open event stream: the stream says it is
// reconnecting, goes live again with no reset, and goes on with the next
// messages of the same epoch.
func TestEventsDaemonRestartDisk(t *testing.T) {
	r := startRegistry(t)
	state := t.TempDir()
	d, stop := startGroups(t, r, groupd.Config{StateDir: state})
	addr := d.Addr().String()
	a := newAPI(t, startWeb(t, newClient(t), r.Addr().String()))
	id := a.groupID("lobby")
	a.do("POST", "/api/groups/"+id+"/join", map[string]string{"name": "me"}, nil)
	s := a.events("watch=" + id + ":0:0")
	a.sendN(id, "old", 1, 2)
	oldEpoch, _ := s.expectMessages("old", 1, 2)

	stop()
	if ev := s.next("status"); ev.data["state"] != "reconnecting" {
		t.Fatalf("after the daemon stopped: %s, want reconnecting", ev.raw)
	}
	startGroups(t, r, groupd.Config{StateDir: state, Listen: addr})
	for {
		ev := s.next("status", "reset")
		if ev.name == "status" && ev.data["state"] == "reconnecting" {
			continue
		}
		if ev.name != "status" || ev.data["state"] != "live" {
			t.Fatalf("after the restart: %s %s, want live, and no reset", ev.name, ev.raw)
		}
		break
	}
	a.sendN(id, "new", 3, 4)
	if epoch, last := s.expectMessages("new", 3, 4); epoch != oldEpoch || last != 4 {
		t.Fatalf("after the restart: epoch %s last %d, want %s and 4", epoch, last, oldEpoch)
	}
}
