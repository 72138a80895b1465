package collector

import "github.com/prometheus/client_golang/prometheus"

var (
	stampedeInstancesDesc = prometheus.NewDesc(namespace+"_stampede_instances",
		"Live instances of a client on a resource — they watched or relisted it within accounting.liveWindow — by the shape, consistency and mode (list, watchlist; unknown before herd saw a relist) of their latest relist, and the APF priority level that serves the client's LISTs of it (\"\" when unknown): the instances one synchronized relist would bring at once.",
		[]string{"role", "client", "resource", "shape", "consistency", "mode", "priority_level"}, nil)
	stampedeSubjectsDesc = prometheus.NewDesc(namespace+"_stampede_subjects",
		"Live instances of a client on a resource by FlowSchema subject (group:system:nodes, serviceaccount:NS:NAME, user:NAME), for identities classified by who they are and authenticated; at most accounting.maxSubjects per role, client and resource.",
		[]string{"role", "client", "resource", "subject"}, nil)
)

// stampedeCollector exports the stampede forecast's input (issue 12):
// live instances by relist shape and priority level, and their subjects.
type stampedeCollector struct{}

func (stampedeCollector) Update(s *Scrape, ch chan<- prometheus.Metric) error {
	snap := s.Snapshot()
	for _, c := range snap.Stampede {
		ch <- prometheus.MustNewConstMetric(stampedeInstancesDesc, prometheus.GaugeValue, float64(c.Value),
			c.Role, c.Client, c.Resource, c.Shape, c.Consistency, c.Mode, c.PriorityLevel)
	}
	for _, c := range snap.StampedeSubjects {
		ch <- prometheus.MustNewConstMetric(stampedeSubjectsDesc, prometheus.GaugeValue, float64(c.Value), c.Role, c.Client, c.Resource, c.Subject)
	}
	return nil
}
