package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// TestLimitLogIsSparing: a flood of refusals logs one line per code per
// interval, with the count since the last line.
func TestLimitLogIsSparing(t *testing.T) {
	var buf bytes.Buffer
	l := &limitLog{log: slog.New(slog.NewTextHandler(&buf, nil)), last: map[wire.Code]time.Time{}, since: map[wire.Code]int{}}
	for range 100 {
		l.note(wire.CodeRateLimited, wire.OpSend, wire.Fingerprint{})
	}
	l.note(wire.CodeTooLarge, wire.OpSend, wire.Fingerprint{})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 101 refusals, want 2 (one per code):\n%s", len(lines), buf.String())
	}
	l.last[wire.CodeRateLimited] = time.Now().Add(-limitLogEvery)
	buf.Reset()
	l.note(wire.CodeRateLimited, wire.OpSend, wire.Fingerprint{})
	if !strings.Contains(buf.String(), "refused_since_last_logged=100") {
		t.Errorf("after the interval: %q, want the 99 suppressed plus this one counted", buf.String())
	}
}
