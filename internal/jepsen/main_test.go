//go:build linux

package jepsen

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/internal/testbin"
)

// TestMain checks for leaked goroutines and removes the binary the tests
// built once they have run. The binary is built with the tag
// huddle_testclock, with which a daemon's clock is its state directory's
// to set (cli/testclock_on.go; inert until a clock fault writes the file).
func TestMain(m *testing.M) {
	testbin.Tags = "huddle_testclock"
	goleak.VerifyTestMain(testbin.Main{M: m})
}
