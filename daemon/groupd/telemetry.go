package groupd

import (
	"errors"

	"github.com/huddle-chat/huddle/metrics"
)

// groupStats reports every hosted group for metrics, read at scrape time.
func (d *Daemon) groupStats() map[string]metrics.GroupStats {
	d.mu.Lock()
	order := d.order
	d.mu.Unlock()
	out := make(map[string]metrics.GroupStats, len(order))
	for _, g := range order {
		st := g.log.Stats()
		out[g.name] = metrics.GroupStats{
			Members: g.memberCount(), Messages: st.Messages, Bytes: st.Bytes, LastSeq: st.Last,
			AppendedBytes: st.AppendedBytes, Duplicates: g.duplicates.Load(), Evicted: st.Evicted,
		}
	}
	return out
}

// Readiness reports whether the daemon can do its job: it listens, is not
// shutting down, and, when it registers its groups, some registry lists
// every group now. The error wraps ErrNotReady and says why.
func (d *Daemon) Readiness() error {
	if err := d.srv.Listening(); err != nil {
		return errors.Join(ErrNotReady, err)
	}
	if (len(d.cfg.Registries) > 0 || d.cfg.Discover) && !d.registered.Load() {
		return errors.Join(ErrNotReady, errors.New("no registry lists every group"))
	}
	return nil
}
