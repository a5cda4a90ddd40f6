package testbin

import (
	"errors"
	"slices"
	"testing"
)

// TestEnv: a huddle process gets the run's settings (HUDDLE_<FLAG>), never
// the harness's own, netlab's, the client's or the developer's home; a
// setting of a flag the harness gives on the command line is an error,
// not dropped.
func TestEnv(t *testing.T) {
	args := []string{"serve", "--listen", "10.77.20.11:7374", "--cell-heartbeat", "300ms", "--send-rate=0"}
	env, err := Env([]string{"PATH=/bin", "HOME=/root", "XDG_CONFIG_HOME=/root/.config",
		"HUDDLE_FSYNC=always", "HUDDLE_MAX_MSGS=100", "HUDDLE_GROUPS=typo", "HUDDLE_CHURN_KILLS=9",
		"HUDDLE_JEPSEN_ROUNDS=3", "HUDDLE_NETLAB_LOOPBACK=1", "HUDDLE_HOME=/tmp/alice", "HUDDLE_REGISTRY=10.0.0.9"}, args, "HUDDLE_JEPSEN_")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=/bin", "HUDDLE_FSYNC=always", "HUDDLE_MAX_MSGS=100", "HUDDLE_GROUPS=typo", "HUDDLE_CHURN_KILLS=9"}
	if !slices.Equal(env, want) {
		t.Fatalf("the environment: %q, want %q (the daemon refuses HUDDLE_GROUPS and another harness's HUDDLE_CHURN_KILLS itself)", env, want)
	}
	for _, tc := range []struct{ kv, flag string }{
		{"HUDDLE_CELL_HEARTBEAT=1s", "--cell-heartbeat"}, {"HUDDLE_LISTEN=:1", "--listen"}, {"HUDDLE_SEND_RATE=5", "--send-rate"},
	} {
		_, err := Env([]string{"PATH=/bin", tc.kv}, args)
		var fg *FlagGivenError
		if !errors.As(err, &fg) || fg.Flag != tc.flag || fg.Command != "serve" || fg.Var+"="+tc.kv[len(fg.Var)+1:] != tc.kv {
			t.Errorf("%s, a flag the harness gives: %v, want a FlagGivenError naming %s", tc.kv, err, tc.flag)
		}
	}
}
