package ingest_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/exporter/collector"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/exporter/ingest"
)

// TestMain fails the package if goroutines outlive the tests: every server,
// stalled sender and queued request must have ended.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to wait for every goroutine but this one and
// the runtime's own to end, and returns the stacks of those that did not.
func leakedGoroutines(wait time.Duration) string {
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for i, g := range strings.Split(string(buf), "\n\n") {
			if i == 0 || strings.Contains(g, "os/signal.signal_recv") || strings.Contains(g, "runtime.ensureSigM") ||
				strings.Contains(g, "testing.runFuzzing") || strings.Contains(g, "testing.(*F).Fuzz") {
				continue // this goroutine; signal handling; the fuzzing engine
			}
			left = append(left, g)
		}
		if len(left) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// auditServer is POST /audit and /metrics wired as exporter.New wires them
// (config.Default, the default classification rules, a ledger, dedup, the
// ingest metrics and the ledger's collectors on one registry). The tests do
// not import package exporter, which would build client-go and the cluster
// view into this test binary (and instrument them all for the fuzzer) for
// nothing; exporter's own tests cover its wiring.
type auditServer struct {
	h       *ingest.Handler
	reg     *prometheus.Registry
	metrics http.Handler
}

func (a *auditServer) AuditHandler() http.Handler     { return a.h }
func (a *auditServer) Registry() *prometheus.Registry { return a.reg }
func (a *auditServer) Handler() http.Handler          { return a.metrics }

// newAudit builds an auditServer; mod adjusts the handler's options (which
// start as herd's defaults, without authentication).
func newAudit(t testing.TB, mod func(*ingest.HandlerOptions)) *auditServer {
	t.Helper()
	return newAuditWith(t, nil, mod)
}

// newAuditWith is newAudit with a node resolver for the ledger (herd's
// cluster view), nil for none (--no-kube).
func newAuditWith(t testing.TB, nodes accounting.NodeResolver, mod func(*ingest.HandlerOptions)) *auditServer {
	t.Helper()
	cfg := config.Default()
	cls, err := classify.New(cfg.Rules)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ledger, err := accounting.New(cfg.Accounting, cls, nodes)
	if err != nil {
		t.Fatal(err)
	}
	p := ingest.NewPipeline(ledger, ingest.NewDedup(time.Duration(cfg.Ingest.DedupWindow), cfg.Ingest.DedupMaxEntries), ingest.NewMetrics(reg))
	reg.MustRegister(collector.New(collector.Sources{Ledger: ledger}, slog.New(slog.DiscardHandler)))
	opts := ingest.HandlerOptions{MaxBodyBytes: cfg.Ingest.MaxBodyBytes, MaxEventBytes: cfg.Ingest.MaxEventBytes, MaxInFlight: cfg.Ingest.MaxInFlight}
	if mod != nil {
		mod(&opts)
	}
	return &auditServer{h: ingest.NewHandler(p, opts), reg: reg, metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
}

// serve runs h on a loopback server with the timeouts herd's own server has
// (exporter.newServer), closed at the end of the test.
func serve(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Config.ReadHeaderTimeout = 10 * time.Second
	s.Config.ReadTimeout = 60 * time.Second
	s.Config.WriteTimeout = 60 * time.Second
	s.Start()
	t.Cleanup(s.Close)
	return s
}

var idSeq atomic.Uint64

// newID returns an auditID no other event in this test binary has.
func newID() string {
	n := idSeq.Add(1)
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(n>>16), uint16(n), 0x123, 0x456, n*2654435761&0xffffffffffff)
}

// ev renders a kubelet's pod relist as kube-apiserver 1.36 writes it into a
// webhook EventList, with a fresh auditID; replace pairs rewrite parts of it.
func ev(replace ...string) string {
	s := fmt.Sprintf(`{"level":"Metadata","auditID":"%s","stage":"ResponseComplete","requestURI":"/api/v1/pods?fieldSelector=spec.nodeName%%3Dnode-1\u0026limit=500\u0026resourceVersion=0","verb":"list","user":{"username":"system:node:node-1","groups":["system:nodes","system:authenticated"]},"sourceIPs":["10.0.0.1"],"userAgent":"kubelet/v1.36.3 (linux/amd64) kubernetes/6a1f4c3","objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"%s","stageTimestamp":"%s","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}`,
		newID(), stamp(), stamp())
	return strings.NewReplacer(replace...).Replace(s)
}

func stamp() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000000Z") }

// list wraps events in an EventList.
func list(events ...string) string {
	return `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[` + strings.Join(events, ",") + `]}`
}

// events returns n fresh events.
func events(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = ev()
	}
	return out
}

// post sends body to h in-process and returns the status and response body.
func post(t testing.TB, h http.Handler, body string, header ...string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/audit", strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// postHTTP sends body over the network and returns the status and body.
func postHTTP(t testing.TB, c *http.Client, url string, body io.Reader, contentLength int64, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/audit", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = contentLength
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("POST: %v", err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// auditCounts reads every series of herd_audit_events_total,
// herd_audit_requests_total and herd_audit_bytes_total as
// "events{source,result}", "requests{source,code}" and "bytes{source}",
// zero series included.
func auditCounts(t testing.TB, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		var short string
		var keys []string
		switch mf.GetName() {
		case "herd_audit_events_total":
			short, keys = "events", []string{"source", "result"}
		case "herd_audit_requests_total":
			short, keys = "requests", []string{"source", "code"}
		case "herd_audit_bytes_total":
			short, keys = "bytes", []string{"source"}
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			vals := make([]string, len(keys))
			for i, k := range keys {
				vals[i] = labels[k]
			}
			out[short+"{"+strings.Join(vals, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	return out
}

// wantCounts checks the audit counters against want exactly: every series
// not named in want must be 0 (or absent), and bytes{...} series are
// checked only when named.
func wantCounts(t testing.TB, g prometheus.Gatherer, want map[string]float64) {
	t.Helper()
	got := auditCounts(t, g)
	var bad []string
	for k, v := range got {
		if strings.HasPrefix(k, "bytes{") {
			if w, ok := want[k]; ok && w != v {
				bad = append(bad, fmt.Sprintf("%s = %v, want %v", k, v, w))
			}
			continue
		}
		if want[k] != v {
			bad = append(bad, fmt.Sprintf("%s = %v, want %v", k, v, want[k]))
		}
	}
	for k, w := range want {
		if _, ok := got[k]; !ok && w != 0 {
			bad = append(bad, fmt.Sprintf("%s missing, want %v", k, w))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		t.Errorf("audit counters:\n  %s", strings.Join(bad, "\n  "))
	}
}
