package collector

import "github.com/prometheus/client_golang/prometheus"

var (
	tokenReviewsDesc = prometheus.NewDesc(namespace+"_tokenreviews_total",
		"TokenReviews created by node-side clients (a kubelet authenticating a webhook-token caller such as metrics-server).",
		[]string{"role", "client"}, nil)
	tokenReviewNodesDesc = prometheus.NewDesc(namespace+"_tokenreview_nodes",
		"Nodes whose kubelet created TokenReviews in the window.", nil, nil)
)

// tokenReviewCollector exports TokenReviews by client and the nodes whose
// kubelets created them in the window (incident 004).
type tokenReviewCollector struct{}

func (tokenReviewCollector) Update(s *Scrape, ch chan<- prometheus.Metric) error {
	snap := s.Snapshot()
	for _, c := range snap.TokenReviews {
		ch <- prometheus.MustNewConstMetric(tokenReviewsDesc, prometheus.CounterValue, float64(c.Value), c.Role, c.Client)
	}
	ch <- prometheus.MustNewConstMetric(tokenReviewNodesDesc, prometheus.GaugeValue, float64(snap.TokenReviewNodes))
	return nil
}
