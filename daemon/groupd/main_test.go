package groupd

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The test binary run as an attacker process (see attacker_test.go).
	if os.Getenv(attackerEnv) != "" {
		os.Exit(runAttacker())
	}
	goleak.VerifyTestMain(m)
}
