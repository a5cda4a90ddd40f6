package discovery

import "testing"

func TestInstanceName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain._huddle._udp.local.", "plain"},
		{`huddle\ registry\ on\ box._huddle._udp.local.`, "huddle registry on box"},
		{`caf\195\169._huddle._udp.local.`, "café"},
		{`a\.b._huddle._udp.local.`, "a.b"},
		{`trailing\`, `trailing\`},
	} {
		if got := instanceName(tc.in); got != tc.want {
			t.Errorf("instanceName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
