package collector

import "github.com/prometheus/client_golang/prometheus"

var waveDesc = prometheus.NewDesc(namespace+"_relist_wave_instances",
	"Instances whose relist of a resource started (a LIST's RequestReceived audit stage) or completed within accounting.waveWindow, by shape and mode: the fast path's signal of a synchronized relist, which moves at the next scrape.",
	[]string{"role", "client", "resource", "shape", "mode"}, nil)

// waveCollector exports the relist wave (issue 12's fast path).
type waveCollector struct{}

func (waveCollector) Update(s *Scrape, ch chan<- prometheus.Metric) error {
	for _, w := range s.Snapshot().Wave {
		ch <- prometheus.MustNewConstMetric(waveDesc, prometheus.GaugeValue, float64(w.Value), w.Role, w.Client, w.Resource, w.Shape, w.Mode)
	}
	return nil
}
