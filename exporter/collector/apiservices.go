package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/exporter/apiservices"
)

var (
	apiServiceAvailableDesc = prometheus.NewDesc(namespace+"_apiservice_available",
		"Whether the apiserver's availability controller reports the aggregated APIService Available (1) or not (0). namespace and service are the APIService's backing Service.",
		[]string{"apiservice", "namespace", "service"}, nil)
	apiServiceProbeDurationDesc = prometheus.NewDesc(namespace+"_apiservice_probe_duration_seconds",
		"Duration of herd's probes of GET /apis/<group>/<version> through the apiserver, failed ones included.",
		[]string{"apiservice"}, nil)
	apiServiceProbeFailuresDesc = prometheus.NewDesc(namespace+"_apiservice_probe_failures_total",
		"Failed probes of an aggregated APIService by reason: timeout, http_5xx, http_4xx, connection, tls.",
		[]string{"apiservice", "reason"}, nil)
	apiServiceEndpointsDesc = prometheus.NewDesc(namespace+"_apiservice_endpoints",
		"Endpoints of the aggregated APIService's Service, from its EndpointSlices, by state (ready, not_ready).",
		[]string{"apiservice", "state"}, nil)
	apiServiceBackendDesc = prometheus.NewDesc(namespace+"_apiservice_backend",
		"1 per backend endpoint of the aggregated APIService's Service: its pod (targetRef) and node (nodeName).",
		[]string{"apiservice", "pod", "node"}, nil)
)

// apiServiceCollector exports the health of every non-local APIService:
// its Available condition, its backends, and herd's probes of it.
type apiServiceCollector struct{ src APIServiceSource }

func (c apiServiceCollector) Update(_ *Scrape, ch chan<- prometheus.Metric) error {
	for _, a := range c.src.Status() {
		available := 0.0
		if a.Available {
			available = 1
		}
		ch <- prometheus.MustNewConstMetric(apiServiceAvailableDesc, prometheus.GaugeValue, available, a.Name, a.Namespace, a.Service)
		if a.BackendsKnown {
			for _, b := range a.Backends {
				ch <- prometheus.MustNewConstMetric(apiServiceBackendDesc, prometheus.GaugeValue, 1, a.Name, b.Pod, b.Node)
			}
			ch <- prometheus.MustNewConstMetric(apiServiceEndpointsDesc, prometheus.GaugeValue, float64(a.Ready), a.Name, "ready")
			ch <- prometheus.MustNewConstMetric(apiServiceEndpointsDesc, prometheus.GaugeValue, float64(a.NotReady), a.Name, "not_ready")
		}
		if p := a.Probe; p != nil {
			ch <- prometheus.MustNewConstHistogram(apiServiceProbeDurationDesc, p.Count, p.Sum, p.Buckets, a.Name)
			for _, r := range apiservices.Reasons {
				ch <- prometheus.MustNewConstMetric(apiServiceProbeFailuresDesc, prometheus.CounterValue, float64(p.Failures[r]), a.Name, r)
			}
		}
	}
	return nil
}
