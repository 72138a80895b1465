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
		`Requests answered "Too large resource version" (a client asking for a resourceVersion the apiserver has not reached).`,
		[]string{"role", "client", "resource"}, nil)
)

// requestCollector exports every request by verb and code, and the
// too-large-resourceVersion answers.
type requestCollector struct{}

func (requestCollector) Update(s *Scrape, ch chan<- prometheus.Metric) error {
	snap := s.Snapshot()
	for _, r := range snap.Requests {
		ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(r.Value), r.Role, r.Client, r.Verb, accounting.CodeLabel(r.Code))
	}
	emitStreams(ch, tooLargeDesc, prometheus.CounterValue, snap.TooLarge)
	return nil
}
