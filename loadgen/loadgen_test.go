package loadgen_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/loadgen"
	"github.com/huddle-chat/huddle/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startDaemons runs a registry and a group daemon hosting "bench" on
// loopback, in this process, and returns the registry's address.
func startDaemons(t *testing.T) string {
	t.Helper()
	r, err := registry.New(registry.Config{Listen: "127.0.0.1:0", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	g, err := groupd.New(groupd.Config{
		Listen:               "127.0.0.1:0",
		StateDir:             t.TempDir(),
		Groups:               []groupd.Spec{{Name: "bench"}},
		Registries:           []string{r.Addr().String()},
		RegistryFingerprints: []wire.Fingerprint{r.Fingerprint()},
		SendRate:             -1, // unlimited
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Serve(ctx) })
	wg.Go(func() { g.Serve(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r.Addr().String()
}

func TestScenarios(t *testing.T) {
	reg := startDaemons(t)
	for _, tc := range []loadgen.Config{
		{Scenario: loadgen.Send, Conns: 2, InFlight: 3},
		{Scenario: loadgen.SendBatched, Conns: 2, InFlight: 8},
		{Scenario: loadgen.Fetch, Messages: 3000},
		{Scenario: loadgen.Fanout, Conns: 3, Rate: 200},
		{Scenario: loadgen.Idle, Conns: 5},
	} {
		t.Run(string(tc.Scenario), func(t *testing.T) {
			tc.Registry = reg
			tc.Duration, tc.Warmup = 300*time.Millisecond, 50*time.Millisecond
			tc.ServerPID = 0 // the daemon is this process: nothing apart to measure
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			res, err := loadgen.Run(ctx, tc)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.Ops == 0 {
				t.Fatalf("%+v", res)
			}
			if res.Scenario != string(tc.Scenario) || res.P50us <= 0 || res.P99us < res.P50us {
				t.Errorf("%+v", res)
			}
			if tc.Scenario == loadgen.Fetch && res.Messages != 30 {
				t.Errorf("fetch took %d messages each, want the last 1%% of 3000", res.Messages)
			}
		})
	}
}

// TestWindowMeasuresSomething: a measured window shorter than any
// operation still counts one. A window of 0.3 s that a machine at load 31
// stalled through closed with Ops 0 (fresh-clone CI, TestScenarios/send);
// here a window of 1 us, far shorter than a send, stands for that stall.
// The warm-up lasts until an operation ended, and the window until one
// ended inside it.
func TestWindowMeasuresSomething(t *testing.T) {
	reg := startDaemons(t)
	for _, sc := range []loadgen.Scenario{loadgen.Send, loadgen.Fetch} {
		t.Run(string(sc), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			res, err := loadgen.Run(ctx, loadgen.Config{Scenario: sc, Registry: reg, Messages: 300,
				Duration: time.Microsecond, Warmup: time.Microsecond})
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.Ops == 0 {
				t.Fatalf("a window shorter than an operation measured %+v, want at least one operation", res)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  loadgen.Config
	}{
		{"no scenario", loadgen.Config{Registry: "x"}},
		{"no registry", loadgen.Config{Scenario: loadgen.Send}},
		{"unknown scenario", loadgen.Config{Scenario: "flood", Registry: "x"}},
		{"negative conns", loadgen.Config{Scenario: loadgen.Send, Registry: "x", Conns: -1}},
		{"fanout without room for a time", loadgen.Config{Scenario: loadgen.Fanout, Registry: "x", Size: 4}},
		{"unknown replica", loadgen.Config{Scenario: loadgen.Fetch, Registry: "x", Replica: "candidate"}},
		{"send to a follower", loadgen.Config{Scenario: loadgen.Send, Registry: "x", Replica: loadgen.ReplicaFollower}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); !errors.Is(err, loadgen.ErrInvalidConfig) {
				t.Errorf("Validate() = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// startCell runs a registry and three group daemons replicating "bench"
// as a cell, on loopback in this process, and returns the registry's
// address.
func startCell(t *testing.T) string {
	t.Helper()
	r, err := registry.New(registry.Config{Listen: "127.0.0.1:0", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	var peers []cell.Peer
	var dirs []string
	for range 3 {
		dir := t.TempDir()
		id, err := identity.LoadOrCreate(dir)
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, cell.Peer{Addr: testport.Cell(t), Fingerprint: id.Fingerprint()})
		dirs = append(dirs, dir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() { r.Serve(ctx) })
	for i, p := range peers {
		g, err := groupd.New(groupd.Config{
			Listen:               p.Addr,
			StateDir:             dirs[i],
			Groups:               []groupd.Spec{{Name: "bench"}},
			Registries:           []string{r.Addr().String()},
			RegistryFingerprints: []wire.Fingerprint{r.Fingerprint()},
			SendRate:             -1, // unlimited
			Cell:                 &groupd.CellConfig{Peers: peers},
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { g.Serve(ctx) })
	}
	return r.Addr().String()
}

// TestFetchFromFollower loads a cell's group and fetches from a follower
// (the fill going to the leader): every fetch returns the last 1%, and the
// result says which member answered. A group no cell replicates has no
// follower to read from.
func TestFetchFromFollower(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cfg := loadgen.Config{Scenario: loadgen.Fetch, Messages: 3000, Replica: loadgen.ReplicaFollower,
		Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond}
	cfg.Registry = startCell(t)
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.Ops == 0 || res.Messages != 30 || !strings.Contains(res.Note, "from the follower at 127.0.0.1:") {
		t.Fatalf("%+v", res)
	}

	cfg.Registry = startDaemons(t)
	if _, err := loadgen.Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), "not replicated") {
		t.Fatalf("a follower of a group no cell replicates: %v, want an error saying so", err)
	}
}
