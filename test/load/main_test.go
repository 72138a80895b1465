package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/herd-k8s/herd/test/proc"
)

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// TestLoadSmoke runs the load test briefly, so that it cannot rot: herd
// built and started as a child, both targets driven, herd once more with
// /metrics and /debug/clients read in loops, every POST answered 200 with
// every event accounted once, /metrics scraped, and no process left
// behind. It checks no performance target: those are for full runs
// (go run ./test/load), not for a test on a shared machine.
func TestLoadSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts herd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{
		Nodes: 500, BatchSize: 400, Posters: 4, Duration: 2 * time.Second, BaselineDuration: time.Second,
		Warmup: 500 * time.Millisecond, MaxRequests: 5000, Timeout: 10 * time.Second, Scrapes: 2, Scrapers: true, Dir: t.TempDir(),
	}, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Log("\n" + out.String())

	h := rep.Herd
	if h.Posts == 0 || h.Errors != 0 || h.Duplicates != 0 || h.Events != h.Posts*400 {
		t.Errorf("herd: %d POSTs, %d errors (%s), %d duplicates, %d events accounted", h.Posts, h.Errors, h.FirstError, h.Duplicates, h.Events)
	}
	sc := rep.Scraped
	if sc == nil || sc.Posts == 0 || sc.Errors != 0 || sc.Duplicates != 0 || sc.Events != sc.Posts*400 {
		t.Fatalf("herd with readers: %+v", sc)
	}
	if len(rep.Reads) != 2 || rep.Reads[0].Reads == 0 || rep.Reads[1].Reads == 0 || rep.Reads[0].Errors+rep.Reads[1].Errors != 0 {
		t.Errorf("readers: %+v", rep.Reads)
	}
	if rep.HerdCounted != float64(h.WarmupEvents+h.Events+sc.Events) {
		t.Errorf("herd_audit_events_total{accounted} = %.0f, the answers said %d", rep.HerdCounted, h.WarmupEvents+h.Events+sc.Events)
	}
	if b := rep.Baseline; b == nil || b.Posts == 0 || b.Errors != 0 {
		t.Errorf("baseline: %+v", b)
	}
	if rep.Series == 0 || rep.Series >= Targets.Series || rep.RSSBytes == 0 || rep.Scrape <= 0 || rep.HerdInst == 0 {
		t.Errorf("series %d, RSS %d, scrape %v, instances %.0f", rep.Series, rep.RSSBytes, rep.Scrape, rep.HerdInst)
	}
	if h.P50 <= 0 || h.P99 < h.P50 || h.Max < h.P99 {
		t.Errorf("latencies p50 %v p99 %v max %v", h.P50, h.P99, h.Max)
	}
	// herd was stopped; `go build` is done.
	kids, err := proc.Children(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(kids) > 0 {
		t.Errorf("processes left running: %v", kids)
	}
}
