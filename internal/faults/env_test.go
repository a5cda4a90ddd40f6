//go:build unix

package faults

import (
	"slices"
	"strings"
	"testing"
)

// TestProcEnv: the huddle processes these tests start get the run's
// settings (HUDDLE_FSYNC=always), never this package's own (make
// crashloop's HUDDLE_CRASH_KILLS...); a setting of a flag the test gives
// on the command line is an error, not dropped. (Every HUDDLE_* was
// dropped silently: a run setting one measured the defaults.)
func TestProcEnv(t *testing.T) {
	args := []string{"serve", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", "/tmp/x", "--storage", "disk"}
	env, err := procEnv([]string{"PATH=/bin", "HOME=/root", "HUDDLE_FSYNC=always", "HUDDLE_MAX_MSGS=100",
		"HUDDLE_CRASH_KILLS=60", "HUDDLE_CHURN_KILLS=60", "HUDDLE_FAULTS_BINARY=/tmp/huddle", "HUDDLE_HOME=/tmp/alice"}, args)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"PATH=/bin", "HUDDLE_FSYNC=always", "HUDDLE_MAX_MSGS=100"}; !slices.Equal(env, want) {
		t.Fatalf("the processes' environment: %q, want %q", env, want)
	}
	if _, err := procEnv([]string{"HUDDLE_STORAGE=memory"}, args); err == nil || !strings.Contains(err.Error(), "HUDDLE_STORAGE") {
		t.Fatalf("HUDDLE_STORAGE, a flag the test gives: %v, want an error naming it", err)
	}
}
