package collector

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

var metricsServerAuthDesc = prometheus.NewDesc(namespace+"_metrics_server_kubelet_auth",
	"metrics-server Deployments by how they authenticate to kubelets, always 1: mode=token means every kubelet creates TokenReviews for its scrapes, certificate means a client certificate kubelets verify locally, unknown means only one of --kubelet-client-certificate and --kubelet-client-key is set or no metrics-server container was found.",
	[]string{"namespace", "deployment", "mode"}, nil)

// errMetricsServerNotSynced fails the collector (herd_scrape_collector_success
// 0) until the informer has its initial state, rather than reporting "no
// metrics-server" while herd does not know yet.
var errMetricsServerNotSynced = errors.New("metrics-server deployment informer has not synced")

// metricsServerCollector exports herd_metrics_server_kubelet_auth for each
// metrics-server Deployment, built at scrape time so that a deleted
// Deployment leaves no series behind.
type metricsServerCollector struct{ src MetricsServerSource }

func (c metricsServerCollector) Update(_ *Scrape, ch chan<- prometheus.Metric) error {
	if !c.src.Synced() {
		return errMetricsServerNotSynced
	}
	for _, v := range c.src.Deployments() {
		ch <- prometheus.MustNewConstMetric(metricsServerAuthDesc, prometheus.GaugeValue, 1, v.Namespace, v.Name, string(v.Mode))
	}
	return nil
}
