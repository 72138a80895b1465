package ingest_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/exporter/ingest"
)

func newPipeline(t *testing.T) (*ingest.Pipeline, *prometheus.Registry) {
	t.Helper()
	cls, err := classify.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ledger, err := accounting.New(accounting.DefaultConfig(), cls, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ingest.NewPipeline(ledger, ingest.NewDedup(time.Minute, 1000), ingest.NewMetrics(reg)), reg
}

// TestLineSink: log lines are counted like webhook events, under source
// file, and a bad line's error says why.
func TestLineSink(t *testing.T) {
	p, reg := newPipeline(t)
	s := p.NewLineSink(ingest.SourceFile, 4<<10)
	good := ev()
	lines := []struct {
		line string
		err  error
	}{
		{good, nil},
		{good, nil}, // a duplicate is not an error
		{"", nil},   // nor is a blank line
		{`{"auditID":`, audit.ErrMalformed},
		{ev(`"level"`, `"x":"`+string(make([]byte, 5<<10))+`","level"`), audit.ErrOversized},
		{ev(`system:node:node-1`, "system:node:\xff"), ingest.ErrInvalidUTF8},
		{ev(), nil},
	}
	total := 0
	for i, l := range lines {
		err := s.Line([]byte(l.line))
		if (err == nil) != (l.err == nil) || (l.err != nil && !errors.Is(err, l.err)) {
			t.Errorf("line %d: error %v, want %v", i, err, l.err)
		}
		total += len(l.line) + 1
	}
	if !errors.Is(ingest.ErrInvalidUTF8, audit.ErrMalformed) {
		t.Error("ErrInvalidUTF8 is not ErrMalformed")
	}
	wantCounts(t, reg, map[string]float64{"events{file,accounted}": 2, "events{file,duplicate}": 1,
		"events{file,malformed}": 2, "events{file,oversized}": 1, "bytes{file}": float64(total)})
}

// TestAccountBody: the entry point the handler and the hot-path benchmark
// share reports what it counted.
func TestAccountBody(t *testing.T) {
	p, reg := newPipeline(t)
	var d audit.Decoder
	body := []byte(list(ev(), ev(), `{"kind":"Pod"}`, ev(`"verb":"list"`, "\"verb\":\"\xff\"")))
	c, err := p.AccountBody(&d, ingest.SourceWebhook, body)
	if err != nil || c.Accounted != 2 || c.Duplicate != 0 || c.Malformed != 2 || c.Oversized != 0 || c.Problem == nil {
		t.Fatalf("AccountBody = %+v, %v", c, err)
	}
	c, err = p.AccountBody(&d, ingest.SourceWebhook, body)
	if err != nil || c.Accounted != 0 || c.Duplicate != 2 || c.Malformed != 2 {
		t.Fatalf("again: %+v, %v", c, err)
	}
	c, err = p.AccountBody(&d, ingest.SourceNDJSON, []byte(ev()+"\nnope\n"))
	if err != nil || c.Accounted != 1 || c.Malformed != 1 {
		t.Fatalf("NDJSON: %+v, %v", c, err)
	}
	c, err = p.AccountBody(&d, ingest.SourceWebhook, []byte(list(ev())+"]"))
	if !errors.Is(err, audit.ErrMalformed) || c.Accounted != 1 || c.Malformed != 1 {
		t.Fatalf("trailing garbage: %+v, %v", c, err)
	}
	wantCounts(t, reg, map[string]float64{"events{webhook,accounted}": 3, "events{webhook,duplicate}": 2,
		"events{webhook,malformed}": 5, "events{ndjson,accounted}": 1, "events{ndjson,malformed}": 1})
	// Steady state: a known batch allocates nothing but the decode's own.
	body = []byte(list(events(400)...))
	if _, err := p.AccountBody(&d, ingest.SourceWebhook, body); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() { _, _ = p.AccountBody(&d, ingest.SourceWebhook, body) }); n > 0 {
		t.Errorf("AccountBody of a known (duplicate) 400-event batch: %v allocs", n)
	}
}

// TestReusedAuditIDRelists reproduces issue 16.2 in the exporter: a client
// sending one Audit-ID on every request makes 8 WatchList relists, each
// audited at ResponseStarted and ResponseComplete in separate batches;
// herd counts 8 relists (before: 1, every later ResponseStarted taken for a
// stage of the first request), and a re-sent batch is still all duplicates.
func TestReusedAuditIDRelists(t *testing.T) {
	a := newAudit(t, nil)
	event := func(stage string, i int) string {
		return fmt.Sprintf(`{"auditID":"constant-audit-id","stage":%q,"verb":"watch",`+
			`"requestURI":"/api/v1/pods?fieldSelector=spec.nodeName%%3Dnode-1\u0026sendInitialEvents=true\u0026resourceVersionMatch=NotOlderThan\u0026watch=true",`+
			`"user":{"username":"system:node:node-1","groups":["system:nodes","system:authenticated"]},"sourceIPs":["10.0.0.1"],`+
			`"userAgent":"kubelet/v1.36.3 (linux/amd64) kubernetes/herdsim","objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"code":200},`+
			`"requestReceivedTimestamp":"2026-11-23T08:%02d:00.000100Z","stageTimestamp":"2026-11-23T08:%02d:0%d.000000Z"}`, stage, i, i, map[string]int{"ResponseStarted": 0, "ResponseComplete": 9}[stage])
	}
	var batches []string
	for i := 0; i < 8; i++ {
		batches = append(batches, list(event("ResponseStarted", i)), list(event("ResponseComplete", i)))
	}
	for _, b := range batches {
		if code, msg := post(t, a.AuditHandler(), b); code != 200 {
			t.Fatalf("%d %s", code, msg)
		}
	}
	for _, b := range batches[:4] {
		if code, msg := post(t, a.AuditHandler(), b); code != 200 || parseReply(t, msg).Duplicate != 1 {
			t.Fatalf("re-sent: %d %s", code, msg)
		}
	}
	got := herdSeries(t, a)
	if r := sumOf(got, "herd_relists_total", "client=kubelet"); r != 8 {
		t.Errorf("%v kubelet relists, want 8: %v", r, got)
	}
}

// A watch whose ResponseComplete arrives before its ResponseStarted (another
// batch, another replica's re-send), once herd has seen ResponseStarted
// stages, counts once: at its ResponseStarted. Before, it was skipped at
// ResponseComplete (starts were known) and again at ResponseStarted (the
// dedup knew its ResponseComplete): counted zero times. Re-sent batches stay
// duplicates, and a watch whose ResponseStarted herd never sees, after
// starts are known, is not counted.
func TestWatchCompleteBeforeStartCountsOnce(t *testing.T) {
	a := newAudit(t, nil)
	event := func(id, stage string, minute int) string {
		return fmt.Sprintf(`{"auditID":%q,"stage":%q,"verb":"watch",`+
			`"requestURI":"/api/v1/pods?fieldSelector=spec.nodeName%%3Dnode-1\u0026resourceVersion=5\u0026watch=true",`+
			`"user":{"username":"system:node:node-1","groups":["system:nodes","system:authenticated"]},"sourceIPs":["10.0.0.1"],`+
			`"userAgent":"kubelet/v1.36.3 (linux/amd64) kubernetes/herdsim","objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"code":200},`+
			`"requestReceivedTimestamp":"2026-11-23T08:%02d:00.000100Z","stageTimestamp":"2026-11-23T08:%02d:00.500000Z"}`, id, stage, minute, minute)
	}
	batches := []string{
		list(event("first", "ResponseStarted", 1)),  // starts are known from here on
		list(event("late", "ResponseComplete", 2)),  // overtakes its start
		list(event("late", "ResponseStarted", 2)),   // counts it
		list(event("first", "ResponseComplete", 1)), // already counted at its start
		list(event("unseen", "ResponseComplete", 3)),
	}
	for _, b := range append(batches, batches[1:3]...) { // the middle two re-sent
		if code, msg := post(t, a.AuditHandler(), b); code != 200 {
			t.Fatalf("%d %s", code, msg)
		}
	}
	got := herdSeries(t, a)
	if n := sumOf(got, "herd_requests_total", "verb=watch"); n != 2 {
		t.Errorf("%v watches counted, want 2 (first and late once each): %v", n, got)
	}
}
