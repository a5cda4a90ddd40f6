package web

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/daemon/groupd"
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
