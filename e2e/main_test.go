//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/internal/testbin"
)

// huddleBin is the huddle binary TestMain built for this run.
var huddleBin string

// netnsEnv marks the copy of the test binary that runs inside its own
// network namespace.
const netnsEnv = "HUDDLE_E2E_NETNS"

func TestMain(m *testing.M) {
	if _, ok := netlab.InHost(); ok {
		// A helper process a LAN test started inside one of its hosts: it
		// runs one helper test and needs neither a binary nor a namespace.
		os.Exit(m.Run())
	}
	if os.Getenv(netnsEnv) == "" {
		if code, ok := rerunInNetNS(); ok {
			os.Exit(code)
		}
		// Without a namespace of its own the run goes on here (every client
		// verb names its registry, every daemon listens on 127.0.0.1), but
		// the tests that need the namespace skip: under CI, which runs as
		// root, that would hide them, so it is a failure.
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "e2e: cannot run in a network namespace of its own (needs root, ip and unshare), and CI=true: failing rather than skipping the tests that need one")
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "e2e: not root, or no ip/unshare: running without a network namespace of its own; tests that need one skip")
	} else if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: in the test's network namespace: ip link set lo up: %v: %s\n", err, out)
		os.Exit(1)
	}

	dir, err := os.MkdirTemp("", "huddle-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	huddleBin = filepath.Join(dir, "huddle")
	if err := build(huddleBin); err != nil {
		os.RemoveAll(dir)
		fmt.Fprintf(os.Stderr, "e2e: build huddle: %v\n", err)
		os.Exit(1)
	}
	// testbin.Main ends the goroutine the tests start processes from
	// (testbin.Start) before goleak looks.
	goleak.VerifyTestMain(testbin.Main{M: m}, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// build compiles the huddle command into bin, with the race detector when
// this test binary has it, so the daemons and clients the tests run are
// checked for data races too.
func build(bin string) error {
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = ".." // the module root, where package main is
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// rerunInNetNS runs this test binary again, with the same arguments, inside
// a new network namespace (unshare -n) and returns its exit code. It reports
// false when namespaces cannot be had (not root, no unshare(1) or ip(8));
// the tests then run here, where every client verb still names its registry
// and every daemon listens on 127.0.0.1.
func rerunInNetNS() (int, bool) {
	if os.Geteuid() != 0 {
		return 0, false
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return 0, false
	}
	if err := exec.Command("unshare", "--net", "true").Run(); err != nil {
		return 0, false
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--", os.Args[0]}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// If this process dies (go test's own timeout kills it), so does the
	// copy (unshare execs it, which keeps the parent-death signal).
	err := testbin.Run(cmd)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), true
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: run in a network namespace: %v\n", err)
		return 1, true
	}
	return 0, true
}
