package exporter

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/test/load/auditgen"
)

// BenchmarkPostWhileReading is the load test's "herd + readers" in one
// process, without the network: 400-event batches of the load test's
// corpus (15,000 instances, every auditID fresh) go through POST /audit's
// handler from 4 goroutines while, in the "readers" case, two more loop on
// GET /metrics and GET /debug/clients as fast as they are answered (issue 16
// point 3). It reports events/s and the POSTs' p50 and p99, and how many
// reads ran: run with -cpu=2 and compare the two cases in the same run.
func BenchmarkPostWhileReading(b *testing.B) {
	for _, readers := range []bool{false, true} {
		name := "alone"
		if readers {
			name = "readers"
		}
		b.Run(name, func(b *testing.B) { benchPostWhileReading(b, readers) })
	}
}

func benchPostWhileReading(b *testing.B, readers bool) {
	e := newLocalExporter(b, config.Default(), false)
	corpus := readBenchCorpus()
	const posters = 4
	var seq uint32
	var seqMu sync.Mutex
	next := func() uint32 { seqMu.Lock(); defer seqMu.Unlock(); seq++; return seq }
	audit := e.AuditHandler()
	post := func(body []byte) {
		rec := httptest.NewRecorder()
		audit.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/audit", bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			b.Errorf("POST /audit: %d %s", rec.Code, rec.Body)
		}
	}
	// Warm up: every instance known, as in a herd that has been up a while.
	var body []byte
	for i := range corpus.Len() {
		body = corpus.Fill(body, i, next())
		post(body)
	}

	ctx, stop := context.WithCancel(context.Background())
	var rg sync.WaitGroup
	runtime.GC()
	live0 := goMemory()
	peak := make(chan uint64)
	go func() { // the largest heap a collection found live
		var m uint64
		for ctx.Err() == nil {
			m = max(m, goMemory())
			time.Sleep(2 * time.Millisecond)
		}
		peak <- m
	}()
	reads := make([]int, 2)
	if readers {
		h := e.Handler()
		for i, path := range []string{"/metrics", "/debug/clients"} {
			rg.Add(1)
			go func() {
				defer rg.Done()
				for ctx.Err() == nil {
					req := httptest.NewRequest(http.MethodGet, path, nil).WithContext(ctx)
					w := discardWriter{h: http.Header{}}
					h.ServeHTTP(&w, req)
					reads[i]++
				}
			}()
		}
	}

	lat := make([][]time.Duration, posters)
	var pg sync.WaitGroup
	work := make(chan struct{})
	b.ResetTimer()
	start := time.Now()
	for p := range posters {
		pg.Add(1)
		go func() {
			defer pg.Done()
			var body []byte
			for range work {
				s := next()
				i := int(s) % corpus.Len()
				body = corpus.Fill(body, i, s)
				t0 := time.Now()
				post(body)
				lat[p] = append(lat[p], time.Since(t0))
			}
		}()
	}
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	pg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	rg.Wait()
	b.ReportMetric(float64(<-peak-live0)/(1<<20), "MiB-live-added")

	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N*corpus.BatchEvents(0))/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[min(len(all)-1, len(all)*99/100)].Microseconds())/1000, "p99-ms")
	if readers {
		b.ReportMetric(float64(reads[0]+reads[1])/elapsed.Seconds(), "reads/s")
	}
}

// goMemory is the heap the last collection found live. What POSTs and
// reads hold at a collection on top of the ledger sets the next heap goal
// (twice the live heap with GOGC=100), and so herd's peak RSS.
func goMemory() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var (
	readBenchCorpusOnce sync.Once
	readBenchCorpusV    *auditgen.Corpus
)

func readBenchCorpus() *auditgen.Corpus {
	readBenchCorpusOnce.Do(func() { readBenchCorpusV = auditgen.New(auditgen.Options{}) })
	return readBenchCorpusV
}

// discardWriter is a ResponseWriter that throws the body away, as a reader
// on the network would after reading it.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) { return io.Discard.Write(p) }
