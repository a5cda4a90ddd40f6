//go:build linux

package jepsen

import (
	"slices"
	"strings"
	"testing"
)

// TestDaemonEnv: the daemons get the run's daemon settings (HUDDLE_<FLAG>),
// never the harness's own, the client's or the developer's home; a
// setting of a flag the harness gives on the command line is an error,
// not dropped. (Every HUDDLE_* was dropped silently: a run setting one
// measured the defaults.)
func TestDaemonEnv(t *testing.T) {
	args := []string{"serve", "--listen", "10.77.20.11:7374", "--cell-heartbeat", "300ms", "--send-rate=0"}
	env, err := daemonEnv([]string{"PATH=/bin", "HOME=/root", "XDG_CONFIG_HOME=/root/.config",
		"HUDDLE_FSYNC=always", "HUDDLE_MAX_MSGS=100", "HUDDLE_GROUPS=typo",
		"HUDDLE_JEPSEN_ROUNDS=3", "HUDDLE_NETLAB_LOOPBACK=1", "HUDDLE_HOME=/tmp/alice", "HUDDLE_REGISTRY=10.0.0.9"}, args)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=/bin", "HUDDLE_FSYNC=always", "HUDDLE_MAX_MSGS=100", "HUDDLE_GROUPS=typo"}
	if !slices.Equal(env, want) {
		t.Fatalf("the daemons' environment: %q, want %q (the daemon refuses HUDDLE_GROUPS itself)", env, want)
	}
	for _, kv := range []string{"HUDDLE_CELL_HEARTBEAT=1s", "HUDDLE_LISTEN=:1", "HUDDLE_SEND_RATE=5"} {
		_, err := daemonEnv([]string{"PATH=/bin", kv}, args)
		k, _, _ := strings.Cut(kv, "=")
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s, a flag the harness gives: %v, want an error naming it", kv, err)
		}
	}
}
