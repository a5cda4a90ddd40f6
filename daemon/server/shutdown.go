package server

import (
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// Shutdown: operations in flight finish within the grace period, new ones
// are told the server is shutting down, then connections close.

// Close shuts the server down (see the package comment) and waits for
// every goroutine. It is safe to call more than once and concurrently; every
// call returns once shutdown has finished.
func (s *Server) Close() {
	s.closeOnce.Do(s.shutdown)
	<-s.done
}

func (s *Server) shutdown() {
	defer close(s.done)
	s.mu.Lock()
	s.closed = true
	close(s.stopping)
	ln, udp := s.ln, s.udp
	s.mu.Unlock()
	for _, str := range s.shares.readingStreams() {
		// Not an operation in flight yet: stop waiting for its request,
		// and tell its client the server is shutting down.
		str.SetReadDeadline(time.Now())
	}

	if ln == nil {
		if udp != nil {
			udp.Close() // bound (Bind), never served
		}
		s.acceptCancel()
		s.cancel()
		close(s.stopped)
		return
	}
	// Operations in flight finish, within the grace period. Meanwhile
	// connections and streams are still accepted, each told at once that
	// the server is shutting down (acceptLoop, serveConn): a client learns
	// it from an unavailable error or close code 0x2, instead of waiting
	// for a server that no longer serves it.
	drained := make(chan struct{})
	go func() { s.streamWG.Wait(); close(drained) }()
	grace := time.NewTimer(s.cfg.ShutdownTimeout)
	select {
	case <-drained:
	case <-grace.C:
		s.setup.Logger.Warn("shutdown timeout: aborting operations in flight", "timeout", s.cfg.ShutdownTimeout)
	}
	grace.Stop()
	s.cancel()

	s.mu.Lock()
	conns := make([]*quic.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if len(conns) > 0 {
		<-time.After(closeLinger)
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() { c.CloseWithError(wire.ConnShutdown, "server shutting down") })
		}
		wg.Wait()
		// A client whose connection was just closed may be dialling again:
		// the accept loop tells it too, for a moment more, rather than leave
		// its handshake unanswered.
		<-time.After(closeLinger)
	}
	s.acceptCancel()
	ln.Close()
	// A handler that ignored the end of the grace period and the closing
	// of its connection is stuck (a disk that never answers its log's
	// append): waited for stuckWait, then left. Its client was never
	// answered: it saw its connection close (0x2), its operation in doubt.
	go func() { <-drained; s.connWG.Wait(); close(s.stopped) }()
	stuck := time.NewTimer(stuckWait)
	select {
	case <-s.stopped:
	case <-stuck.C:
		s.stuck.Store(true)
		s.setup.Logger.Error("shutdown: operations still running after the grace period and the connections' close: leaving them (waiting on a disk that does not answer, or on the network?)", "operations", s.active.Load(), "waited", s.cfg.ShutdownTimeout+stuckWait)
	}
	stuck.Stop()
	s.tr.Close()
	s.udp.Close()
}

// Stuck says whether Close returned leaving handlers that had not returned
// (see stuckWait): what they use (a group's log) may still be in use, and
// must not be closed or opened again by a caller that waits for it.
func (s *Server) Stuck() bool { return s.stuck.Load() }

// Stopped returns a channel closed once every goroutine of the server has
// returned: when Close returns, or later, once the handlers it left
// (Stuck) have returned, if ever.
func (s *Server) Stopped() <-chan struct{} { return s.stopped }
