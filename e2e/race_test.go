//go:build linux && race

package e2e

// raceEnabled: this test binary was built with -race, so TestMain builds
// huddle with it too.
const raceEnabled = true
