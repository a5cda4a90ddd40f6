package testbin

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines: Main's Run must end the one
// Start forks from.
func TestMain(m *testing.M) { goleak.VerifyTestMain(Main{M: m}) }
