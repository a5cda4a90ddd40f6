package cell

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// TestHclogFormat: raft logs some values as hclog.Fmt (its "initial
// configuration" line's servers); the line must carry the formatted text,
// not the format and its operands as a list.
func TestHclogFormat(t *testing.T) {
	var buf bytes.Buffer
	l := hclogFor(slog.New(slog.NewTextHandler(&buf, nil)), "raft")
	args := []any{"index", 3, "servers", hclog.Fmt("%+v", []string{"a", "b"})}
	l.Info("initial configuration", args...)
	got := buf.String()
	if !strings.Contains(got, `servers="[a b]"`) || strings.Contains(got, "%+v") {
		t.Errorf("logged %q, want servers=\"[a b]\"", got)
	}
	if _, ok := args[3].(hclog.Format); !ok {
		t.Errorf("the caller's args were changed: %#v", args[3])
	}
}

// recordChan is a slog.Handler that sends every record to a channel
// (dropping those that find it full).
type recordChan chan slog.Record

func (c recordChan) Enabled(context.Context, slog.Level) bool { return true }
func (c recordChan) Handle(_ context.Context, r slog.Record) error {
	select {
	case c <- r:
	default:
	}
	return nil
}
func (c recordChan) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c recordChan) WithGroup(string) slog.Handler      { return c }

// TestJoinerWaitsQuietly: a member started to join a cell knows no
// configuration until a member adds it, and raft then warns, after its
// heartbeat timeout, that it has no peers to elect among. That is the wait
// the member was started for: it is said so at info level, and nothing is
// said at warn.
func TestJoinerWaitsQuietly(t *testing.T) {
	c := &testCell{t: t}
	m := c.newMember(false)
	c.peers = []Peer{{Addr: m.addr, Fingerprint: m.id.Fingerprint()}}
	recs := make(recordChan, 1000)
	c.mutate = func(cfg *Config) { cfg.Logger = slog.New(recs) }
	c.start(m, true)
	deadline := time.After(waitTimeout)
	for {
		select {
		case r := <-recs:
			if r.Level >= slog.LevelWarn {
				t.Errorf("a member waiting to join logged at %v: %q", r.Level, r.Message)
			}
			if r.Message == waitingToJoin {
				if r.Level != slog.LevelInfo {
					t.Errorf("%q logged at %v, want info", r.Message, r.Level)
				}
				return
			}
		case <-deadline:
			t.Fatalf("a member waiting to join did not say so within %v", waitTimeout)
		}
	}
}

// TestDepositionNotAnError: a leader that a member's newer term deposes
// says so at info level, in the cell's words; raft's own line (an error)
// is not passed on. The line is raft's text in the version go.mod pins
// (replication.go); a raft that words it otherwise fails this test.
func TestDepositionNotAnError(t *testing.T) {
	recs := make(recordChan, 10)
	l := hclogFor(slog.New(recs), "raft")
	l.Error("peer has newer term, stopping replication", "peer", "{Voter a 127.0.0.1:1}")
	r := <-recs
	if r.Level != slog.LevelInfo || r.Message != deposedByTerm {
		t.Errorf("logged %v %q, want info %q", r.Level, r.Message, deposedByTerm)
	}
	src, err := os.ReadFile(raftSource(t, "replication.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), `"`+raftNewerTerm+`"`) {
		t.Errorf("raft's replication.go no longer logs %q: the cell's mapping misses its line", raftNewerTerm)
	}
}

// raftSource is the path of file in the hashicorp/raft module this
// package builds with.
func raftSource(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/hashicorp/raft").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/hashicorp/raft: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), file)
}
