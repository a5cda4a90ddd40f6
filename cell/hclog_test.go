package cell

import (
	"bytes"
	"context"
	"log/slog"
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
