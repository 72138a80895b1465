// Package collector turns herd's state into Prometheus metrics at scrape
// time, in the manner of node_exporter: one file per collector, const metrics
// built from what the sources hold at that moment (so no stale series
// survive an instance that went away), and a duration and success series
// per collector.
//
// Every audit-derived collector reads one accounting.Snapshot, taken once
// per scrape, in which the ledger has already made every verdict (ghosts,
// stale kubelets, the flagged instances and top-K): no collector depends on
// another having run first.
package collector

import (
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/apiservices"
	"github.com/herd-k8s/herd/exporter/metricsserver"
	"github.com/herd-k8s/herd/exporter/tail"
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

// Sources is what the collectors read. Only Ledger is needed; a nil source
// leaves its collector out (`--no-kube` has no cluster view, APIServices or
// metrics-server; no --audit.log-file, no file collector).
type Sources struct {
	Ledger        *accounting.Ledger
	Cluster       ClusterSource
	APIServices   APIServiceSource
	MetricsServer MetricsServerSource
	// AuditFiles are the followed --audit.log-file paths.
	AuditFiles map[string]FileSource
}

// ClusterSource is the cluster view (exporter/cluster.View).
type ClusterSource interface {
	Nodes() int
	Synced() bool
	Revision() accounting.RevisionStatus
}

// APIServiceSource is the aggregated-APIService view (exporter/apiservices.View).
type APIServiceSource interface {
	Status() []apiservices.Status
}

// MetricsServerSource is the metrics-server Deployment informer
// (exporter/metricsserver.Informer).
type MetricsServerSource interface {
	Synced() bool
	Deployments() []metricsserver.DeploymentView
}

// FileSource is a followed audit log file (exporter/tail.Follower).
type FileSource interface {
	Stats() tail.Stats
}

// Scrape is what the collectors of one scrape share: the ledger snapshot is
// taken once, however many collectors read it.
type Scrape struct {
	ledger   *accounting.Ledger
	once     sync.Once
	snapshot accounting.Snapshot
}

// Snapshot returns this scrape's snapshot of the ledger (empty without one).
func (s *Scrape) Snapshot() *accounting.Snapshot {
	s.once.Do(func() {
		if s.ledger != nil {
			s.snapshot = s.ledger.Snapshot()
		}
	})
	return &s.snapshot
}

// Herd runs the collectors. Register it on a dedicated registry.
type Herd struct {
	ledger     *accounting.Ledger
	collectors map[string]Collector
	// names is the order Collect runs them in; any order gives the same
	// metrics (TestCollectorOrderDoesNotMatter).
	names  []string
	logger *slog.Logger
}

// New returns the collector set over sources.
func New(src Sources, logger *slog.Logger) *Herd {
	cs := map[string]Collector{}
	if src.Ledger != nil {
		cs["relists"] = relistCollector{}
		cs["requests"] = requestCollector{}
		cs["latency"] = latencyCollector{}
		cs["tokenreviews"] = tokenReviewCollector{}
		cs["ledger"] = ledgerCollector{}
		cs["stampede"] = stampedeCollector{}
		cs["wave"] = waveCollector{}
	}
	if src.Cluster != nil {
		cs["cluster"] = clusterCollector{src.Cluster}
	}
	if src.APIServices != nil {
		cs["apiservices"] = apiServiceCollector{src.APIServices}
	}
	if src.MetricsServer != nil {
		cs["metricsserver"] = metricsServerCollector{src.MetricsServer}
	}
	if len(src.AuditFiles) > 0 {
		cs["auditfiles"] = fileCollector{src.AuditFiles}
	}
	return &Herd{ledger: src.Ledger, collectors: cs, names: slices.Sorted(maps.Keys(cs)), logger: logger}
}

// Describe sends only the per-collector descriptors, as node_exporter does:
// the rest depend on what the scrape finds.
func (h *Herd) Describe(ch chan<- *prometheus.Desc) {
	ch <- scrapeDurationDesc
	ch <- scrapeSuccessDesc
}

// Collect runs every collector.
func (h *Herd) Collect(ch chan<- prometheus.Metric) {
	s := &Scrape{ledger: h.ledger}
	for _, name := range h.names {
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
