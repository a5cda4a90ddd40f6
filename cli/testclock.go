package cli

import "time"

// testClock, when set, gives a group daemon (serve) its clock from its
// state directory: internal/jepsen builds huddle with the tag
// huddle_testclock (testclock_on.go) to make a member's wall clock jump.
// It is nil in every other build, where a daemon's clock is time.Now.
var testClock func(stateDir string) func() time.Time
