package web

import (
	"context"
	"net"
	"net/http"
	"slices"
	"sync"
)

// connLimit is the Server's listener: it holds at most max connections.
// Another user of the machine can open connections to the port as fast as
// the kernel accepts them, and a connection that made one request for the
// page's public files is kept open for IdleTimeout (2 min): without a
// bound, the Server held a goroutine, buffers and a descriptor for each,
// without end. Past max, the oldest connection that has not yet carried
// the secret (see trust) is closed for the newest: a flood of strangers'
// connections never closes one of the page's, and the page's new ones
// (each carries the cookie at once) push the strangers' out. Only when
// every connection held carries the secret is the newest refused.
type connLimit struct {
	net.Listener
	max int

	mu        sync.Mutex
	open      int            // connections held
	untrusted []*limitedConn // those not yet trusted, oldest first
}

func newConnLimit(ln net.Listener, max int) *connLimit {
	return &connLimit{Listener: ln, max: max}
}

// Accept returns the next connection, first closing the oldest untrusted
// one (which may be this one) if the bound is reached.
func (l *connLimit) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	lc := &limitedConn{Conn: c, l: l}
	var evict *limitedConn
	l.mu.Lock()
	l.open++
	l.untrusted = append(l.untrusted, lc)
	if l.open > l.max {
		evict = l.untrusted[0]
	}
	l.mu.Unlock()
	if evict != nil {
		evict.Close()
	}
	return lc, nil
}

// limitedConn is a connection connLimit counts until it is closed.
type limitedConn struct {
	net.Conn
	l       *connLimit
	trusted bool // guarded by l.mu
	closed  bool // guarded by l.mu
}

// trust marks c as carrying the secret: it is no longer closed for a
// newer connection.
func (c *limitedConn) trust() {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if c.trusted || c.closed {
		return
	}
	c.trusted = true
	c.l.untrusted = slices.DeleteFunc(c.l.untrusted, func(u *limitedConn) bool { return u == c })
}

func (c *limitedConn) Close() error {
	c.l.mu.Lock()
	if !c.closed {
		c.closed = true
		c.l.open--
		if !c.trusted {
			c.l.untrusted = slices.DeleteFunc(c.l.untrusted, func(u *limitedConn) bool { return u == c })
		}
	}
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// connKey is the request context's key of the connection it came on.
type connKey struct{}

// withConn is http.Server's ConnContext: requests know their connection.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// trustConn marks the connection r came on as carrying the secret.
func trustConn(r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(*limitedConn); ok {
		c.trust()
	}
}
