package collector

import "github.com/prometheus/client_golang/prometheus"

var (
	instancesDesc = prometheus.NewDesc(namespace+"_instances",
		"Node-side client instances herd is tracking (bounded by maxInstances).", nil, nil)
	evictedDesc = prometheus.NewDesc(namespace+"_instances_evicted_total",
		"Instances dropped from the table because it was full (least recently seen first).", nil, nil)
	revisionDroppedDesc = prometheus.NewDesc(namespace+"_revision_checks_dropped_total",
		"Requests with a resourceVersion not compared with the cluster's revision because accounting.maxPendingRevisionChecks were already waiting for the next revision read.", nil, nil)
)

// ledgerCollector exports the instance table's size and evictions, and the
// too-large checks it could not make.
type ledgerCollector struct{}

func (ledgerCollector) Update(s *Scrape, ch chan<- prometheus.Metric) error {
	snap := s.Snapshot()
	ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(snap.Instances))
	ch <- prometheus.MustNewConstMetric(evictedDesc, prometheus.CounterValue, float64(snap.Evicted))
	ch <- prometheus.MustNewConstMetric(revisionDroppedDesc, prometheus.CounterValue, float64(snap.RevisionChecksDropped))
	return nil
}
