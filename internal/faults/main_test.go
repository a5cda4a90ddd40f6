package faults

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/internal/testbin"
)

// TestMain checks for leaked goroutines and removes the binary the tests
// built once they have run.
func TestMain(m *testing.M) { goleak.VerifyTestMain(testbin.Main{M: m}) }
