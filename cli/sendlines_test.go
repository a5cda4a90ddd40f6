package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestSendLinesStoppedPartway pipes lines to huddle send and has the
// daemon refuse it partway (the user leaves the group after two lines are
// acknowledged, as a daemon whose disk filled refuses with unavailable).
// It said only why it stopped, so a script could not tell which lines
// were stored: running the input again stored them twice (each run gives
// its lines new IDs), and guessing lost lines. It says which lines were
// acknowledged and the first not sent, on stderr and, with --json, in a
// stopped event after the acks; the exit code is still the refusal's.
func TestSendLinesStoppedPartway(t *testing.T) {
	t.Parallel()
	registry := startUp(t, "lobby")
	for _, asJSON := range []bool{false, true} {
		u := newTestUser(t, registry)
		u.ok(t, "join", "lobby", "--as", "alice")
		args := []string{"send", "lobby"}
		if asJSON {
			args = append(args, "--json")
		}
		in, feed := io.Pipe()
		var out, errb syncBuffer
		env := map[string]string{"HUDDLE_HOME": u.home, "HUDDLE_REGISTRY": u.registry}
		e := Env{Stdin: in, Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		done := make(chan int, 1)
		go func() { done <- Main(ctx, args, e) }()
		// Line 2 is blank, line 4 too large: neither is a message.
		if _, err := io.WriteString(feed, "one\n\nthree\n"+strings.Repeat("x", 70<<10)+"\nfive\n"); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(waitTimeout)
		for {
			more := out.written()
			if strings.Count(out.String(), "\n") >= 3 {
				break
			}
			select {
			case <-more:
			case <-deadline:
				t.Fatalf("no acks of lines 1, 3 and 5:\nstdout:\n%s\nstderr:\n%s", out.String(), errb.String())
			}
		}
		u.ok(t, "leave", "lobby")
		if _, err := io.WriteString(feed, "six\nseven\n"); err != nil {
			t.Fatal(err)
		}
		feed.Close()
		var code int
		select {
		case code = <-done:
		case <-ctx.Done():
			t.Fatal("send did not end")
		}
		cancel()
		stderr := errb.String()
		if code != ExitRefused {
			t.Errorf("json %v: exit %d, want %d (refused)\nstderr:\n%s", asJSON, code, ExitRefused, stderr)
		}
		for _, want := range []string{"  3 lines acknowledged (lines 1, 3, 5)\n", "  not sent: line 6 and every line after it; to resume, send from there (tail -n +6 FILE"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("json %v: stderr does not say %q:\n%s", asJSON, want, stderr)
			}
		}
		if !asJSON {
			continue
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		var stopped map[string]any
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &stopped); err != nil {
			t.Fatalf("the last line of send --json: %v\n%s", err, out.String())
		}
		if _, err := uuid.Parse(fmt.Sprint(stopped["run_id"])); err != nil {
			t.Errorf("send --json stopped with run_id %v: %v; want the run's ID", stopped["run_id"], err)
		}
		delete(stopped, "run_id")
		got, _ := json.Marshal(stopped)
		if want := `{"acked":3,"acked_lines":[[1,1],[3,3],[5,5]],"event":"stopped","first_unsent":6,"in_doubt":[]}`; string(got) != want {
			t.Errorf("send --json stopped with %s, want %s", got, want)
		}
		for _, l := range lines[:len(lines)-1] {
			if strings.Contains(l, `"event"`) {
				t.Errorf("an ack has an event: %s", l)
			}
		}
	}
}

// TestSendLinesStoppedInFallback has a daemon whose limits are not the
// ones it reports (it refuses any send of more than one message as too
// large), so a batch of lines is sent again one line at a time, and the
// ack of the first of them cannot be written (standard output gone): the
// stopped report named as the first line not sent the line after the
// whole batch, so the lines of the batch after the one acknowledged were
// never sent, and a script resuming from there (tail -n +N) lost them.
func TestSendLinesStoppedInFallback(t *testing.T) {
	sent, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	var sends atomic.Int64
	var batches sync.Map // the sizes of the sends the daemon got
	addr := sendDaemon(t, wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16, FetchPage: 100}, func(req wire.Send) (wire.Sent, error) {
		batches.Store(len(req.Messages), true)
		if first.CompareAndSwap(false, true) {
			close(sent)
			<-release // line 1's ack waits until lines 2-4 are read
		}
		if len(req.Messages) > 1 {
			return wire.Sent{}, &wire.Error{Code: wire.CodeTooLarge, Message: "the send is too large"}
		}
		return wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: uint64(sends.Add(1)), Time: time.Now().UnixNano()}}}, nil
	})

	code, stderr := sendBehindLineOne(t, addr, &failingWriter{okWrites: 1}, []string{"send", "builds"}, sent, release)
	if _, ok := batches.Load(1); !ok {
		t.Fatalf("the daemon got no send of one line")
	}
	if _, ok := batches.Load(3); !ok {
		if _, ok := batches.Load(4); !ok {
			var got []any
			batches.Range(func(k, _ any) bool { got = append(got, k); return true })
			t.Fatalf("lines 2-4 were not sent together (sends of %v lines), so not again one at a time:\n%s", got, stderr)
		}
	}
	if code == ExitOK {
		t.Errorf("exit %d with its acks unwritten", code)
	}
	for _, want := range []string{"  2 lines acknowledged (lines 1-2)\n", "  not sent: line 3 and every line after it"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr)
		}
	}
}

// sendBehindLineOne runs huddle send (args) on addr, writing to stdout,
// with its standard input fed so that lines 2-4 queue behind line 1: line
// 1 is written; once the daemon has it (sent), lines 2-4, then line 5,
// whose write returns once the reader has taken lines 2-4; then line 1's
// send is let go (release). It returns the exit code and stderr.
func sendBehindLineOne(t *testing.T, addr string, stdout io.Writer, args []string, sent <-chan struct{}, release chan<- struct{}) (int, string) {
	t.Helper()
	in, feed := io.Pipe()
	defer feed.Close()
	var errb syncBuffer
	env := map[string]string{"HUDDLE_HOME": t.TempDir(), "HUDDLE_REGISTRY": addr}
	e := Env{Stdin: in, Stdout: stdout, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- Main(ctx, args, e) }()
	if _, err := io.WriteString(feed, "one\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sent:
	case code := <-done:
		t.Fatalf("send ended (exit %d) before line 1's send:\n%s", code, errb.String())
	}
	if _, err := io.WriteString(feed, "two\nthree\nfour\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(feed, "five\n"); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case code := <-done:
		return code, errb.String()
	case <-ctx.Done():
		t.Fatal("send did not end")
	}
	return 0, ""
}

// failingWriter takes okWrites writes, then fails every one.
type failingWriter struct {
	mu       sync.Mutex
	okWrites int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.okWrites == 0 {
		return 0, syscall.ENOSPC
	}
	w.okWrites--
	return len(p), nil
}

// sendDaemon runs a registry and group daemon in one server that lists
// one group, builds, whose info gives limits, and whose sends send
// answers. It returns its address.
func sendDaemon(t *testing.T, limits wire.Limits, send func(wire.Send) (wire.Sent, error)) string {
	t.Helper()
	addr, _ := sendDaemonWith(t, server.Config{}, limits, send)
	return addr
}

// sendDaemonWith is sendDaemon with the server's config, and the server.
func sendDaemonWith(t *testing.T, cfg server.Config, limits wire.Limits, send func(wire.Send) (wire.Sent, error)) (string, *server.Server) {
	t.Helper()
	dk, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	group := wire.UUID{5, 5}
	var s *server.Server
	s = server.New(cfg, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		switch c.Op() {
		case wire.OpList:
			return c.Result(wire.Groups{Epoch: 1, Groups: []wire.GroupEntry{{Group: group, Name: "builds", Addrs: []string{s.Addr().String()}, Fingerprint: dk.Fingerprint(), ExpiresMS: 15000}}})
		case wire.OpInfo:
			return c.Result(wire.Info{Group: group, Name: "builds", Epoch: 1, Members: 1, Member: true, Fingerprint: dk.Fingerprint(), Limits: limits})
		case wire.OpSend:
			var req wire.Send
			if err := c.Decode(&req); err != nil {
				return err
			}
			out, err := send(req)
			if err != nil {
				return err
			}
			return c.Result(out)
		}
		return &wire.Error{Code: wire.CodeUnsupported}
	})
	if err := s.Listen(dk); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s.Addr().String(), s
}

// TestSendLinesDaemonLimitsUnbounded: a daemon that gives its message
// limit as the largest int64 (another implementation's "no limit")
// had every line of a piped send refused as too large (the reader's
// bound overflowed), and one giving a limit past a frame's had the
// reader keep a line of any length in memory (a 10 GB file without a line
// break, piped in). A message never exceeds a frame: the limit read is
// at most wire.MaxFrameSize.
func TestSendLinesDaemonLimitsUnbounded(t *testing.T) {
	var got atomic.Int64
	addr := sendDaemon(t, wire.Limits{MaxMessageBytes: math.MaxInt64, MaxFrameBytes: math.MaxUint64, MaxBatch: 16, FetchPage: 100}, func(req wire.Send) (wire.Sent, error) {
		out := wire.Sent{Epoch: 1}
		for range req.Messages {
			out.Acks = append(out.Acks, wire.Ack{Seq: uint64(got.Add(1)), Time: time.Now().UnixNano()})
		}
		return out, nil
	})
	u := &testUser{home: t.TempDir(), registry: addr}
	code, _, stderr := u.runInput(t, "hello\n"+strings.Repeat("x", wire.MaxFrameSize+1)+"\nworld\n", "send", "builds")
	if got.Load() != 2 || !strings.Contains(stderr, "line 2 is too large") || strings.Contains(stderr, "line 1 ") || strings.Contains(stderr, "line 3 ") {
		t.Errorf("exit %d, %d messages stored; want lines 1 and 3 stored, line 2 refused as too large:\n%s", code, got.Load(), stderr)
	}
}
