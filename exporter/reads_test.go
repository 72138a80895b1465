package exporter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/test/herdtest"
)

// Whole-ledger reads take turns (readGate): while one holds the slot,
// /metrics and /debug/clients wait and then answer; health does not wait;
// a /debug/clients reader that goes away while waiting leaves no slot
// taken.
func TestReadsTakeTurns(t *testing.T) {
	e := newLocalExporter(t, config.Default(), false)
	h := e.Handler()
	get := func(path string) <-chan int {
		done := make(chan int, 1)
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			done <- rec.Code
		}()
		return done
	}

	e.reads.slot <- struct{}{} // another read holds the slot
	metrics, clients := get("/metrics"), get("/debug/clients?limit=5")
	if code := <-get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while a read runs: %d", code)
	}
	select {
	case <-metrics:
		t.Fatal("/metrics gathered while another read held the slot")
	case <-clients:
		t.Fatal("/debug/clients rendered while another read held the slot")
	case <-time.After(200 * time.Millisecond):
	}
	<-e.reads.slot
	for path, ch := range map[string]<-chan int{"/metrics": metrics, "/debug/clients": clients} {
		if code := <-ch; code != http.StatusOK {
			t.Errorf("%s: %d", path, code)
		}
	}

	// A reader that gives up while waiting takes no slot with it.
	e.reads.slot <- struct{}{}
	req := httptest.NewRequest(http.MethodGet, "/debug/clients", nil)
	ctx, cancel := context.WithCancel(req.Context())
	rec := httptest.NewRecorder()
	cancel()
	h.ServeHTTP(rec, req.WithContext(ctx))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/debug/clients of a reader gone while waiting: %d, want 503", rec.Code)
	}
	<-e.reads.slot
	if code := <-get("/debug/clients"); code != http.StatusOK {
		t.Errorf("/debug/clients afterwards: %d", code)
	}
}

// After a read the gate stays closed for readRest times its duration, so
// that readers looping on the pages leave ingest most of a core: the next
// read does not start before then, and one that gives up while waiting
// for the rest takes no slot with it.
func TestReadsLeaveRoom(t *testing.T) {
	g := newReadGate()
	if !g.enter(context.Background()) {
		t.Fatal("enter on a free gate failed")
	}
	time.Sleep(30 * time.Millisecond)
	g.leave()
	until := g.until
	if rest := time.Until(until); rest < 2*readRest*10*time.Millisecond {
		t.Fatalf("rest after a read of 30ms: %v, want about %d×30ms", rest, readRest)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if g.enter(ctx) {
		t.Fatal("enter with an ended context during the rest succeeded")
	}
	if !g.enter(context.Background()) {
		t.Fatal("enter after the rest failed")
	}
	if now := time.Now(); now.Before(until) {
		t.Errorf("a read started at %v, before the previous read's rest ended at %v", now, until)
	}
	g.leave()

	// A long read rests at most maxReadRest.
	g.enter(context.Background())
	g.start = g.start.Add(-time.Hour)
	g.leave()
	if rest := time.Until(g.until); rest > maxReadRest {
		t.Errorf("rest after an hour-long read: %v, want at most %v", rest, maxReadRest)
	}
}

// newLocalExporter is an exporter with cfg on loopback listeners (not
// started), accepting unauthenticated audit events, with Go's profiles if
// pprof.
func newLocalExporter(tb testing.TB, cfg config.Config, pprof bool) *Exporter {
	tb.Helper()
	e, err := New(Options{
		Config:        cfg,
		Web:           herdtest.WebFlags("", "127.0.0.1:0"),
		Audit:         herdtest.WebFlags("", "127.0.0.1:0"),
		AuditInsecure: true,
		Pprof:         pprof,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}
