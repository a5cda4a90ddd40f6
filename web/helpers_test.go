package web

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testlog"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/wire"
)

// testTimeout bounds each network step of a test so that a bug fails it
// instead of hanging it; it asserts nothing about speed.
const testTimeout = 30 * time.Second

const testSecret = "test-secret-0123456789abcdef"

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testlog.Output(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func startRegistry(t *testing.T) *registry.Daemon {
	t.Helper()
	r, err := registry.New(registry.Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), LeaseTTL: 3 * time.Second})
	must(t, err)
	must(t, r.Listen())
	done := make(chan struct{})
	go func() { r.Serve(context.Background()); close(done) }()
	t.Cleanup(func() { r.Close(); <-done })
	return r
}

// stopRegistry stops r now (Close is safe twice: the cleanup's too).
func stopRegistry(t *testing.T, r *registry.Daemon) {
	t.Helper()
	must(t, r.Close())
}

// startGroups starts a group daemon registered with r; zero fields get a
// state dir of the test's, 127.0.0.1:0 and one group "lobby". It returns
// the daemon and its stop function.
func startGroups(t *testing.T, r *registry.Daemon, cfg groupd.Config) (*groupd.Daemon, func()) {
	t.Helper()
	if cfg.Listen == "" {
		// A reserved port (below the ephemeral range, never another test
		// process's), not one the kernel chooses: the restart tests start
		// the daemon again at its address, which another process's next
		// socket bound to port 0 could have taken meanwhile.
		cfg.Listen = testport.Cell(t)
	}
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if len(cfg.Groups) == 0 {
		cfg.Groups = []groupd.Spec{{Name: "lobby"}}
	}
	cfg.Registries, cfg.RegistryFingerprints = []string{r.Addr().String()}, []wire.Fingerprint{r.Fingerprint()}
	d, err := groupd.New(cfg)
	must(t, err)
	must(t, d.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Serve(ctx); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return d, stop
}

func newClient(t *testing.T) *client.Client {
	t.Helper()
	id, err := identity.Generate()
	must(t, err)
	c, err := client.New(client.Config{Identity: id, KnownHosts: identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known"))})
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// startWeb runs a Server for c on 127.0.0.1:0 listing the registries; it
// stops when the test ends.
func startWeb(t *testing.T, c *client.Client, registries ...string) *Server {
	t.Helper()
	s, err := New(Config{Listen: "127.0.0.1:0", Client: c, Registries: registries, Secret: testSecret,
		PollInterval: 100 * time.Millisecond, Logger: testLogger(t)})
	must(t, err)
	serve(t, s)
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// api is a script using the API with the secret as a bearer token.
type api struct {
	t    *testing.T
	base string
}

func newAPI(t *testing.T, s *Server) *api {
	return &api{t: t, base: "http://" + s.Addr().String()}
}

// do performs a request and decodes the JSON reply into out (if not nil),
// returning the status.
func (a *api) do(method, path string, body any, out any) int {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		must(a.t, err)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(testCtx(a.t), method, a.base+path, rd)
	must(a.t, err)
	req.Header.Set("Authorization", "Bearer "+testSecret)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	must(a.t, err)
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		a.t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	if out != nil {
		must(a.t, json.NewDecoder(res.Body).Decode(out))
	}
	return res.StatusCode
}

// errorReply is the API's error body.
type errorReply struct {
	Error struct {
		Code         string `json:"code"`
		Message      string `json:"message"`
		RetryAfterMS uint64 `json:"retry_after_ms"`
		Epoch        string `json:"epoch"`
	} `json:"error"`
}

// groupID waits until the server lists a group named name and returns its
// UUID.
func (a *api) groupID(name string) string {
	a.t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		var l listJSON
		a.do("GET", "/api/groups", nil, &l)
		for _, g := range l.Groups {
			if g.Name == name {
				return g.UUID
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.t.Fatalf("group %q never listed", name)
	return ""
}

// sse is an open event stream.
type sse struct {
	t      *testing.T
	res    *http.Response
	events chan sseEvent
	cancel context.CancelFunc
}

type sseEvent struct {
	name string
	data map[string]any
	raw  string
}

// events opens GET /api/events?QUERY.
func (a *api) events(query string) *sse {
	a.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", a.base+"/api/events?"+query, nil)
	must(a.t, err)
	req.Header.Set("Authorization", "Bearer "+testSecret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		a.t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		cancel()
		a.t.Fatalf("events: HTTP %d", res.StatusCode)
	}
	s := &sse{t: a.t, res: res, events: make(chan sseEvent, 4096), cancel: cancel}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(s.events)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.raw = strings.TrimPrefix(line, "data: ")
				json.Unmarshal([]byte(ev.raw), &ev.data)
			case line == "" && ev.name != "":
				s.events <- ev
				ev = sseEvent{}
			}
		}
	}()
	a.t.Cleanup(func() { s.close(); <-done })
	return s
}

func (s *sse) close() {
	s.cancel()
	s.res.Body.Close()
}

// next returns the next event named one of names, skipping others.
func (s *sse) next(names ...string) sseEvent {
	s.t.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.t.Fatalf("event stream ended while waiting for %v", names)
			}
			for _, n := range names {
				if ev.name == n {
					return ev
				}
			}
		case <-timer.C:
			s.t.Fatalf("no %v event in time", names)
		}
	}
}

// fp returns the fingerprint of a client as the API writes it.
func fp(c *client.Client) string { return c.Fingerprint().String() }

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// reset empties e for the next reply and returns it.
func (e *errorReply) reset() *errorReply { *e = errorReply{}; return e }

func jsonDecodeString(s string, v any) error { return json.Unmarshal([]byte(s), v) }
