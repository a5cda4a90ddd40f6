package cell

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds how long a test waits for a condition it polls for
// (an election, replication); it is a deadline, not an assertion about
// speed.
const waitTimeout = 30 * time.Second
