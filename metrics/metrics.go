// Package metrics is huddle's operational telemetry: the Prometheus
// collectors the daemons update, and the optional HTTP listener that serves
// them with health and readiness checks.
//
// Every metric is prefixed huddle_, carries its unit in its name, and uses
// labels with bounded values only: an operation name, a result code, a
// configured group name. A nil *Metrics is valid and records nothing, so
// the daemons need no checks where metrics are off.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the collectors of one process, registered on their own
// registry (never the global one, so tests and embedders stay independent).
//
// Events (an operation finished, a lease expired) are counted as they
// happen; state (connections open, members, messages held) is read from its
// owner at scrape time through the functions given to Server, Registry and
// Groups, so nothing has to be kept in step on the hot path. Registry and
// Groups also decide which daemon's collectors the process serves.
type Metrics struct {
	reg     *prometheus.Registry
	servers serverCollector

	opDuration    *prometheus.HistogramVec
	watchers      prometheus.Gauge
	registrations prometheus.Counter
	expiries      prometheus.Counter
	discovery     *prometheus.CounterVec
}

// New returns collectors registered on a new registry, with the Go runtime
// and process collectors and a huddle_build_info gauge for version.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "huddle_build_info", Help: "Always 1; the version label says which huddle runs.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	m := &Metrics{
		reg: reg,
		opDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "huddle_operation_duration_seconds",
			Help: "Time from reading a request to its last reply frame, by operation and result (ok or the error code). " +
				"Watches are counted when they end.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1},
		}, []string{"op", "result"}),
		watchers:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "huddle_watchers", Help: "Watch operations open now."}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{Name: "huddle_registry_registrations_total", Help: "Successful register operations."}),
		expiries:      prometheus.NewCounter(prometheus.CounterOpts{Name: "huddle_registry_lease_expiries_total", Help: "Leases that lapsed without a renewal."}),
		discovery: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "huddle_discovery_answers_total", Help: "mDNS answers a browsing daemon checked, by result (verified or rejected).",
		}, []string{"result"}),
	}
	// Both results exist from the start, at 0: a counter that appears only
	// after its first event makes rate() and alerts on it see nothing.
	for _, result := range []string{"verified", "rejected"} {
		m.discovery.WithLabelValues(result)
	}
	// The registry's collectors are served once a registry is (Registry),
	// the group daemon's once one is (Groups): a process serves the figures
	// of what runs in it, and none at a constant 0 that an operator would
	// read as "nothing registered" or "no watches" rather than "not here".
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), info,
		m.opDuration, &m.servers)
	return m
}

// Prometheus returns the Prometheus registry the collectors live in.
func (m *Metrics) Prometheus() *prometheus.Registry { return m.reg }

// Operation records one finished operation; result is "ok" or the error
// code's name.
func (m *Metrics) Operation(op, result string, d time.Duration) {
	if m != nil {
		m.opDuration.WithLabelValues(op, result).Observe(d.Seconds())
	}
}

// WatchStarted records a watch that began.
func (m *Metrics) WatchStarted() {
	if m != nil {
		m.watchers.Inc()
	}
}

// WatchDone records a watch's end.
func (m *Metrics) WatchDone() {
	if m != nil {
		m.watchers.Dec()
	}
}

// Registered records a successful register operation.
func (m *Metrics) Registered() {
	if m != nil {
		m.registrations.Inc()
	}
}

// LeaseExpired records a lease that lapsed.
func (m *Metrics) LeaseExpired() {
	if m != nil {
		m.expiries.Inc()
	}
}

// DiscoveryAnswer records an mDNS answer a daemon checked.
func (m *Metrics) DiscoveryAnswer(verified bool) {
	if m == nil {
		return
	}
	result := "rejected"
	if verified {
		result = "verified"
	}
	m.discovery.WithLabelValues(result).Inc()
}

// ServerStats is a QUIC server's state at scrape time.
type ServerStats struct {
	Connections int // open now
	Streams     int // operations being served now, watches included
	Handshakes  int // handshakes in progress
	Retries     int // connection attempts sent a QUIC Retry, ever
}

// Server registers a collector that reads a QUIC server's state at each
// scrape. role ("registry" or "groups") labels it, so huddle up's two
// servers stay apart.
func (m *Metrics) Server(role string, stats func() ServerStats) {
	if m != nil {
		m.servers.add(role, stats)
	}
}

// Registry serves a registry's metrics: a gauge of the groups it lists,
// read through leases at each scrape, and its counters (Registered,
// LeaseExpired). A process calls it once, for the registry it runs.
func (m *Metrics) Registry(leases func() int) {
	if m != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "huddle_registry_leases", Help: "Groups the registry lists now.",
		}, func() float64 { return float64(leases()) }), m.registrations, m.expiries)
	}
}

// GroupStats is one hosted group's state at scrape time. The counters start
// from zero with each epoch (each daemon start), as Prometheus expects of a
// restarted process.
type GroupStats struct {
	Members       int
	Messages      int    // held now
	Bytes         int64  // body bytes held now
	LastSeq       uint64 // messages appended this epoch
	AppendedBytes uint64 // body bytes appended this epoch
	Duplicates    uint64 // retried messages acknowledged without storing
	Evicted       uint64 // messages retention dropped
}

// Groups serves a group daemon's metrics: a collector that asks stats for
// every hosted group (by name, a bounded label: the operator configures
// the groups) at each scrape, and the watches (WatchStarted) and mDNS
// answers (DiscoveryAnswer) it counts. A process calls it once, for the
// group daemon it runs.
func (m *Metrics) Groups(stats func() map[string]GroupStats) {
	if m != nil {
		m.reg.MustRegister(&groupCollector{stats: stats}, m.watchers, m.discovery)
	}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descConns      = desc("huddle_connections", "QUIC connections open now.", "server")
	descStreams    = desc("huddle_streams_in_flight", "Operations (streams) being served now, watches included.", "server")
	descHandshakes = desc("huddle_handshakes_in_progress", "QUIC handshakes in progress.", "server")
	descRetries    = desc("huddle_handshake_retries_total", "Connection attempts sent a QUIC Retry (address validation under load).", "server")

	descGroups     = desc("huddle_groups", "Groups hosted.")
	descMembers    = desc("huddle_group_members", "Members of the group.", "group")
	descHeld       = desc("huddle_group_messages", "Messages the group holds now.", "group")
	descHeldBytes  = desc("huddle_group_message_bytes", "Body bytes the group holds now.", "group")
	descAppended   = desc("huddle_messages_appended_total", "Messages stored, by group.", "group")
	descAppendedB  = desc("huddle_message_bytes_appended_total", "Message body bytes stored, by group.", "group")
	descDuplicates = desc("huddle_messages_duplicate_total", "Sent messages whose ID was already stored (retries), by group.", "group")
	descEvicted    = desc("huddle_messages_evicted_total", "Messages retention dropped, by group.", "group")
)

// serverCollector reads every QUIC server of the process (huddle up has
// two) at scrape time, each under its role label.
type serverCollector struct {
	mu      sync.Mutex
	roles   []string
	servers []func() ServerStats
}

func (c *serverCollector) add(role string, stats func() ServerStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.roles = append(c.roles, role)
	c.servers = append(c.servers, stats)
}

func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConns
	ch <- descStreams
	ch <- descHandshakes
	ch <- descRetries
}

func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	roles, servers := c.roles, c.servers
	c.mu.Unlock()
	for i, stats := range servers {
		s, role := stats(), roles[i]
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(s.Connections), role)
		ch <- prometheus.MustNewConstMetric(descStreams, prometheus.GaugeValue, float64(s.Streams), role)
		ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.GaugeValue, float64(s.Handshakes), role)
		ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(s.Retries), role)
	}
}

type groupCollector struct{ stats func() map[string]GroupStats }

func (c *groupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descGroups, descMembers, descHeld, descHeldBytes, descAppended, descAppendedB, descDuplicates, descEvicted} {
		ch <- d
	}
}

func (c *groupCollector) Collect(ch chan<- prometheus.Metric) {
	all := c.stats()
	ch <- prometheus.MustNewConstMetric(descGroups, prometheus.GaugeValue, float64(len(all)))
	for name, s := range all {
		for _, v := range []struct {
			d *prometheus.Desc
			t prometheus.ValueType
			v float64
		}{
			{descMembers, prometheus.GaugeValue, float64(s.Members)},
			{descHeld, prometheus.GaugeValue, float64(s.Messages)},
			{descHeldBytes, prometheus.GaugeValue, float64(s.Bytes)},
			{descAppended, prometheus.CounterValue, float64(s.LastSeq)},
			{descAppendedB, prometheus.CounterValue, float64(s.AppendedBytes)},
			{descDuplicates, prometheus.CounterValue, float64(s.Duplicates)},
			{descEvicted, prometheus.CounterValue, float64(s.Evicted)},
		} {
			ch <- prometheus.MustNewConstMetric(v.d, v.t, v.v, name)
		}
	}
}
