package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scrape fetches /metrics from addr and parses it with Prometheus's own
// text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no %s with labels %v", name, labels)
	return 0
}

func TestServe(t *testing.T) {
	m := New("test")
	var ready atomic.Bool
	s, err := Listen(HTTPConfig{Addr: "127.0.0.1:0", Metrics: m, Ready: func() error {
		if !ready.Load() {
			return errors.New("groups not registered yet")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	addr := s.Addr().String()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "not registered") {
		t.Errorf("/readyz before ready = %d %q", code, body)
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready = %d", code)
	}

	m.Operation("send", "ok", 300*time.Microsecond)
	m.Operation("send", "ok", 2*time.Millisecond)
	m.Operation("send", "not_member", time.Millisecond)
	m.WatchStarted()
	m.WatchStarted()
	m.WatchDone()
	m.Registered()
	m.DiscoveryAnswer(false)
	m.Server("groups", func() ServerStats { return ServerStats{Connections: 3, Streams: 5} })
	m.Server("registry", func() ServerStats { return ServerStats{Connections: 1} })
	m.Registry(func() int { return 7 })
	m.Groups(func() map[string]GroupStats {
		return map[string]GroupStats{"lobby": {Members: 2, Messages: 3, Bytes: 30, LastSeq: 4, AppendedBytes: 40, Duplicates: 1, Evicted: 1}}
	})
	fams := scrape(t, addr)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"huddle_operation_duration_seconds", []string{"op", "send", "result", "ok"}, 2},
		{"huddle_operation_duration_seconds", []string{"op", "send", "result", "not_member"}, 1},
		{"huddle_watchers", nil, 1},
		{"huddle_registry_registrations_total", nil, 1},
		{"huddle_discovery_answers_total", []string{"result", "rejected"}, 1},
		{"huddle_connections", []string{"server", "groups"}, 3},
		{"huddle_streams_in_flight", []string{"server", "groups"}, 5},
		{"huddle_connections", []string{"server", "registry"}, 1},
		{"huddle_registry_leases", nil, 7},
		{"huddle_group_members", []string{"group", "lobby"}, 2},
		{"huddle_group_messages", []string{"group", "lobby"}, 3},
		{"huddle_messages_appended_total", []string{"group", "lobby"}, 4},
		{"huddle_message_bytes_appended_total", []string{"group", "lobby"}, 40},
		{"huddle_messages_duplicate_total", []string{"group", "lobby"}, 1},
		{"huddle_messages_evicted_total", []string{"group", "lobby"}, 1},
		{"huddle_build_info", []string{"version", "test"}, 1},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// A nil *Metrics records nothing and does not panic, so daemons need no
// checks where metrics are off.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Operation("send", "ok", time.Millisecond)
	m.WatchStarted()
	m.WatchDone()
	m.Registered()
	m.LeaseExpired()
	m.DiscoveryAnswer(true)
	m.Server("x", nil)
	m.Registry(nil)
	m.Groups(nil)
}

// TestDiscoveryAnswersFromTheStart: huddle_discovery_answers_total has both
// results, at 0, before the first mDNS answer (it used to appear only after
// one, so a dashboard or alert saw no series at all), as soon as a group
// daemon (the one that browses) is served.
func TestDiscoveryAnswersFromTheStart(t *testing.T) {
	m := New("test")
	m.Groups(func() map[string]GroupStats { return nil })
	fams, err := m.Prometheus().Gather()
	if err != nil {
		t.Fatal(err)
	}
	results := map[string]bool{}
	for _, f := range fams {
		if f.GetName() != "huddle_discovery_answers_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && m.GetCounter().GetValue() == 0 {
					results[l.GetValue()] = true
				}
			}
		}
	}
	if !results["verified"] || !results["rejected"] {
		t.Errorf("huddle_discovery_answers_total at start has results %v, want verified and rejected at 0", results)
	}
}

// TestREADMENamesEveryMetric: README's "Metrics" list is where operators
// learn what to scrape and alert on; huddle_handshake_retries_total was
// served and named nowhere. Every huddle_ metric a daemon can serve (a
// registry's, a group daemon's, a cell member's) must be named there.
func TestREADMENamesEveryMetric(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := New("test")
	m.Server("groups", func() ServerStats { return ServerStats{} })
	m.Registry(func() int { return 0 })
	m.Groups(func() map[string]GroupStats { return map[string]GroupStats{"lobby": {}} })
	m.Cell(func() CellStats { return CellStats{} })
	m.Operation("send", "ok", time.Millisecond)
	families, err := m.Prometheus().Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, "huddle_") {
			continue
		}
		n++
		if !bytes.Contains(readme, []byte("`"+name+"`")) && !bytes.Contains(readme, []byte("`"+name+"{")) {
			t.Errorf("README.md does not name the metric %s (%s)", name, f.GetHelp())
		}
	}
	if n < 25 {
		t.Fatalf("gathered only %d huddle_ metrics", n)
	}
}
