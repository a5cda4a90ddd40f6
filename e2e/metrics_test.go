//go:build linux

package e2e

import (
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var metricsLine = regexp.MustCompile(`^  metrics: http://(\S+)/metrics`)

// metricsAddr returns the address a daemon started with --metrics printed.
// metricsRecord is the metrics address in a JSON log.
var metricsRecord = regexp.MustCompile(`"msg":"metrics listening","url":"http://([^/"]+)/metrics"`)

func metricsAddr(t *testing.T, d *daemon) string {
	t.Helper()
	var addr string
	// With --log-format json the address is in a log record on stderr.
	out, re := d.stdout, metricsLine
	if slices.Contains(d.args, "json") {
		out, re = d.stderr, metricsRecord
	}
	out.waitFor(waitTimeout, func(lines []string) bool {
		for _, l := range lines {
			if m := re.FindStringSubmatch(l); m != nil {
				addr = m[1]
				return true
			}
		}
		return false
	})
	if addr == "" {
		t.Fatalf("%s printed no metrics address:\n%s\n%s", d.name, d.stdout, d.stderr)
	}
	return addr
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape reads /metrics with Prometheus's own text parser.
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

// sample returns the value of the metric name whose labels include the
// given pairs (a histogram's sample count), and whether there is one.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetrics scrapes a running huddle up during a session of real client
// commands and checks that the counters moved as the session implies, and
// that health and readiness answer as the daemon's state implies.
func TestMetrics(t *testing.T) {
	d := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(t.TempDir(), "state"),
		"--metrics", "127.0.0.1:0", "--log-format", "json")
	addr := metricsAddr(t, d)
	if code, body := httpGet(t, "http://"+addr+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if !eventually(t, waitTimeout, func() bool { code, _ := httpGet(t, "http://"+addr+"/readyz"); return code == 200 }) {
		t.Fatal("/readyz never became ready")
	}

	alice := newUser(t, "alice", d.registry)
	bob := newUser(t, "bob", d.registry)
	carol := newUser(t, "carol", d.registry)
	alice.join(t, "lobby")
	bob.join(t, "lobby")
	const sends = 5
	for range sends {
		alice.ok(t, "send", "lobby", "hello")
	}
	bob.okInput(t, "one\ntwo\nthree\n", "send", "lobby")
	bob.ok(t, "fetch", "lobby")
	if r := carol.run(t, "send", "lobby", "let me in"); r.code != 1 {
		t.Fatalf("carol's send: %s", r)
	}

	fams := scrape(t, addr)
	for _, c := range []struct {
		name    string
		labels  []string
		want    float64
		atLeast bool
	}{
		{"huddle_messages_appended_total", []string{"group", "lobby"}, sends + 3, false},
		{"huddle_message_bytes_appended_total", []string{"group", "lobby"}, sends*5 + 3 + 3 + 5, false},
		{"huddle_group_messages", []string{"group", "lobby"}, sends + 3, false},
		{"huddle_group_members", []string{"group", "lobby"}, 2, false},
		{"huddle_groups", nil, 1, false},
		{"huddle_registry_leases", nil, 1, false},
		{"huddle_registry_registrations_total", nil, 1, true},
		{"huddle_operation_duration_seconds", []string{"op", "join", "result", "ok"}, 2, false},
		{"huddle_operation_duration_seconds", []string{"op", "send", "result", "ok"}, sends + 1, true},
		{"huddle_operation_duration_seconds", []string{"op", "send", "result", "not_member"}, 1, false},
		{"huddle_operation_duration_seconds", []string{"op", "fetch", "result", "ok"}, 1, false},
		{"huddle_operation_duration_seconds", []string{"op", "list", "result", "ok"}, 1, true},
		{"huddle_build_info", nil, 1, false},
	} {
		got, ok := sample(fams, c.name, c.labels...)
		switch {
		case !ok:
			t.Errorf("no %s%v in /metrics", c.name, c.labels)
		case c.atLeast && got < c.want, !c.atLeast && got != c.want:
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"huddle_connections", "huddle_streams_in_flight", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s in /metrics", name)
		}
	}
	for name := range fams {
		if !strings.HasPrefix(name, "huddle_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") &&
			!strings.HasPrefix(name, "promhttp_") {
			t.Errorf("metric %s lacks the huddle_ prefix", name)
		}
	}
	logs := d.stderr.String()
	for _, secret := range []string{"hello", "let me in"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the daemon logged a message body (%q)", secret)
		}
	}
	d.stop(t)
}

// TestReadiness follows a group daemon's /readyz as its registry goes away
// and comes back: ready only while its groups are registered.
func TestReadiness(t *testing.T) {
	state := t.TempDir()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--lease", "1s", "--state-dir", filepath.Join(state, "reg"))
	gd := startDaemon(t, "serve", "--listen", "127.0.0.1:0", "--group", "lobby", "--registry", reg.registry,
		"--state-dir", filepath.Join(state, "groups"), "--metrics", "127.0.0.1:0")
	addr := metricsAddr(t, gd)
	ready := func(want int) bool {
		return eventually(t, waitTimeout, func() bool { code, _ := httpGet(t, "http://"+addr+"/readyz"); return code == want })
	}
	if !ready(200) {
		t.Fatal("group daemon never ready while its registry runs")
	}
	reg.stop(t)
	if !ready(503) {
		t.Fatal("group daemon still ready with its registry gone")
	}
	if code, _ := httpGet(t, "http://"+addr+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d while the registry is away; the process is alive", code)
	}
	// The registry comes back on the same address with the same key.
	startDaemon(t, "registry", "--listen", reg.registry, "--lease", "1s", "--state-dir", filepath.Join(state, "reg"))
	if !ready(200) {
		t.Fatal("group daemon not ready again after its registry returned")
	}
	gd.stop(t)
}
