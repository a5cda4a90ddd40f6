package cli

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestDoctorGivenRegistrySendsNoMDNS: huddle doctor with the registries
// given (--registry, or HUDDLE_REGISTRY) sends no mDNS query, as the other
// commands send none then, and says so; --iface still asks for the check.
// Until session 23 it multicast on every interface whatever --registry
// said, which a headless server's operator does not expect. No query is
// sent by this test: Env.browse stands in for every browse a command
// would start, and refuses it.
func TestDoctorGivenRegistrySendsNoMDNS(t *testing.T) {
	reg := startUp(t, "lobby")
	u := newTestUser(t, reg)
	var mu sync.Mutex
	var browsed []string
	u.browse = func(verb string) error {
		mu.Lock()
		defer mu.Unlock()
		browsed = append(browsed, verb)
		return errors.New("no mDNS in this test")
	}
	took := func() []string {
		mu.Lock()
		defer mu.Unlock()
		b := browsed
		browsed = nil
		return b
	}

	for _, args := range [][]string{
		{"doctor", "--registry", reg, "--wait", "50ms"},
		{"doctor", "--wait", "50ms"}, // HUDDLE_REGISTRY, the test user's
	} {
		code, out, errs := u.run(t, args...)
		// Its verdict (all good, most likely) is not what this test is
		// about: a registry or daemon slow to answer on a loaded machine
		// changes it, not whether mDNS was asked.
		if b := took(); code == ExitUsage || len(b) > 0 || !strings.Contains(out, "mDNS: not checked, no query sent: the registries are given ("+reg+")") {
			t.Errorf("huddle %s: exit %d, browses started by %v, stdout:\n%s\nstderr:\n%s\nwant no browse, and the check said skipped",
				strings.Join(args, " "), code, b, out, errs)
		}
	}
	code, out, errs := u.run(t, "doctor", "--registry", reg, "--wait", "50ms", "--json")
	var rep struct {
		Interfaces    []json.RawMessage `json:"interfaces"`
		MDNS          []json.RawMessage `json:"mdns"`
		MDNSUnchecked bool              `json:"mdns_unchecked"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(took()) > 0 || !rep.MDNSUnchecked || rep.Interfaces == nil || len(rep.Interfaces) > 0 || rep.MDNS == nil || len(rep.MDNS) > 0 {
		t.Errorf("huddle doctor --registry --json: exit %d, %v, stdout:\n%s\nstderr:\n%s\nwant mdns_unchecked, interfaces and mdns [], and no browse", code, err, out, errs)
	}

	// Asked for an interface, it checks mDNS there (here: the browse is
	// refused, and said so).
	_, out, _ = u.run(t, "doctor", "--registry", reg, "--iface", "lo", "--wait", "50ms")
	if b := took(); !slices.Equal(b, []string{"doctor"}) || !strings.Contains(out, "mDNS: no mDNS in this test") {
		t.Errorf("huddle doctor --registry --iface lo: browses started by %v, stdout:\n%s\nwant doctor's mDNS check started", b, out)
	}
}
