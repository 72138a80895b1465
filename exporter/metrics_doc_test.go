package exporter_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/config"
)

// newTestExporter builds an exporter with no listeners and no auth.
func newTestExporter(t *testing.T) *exporter.Exporter {
	t.Helper()
	empty, addrs, off := "", []string{"127.0.0.1:0"}, false
	e, err := exporter.New(exporter.Options{
		Config:        config.Default(),
		Web:           web.FlagConfig{WebListenAddresses: &addrs, WebSystemdSocket: &off, WebConfigFile: &empty},
		Audit:         web.FlagConfig{WebListenAddresses: &addrs, WebSystemdSocket: &off, WebConfigFile: &empty},
		AuditInsecure: true,
		// Not followed (Run is not called), but its collector reports.
		LogFiles: []string{filepath.Join(t.TempDir(), "audit.log")},
	})
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

// TestEveryMetricIsDocumented fails when herd exports a metric that
// docs/metrics.md does not describe, and runs promlint over the exposition.
func TestEveryMetricIsDocumented(t *testing.T) {
	e := newTestExporter(t)
	exerciseEveryMetric(t, e)
	families, err := e.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, mf := range families {
		name := mf.GetName()
		if !strings.HasPrefix(name, "herd_") {
			continue
		}
		seen++
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("metric %s is exported but not documented in docs/metrics.md", name)
		}
	}
	// Every metric the SPEC's table names for the audit pipeline must be among them.
	for _, want := range []string{
		"herd_relists_total", "herd_list_pages_total", "herd_relist_interval_seconds", "herd_relisting_instances",
		"herd_instance_relists", "herd_requests_total", "herd_too_large_resource_version_total",
		"herd_tokenreviews_total", "herd_tokenreview_nodes", "herd_audit_events_total", "herd_audit_bytes_total",
		"herd_audit_event_lag_seconds", "herd_audit_last_event_timestamp_seconds",
		"herd_audit_file_rotations_total", "herd_audit_file_truncations_total",
	} {
		found := false
		for _, mf := range families {
			found = found || mf.GetName() == want
		}
		if !found {
			t.Errorf("metric %s was not exported after exercising every path", want)
		}
	}
	if seen < 15 {
		t.Errorf("only %d herd_ metrics gathered; the exercise is broken", seen)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
