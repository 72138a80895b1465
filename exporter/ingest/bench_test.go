package ingest_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/herd-k8s/herd/test/load/auditgen"
)

// nodeIPs stands in for the cluster view: address → node name.
type nodeIPs struct {
	mu   sync.RWMutex
	byIP map[string]string
}

func (n *nodeIPs) NodeForIP(ip []byte) (string, bool) {
	n.mu.RLock()
	name, ok := n.byIP[string(ip)]
	n.mu.RUnlock()
	return name, ok
}

// bodyReader is a request body that is reset, not reallocated.
type bodyReader struct{ *bytes.Reader }

func (bodyReader) Close() error { return nil }

// discard is a ResponseWriter that keeps nothing.
type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(code int)        { d.code = code }

// BenchmarkAuditHandler400 is one POST /audit of a fresh 400-event batch
// through Handler.ServeHTTP, without the network: what the handler adds to
// the hot path (exporter.BenchmarkHotPath400) — body read into a pooled
// buffer, queue, decode slot, answer, metrics. The corpus and the
// fresh-auditID scheme are the hot-path benchmark's; the ledger resolves node
// IPs as herd's cluster view does.
func BenchmarkAuditHandler400(b *testing.B) {
	corpus := auditgen.New(auditgen.Options{})
	nodes := &nodeIPs{byIP: map[string]string{}}
	for i := 0; i < 5000; i++ {
		name, ip := auditgen.Node(i)
		nodes.byIP[ip] = name
	}
	a := newAuditWith(b, nodes, nil)
	bodies := make([][]byte, corpus.Len())
	for i := range bodies {
		bodies[i] = append([]byte(nil), corpus.Template(i)...)
	}
	req := httptest.NewRequest(http.MethodPost, "/audit", nil)
	req.Header.Set("Content-Type", "application/json")
	r := bytes.NewReader(nil)
	w := &discard{h: http.Header{}}
	seq := uint32(0)
	post := func() {
		seq++
		i := int(seq) % len(bodies)
		corpus.Stamp(bodies[i], i, seq)
		r.Reset(bodies[i])
		req.Body, req.ContentLength = bodyReader{r}, int64(len(bodies[i]))
		clear(w.h)
		w.code = 0
		a.AuditHandler().ServeHTTP(w, req)
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
	for range len(bodies) { // every instance known, buffers pooled
		post()
	}
	b.SetBytes(int64(len(bodies[0])))
	b.ReportAllocs()
	for b.Loop() {
		post()
	}
	b.ReportMetric(float64(b.N)*400/b.Elapsed().Seconds(), "events/s")
}
