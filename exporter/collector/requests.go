package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/exporter/accounting"
)

var (
	requestsDesc = prometheus.NewDesc(namespace+"_requests_total",
		"Requests by node-side clients, counted once each (lists at ResponseComplete, watches at ResponseStarted); code is other outside the HTTP status codes.",
		[]string{"role", "client", "verb", "code"}, nil)
	tooLargeDesc = prometheus.NewDesc(namespace+"_too_large_resource_version_total",
		`Requests for a resourceVersion the cluster has not reached: answered "Too large resource version" (detected_by="status"), or answered 200 — a WatchList, a re-watch after an etcd rewind — and above the cluster's revision read after them (detected_by="revision").`,
		[]string{"role", "client", "resource", "detected_by"}, nil)
)

// requestCollector exports every request by verb and code, and the
// too-large-resourceVersion requests.
type requestCollector struct{}

func (requestCollector) Update(s *Scrape, ch chan<- prometheus.Metric) error {
	snap := s.Snapshot()
	for _, r := range snap.Requests {
		ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(r.Value), r.Role, r.Client, r.Verb, accounting.CodeLabel(r.Code))
	}
	for _, c := range snap.TooLarge {
		ch <- prometheus.MustNewConstMetric(tooLargeDesc, prometheus.CounterValue, float64(c.Value), c.Role, c.Client, c.Resource, c.DetectedBy)
	}
	return nil
}
