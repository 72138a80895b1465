// Package collector turns herd's state into Prometheus metrics at scrape
// time, in the manner of node_exporter: one file per collector, const metrics
// built from a snapshot (so no stale series survive an instance that went
// away), and a duration and success series per collector.
package collector

import (
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/exporter/accounting"
)

const namespace = "herd"

var (
	scrapeDurationDesc = prometheus.NewDesc(namespace+"_scrape_collector_duration_seconds",
		"How long a herd collector took to build its metrics for this scrape.", []string{"collector"}, nil)
	scrapeSuccessDesc = prometheus.NewDesc(namespace+"_scrape_collector_success",
		"Whether a herd collector succeeded (1) or failed (0) in this scrape.", []string{"collector"}, nil)
)

// Collector builds one area's metrics for a scrape.
type Collector interface {
	Update(s *Scrape, ch chan<- prometheus.Metric) error
}

// Scrape is what the collectors of one scrape share: the ledger snapshot is
// taken once, however many collectors read it.
type Scrape struct {
	ledger   *accounting.Ledger
	once     sync.Once
	snapshot accounting.Snapshot
}

// Ledger returns this scrape's snapshot of the ledger.
func (s *Scrape) Ledger() *accounting.Snapshot {
	s.once.Do(func() { s.snapshot = s.ledger.Snapshot() })
	return &s.snapshot
}

// Herd runs the collectors. Register it on a dedicated registry.
type Herd struct {
	ledger     *accounting.Ledger
	collectors map[string]Collector
	logger     *slog.Logger
}

// New returns the collector set over ledger: the audit-derived collectors,
// plus any extra ones (the cluster view adds its own).
func New(ledger *accounting.Ledger, logger *slog.Logger, extra map[string]Collector) *Herd {
	cs := map[string]Collector{
		"relists":      relistCollector{},
		"requests":     requestCollector{},
		"tokenreviews": tokenReviewCollector{},
		"ledger":       ledgerCollector{},
	}
	for name, c := range extra {
		cs[name] = c
	}
	return &Herd{ledger: ledger, collectors: cs, logger: logger}
}

// Describe sends only the per-collector descriptors, as node_exporter does:
// the rest depend on what the scrape finds.
func (h *Herd) Describe(ch chan<- *prometheus.Desc) {
	ch <- scrapeDurationDesc
	ch <- scrapeSuccessDesc
}

// Collect runs every collector in name order.
func (h *Herd) Collect(ch chan<- prometheus.Metric) {
	s := &Scrape{ledger: h.ledger}
	names := make([]string, 0, len(h.collectors))
	for n := range h.collectors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		start := time.Now()
		err := h.collectors[name].Update(s, ch)
		success := 1.0
		if err != nil {
			success = 0
			h.logger.Error("collector failed", "collector", name, "err", err)
		}
		ch <- prometheus.MustNewConstMetric(scrapeDurationDesc, prometheus.GaugeValue, time.Since(start).Seconds(), name)
		ch <- prometheus.MustNewConstMetric(scrapeSuccessDesc, prometheus.GaugeValue, success, name)
	}
}
