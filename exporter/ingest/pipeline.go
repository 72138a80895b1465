// Package ingest feeds audit events into the ledger: the POST /audit
// endpoint the apiserver's webhook backend and log shippers call, and the
// lines of followed audit log files. It deduplicates re-sent events and
// counts everything it rejects.
package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/audit"
)

// Pipeline accounts decoded events: dedup, then the ledger, then the
// self-metrics. It is safe for concurrent use.
type Pipeline struct {
	ledger  *accounting.Ledger
	dedup   *Dedup
	metrics *Metrics
	sources map[Source]*sourceMetrics
	now     func() time.Time
}

// NewPipeline wires the ledger, dedup and metrics.
func NewPipeline(l *accounting.Ledger, d *Dedup, m *Metrics) *Pipeline {
	p := &Pipeline{ledger: l, dedup: d, metrics: m, sources: map[Source]*sourceMetrics{}, now: time.Now}
	for _, s := range Sources {
		p.sources[s] = m.source(s)
	}
	return p
}

// ErrInvalidUTF8 marks an event with a field that can become a label value
// (verb, username, resource, API group, source IP, field-selector node) and
// is not valid UTF-8. JSON requires UTF-8 and the apiserver never sends
// anything else; one such value in a const metric would fail every scrape
// of /metrics, so the event is counted malformed instead.
var ErrInvalidUTF8 = fmt.Errorf("%w: a field herd uses as a label value is not valid UTF-8", audit.ErrMalformed)

// Counts is what became of the events of one body.
type Counts struct {
	Accounted, Duplicate, Malformed, Oversized int
	// Unrecognized and Skipped are audit.Result's: objects that are not
	// audit events nor known envelopes, and entries that say they are not
	// audit events.
	Unrecognized, Skipped int
	// Problem is the first malformed or oversized event, for logs; nil when
	// every event was accounted or a duplicate.
	Problem error
}

// AccountBody decodes body with d (DecodeNDJSON for SourceNDJSON, DecodeBody
// otherwise) and accounts its events under src. The error is the
// decoder's: a body that cannot be read past some point, counted as one more
// malformed input (NDJSON counts each bad line instead); events before that
// point are accounted. d is not safe for concurrent use: keep one per
// goroutine or in a pool.
func (p *Pipeline) AccountBody(d *audit.Decoder, src Source, body []byte) (Counts, error) {
	b := batch{p: p, m: p.sources[src], now: p.now()}
	var (
		res audit.Result
		err error
	)
	if src == SourceNDJSON {
		res, err = d.DecodeNDJSON(body, b.event)
	} else {
		res, err = d.DecodeBody(body, b.event)
	}
	if err != nil && src != SourceNDJSON && !errors.Is(err, audit.ErrOversized) {
		res.Malformed++
	}
	b.finish(res)
	c := Counts{Accounted: b.accounted, Duplicate: b.dupes, Malformed: res.Malformed + b.invalid, Oversized: res.Oversized,
		Unrecognized: res.Unrecognized, Skipped: res.Skipped, Problem: res.Problem}
	if c.Problem == nil && b.invalid > 0 {
		c.Problem = ErrInvalidUTF8
	}
	return c, err
}

// batch accounts the events of one body or one line. Counters are added once
// per batch rather than once per event.
type batch struct {
	p                *Pipeline
	m                *sourceMetrics
	now              time.Time
	accounted, dupes int
	invalid          int // events refused for invalid UTF-8 (counted malformed)
	newest           int64
	lag              lagCounts
}

func (b *batch) event(e *audit.Event) {
	if !labelSafe(e) {
		b.invalid++
		return
	}
	if b.p.dedup.SeenAt(e.AuditID, e.Stage, e.RequestKey(), b.now) {
		b.dupes++
		return
	}
	// The ledger returns the time it accounted the event at: a future
	// stageTimestamp is bounded by the receive time, so one event stamped
	// ahead cannot move herd_audit_last_event_timestamp_seconds ahead and
	// mask a stalled feed.
	at := b.p.ledger.Account(e)
	b.accounted++
	if ts := min(e.StageTimestampNanos, at); ts > 0 {
		b.lag.observe(max(0, float64(b.now.UnixNano()-ts)/1e9))
		if ts > b.newest {
			b.newest = ts
		}
	}
}

// labelSafe reports whether every field of e that can end up in a label
// value is valid UTF-8. They are nearly always ASCII: one pass ORs their
// bytes together, and only a field with a byte past 0x7f is checked in full.
func labelSafe(e *audit.Event) bool {
	if ascii(e.Verb)|ascii(e.User)|ascii(e.Resource)|ascii(e.APIGroup)|ascii(e.SourceIP)|ascii(e.Query.FieldSelectorNode) == 0 {
		return true
	}
	return utf8.Valid(e.Verb) && utf8.Valid(e.User) && utf8.Valid(e.Resource) && utf8.Valid(e.APIGroup) &&
		utf8.Valid(e.SourceIP) && utf8.Valid(e.Query.FieldSelectorNode)
}

// ascii is 0 when every byte of b is ASCII: the OR of b's bytes, eight at a
// time, masked to their top bits.
func ascii(b []byte) uint64 {
	var acc uint64
	for len(b) >= 8 {
		acc |= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	for _, c := range b {
		acc |= uint64(c)
	}
	return acc & 0x8080808080808080
}

func (b *batch) finish(res audit.Result) {
	b.m.accounted.Add(float64(b.accounted))
	b.m.duplicate.Add(float64(b.dupes))
	b.m.malformed.Add(float64(res.Malformed + b.invalid))
	b.m.oversized.Add(float64(res.Oversized))
	b.m.unrecognized.Add(float64(res.Unrecognized))
	b.m.skipped.Add(float64(res.Skipped))
	b.m.bytes.Add(float64(res.Bytes))
	b.m.lag.add(&b.lag)
	if b.newest > 0 {
		b.m.observeNewest(b.newest)
	}
}
