package exporter_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/exporter/ingest"
	"github.com/herd-k8s/herd/test/load/auditgen"
)

// The hot path of SPEC §7: decode → dedup → classify → account, through
// ingest.Pipeline.AccountBody exactly as POST /audit calls it, minus HTTP.
//
// Workload: test/load/auditgen's corpus (the load test posts the same bytes):
// 5,000 nodes × kubelet, kube-proxy, cilium-agent = 15,000 instances,
// kube-apiserver 1.36 Metadata-level events (~1.25 KB each, ~500 KB per
// 400-event EventList) in a list/watch/lease/status mix, 75 templates.
//
// Fresh auditIDs: each iteration takes the next template and rewrites the
// first 8 hex digits of its 400 auditIDs in place with a new sequence
// number (3,200 bytes written; ~1 µs, inside the timed loop), so dedup
// never short-circuits: every event is a miss that is inserted.
//
// Steady state: each pipeline is built once per test binary with the
// defaults herd runs with (config.Default: dedup window 2m, 1 Mi pairs) and
// warmed before timing, so the figures are those of a herd that has been up
// for a while, not of its first batches: the ledger already knows every
// instance, and dedup has filled and rotated both generations (its maps are
// at full size, so later rotations reuse their memory).
//
// Two pipelines: BenchmarkHotPath400 resolves source IPs to nodes, as herd
// does with its cluster view (a map under a read lock, like
// cluster.View.NodeForIP), so kube-proxy and cilium-agent are one instance
// per node (15,000 in all); BenchmarkHotPath400NoKube has no resolver, as
// `herd exporter --no-kube`, so their requests without a node field selector
// share one instance per service account.
type hotState struct {
	once     sync.Once
	corpus   *auditgen.Corpus
	bodies   [][]byte // the corpus's templates, stamped in place
	pipeline *ingest.Pipeline
	ledger   *accounting.Ledger
}

var (
	hotCorpusOnce sync.Once
	hotCorpusV    *auditgen.Corpus
	hotSeq        uint32 // next auditID sequence number; benchmarks run one at a time

	hotWithKube, hotNoKube hotState

	// hotParallelSeq numbers BenchmarkHotPath400Parallel's batches, apart
	// from hotSeq's; it is called once per b.N, so it keeps counting.
	hotParallelSeq atomic.Uint32
)

func init() { hotParallelSeq.Store(1 << 31) }

func hotCorpus() *auditgen.Corpus {
	hotCorpusOnce.Do(func() { hotCorpusV = auditgen.New(auditgen.Options{}) })
	return hotCorpusV
}

// hotNodeIPs stands in for cluster.View: address → node name.
type hotNodeIPs struct {
	mu   sync.RWMutex
	byIP map[string]string
}

func (n *hotNodeIPs) NodeForIP(ip []byte) (string, bool) {
	n.mu.RLock()
	name, ok := n.byIP[string(ip)]
	n.mu.RUnlock()
	return name, ok
}

func (h *hotState) get(b *testing.B, resolve bool) *hotState {
	h.once.Do(func() {
		cfg := config.Default()
		cls, err := classify.New(cfg.Rules)
		if err != nil {
			b.Fatal(err)
		}
		var nodes accounting.NodeResolver
		if resolve {
			r := &hotNodeIPs{byIP: map[string]string{}}
			for i := 0; i < 5000; i++ {
				name, ip := auditgen.Node(i)
				r.byIP[ip] = name
			}
			nodes = r
		}
		if h.ledger, err = accounting.New(cfg.Accounting, cls, nodes); err != nil {
			b.Fatal(err)
		}
		dedup := ingest.NewDedup(time.Duration(cfg.Ingest.DedupWindow), cfg.Ingest.DedupMaxEntries)
		// Fill both dedup generations: one full generation plus one pair
		// rotates, the next full generation rotates again.
		now := time.Now()
		id := make([]byte, 0, 32)
		for i := 0; i <= cfg.Ingest.DedupMaxEntries+1; i++ {
			id = fmt.Appendf(id[:0], "fill-%d", i)
			dedup.Seen(id, audit.StageResponseComplete, now)
		}
		h.corpus = hotCorpus()
		for i := 0; i < h.corpus.Len(); i++ {
			h.bodies = append(h.bodies, append([]byte(nil), h.corpus.Template(i)...))
		}
		h.pipeline = ingest.NewPipeline(h.ledger, dedup, ingest.NewMetrics(prometheus.NewRegistry()))
		var d audit.Decoder
		for i := 0; i < h.corpus.Len(); i++ {
			h.account(b, &d, i)
		}
	})
	return h
}

func (h *hotState) account(b *testing.B, d *audit.Decoder, i int) {
	hotSeq++
	body := h.bodies[i]
	h.corpus.Stamp(body, i, hotSeq)
	n, err := h.pipeline.AccountBody(d, ingest.SourceWebhook, body)
	if err != nil || n.Accounted != h.corpus.BatchEvents(i) {
		b.Fatalf("AccountBody(batch %d) = %+v, %v", i, n, err)
	}
}

func BenchmarkHotPath400(b *testing.B)       { hotBench(b, hotWithKube.get(b, true)) }
func BenchmarkHotPath400NoKube(b *testing.B) { hotBench(b, hotNoKube.get(b, false)) }

func hotBench(b *testing.B, h *hotState) {
	var d audit.Decoder
	h.account(b, &d, 0) // the Decoder's scratch space
	size := 0
	for _, body := range h.bodies {
		size += len(body)
	}
	b.SetBytes(int64(size / len(h.bodies)))
	b.ReportAllocs()
	cpu0 := hotCPUTime()
	i := 0
	for b.Loop() {
		i++
		h.account(b, &d, i%len(h.bodies))
	}
	hotReportRates(b, hotCPUTime()-cpu0)
	b.ReportMetric(float64(h.ledger.Snapshot().Instances), "instances")
}

// BenchmarkHotPath400Parallel is BenchmarkHotPath400 from GOMAXPROCS
// goroutines at once, as concurrent POSTs run: run it with -cpu=2 to see
// how the hot path scales past one core (dedup and the ledger each take
// one mutex per event). Each goroutine stamps its own copies of the batches.
func BenchmarkHotPath400Parallel(b *testing.B) {
	h := hotWithKube.get(b, true)
	next := &hotParallelSeq
	b.SetBytes(int64(len(h.bodies[0])))
	b.ReportAllocs()
	cpu0 := hotCPUTime()
	b.RunParallel(func(pb *testing.PB) {
		var d audit.Decoder
		bodies := make([][]byte, len(h.bodies))
		for i := range bodies {
			bodies[i] = append([]byte(nil), h.bodies[i]...)
		}
		for pb.Next() {
			seq := next.Add(1)
			i := int(seq) % len(bodies)
			h.corpus.Stamp(bodies[i], i, seq)
			if n, err := h.pipeline.AccountBody(&d, ingest.SourceWebhook, bodies[i]); err != nil || n.Accounted != 400 {
				b.Errorf("AccountBody = %+v, %v", n, err)
				return
			}
		}
	})
	hotReportRates(b, hotCPUTime()-cpu0)
}

// hotReportRates reports events/s of wall time and, because a shared machine
// makes wall time noisy, events per second of this process's CPU time
// (user+system, GC included): what one core sustains without neighbours.
func hotReportRates(b *testing.B, cpu time.Duration) {
	b.ReportMetric(float64(b.N)*400/b.Elapsed().Seconds(), "events/s")
	if cpu > 0 {
		b.ReportMetric(float64(b.N)*400/cpu.Seconds(), "events/cpu-s")
	}
}

// hotCPUTime is the CPU time this process has used.
func hotCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBaselineEncodingJSON400 is the anchor of SPEC §7: encoding/json
// into k8s.io/apiserver's audit/v1 EventList, of the same bytes, with the
// fields herd reads touched. It does no dedup or accounting.
func BenchmarkBaselineEncodingJSON400(b *testing.B) {
	body := hotCorpus().Template(0)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	sink := 0
	cpu0 := hotCPUTime()
	for b.Loop() {
		var list auditv1.EventList
		if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != 400 {
			b.Fatalf("Unmarshal: %d items, %v", len(list.Items), err)
		}
		for i := range list.Items {
			ev := &list.Items[i]
			sink += len(ev.AuditID) + len(ev.Verb) + len(ev.User.Username) + len(ev.UserAgent) + len(ev.RequestURI) + int(ev.Stage[0])
			if len(ev.SourceIPs) > 0 {
				sink += len(ev.SourceIPs[0])
			}
			if ev.ObjectRef != nil {
				sink += len(ev.ObjectRef.Resource) + len(ev.ObjectRef.APIGroup)
			}
			if ev.ResponseStatus != nil {
				sink += int(ev.ResponseStatus.Code)
			}
		}
	}
	hotReportRates(b, hotCPUTime()-cpu0)
	if sink == 0 {
		b.Fatal("nothing read")
	}
}
