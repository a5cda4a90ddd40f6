package registry

import (
	"errors"

	"github.com/huddle-chat/huddle/daemon/server"
)

// Readiness reports whether the registry serves: it listens and is not
// shutting down. The error wraps ErrNotReady and says why.
func (r *Daemon) Readiness() error {
	if err := r.srv.Listening(); err != nil {
		return errors.Join(ErrNotReady, err)
	}
	return nil
}

// leaseCount is the number of groups listed, for metrics.
func (r *Daemon) leaseCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leases.len()
}

// Stats returns the state of the registry's server now: its connections,
// operations, and what its peers hold.
func (r *Daemon) Stats() server.Stats { return r.srv.Stats() }
