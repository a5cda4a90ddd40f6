//go:build huddle_testclock

package cli

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// In a build with the tag huddle_testclock (internal/jepsen's), a group
// daemon's clock is the wall clock plus the offset the file testclock in
// its state directory holds (a Go duration, like -1h; none without the
// file), read again at most every 10 ms: the test moves a member's clock
// by writing the file. Unlike a real jump, which moves the wall clock
// alone, the offset moves a time's monotonic reading too, so durations
// between the daemon's own readings across a jump show it.
func init() { testClock = offsetClock }

func offsetClock(stateDir string) func() time.Time {
	path := filepath.Join(stateDir, "testclock")
	var mu sync.Mutex
	var read time.Time
	var offset time.Duration
	return func() time.Time {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if now.Sub(read) > 10*time.Millisecond {
			read, offset = now, 0
			if b, err := os.ReadFile(path); err == nil {
				offset, _ = time.ParseDuration(strings.TrimSpace(string(b)))
			}
		}
		return now.Add(offset)
	}
}
