package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/exporter/accounting"
)

var (
	relistsDesc = prometheus.NewDesc(namespace+"_relists_total",
		"Relists (LISTs without continue, and WatchList watches) by node-side clients, by consistency and shape (all, node, selected, object).",
		[]string{"role", "client", "resource", "consistency", "shape"}, nil)
	pagesDesc = prometheus.NewDesc(namespace+"_list_pages_total",
		"Continuation pages (LISTs with a continue token) by node-side clients.",
		[]string{"role", "client", "resource"}, nil)
	intervalDesc = prometheus.NewDesc(namespace+"_relist_interval_seconds",
		"Time between consecutive relists of the same resource, in the same shape, by the same instance.",
		[]string{"role", "client", "resource", "shape"}, nil)
	relistingDesc = prometheus.NewDesc(namespace+"_relisting_instances",
		"Instances with at least the configured number of relists of a resource, in one shape, in the window.",
		[]string{"role", "client", "resource", "shape"}, nil)
	instanceRelistsDesc = prometheus.NewDesc(namespace+"_instance_relists",
		"Relists in the window by the top-K instances of each stream and the flagged ones, by node and identity; classified_by=user_agent marks an identity only its User-Agent put in this client.",
		[]string{"role", "client", "node", "identity", "classified_by", "resource", "shape"}, nil)
)

// relistCollector exports relists, pages, intervals, relisting instances
// and the top-K (and flagged) instances' windowed relists.
type relistCollector struct{}

func (relistCollector) Update(s *Scrape, ch chan<- prometheus.Metric) error {
	snap := s.Snapshot()
	for _, r := range snap.Relists {
		ch <- prometheus.MustNewConstMetric(relistsDesc, prometheus.CounterValue, float64(r.Value), r.Role, r.Client, r.Resource, r.Consistency, r.Shape)
	}
	emitStreams(ch, pagesDesc, prometheus.CounterValue, snap.Pages)
	for _, h := range snap.Intervals {
		ch <- prometheus.MustNewConstHistogram(intervalDesc, h.Count, h.Sum, h.Buckets, h.Role, h.Client, h.Resource, h.Shape)
	}
	for _, r := range snap.RelistingInstances {
		ch <- prometheus.MustNewConstMetric(relistingDesc, prometheus.GaugeValue, float64(r.Value), r.Role, r.Client, r.Resource, r.Shape)
	}
	for _, t := range snap.TopInstances {
		ch <- prometheus.MustNewConstMetric(instanceRelistsDesc, prometheus.GaugeValue, float64(t.Relists), t.Role, t.Client, t.Node, t.Identity, t.ClassifiedBy, t.Resource, t.Shape)
	}
	return nil
}

func emitStreams(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, counts []accounting.StreamCount) {
	for _, c := range counts {
		ch <- prometheus.MustNewConstMetric(d, t, float64(c.Value), c.Role, c.Client, c.Resource)
	}
}
