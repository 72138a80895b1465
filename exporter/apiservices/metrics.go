package apiservices

import (
	"github.com/prometheus/client_golang/prometheus"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/herd-k8s/herd/exporter/collector"
)

var (
	availableDesc = prometheus.NewDesc("herd_apiservice_available",
		"Whether the apiserver's availability controller reports the aggregated APIService Available (1) or not (0). namespace and service are the APIService's backing Service.",
		[]string{"apiservice", "namespace", "service"}, nil)
	probeDurationDesc = prometheus.NewDesc("herd_apiservice_probe_duration_seconds",
		"Duration of herd's probes of GET /apis/<group>/<version> through the apiserver, failed ones included.",
		[]string{"apiservice"}, nil)
	probeFailuresDesc = prometheus.NewDesc("herd_apiservice_probe_failures_total",
		"Failed probes of an aggregated APIService by reason: timeout, http_5xx, http_4xx, connection, tls.",
		[]string{"apiservice", "reason"}, nil)
	endpointsDesc = prometheus.NewDesc("herd_apiservice_endpoints",
		"Endpoints of the aggregated APIService's Service, from its EndpointSlices, by state (ready, not_ready).",
		[]string{"apiservice", "state"}, nil)
	backendDesc = prometheus.NewDesc("herd_apiservice_backend",
		"1 per backend endpoint of the aggregated APIService's Service: its pod (targetRef) and node (nodeName).",
		[]string{"apiservice", "pod", "node"}, nil)
)

var _ collector.Collector = (*View)(nil)

// Update sends the APIService metrics: herd's collector set runs it under
// the name "apiservices". Series exist only for non-local APIServices (those
// with spec.service); local ones are served by kube-apiserver itself.
func (v *View) Update(_ *collector.Scrape, ch chan<- prometheus.Metric) error {
	if !v.Synced() {
		return nil
	}
	for _, a := range v.list() {
		if a.Spec.Service == nil {
			continue
		}
		key := serviceKey(a)
		available := 0.0
		if c := availableCondition(a); c != nil && c.Status == apiregistrationv1.ConditionTrue {
			available = 1
		}
		ch <- prometheus.MustNewConstMetric(availableDesc, prometheus.GaugeValue, available, a.Name, key.Namespace, key.Name)

		if backends, known := v.backends(key); known {
			ready, notReady := 0, 0
			seen := map[[2]string]bool{}
			for _, b := range backends {
				if b.Ready {
					ready++
				} else {
					notReady++
				}
				id := [2]string{b.Pod, b.Node}
				if seen[id] || len(seen) >= v.opts.MaxBackends {
					continue
				}
				seen[id] = true
				ch <- prometheus.MustNewConstMetric(backendDesc, prometheus.GaugeValue, 1, a.Name, b.Pod, b.Node)
			}
			ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, float64(ready), a.Name, "ready")
			ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, float64(notReady), a.Name, "not_ready")
		}

		v.mu.Lock()
		p, ok := v.probes[a.Name]
		var (
			count    uint64
			sum      float64
			buckets  map[float64]uint64
			failures map[string]uint64
		)
		if ok {
			count, sum, buckets = p.count, p.sum, p.cumulative()
			failures = make(map[string]uint64, len(p.failures))
			for r, n := range p.failures {
				failures[r] = n
			}
		}
		v.mu.Unlock()
		if !ok {
			continue // not probed yet
		}
		ch <- prometheus.MustNewConstHistogram(probeDurationDesc, count, sum, buckets, a.Name)
		for _, r := range Reasons {
			ch <- prometheus.MustNewConstMetric(probeFailuresDesc, prometheus.CounterValue, float64(failures[r]), a.Name, r)
		}
	}
	return nil
}
