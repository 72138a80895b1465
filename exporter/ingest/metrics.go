package ingest

import (
	"sync"
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
	lag      *lagHistogram
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
		lag: newLagHistogram(),
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
	lag                                        *lagSource
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
		lag:          m.lag.source(s),
		last:         m.last.WithLabelValues(string(s)),
	}
}

// lagBuckets are herd_audit_event_lag_seconds' upper bounds.
var lagBuckets = [...]float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

// lagHistogram is herd_audit_event_lag_seconds. A batch counts its events'
// lags in a lagCounts of its own and adds them once (lagSource.add): a
// client_golang histogram's Observe per event would make concurrent batches
// on different cores take turns on the same few cache lines, hundreds of
// times per batch.
type lagHistogram struct {
	desc    *prometheus.Desc
	sources []lagSource // one per Sources entry
}

type lagSource struct {
	name string
	used atomic.Bool // a pipeline accounts this source: its series is shown
	mu   sync.Mutex
	lagCounts
	_ [64]byte // one cache line per source
}

// lagCounts are lag observations: per bucket (the last is +Inf), their
// number and their sum in seconds.
type lagCounts struct {
	buckets [len(lagBuckets) + 1]uint64
	count   uint64
	sum     float64
}

func newLagHistogram() *lagHistogram {
	h := &lagHistogram{desc: prometheus.NewDesc("herd_audit_event_lag_seconds",
		"Time from an event's stageTimestamp to herd accounting it.", []string{"source"}, nil),
		sources: make([]lagSource, len(Sources))}
	for i, s := range Sources {
		h.sources[i].name = string(s)
	}
	return h
}

func (h *lagHistogram) source(s Source) *lagSource {
	for i := range h.sources {
		if h.sources[i].name == string(s) {
			h.sources[i].used.Store(true)
			return &h.sources[i]
		}
	}
	panic("ingest: unknown source " + string(s))
}

// observe counts one lag of v seconds, as a client_golang histogram does:
// in the first bucket whose upper bound is at least v.
func (c *lagCounts) observe(v float64) {
	i := 0
	for i < len(lagBuckets) && v > lagBuckets[i] {
		i++
	}
	c.buckets[i]++
	c.count++
	c.sum += v
}

// add adds a batch's counts.
func (s *lagSource) add(c *lagCounts) {
	if c.count == 0 {
		return
	}
	s.mu.Lock()
	for i, n := range c.buckets {
		s.buckets[i] += n
	}
	s.count += c.count
	s.sum += c.sum
	s.mu.Unlock()
}

func (h *lagHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect emits one histogram per source a pipeline accounts, as the
// HistogramVec it replaces showed the children the pipeline made.
func (h *lagHistogram) Collect(ch chan<- prometheus.Metric) {
	for i := range h.sources {
		s := &h.sources[i]
		s.mu.Lock()
		c := s.lagCounts
		s.mu.Unlock()
		if !s.used.Load() {
			continue
		}
		buckets := make(map[float64]uint64, len(lagBuckets))
		var acc uint64
		for j, ub := range lagBuckets {
			acc += c.buckets[j]
			buckets[ub] = acc
		}
		ch <- prometheus.MustNewConstHistogram(h.desc, c.count, c.sum, buckets, s.name)
	}
}
