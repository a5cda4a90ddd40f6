package groupd

import (
	"fmt"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// TestMemberRejoinNotPacedByOthersGuesses: a guesser behind the same
// address as a member (a NAT, an IPv6 /64, link-local fe80::/64) empties
// the address's bucket; the member, joining again with the right secret
// (a rename), is not refused rate_limited for the guesses of another, as
// PROTOCOL.md §8.2 says (a member joining again is never slowed). A
// newcomer there still waits: the refusal says nothing of its secret.
func TestMemberRejoinNotPacedByOthersGuesses(t *testing.T) {
	clock := newFakeClock()
	secret := []byte("open sesame")
	d, _ := startGroupDaemon(t, Config{Groups: []Spec{{Name: "private", Secret: secret}}, Now: clock.Now})
	g := gid(d)
	join := func(p *peer, name string, s []byte) error {
		return p.call(wire.OpJoin, wire.Join{Group: g, Name: name, Secret: s}, nil)
	}
	member := dialFrom(t, "127.0.0.2", d.Addr(), d.Fingerprint())
	must(t, join(member, "alice", secret))
	for i := range guessBurst {
		p := dialFrom(t, "127.0.0.2", d.Addr(), d.Fingerprint())
		wantCode(t, join(p, "guess", []byte(fmt.Sprint("guess", i))), wire.CodeUnauthorized)
	}
	newcomer := dialFrom(t, "127.0.0.2", d.Addr(), d.Fingerprint())
	wantCode(t, join(newcomer, "bob", secret), wire.CodeRateLimited)
	must(t, join(member, "alice2", secret))
	// A member's wrong secret is still a guess, paced as any.
	wantCode(t, join(member, "alice3", []byte("wrong")), wire.CodeRateLimited)
}
