package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// runAsHuddle, set in the environment, makes this test binary the huddle
// command: tests that need huddle as a process of its own (bench starts
// its daemon from os.Executable) run the test binary itself.
const runAsHuddle = "CLI_TEST_RUN_AS_HUDDLE"

func TestMain(m *testing.M) {
	if os.Getenv(runAsHuddle) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := Main(ctx, os.Args[1:], Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
		stop()
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}
