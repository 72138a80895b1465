package exporter

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// readGate lets one read of the whole ledger run at a time, a /metrics
// gather or a /debug/clients page, and leaves ingest room between reads.
//
// Reads never hold ingest on a lock (the ledger's shards are copied, not
// walked, under their locks), but they cost CPU: a scrape at 15,000
// instances takes ~20 ms, a page of 1,000 clients more. Two clients looping
// on them would otherwise keep two goroutines computing all the time and
// take every core of a small machine from POST /audit. With one slot,
// reads use at most one core whatever the number of readers, and wait
// their turn in arrival order; and after each read the slot stays closed
// for readRest times as long as the read took (at most maxReadRest), so
// that the reads, however many clients loop on them, take at most a quarter
// of one core (encoding a /metrics answer and writing the answers, outside
// the slot, come on top). A Prometheus scraping every few seconds never waits for the
// rest: it ended long before (issue 16 point 3).
type readGate struct {
	slot chan struct{}
	// start and until belong to the slot's holder: when its read began, and
	// when the next read may begin.
	start, until time.Time
}

const (
	readRest    = 3
	maxReadRest = time.Second
)

func newReadGate() *readGate { return &readGate{slot: make(chan struct{}, 1)} }

// enter waits for the slot and then for the previous read's rest; false if
// ctx ended first.
func (g *readGate) enter(ctx context.Context) bool {
	select {
	case g.slot <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	if d := time.Until(g.until); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			<-g.slot
			return false
		}
	}
	g.start = time.Now()
	return true
}

// leave frees the slot; the next read starts readRest times this read's
// duration from now.
func (g *readGate) leave() {
	now := time.Now()
	g.until = now.Add(min(readRest*now.Sub(g.start), maxReadRest))
	<-g.slot
}

// gatedGatherer gathers through the read gate. Only the gather holds the
// slot: promhttp encodes and writes the result after Gather returns.
type gatedGatherer struct {
	prometheus.Gatherer
	gate *readGate
}

func (g gatedGatherer) Gather() ([]*dto.MetricFamily, error) {
	g.gate.enter(context.Background())
	defer g.gate.leave()
	return g.Gatherer.Gather()
}

// pageBuf is a /debug/clients render buffer (a page of 1,000 clients is
// ~1 MB) and the JSON encoder writing into it, kept together between
// requests: the encoder's indentation buffer, as large as the page, is
// reused with it instead of grown anew for every page.
type pageBuf struct {
	bytes.Buffer
	enc *json.Encoder
}

var pageBufs = sync.Pool{New: func() any {
	b := &pageBuf{}
	b.enc = json.NewEncoder(&b.Buffer)
	b.enc.SetIndent("", "  ")
	return b
}}

// putPageBuf keeps b unless a page of an unusual size grew it.
func putPageBuf(b *pageBuf) {
	if b.Cap() <= 4<<20 {
		b.Reset()
		pageBufs.Put(b)
	}
}
