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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the collectors of one process, registered on their own
// registry (never the global one, so tests and embedders stay independent).
type Metrics struct {
	reg *prometheus.Registry

	opDuration    *prometheus.HistogramVec
	connections   prometheus.Gauge
	connsTotal    prometheus.Counter
	connsRefused  *prometheus.CounterVec
	streams       prometheus.Gauge
	watchers      prometheus.Gauge
	appended      *prometheus.CounterVec
	appendedBytes *prometheus.CounterVec
	duplicates    *prometheus.CounterVec
	limitsHit     *prometheus.CounterVec

	leases        prometheus.Gauge
	registrations prometheus.Counter
	expiries      prometheus.Counter

	discovery *prometheus.CounterVec
}

// New returns collectors registered on a new registry, with the Go runtime
// and process collectors and a huddle_build_info gauge for version.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "huddle_build_info", Help: "Always 1; the version label says which huddle runs.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	f(info)

	m := &Metrics{
		reg: reg,
		opDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "huddle_operation_duration_seconds",
			Help:    "Time from reading a request to its last reply frame, by operation and result (ok or the error code). Watches are not included.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1},
		}, []string{"op", "result"}),
		connections:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "huddle_connections", Help: "QUIC connections open now."}),
		connsTotal:   prometheus.NewCounter(prometheus.CounterOpts{Name: "huddle_connections_total", Help: "QUIC connections accepted."}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "huddle_connections_refused_total", Help: "QUIC connections closed at once, by reason."}, []string{"reason"}),
		streams:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "huddle_streams_in_flight", Help: "Operations (streams) being served now, watches included."}),
		watchers:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "huddle_watchers", Help: "Watch operations open now."}),
		appended:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "huddle_messages_appended_total", Help: "Messages stored, by group."}, []string{"group"}),
		appendedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "huddle_message_bytes_appended_total", Help: "Message body bytes stored, by group.",
		}, []string{"group"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "huddle_messages_duplicate_total", Help: "Sent messages whose ID was already stored (retries), by group.",
		}, []string{"group"}),
		limitsHit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "huddle_limits_hit_total", Help: "Requests refused because a limit was hit, by limit.",
		}, []string{"limit"}),
		leases:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "huddle_registry_leases", Help: "Groups listed by the registry now."}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{Name: "huddle_registry_registrations_total", Help: "Successful register operations."}),
		expiries:      prometheus.NewCounter(prometheus.CounterOpts{Name: "huddle_registry_lease_expiries_total", Help: "Leases that lapsed without a renewal."}),
		discovery: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "huddle_discovery_answers_total", Help: "mDNS answers seen by a browsing daemon, by result (verified or rejected).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{
		m.opDuration, m.connections, m.connsTotal, m.connsRefused, m.streams, m.watchers, m.appended,
		m.appendedBytes, m.duplicates, m.limitsHit, m.leases, m.registrations, m.expiries, m.discovery,
	} {
		f(c)
	}
	return m
}

// Registry returns the Prometheus registry the collectors live in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Operation records one finished operation.
func (m *Metrics) Operation(op, result string, d time.Duration) {
	if m != nil {
		m.opDuration.WithLabelValues(op, result).Observe(d.Seconds())
	}
}

// ConnOpened and ConnClosed track open connections.
func (m *Metrics) ConnOpened() {
	if m != nil {
		m.connections.Inc()
		m.connsTotal.Inc()
	}
}

// ConnClosed records a connection's end.
func (m *Metrics) ConnClosed() {
	if m != nil {
		m.connections.Dec()
	}
}

// ConnRefused records a connection closed at once, for reason (a bounded
// word such as "per_source_limit").
func (m *Metrics) ConnRefused(reason string) {
	if m != nil {
		m.connsRefused.WithLabelValues(reason).Inc()
	}
}

// StreamStarted and StreamDone track operations in flight.
func (m *Metrics) StreamStarted() {
	if m != nil {
		m.streams.Inc()
	}
}

// StreamDone records an operation's end.
func (m *Metrics) StreamDone() {
	if m != nil {
		m.streams.Dec()
	}
}

// WatchStarted and WatchDone track open watches.
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

// Appended records messages stored in group: n new ones of bytes total, and
// dups retries acknowledged without storing.
func (m *Metrics) Appended(group string, n, bytes, dups int) {
	if m == nil {
		return
	}
	if n > 0 {
		m.appended.WithLabelValues(group).Add(float64(n))
		m.appendedBytes.WithLabelValues(group).Add(float64(bytes))
	}
	if dups > 0 {
		m.duplicates.WithLabelValues(group).Add(float64(dups))
	}
}

// LimitHit records a request refused by limit (a bounded name such as
// "message_bytes" or "send_rate").
func (m *Metrics) LimitHit(limit string) {
	if m != nil {
		m.limitsHit.WithLabelValues(limit).Inc()
	}
}

// Leases sets how many groups the registry lists.
func (m *Metrics) Leases(n int) {
	if m != nil {
		m.leases.Set(float64(n))
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

// GroupStats is what a group's log reports at scrape time.
type GroupStats struct {
	Members  int
	Messages int
	Bytes    int64
	LastSeq  uint64
	Evicted  uint64
}

// Groups registers a collector that asks stats for every hosted group at
// each scrape, so gauges such as members and held messages are never stale
// and cost nothing between scrapes.
func (m *Metrics) Groups(stats func() map[string]GroupStats) {
	if m != nil {
		m.reg.MustRegister(&groupCollector{stats: stats})
	}
}

var (
	descMembers  = prometheus.NewDesc("huddle_group_members", "Members of the group.", []string{"group"}, nil)
	descHeld     = prometheus.NewDesc("huddle_group_messages", "Messages the group holds now.", []string{"group"}, nil)
	descHeldB    = prometheus.NewDesc("huddle_group_message_bytes", "Body bytes the group holds now.", []string{"group"}, nil)
	descLastSeq  = prometheus.NewDesc("huddle_group_last_seq", "The group's last sequence number.", []string{"group"}, nil)
	descEvicted  = prometheus.NewDesc("huddle_group_evicted_messages_total", "Messages retention dropped.", []string{"group"}, nil)
	descGroupsUp = prometheus.NewDesc("huddle_groups", "Groups hosted.", nil, nil)
)

type groupCollector struct{ stats func() map[string]GroupStats }

func (c *groupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMembers, descHeld, descHeldB, descLastSeq, descEvicted, descGroupsUp} {
		ch <- d
	}
}

func (c *groupCollector) Collect(ch chan<- prometheus.Metric) {
	all := c.stats()
	ch <- prometheus.MustNewConstMetric(descGroupsUp, prometheus.GaugeValue, float64(len(all)))
	for name, s := range all {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(s.Members), name)
		ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, float64(s.Messages), name)
		ch <- prometheus.MustNewConstMetric(descHeldB, prometheus.GaugeValue, float64(s.Bytes), name)
		ch <- prometheus.MustNewConstMetric(descLastSeq, prometheus.GaugeValue, float64(s.LastSeq), name)
		ch <- prometheus.MustNewConstMetric(descEvicted, prometheus.CounterValue, float64(s.Evicted), name)
	}
}
