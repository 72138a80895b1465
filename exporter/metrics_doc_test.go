package exporter_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/apiservices"
	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/exporter/collector"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/exporter/metricsserver"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/metricsdoc"
)

// newTestExporter builds an exporter with no listeners and no auth,
// following an (unread) audit log file so that its collector reports;
// mods change the options first.
func newTestExporter(t *testing.T, mods ...func(*exporter.Options)) *exporter.Exporter {
	t.Helper()
	opts := exporter.Options{
		Config:        config.Default(),
		Web:           herdtest.WebFlags("", "127.0.0.1:0"),
		Audit:         herdtest.WebFlags("", "127.0.0.1:0"),
		AuditInsecure: true,
		// Not followed (Run is not called), but its collector reports.
		LogFiles: []string{filepath.Join(t.TempDir(), "audit.log")},
	}
	for _, mod := range mods {
		mod(&opts)
	}
	e, err := exporter.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// event renders one audit event line as the apiserver would send it.
func event(id, stage, verb, user, ua, uri, resource, group string, code int, msg string, at time.Time) string {
	return fmt.Sprintf(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":%q,"stage":%q,"requestURI":%q,"verb":%q,"user":{"username":%q,"groups":["system:authenticated"]},"sourceIPs":["10.0.0.7"],"userAgent":%q,"objectRef":{"resource":%q,"apiGroup":%q,"apiVersion":"v1"},"responseStatus":{"metadata":{},"code":%d,"message":%q},"requestReceivedTimestamp":%q,"stageTimestamp":%q}`,
		id, stage, uri, verb, user, ua, resource, group, code, msg, at.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
}

// exerciseEveryMetric posts events that make every audit-derived series appear.
func exerciseEveryMetric(t *testing.T, e *exporter.Exporter) {
	t.Helper()
	now := time.Now().UTC()
	kubelet, ua := "system:node:node-1", "kubelet/v1.36.3 (linux/amd64) kubernetes/abc"
	lines := []string{
		event("00000000-0000-0000-0000-000000000001", "ResponseComplete", "list", kubelet, ua, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&resourceVersion=0", "pods", "", 200, "", now.Add(-3*time.Second)),
		event("00000000-0000-0000-0000-000000000002", "ResponseComplete", "list", kubelet, ua, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1", "pods", "", 200, "", now.Add(-2*time.Second)),
		event("00000000-0000-0000-0000-000000000003", "ResponseComplete", "list", kubelet, ua, "/api/v1/pods?limit=500&continue=abc", "pods", "", 200, "", now.Add(-2*time.Second)),
		event("00000000-0000-0000-0000-000000000004", "ResponseComplete", "list", kubelet, ua, "/apis/node.k8s.io/v1/runtimeclasses?resourceVersion=191700552", "runtimeclasses", "node.k8s.io", 504, "Timeout: Too large resource version: 191700552, current: 1234", now.Add(-time.Second)),
		event("00000000-0000-0000-0000-000000000005", "ResponseComplete", "create", kubelet, ua, "/apis/authentication.k8s.io/v1/tokenreviews", "tokenreviews", "authentication.k8s.io", 201, "", now),
		event("00000000-0000-0000-0000-000000000006", "ResponseComplete", "list", kubelet, ua, "/api/v1/pods?resourceVersion=0", "pods", "", 200, "", now),
	}
	post := func(body, contentType string) {
		req := httptest.NewRequest(http.MethodPost, "/audit", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		e.AuditHandler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("POST /audit = %d: %s", rec.Code, rec.Body)
		}
	}
	post(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[`+strings.Join(lines, ",")+`]}`, "application/json")
	post(strings.Join(lines, "\n"), "application/x-ndjson") // all duplicates
}

// documented reads docs/metrics.md's tables: metric name → "type|labels"
// (labels sorted, comma-separated).
func documented(t *testing.T) map[string]string {
	t.Helper()
	families, err := metricsdoc.Read("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for name, f := range families {
		labels := slices.Clone(f.Labels)
		sort.Strings(labels)
		out[name] = f.Type + "|" + strings.Join(labels, ",")
	}
	if len(out) < 30 {
		t.Fatalf("only %d metrics parsed from docs/metrics.md; is the table format broken?", len(out))
	}
	return out
}

// exported is the same for gathered families.
func exported(families []*dto.MetricFamily) map[string]string {
	out := map[string]string{}
	for _, mf := range families {
		if !strings.HasPrefix(mf.GetName(), "herd_") {
			continue
		}
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		var names []string
		for l := range labels {
			names = append(names, l)
		}
		sort.Strings(names)
		out[mf.GetName()] = strings.ToLower(mf.GetType().String()) + "|" + strings.Join(names, ",")
	}
	return out
}

// nodesNamed is a cluster view for the doc test: node-1 exists, any other
// node name is a ghost's.
type nodesNamed struct{}

func (nodesNamed) NodeForIP([]byte) (string, bool) { return "", false }
func (nodesNamed) Nodes() int                      { return 1 }
func (nodesNamed) Synced() bool                    { return true }
func (nodesNamed) Revision() accounting.RevisionStatus {
	return accounting.RevisionStatus{Revision: 812, Probes: 3, Rewinds: 1, LastRewind: accounting.Rewind{From: 900, To: 640}}
}
func (nodesNamed) Judge(w *accounting.InstanceWindow, _ int64) accounting.NodeVerdict {
	v := accounting.NodeVerdict{Synced: true, NodeExists: w.Node == "node-1"}
	if !v.NodeExists {
		v.GhostReason = "no_such_node"
	}
	return v
}

type apiServicesState []apiservices.Status

func (s apiServicesState) Status() []apiservices.Status { return s }

type metricsServerState []metricsserver.DeploymentView

func (metricsServerState) Synced() bool                                  { return true }
func (s metricsServerState) Deployments() []metricsserver.DeploymentView { return s }

// clusterSideFamilies gathers what the collectors export from the cluster
// view, APIServices and metrics-server, over a ledger with a ghost, a stale
// kubelet and a slow request: the series `--no-kube` never has, and those
// only annotated requests make.
func clusterSideFamilies(t *testing.T) []*dto.MetricFamily {
	t.Helper()
	cls, _ := classify.New(nil)
	l, err := accounting.New(accounting.DefaultConfig(), cls, nodesNamed{})
	if err != nil {
		t.Fatal(err)
	}
	// Stamped in the past: an event ahead of the scrape falls in a window
	// bucket the scrape does not sum yet (the test failed in the last two
	// seconds of every minute).
	now := time.Now()
	for i, user := range []string{"system:node:node-1", "system:node:node-1", "system:node:node-1", "system:node:gone"} {
		l.Account(&audit.Event{AuditID: []byte("x"), Stage: audit.StageResponseComplete, Verb: []byte("list"), User: []byte(user),
			Resource: []byte("runtimeclasses"), Code: 504, TooLargeResourceVersion: true, StageTimestampNanos: now.Add(-time.Duration(i) * time.Second).UnixNano()})
	}
	// A slow LIST the apiserver annotated with its per-phase latency (the
	// decoder fills Event.Latency from apiserver.latency.k8s.io/*).
	slow := &audit.Event{AuditID: []byte("slow"), Stage: audit.StageResponseComplete, Verb: []byte("list"),
		User: []byte("system:serviceaccount:kube-system:cilium"), Resource: []byte("pods"), Code: 200, StageTimestampNanos: now.UnixNano()}
	slow.Latency[audit.LatencyTotal], slow.Latency[audit.LatencyEtcd] = int64(2*time.Second), int64(time.Second)
	l.Account(slow)
	failures := map[string]uint64{}
	for _, r := range apiservices.Reasons {
		failures[r] = 0
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector.New(collector.Sources{Ledger: l, Cluster: nodesNamed{},
		APIServices: apiServicesState{{Name: "v1beta1.metrics.k8s.io", Namespace: "kube-system", Service: "metrics-server", Available: true,
			BackendsKnown: true, Ready: 1, Backends: []apiservices.Backend{{Pod: "ms-0", Node: "node-1", Ready: true}},
			Probe: &apiservices.ProbeCounts{Count: 1, Sum: 0.01, Buckets: map[float64]uint64{0.01: 1}, Failures: failures}}},
		MetricsServer: metricsServerState{{Namespace: "kube-system", Name: "metrics-server", Mode: metricsserver.ModeToken}},
	}, slog.New(slog.DiscardHandler)))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// TestEveryMetricIsDocumented fails when herd exports a metric that
// docs/metrics.md does not describe, or describes with another type or
// other labels, and runs promlint over the exposition.
func TestEveryMetricIsDocumented(t *testing.T) {
	e := newTestExporter(t)
	exerciseEveryMetric(t, e)
	families, err := e.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	doc := documented(t)
	got := exported(families)
	for name, typeLabels := range exported(clusterSideFamilies(t)) {
		got[name] = typeLabels
	}
	for name, typeLabels := range got {
		want, ok := doc[name]
		switch {
		case !ok:
			t.Errorf("metric %s is exported but not documented in docs/metrics.md", name)
		case want != typeLabels:
			t.Errorf("metric %s is exported as %s (type|labels) but docs/metrics.md says %s", name, typeLabels, want)
		}
	}
	// Every metric the SPEC's table names for the exporter must be among them.
	for _, want := range []string{
		"herd_relists_total", "herd_list_pages_total", "herd_relist_interval_seconds", "herd_relisting_instances",
		"herd_instance_relists", "herd_requests_total", "herd_too_large_resource_version_total",
		"herd_tokenreviews_total", "herd_tokenreview_nodes", "herd_audit_events_total", "herd_audit_bytes_total",
		"herd_audit_event_lag_seconds", "herd_audit_last_event_timestamp_seconds",
		"herd_audit_file_rotations_total", "herd_audit_file_truncations_total",
		"herd_stale_kubelet", "herd_ghost_instances", "herd_ghost_instance", "herd_apiservice_available",
		"herd_apiservice_probe_duration_seconds", "herd_apiservice_probe_failures_total", "herd_apiservice_endpoints",
		"herd_apiservice_backend", "herd_metrics_server_kubelet_auth",
		"herd_request_latency_seconds_total", "herd_latency_annotated_requests_total",
	} {
		if _, ok := got[want]; !ok {
			t.Errorf("metric %s was not exported after exercising every path", want)
		}
	}
	if len(got) < 30 {
		t.Errorf("only %d herd_ metrics gathered; the exercise is broken", len(got))
	}
	problems, err := promlint.NewWithMetricFamilies(append(families, clusterSideFamilies(t)...)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// Issue 16 point 6: one event stamped an hour ahead moved
// herd_audit_last_event_timestamp_seconds an hour ahead, masking
// HerdAuditIngestStalled. It is accounted at the receive time instead.
func TestFutureEventDoesNotMoveTheLastEventGauge(t *testing.T) {
	e := newTestExporter(t)
	now := time.Now().UTC()
	kubelet, ua := "system:node:node-1", "kubelet/v1.36.3 (linux/amd64) kubernetes/abc"
	body := strings.Join([]string{
		event("00000000-0000-0000-0000-0000000000a1", "ResponseComplete", "list", kubelet, ua, "/api/v1/pods?resourceVersion=0", "pods", "", 200, "", now.Add(-time.Second)),
		event("00000000-0000-0000-0000-0000000000a2", "ResponseComplete", "list", kubelet, ua, "/api/v1/pods?resourceVersion=0", "pods", "", 200, "", now.Add(time.Hour)),
	}, "\n")
	req := httptest.NewRequest(http.MethodPost, "/audit", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-ndjson")
	rec := httptest.NewRecorder()
	e.AuditHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("POST /audit = %d: %s", rec.Code, rec.Body)
	}
	families, err := e.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var last float64
	for _, mf := range families {
		if mf.GetName() == "herd_audit_last_event_timestamp_seconds" {
			for _, m := range mf.GetMetric() {
				last = max(last, m.GetGauge().GetValue())
			}
		}
	}
	bound := float64(time.Now().Add(time.Duration(config.Default().Accounting.MaxClockSkew)).UnixNano()) / 1e9
	if last < float64(now.Add(-2*time.Second).Unix()) || last > bound {
		t.Errorf("herd_audit_last_event_timestamp_seconds = %.0f, want about now (%d), never past now+maxClockSkew", last, now.Unix())
	}
}
