package ingest

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Source is where events came from: the label value of herd_audit_* series.
type Source string

const (
	SourceWebhook  Source = "webhook"  // POST /audit, EventList or JSON
	SourceNDJSON   Source = "ndjson"   // POST /audit, application/x-ndjson
	SourceFirehose Source = "firehose" // POST /audit from Kinesis Data Firehose (X-Amz-Firehose-* headers)
	SourceFile     Source = "file"     // --audit.log-file
)

// Sources are every source label value, in exposition order.
var Sources = []Source{SourceWebhook, SourceNDJSON, SourceFirehose, SourceFile}

// Results of herd_audit_events_total.
const (
	ResultAccounted = "accounted"
	ResultDuplicate = "duplicate"
	ResultMalformed = "malformed"
	ResultOversized = "oversized"
	// ResultUnrecognized counts top-level objects that are neither an
	// audit event nor an envelope herd knows (a misconfigured shipper).
	ResultUnrecognized = "unrecognized"
	// ResultSkipped counts entries that say they are not audit events:
	// other Azure log categories, CloudWatch control messages, Cloud Audit
	// Logs of other services.
	ResultSkipped = "skipped"
)

// Metrics are the ingest self-metrics. They are ordinary client_golang
// collectors: they describe herd itself, not cluster objects, so nothing
// about them goes stale.
type Metrics struct {
	events   *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	lag      *prometheus.HistogramVec
	last     *prometheus.GaugeVec
	requests *prometheus.CounterVec
}

// NewMetrics registers the ingest metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_audit_events_total",
			Help: "Audit events received, by source and what became of them (accounted, duplicate, malformed, oversized, unrecognized, skipped).",
		}, []string{"source", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_audit_bytes_total",
			Help: "Bytes of audit input read, by source.",
		}, []string{"source"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herd_audit_event_lag_seconds",
			Help:    "Time from an event's stageTimestamp to herd accounting it.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"source"}),
		last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herd_audit_last_event_timestamp_seconds",
			Help: "stageTimestamp of the newest event accounted, by source.",
		}, []string{"source"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_audit_requests_total",
			Help: "Requests to the audit ingest endpoint, by source and HTTP status code.",
		}, []string{"source", "code"}),
	}
	reg.MustRegister(m.events, m.bytes, m.lag, m.last, m.requests)
	for _, s := range Sources {
		for _, r := range []string{ResultAccounted, ResultDuplicate, ResultMalformed, ResultOversized, ResultUnrecognized, ResultSkipped} {
			m.events.WithLabelValues(string(s), r)
		}
		m.bytes.WithLabelValues(string(s))
	}
	return m
}

// sourceMetrics are one source's children, looked up once.
type sourceMetrics struct {
	accounted, duplicate, malformed, oversized prometheus.Counter
	unrecognized, skipped                      prometheus.Counter
	bytes                                      prometheus.Counter
	lag                                        prometheus.Observer
	last                                       prometheus.Gauge
	newest                                     atomic.Int64 // guards last against an older concurrent batch
}

// observeNewest raises the last-event gauge to ts (Unix ns) if it is newer.
func (s *sourceMetrics) observeNewest(ts int64) {
	for {
		cur := s.newest.Load()
		if ts <= cur {
			return
		}
		if s.newest.CompareAndSwap(cur, ts) {
			s.last.Set(float64(ts) / 1e9)
			return
		}
	}
}

func (m *Metrics) source(s Source) *sourceMetrics {
	return &sourceMetrics{
		accounted:    m.events.WithLabelValues(string(s), ResultAccounted),
		duplicate:    m.events.WithLabelValues(string(s), ResultDuplicate),
		malformed:    m.events.WithLabelValues(string(s), ResultMalformed),
		oversized:    m.events.WithLabelValues(string(s), ResultOversized),
		unrecognized: m.events.WithLabelValues(string(s), ResultUnrecognized),
		skipped:      m.events.WithLabelValues(string(s), ResultSkipped),
		bytes:        m.bytes.WithLabelValues(string(s)),
		lag:          m.lag.WithLabelValues(string(s)),
		last:         m.last.WithLabelValues(string(s)),
	}
}
