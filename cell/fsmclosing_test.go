package cell

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/internal/testlog"
)

// openRefusingHost is a daemon whose OpenGroup refuses every group with
// err.
type openRefusingHost struct{ err error }

func (h openRefusingHost) OpenGroup(GroupSpec) (Replica, error) { return nil, h.err }

// TestFSMCreateWhileClosing: a group the cell created that the daemon
// does not open because it is closing (its OpenGroup's error wraps
// ErrClosed: raft applying on after a shutdown the daemon stopped waiting
// for) is logged as expected, at info, saying the member is closing; a
// log that cannot be opened is still an error. Until session 22 both were
// logged at error as "cannot open a group the cell created".
func TestFSMCreateWhileClosing(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want []string // in the one line logged
	}{
		{"closing", fmt.Errorf("group lobby: %w", ErrClosed), []string{"level=INFO", "this member is closing", "group=lobby"}},
		{"log unusable", errors.New("group lobby: its log cannot be read"), []string{"level=ERROR", "cannot open a group the cell created", "its log cannot be read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf testlog.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			x := &fsmFixture{t: t, enc: newEncoder(), f: newFSM(openRefusingHost{tc.err}, log, make(chan struct{}))}
			spec := GroupSpec{ID: uuid.New(), Name: "lobby", Epoch: 1, DedupWindow: 64}
			if err, _ := x.apply(1, encodeCreate(nil, spec))[0].(error); !errors.Is(err, tc.err) {
				t.Fatalf("create: %v, want the host's %v", err, tc.err)
			}
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != 1 {
				t.Fatalf("logged %q, want one line", lines)
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("logged %q, want it to hold %q", lines[0], w)
				}
			}
		})
	}
}
