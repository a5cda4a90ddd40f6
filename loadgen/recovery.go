package loadgen

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// recovery: fill the log to Messages, kill the daemon with SIGKILL, start
// it again on the same state directory and addresses, and time the restart
// until the first fetch of the last 1% (by time, as fetch selects them)
// is answered whole: the process's start, the log read back, and one
// fetch on a new connection. One operation; its time is the latency.
func (r *runner) recovery(ctx context.Context, res *Result) error {
	d := r.cfg.Daemon
	id, err := identity.Generate()
	if err != nil {
		return err
	}
	c, err := client.New(client.Config{Identity: id})
	if err != nil {
		return err
	}
	g, err := c.Group(r.entry)
	if err == nil {
		_, err = g.Join(ctx, "bench-recovery", nil)
	}
	if err == nil {
		err = r.fill(ctx, g)
	}
	if err != nil {
		c.Close()
		return err
	}
	info, err := g.Info(ctx)
	if err != nil {
		c.Close()
		return err
	}
	want := max(r.cfg.Messages/100, 1)
	var since time.Time
	_, err = g.Fetch(ctx, client.Query{After: info.Last - uint64(want), Limit: 1}, func(m client.Message) bool { since = m.Time; return false })
	c.Close()
	if err != nil {
		return err
	}
	// The daemon's memory holding the log it wrote: anonymous memory (the
	// heap), and file pages mapped.
	anonBefore, _ := procStatus(d.PID, "RssAnon")
	regAddr := r.cfg.Registry
	if len(r.entry.Addrs) == 0 {
		return fmt.Errorf("recovery: the registry lists no address for group %s", r.cfg.Group)
	}
	// As the anchors time JetStream's recovery: from the start of the new
	// process, the old one gone (the time its exit took is reported apart).
	k0 := time.Now()
	d.Kill()
	stop := time.Since(k0)
	t0 := time.Now()
	if err := d.Start(regAddr, r.entry.Addrs[0]); err != nil {
		return fmt.Errorf("recovery: restart the daemon: %w", err)
	}
	listening := time.Since(t0)
	// The member's key, on a new client: its old connection died with the
	// daemon.
	c2, err := client.New(client.Config{Identity: id})
	if err != nil {
		return err
	}
	defer c2.Close()
	g2, err := c2.Group(wire.GroupEntry{Group: r.entry.Group, Name: r.entry.Name, Addrs: r.entry.Addrs, Fingerprint: r.entry.Fingerprint})
	if err != nil {
		return err
	}
	n := 0
	fctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	_, err = g2.Fetch(fctx, client.Query{Since: since}, func(client.Message) bool { n++; return true })
	took := time.Since(t0)
	if err != nil {
		return fmt.Errorf("recovery: the first fetch after the restart: %w", err)
	}
	if n < want {
		return fmt.Errorf("recovery: the first fetch after the restart returned %d messages, want %d", n, want)
	}
	h := new(hist)
	h.add(took)
	// The server's figures are the new process's, from its start: the
	// CPU it took to read the log back and answer.
	w := window{dur: took}
	if cpu, err := procCPU(d.PID); err == nil {
		if rss, err := procRSS(d.PID); err == nil {
			w.srvCPU, w.srvRSS, w.serverMeasured = cpu, rss, true
		}
	}
	fill(res, []*hist{h}, w, newPhase())
	res.Messages = int64(info.Last)
	res.MsgsPerSec = float64(info.Last) / took.Seconds()
	res.Note = fmt.Sprintf("SIGKILL with %d messages held (the process gone after %.0f ms); restarted, listening after %.0f ms, the first fetch of the last %d (since a timestamp) answered %.0f ms after the restart",
		info.Last, float64(stop.Microseconds())/1e3, float64(listening.Microseconds())/1e3, want, float64(took.Microseconds())/1e3)
	anonAfter, err1 := procStatus(d.PID, "RssAnon")
	fileAfter, err2 := procStatus(d.PID, "RssFile")
	if anonBefore > 0 && err1 == nil && err2 == nil {
		res.Note += fmt.Sprintf("; daemon's anonymous memory %.0f MiB before the kill, %.0f MiB after the restart (file pages mapped: %.0f MiB)",
			float64(anonBefore)/(1<<20), float64(anonAfter)/(1<<20), float64(fileAfter)/(1<<20))
	}
	if n, err := segmentBytes(d.dir); err == nil && n > 0 {
		over := float64(n)/float64(info.Last) - float64(r.cfg.Size)
		res.Note += fmt.Sprintf("; on disk %d bytes of segments, %.1f bytes a message beyond its body", n, over)
	}
	return nil
}

// segmentBytes sums the sizes of the segment files (*.seg, STORAGE.md)
// under dir.
func segmentBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(path, ".seg") {
			return err
		}
		info, err := e.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	return n, err
}
