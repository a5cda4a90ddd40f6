package groupd

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// TestLogBrokenAdvice: what the daemon tells an operator to do about a
// group whose log it could not open fits the cause. A read fault (the disk
// answering an I/O error under a page of a segment file as it was read
// back) was told to restore the directory from a backup or move it aside,
// a new epoch: history thrown away that may read back whole once the
// device does. It is told to check the disk, and to restore only if the
// history is not whole then.
func TestLogBrokenAdvice(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		want      []string
		wantNotIn []string
	}{
		{"read fault", fmt.Errorf("read back group log segment 00000001.seg: %w (a fault reading address 0x7f00)", store.ErrReadFault),
			[]string{"check the device", "restart the daemon once it reads again", "only if it is not"}, []string{"move it aside", "afresh"}},
		{"damaged", fmt.Errorf("group log segment 00000001.seg: %w at offset 4096", store.ErrCorrupt),
			[]string{"restore the directory from a backup", "move it aside"}, []string{"check the device"}},
		{"newer", fmt.Errorf("open: %w", store.ErrFutureVersion),
			[]string{"run that version"}, []string{"backup", "check the device"}},
	} {
		var logged bytes.Buffer
		lg := slog.New(slog.NewTextHandler(&logged, nil))
		logBroken(lg, "lobby", wire.UUID{7}, "/var/lib/huddle/logs/x", tc.err)
		line := logged.String()
		for _, w := range tc.want {
			if !strings.Contains(line, w) {
				t.Errorf("%s: the log says no %q:\n%s", tc.name, w, line)
			}
		}
		for _, w := range tc.wantNotIn {
			if strings.Contains(line, w) {
				t.Errorf("%s: the log says %q:\n%s", tc.name, w, line)
			}
		}
	}
}
