package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/exporter/audit"
)

var (
	latencySecondsDesc = prometheus.NewDesc(namespace+"_request_latency_seconds_total",
		"Seconds the apiserver spent on requests slower than 500 ms, by phase, from its apiserver.latency.k8s.io/* audit annotations (watches left out).",
		[]string{"role", "client", "resource", "phase"}, nil)
	latencyRequestsDesc = prometheus.NewDesc(namespace+"_latency_annotated_requests_total",
		"Requests the apiserver annotated with its per-phase latency (those slower than 500 ms; watches left out).",
		[]string{"role", "client", "resource"}, nil)
)

// latencyCollector exports which client costs the apiserver etcd,
// serialization or queueing time (issue 13): the apiserver's own latency
// annotations of slow requests, summed per stream and phase.
type latencyCollector struct{}

func (latencyCollector) Update(s *Scrape, ch chan<- prometheus.Metric) error {
	for _, l := range s.Snapshot().Latency {
		ch <- prometheus.MustNewConstMetric(latencyRequestsDesc, prometheus.CounterValue, float64(l.Requests), l.Role, l.Client, l.Resource)
		for phase, seconds := range l.Seconds {
			ch <- prometheus.MustNewConstMetric(latencySecondsDesc, prometheus.CounterValue, seconds, l.Role, l.Client, l.Resource, audit.LatencyPhase(phase).String())
		}
	}
	return nil
}
