package groupd

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// Joins of a private group are paced per source address (an IPv4
// address, or an IPv6 /64, as connections are counted), so that its
// secret cannot be guessed at the rate a peer can send joins: each join
// of a private group takes a token from its address's bucket (a burst of
// guessBurst, refilled at guessRate a second), and one whose secret is
// right gives it back. An address whose bucket is empty is refused
// rate_limited, with retry_after_ms, before its secret is compared, right
// or wrong, so that a refusal says nothing of the secret. Keys are free,
// so a key's bucket would bound nothing. Until session 22 a peer could try
// thousands of secrets a second on one connection.
const (
	guessBurst = 10
	guessRate  = 1.0
)

// guessLimiter holds the buckets of one group's source addresses. The
// zero value is ready.
type guessLimiter struct {
	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
	pruneAt int
}

var guessPace = rateLimiter{rate: guessRate, burst: guessBurst}

// take takes a token from from's bucket, or reports how long until it
// holds one.
func (l *guessLimiter) take(from netip.Prefix, now time.Time) (wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[from]
	if b == nil {
		if l.buckets == nil {
			l.buckets = make(map[netip.Prefix]*bucket)
		}
		if len(l.buckets) >= max(l.pruneAt, minPrune) {
			// Buckets that have refilled hold nothing worth keeping.
			for k, o := range l.buckets {
				if guessPace.refill(o, now); o.tokens >= guessBurst {
					delete(l.buckets, k)
				}
			}
			l.pruneAt = max(minPrune, 2*len(l.buckets))
		}
		b = &bucket{tokens: guessBurst, at: now}
		l.buckets[from] = b
	}
	guessPace.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / guessRate * float64(time.Second)), false
}

// refund gives back the token a join with the right secret took.
func (l *guessLimiter) refund(from netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[from]; b != nil {
		b.tokens = min(guessBurst, b.tokens+1)
	}
}

// checkSecret decides a join of the private group g whose secret is right
// or not (ok): nil to go on, rate_limited while c's address has guessed
// too often, unauthorized for a wrong secret.
//
// A member joining again with the right secret (a rename) takes no token:
// an address is shared (a NAT, an IPv6 /64, link-local fe80::/64), and
// another's guesses there had the member refused rate_limited, against
// PROTOCOL.md §8.2 (a member joining again is never slowed). Its answer
// tells only a member whether a secret is right, at any pace: a member
// has the group already, and could hand its key to anyone it would hand
// the secret.
func (d *Daemon) checkSecret(c *server.Call, g *group, ok bool) error {
	if ok && g.isMember(c.Peer()) {
		return nil
	}
	from := server.Source(c.Remote())
	wait, allowed := g.guesses.take(from, d.cfg.Now())
	if !allowed {
		ms := max(1, uint64((wait+time.Millisecond-1)/time.Millisecond))
		return &wire.Error{Code: wire.CodeRateLimited, RetryAfterMS: ms,
			Message: fmt.Sprintf("join group %s: rate limited: your address may try %d secrets at once, then %g a second", g.name, guessBurst, guessRate)}
	}
	if !ok {
		return fmt.Errorf("join group %s: %w: the group is private and the secret is wrong or missing", g.name, wire.ErrUnauthorized)
	}
	g.guesses.refund(from)
	return nil
}
