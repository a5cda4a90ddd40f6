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

// electionWait bounds a wait that only an election ends (a leader, a
// member's promotion, which a leader makes): a deadline too, longer than
// waitTimeout because the whole cell runs in the test's process, and a
// process starved of CPU elects no one while it is starved (its vote
// requests answered later than raft's 300-600 ms election timeout, every
// candidate stands again, and again). At load 40-45 (session 22) such
// spells lasted more than 18 s and 35 s (no leader, or none ready):
// each failed a wait of 30 s.
const electionWait = 2 * waitTimeout
