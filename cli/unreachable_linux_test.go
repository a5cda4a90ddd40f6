package cli

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/internal/netlab"
)

// TestUnreachableRegistrySaidInWords: a registry that cannot be reached is
// said in words, the same for the same situation, and the network's own
// error stays available in huddle doctor --json. In a network namespace of
// its own (loopback only: 10.0.0.9 has no route; nothing runs at
// 127.0.0.1:7373; without --registry the command browses mDNS there).
// (Linux only: netlab.)
//
// Until session 22 the line was quic-go's text ("server unreachable:
// INTERNAL_ERROR (local): write udp [::]:43497->10.0.0.9:7373: sendmsg:
// network is unreachable") with "is it running?" under it; and huddle
// groups with nothing running said, half the time, "none was found" after
// the whole --timeout (this machine's registry's answer dropped:
// TestTimedAskAlwaysAnswers), and otherwise "server unreachable".
func TestUnreachableRegistrySaidInWords(t *testing.T) {
	// The time is the one measured (1 s, its bound, or a little more on a
	// loaded machine).
	localSilent := regexp.MustCompile(`(?m)^  127\.0\.0\.1:7373 \(this machine\): nothing answered in [0-9.]+s$`)
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		u := &testUser{home: t.TempDir()} // no registry given: this machine's, and mDNS
		for range 2 {                     // the same words each time
			code, _, errs := u.run(t, "groups", "--timeout", "20s")
			if code != ExitUnreachable || !localSilent.MatchString(errs) ||
				strings.Contains(errs, "none was found") || strings.Contains(errs, "raise --timeout") {
				t.Fatalf("groups with nothing running: exit %d, stderr:\n%s\nwant exit 3 saying nothing answered at this machine's registry in 1s", code, errs)
			}
		}

		noRoute := &testUser{home: t.TempDir(), registry: "10.0.0.9:7373"}
		code, _, errs := noRoute.run(t, "groups")
		if code != ExitUnreachable ||
			!strings.Contains(errs, "10.0.0.9:7373 (given): this machine has no route to that network (network unreachable): check the address") ||
			!strings.Contains(errs, "huddle doctor --registry 10.0.0.9:7373 --json shows each registry's error") ||
			strings.Contains(errs, "INTERNAL_ERROR") || strings.Contains(errs, "sendmsg") || strings.Contains(errs, "is it running") {
			t.Fatalf("groups --registry 10.0.0.9:7373, no route: exit %d, stderr:\n%s\nwant exit 3, no route said in words, QUIC's text left to doctor", code, errs)
		}
		code, out, errs := noRoute.run(t, "doctor", "--wait", "50ms", "--json")
		var rep doctorReport
		if err := json.Unmarshal([]byte(out), &rep); code != ExitUnreachable || err != nil || len(rep.Registries) != 1 ||
			!strings.Contains(rep.Registries[0].Error, "network is unreachable") {
			t.Fatalf("doctor --registry 10.0.0.9:7373 --json: exit %d, %v, stdout:\n%s\nstderr:\n%s\nwant the registry's error as the network gave it", code, err, out, errs)
		}
		if !strings.Contains(strings.Join(rep.Advice, "\n"), "cannot be reached from this machine: this machine has no route") {
			t.Errorf("doctor's advice %q does not say there is no route", rep.Advice)
		}
	})
}
