//go:build linux

package jepsen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/history"
	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/internal/testdisk"
)

// envInt reads a count from the environment variable name (make jepsen
// sets them for a long run), or returns def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive count", name, v)
	}
	return n
}

// TestDurableDaemonFaults runs the Jepsen workload against one durable
// group daemon (--storage disk, issue 19) on a LAN of four hosts (registry,
// daemon, and the clients' host; the daemon's disk a small tmpfs), while a
// nemesis, round after round, SIGKILLs the daemon and starts it again on the
// same directory (alternating --fsync interval and always), partitions it
// from the clients, drops 5% of the packets it receives, fills its disk,
// and freezes it (SIGSTOP, SIGCONT two seconds later). Four senders (two batching) retry each message under its ID until
// it is acknowledged, and read back what they wrote; two watchers follow
// from the start and from a later point. The checker then proves, over the
// whole history: nothing acknowledged lost, no duplicate, one gapless
// log, strictly increasing timestamps, acks that match what is held,
// read-your-writes, and watches that saw the log with no gap, repeat or
// reset.
//
// HUDDLE_JEPSEN_ROUNDS sets the number of fault rounds (default 12: make
// test; make jepsen runs more).
func TestDurableDaemonFaults(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		rounds := envInt(t, "HUDDLE_JEPSEN_ROUNDS", 12)
		l := newLab(t)
		dir, fillDisk := testdisk.Small(t, "64m")
		fill := spendingReserves(t, fillDisk, filepath.Join(dir, "logs"))
		d := l.addNode(1)
		serve := func(fsync string) {
			d.args = []string{"serve", "--no-mdns", "--registry", regAddr, "--listen", daemonAddr(1), "--group", "jepsen",
				"--state-dir", dir, "--storage", "disk", "--fsync", fsync, "--fsync-interval", "200ms", "--send-rate", "0"}
			d.start()
		}
		serve("interval")

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		entry := listing(ctx, t, "jepsen")
		h := history.New()
		w := newWorkload(h, l.deaths)
		wctx, stopWatches := context.WithCancel(ctx)
		defer w.watchers.Wait()
		defer stopWatches()

		var senders []*member
		for i := range 4 {
			senders = append(senders, join(ctx, t, entry, fmt.Sprint("sender", i), i%2 == 0))
		}
		checker := join(ctx, t, entry, "checker", false)
		watches := []*history.Watch{w.watch(wctx, join(ctx, t, entry, "watcher0", false), "d1", 0)}
		for i, m := range senders {
			w.send(ctx, m, uint64(i))
		}
		w.waitProgress(t, "the start")
		late := join(ctx, t, entry, "watcher1", false)
		if msgs, ok := w.read(ctx, late, "d1", 0, false); ok && len(msgs) > 0 {
			watches = append(watches, w.watch(wctx, late, "d1", msgs[len(msgs)-1].Seq))
		} else {
			watches = append(watches, w.watch(wctx, late, "d1", 0))
		}

		rng := rand.New(rand.NewPCG(20, 19))
		faults := []string{"kill", "kill", "partition", "kill", "loss", "kill", "disk", "pause"}
		counts := make(map[string]int)
		policies := []string{"interval", "always"}
		for round := range rounds {
			kind := faults[round%len(faults)]
			w.waitProgress(t, fmt.Sprintf("round %d", round))
			<-time.After(time.Duration(rng.IntN(200)) * time.Millisecond) // the fault's moment, not a wait for an event
			switch kind {
			case "kill":
				h.Fault(time.Now(), "kill", "d1")
				d.kill(syscall.SIGKILL)
				serve(policies[counts[kind]%2])
			case "partition":
				h.Fault(time.Now(), "partition", "d1 from the clients")
				l.setFirewall(d.host, firewall{blocked: []string{ctlAddr}})
				<-time.After(2 * time.Second) // the partition's length
				l.setFirewall(d.host, firewall{})
			case "loss":
				h.Fault(time.Now(), "loss", "5% on d1 and ctl")
				l.setFirewall(d.host, firewall{lossPct: 5})
				l.setFirewall(nil, firewall{lossPct: 5})
				w.waitProgress(t, "5% loss began")
				<-time.After(3 * time.Second) // the loss's length
				l.setFirewall(d.host, firewall{})
				l.setFirewall(nil, firewall{})
			case "pause":
				h.Fault(time.Now(), "pause", "d1 stopped")
				d.pause(2 * time.Second)
			case "disk":
				h.Fault(time.Now(), "disk", "d1's disk full")
				free := fill()
				refused := waitSendError(t, h, time.Now(), "unavailable")
				// Reads go on while the disk is full.
				if _, ok := w.read(ctx, checker, "d1", 0, false); !ok {
					t.Error("a fetch failed while the disk was full: reads must keep working")
				}
				free()
				t.Logf("disk full: a send refused as %q", refused)
			}
			counts[kind]++
		}
		w.waitRecovered(t)
		w.finish(t)
		w.settle(ctx, t, checker)

		final, ok := w.read(ctx, checker, "d1", 0, true)
		if !ok {
			t.Fatal("the final read failed")
		}
		w.waitWatches(t, uint64(len(final)), watches...)
		stopWatches()
		w.watchers.Wait()
		res := w.report(t)
		t.Logf("faults survived: %v", counts)
		logRecoveries(t, h, "kill")
		if res.Acked < rounds {
			t.Errorf("only %d messages acknowledged over %d rounds: the load did not run", res.Acked, rounds)
		}
	})
}

// waitSendError waits for a send attempt started after since that failed
// as want (an errClass), and returns its error.
func waitSendError(t *testing.T, h *history.History, since time.Time, want string) string {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		for _, s := range h.Sends() {
			if !s.Acked && !s.Start.Before(since) && strings.HasPrefix(s.Err, want+":") {
				return s.Err
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, s := range h.Sends() {
				if !s.Acked && !s.Start.Before(since) {
					seen = append(seen, s.Err)
				}
			}
			t.Fatalf("no send failed with %q within %v; failures seen: %q", want, waitTimeout, seen[:min(len(seen), 5)])
		}
		<-time.After(20 * time.Millisecond) // polling a condition, with a deadline
	}
}

// logRecoveries logs how long sends took to succeed again after each fault
// of kind: the median, the 99th percentile and the longest. It returns
// them in the faults' order.
func logRecoveries(t *testing.T, h *history.History, kind string) []time.Duration {
	t.Helper()
	var ds []time.Duration
	for _, r := range h.Recoveries(kind) {
		if !r.Recovered {
			t.Errorf("sends never succeeded again after %s at %v", r.Fault.What, r.Fault.At)
			continue
		}
		ds = append(ds, r.After)
	}
	if len(ds) == 0 {
		return nil
	}
	sorted := slices.Sorted(slices.Values(ds))
	pct := func(p float64) time.Duration { return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))] }
	within := 0
	all := make([]string, len(sorted))
	for i, d := range sorted {
		if d <= 3*time.Second {
			within++
		}
		all[i] = d.Round(10 * time.Millisecond).String()
	}
	t.Logf("sends succeeded again after %d %s faults: p50 %v, p99 %v, max %v; %d within 3 s; each: %s", len(sorted), kind,
		pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond), within, strings.Join(all, " "))
	return ds
}
