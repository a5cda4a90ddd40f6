package cell

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

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
