package collector

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/herd-k8s/herd/exporter/apiservices"
	"github.com/herd-k8s/herd/exporter/metricsserver"
	"github.com/herd-k8s/herd/exporter/tail"
)

// staticAPIServices is the aggregated-APIService view's state.
type staticAPIServices []apiservices.Status

func (s staticAPIServices) Status() []apiservices.Status { return s }

func TestAPIServiceCollector(t *testing.T) {
	failures := map[string]uint64{}
	for _, r := range apiservices.Reasons {
		failures[r] = 0
	}
	failures[apiservices.ReasonTimeout] = 2
	runTable(t, []tableCase{
		{name: "not synced or none", c: apiServiceCollector{staticAPIServices(nil)}, want: ``},
		{name: "available, with backends, probed", c: apiServiceCollector{staticAPIServices{
			{Name: "v1beta1.metrics.k8s.io", Namespace: "kube-system", Service: "metrics-server", Available: true,
				BackendsKnown: true, Ready: 1, NotReady: 1,
				Backends: []apiservices.Backend{{Pod: "ms-0", Node: "node-1", Ready: true}, {Pod: "ms-1", Node: "node-2"}},
				Probe:    &apiservices.ProbeCounts{Count: 3, Sum: 5.2, Buckets: map[float64]uint64{0.1: 1, 5: 3}, Failures: failures}},
		}}, want: `
			# TYPE herd_apiservice_available gauge
			herd_apiservice_available{apiservice="v1beta1.metrics.k8s.io",namespace="kube-system",service="metrics-server"} 1
			# TYPE herd_apiservice_backend gauge
			herd_apiservice_backend{apiservice="v1beta1.metrics.k8s.io",node="node-1",pod="ms-0"} 1
			herd_apiservice_backend{apiservice="v1beta1.metrics.k8s.io",node="node-2",pod="ms-1"} 1
			# TYPE herd_apiservice_endpoints gauge
			herd_apiservice_endpoints{apiservice="v1beta1.metrics.k8s.io",state="not_ready"} 1
			herd_apiservice_endpoints{apiservice="v1beta1.metrics.k8s.io",state="ready"} 1
			# TYPE herd_apiservice_probe_duration_seconds histogram
			herd_apiservice_probe_duration_seconds_bucket{apiservice="v1beta1.metrics.k8s.io",le="0.1"} 1
			herd_apiservice_probe_duration_seconds_bucket{apiservice="v1beta1.metrics.k8s.io",le="5"} 3
			herd_apiservice_probe_duration_seconds_bucket{apiservice="v1beta1.metrics.k8s.io",le="+Inf"} 3
			herd_apiservice_probe_duration_seconds_sum{apiservice="v1beta1.metrics.k8s.io"} 5.2
			herd_apiservice_probe_duration_seconds_count{apiservice="v1beta1.metrics.k8s.io"} 3
			# TYPE herd_apiservice_probe_failures_total counter
			herd_apiservice_probe_failures_total{apiservice="v1beta1.metrics.k8s.io",reason="connection"} 0
			herd_apiservice_probe_failures_total{apiservice="v1beta1.metrics.k8s.io",reason="http_4xx"} 0
			herd_apiservice_probe_failures_total{apiservice="v1beta1.metrics.k8s.io",reason="http_5xx"} 0
			herd_apiservice_probe_failures_total{apiservice="v1beta1.metrics.k8s.io",reason="timeout"} 2
			herd_apiservice_probe_failures_total{apiservice="v1beta1.metrics.k8s.io",reason="tls"} 0
		`},
		{name: "unavailable, endpoints not watched yet, not probed", c: apiServiceCollector{staticAPIServices{
			{Name: "v1.custom.example.com", Namespace: "custom", Service: "api"},
		}}, want: `
			# TYPE herd_apiservice_available gauge
			herd_apiservice_available{apiservice="v1.custom.example.com",namespace="custom",service="api"} 0
		`},
	})
}

// staticMetricsServer is the metrics-server informer's state.
type staticMetricsServer []metricsserver.DeploymentView

func (staticMetricsServer) Synced() bool                                  { return true }
func (s staticMetricsServer) Deployments() []metricsserver.DeploymentView { return s }

func TestMetricsServerCollector(t *testing.T) {
	runTable(t, []tableCase{
		{name: "one series per Deployment, by mode", c: metricsServerCollector{staticMetricsServer{
			{Namespace: "kube-system", Name: "metrics-server", Mode: metricsserver.ModeToken},
			{Namespace: "kube-system", Name: "metrics-server-helm", Mode: metricsserver.ModeCertificate},
			{Namespace: "kube-system", Name: "odd", Mode: metricsserver.ModeUnknown},
		}}, want: `
			# TYPE herd_metrics_server_kubelet_auth gauge
			herd_metrics_server_kubelet_auth{deployment="metrics-server",mode="token",namespace="kube-system"} 1
			herd_metrics_server_kubelet_auth{deployment="metrics-server-helm",mode="certificate",namespace="kube-system"} 1
			herd_metrics_server_kubelet_auth{deployment="odd",mode="unknown",namespace="kube-system"} 1
		`},
		{name: "no metrics-server", c: metricsServerCollector{staticMetricsServer{}}, want: ``},
	})
}

// An informer that has not synced fails the collector (success 0) rather
// than report "no metrics-server".
func TestMetricsServerCollectorBeforeSync(t *testing.T) {
	inf, err := metricsserver.New(fake.NewClientset(), metricsserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := (metricsServerCollector{inf}).Update(nil, make(chan prometheus.Metric, 1)); err == nil {
		t.Error("Update before sync succeeded")
	}
}

type staticFile tail.Stats

func (f staticFile) Stats() tail.Stats { return tail.Stats(f) }

func TestFileCollector(t *testing.T) {
	runTable(t, []tableCase{
		{name: "rotations, truncations, oversized lines per file", c: fileCollector{map[string]FileSource{
			"/var/log/kube-apiserver/audit.log": staticFile{Rotations: 3, Truncations: 1, Oversized: 2},
		}}, want: `
			# TYPE herd_audit_file_oversized_lines_total counter
			herd_audit_file_oversized_lines_total{file="/var/log/kube-apiserver/audit.log"} 2
			# TYPE herd_audit_file_rotations_total counter
			herd_audit_file_rotations_total{file="/var/log/kube-apiserver/audit.log"} 3
			# TYPE herd_audit_file_truncations_total counter
			herd_audit_file_truncations_total{file="/var/log/kube-apiserver/audit.log"} 1
		`},
	})
}
