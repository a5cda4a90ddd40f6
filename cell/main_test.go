package cell

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind, but the one
// answer leaves, by design, for each request raft dropped as it shut
// down (TestCloseWhileSendHeldPastSettle): raft (v1.7.2) never answers
// such a request, and nothing can end the goroutine that waits for it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/huddle-chat/huddle/cell.(*Node).answerOr.func1"))
}

// waitTimeout bounds how long a test waits for a condition it polls for
// (an election, replication); it is a deadline, not an assertion about
// speed.
const waitTimeout = 30 * time.Second
