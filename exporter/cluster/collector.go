package cluster

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/collector"
)

var (
	ghostInstancesDesc = prometheus.NewDesc("herd_ghost_instances",
		"Node-side client instances whose node is not a Node, or whose source address belongs to no Node and no control-plane CIDR.",
		[]string{"role", "client"}, nil)
	ghostInstanceDesc = prometheus.NewDesc("herd_ghost_instance",
		"1 per ghost instance, most recently active first, at most cluster.maxGhostSeries.",
		[]string{"role", "client", "identity", "node", "source_ip", "reason"}, nil)
	staleKubeletDesc = prometheus.NewDesc("herd_stale_kubelet",
		"1 per kubelet of an existing Node whose pod sync is failing in the window (too-large resourceVersion errors or a relist loop), worst first, at most cluster.maxStaleSeries.",
		[]string{"node", "reason"}, nil)
	staleKubeletsDesc = prometheus.NewDesc("herd_stale_kubelets",
		"Kubelets of existing Nodes whose pod sync is failing in the window, all of them (herd_stale_kubelet lists at most cluster.maxStaleSeries).",
		nil, nil)
	nodesDesc = prometheus.NewDesc("herd_cluster_nodes",
		"Nodes in herd's cluster view.", nil, nil)
	syncedDesc = prometheus.NewDesc("herd_cluster_synced",
		"1 once the Node and Lease informers have synced.", nil, nil)
)

// Collector exports ghosts and stale kubelets from the ledger and the view.
// Register it under a name that sorts before "relists" ("cluster"): its
// Update publishes the flagged set that the ledger snapshot, taken later in
// the same scrape, consults.
type Collector struct {
	View   *View
	Ledger *accounting.Ledger
	// MaxGhosts and MaxStale bound the per-instance series (and the instances
	// flagged for per-node relist series), so that a mass event — every
	// kubelet stale after an etcd restore — cannot make series follow
	// cluster size. Counts are exported whole.
	MaxGhosts int
	MaxStale  int

	mu      sync.Mutex
	flagged map[flagKey]bool
}

type flagKey struct{ identity, node string }

// Flagged implements accounting.Flagger: ghosts and stale kubelets always get
// per-node relist series. It reads the verdicts of the latest Update.
func (c *Collector) Flagged(identity, node string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flagged[flagKey{identity, node}]
}

// Thresholds are the ledger's stale-kubelet thresholds.
func (c *Collector) Thresholds() Thresholds { return c.thresholds() }

func (c *Collector) thresholds() Thresholds {
	cfg := c.Ledger.Config()
	return Thresholds{TooLarge: cfg.StaleTooLarge, PodRelists: cfg.StalePodRelists, Window: cfg.Window}
}

type ghost struct {
	role, client, identity, node, ip, reason string
	lastSeen                                 int64
}

type stale struct {
	node, identity, reason string
	severity               int
}

// Update implements collector.Collector.
func (c *Collector) Update(_ *collector.Scrape, ch chan<- prometheus.Metric) error {
	th := c.thresholds()
	now := c.View.now()
	counts := map[[2]string]int{}
	var ghosts []ghost
	var stales []stale
	c.Ledger.Scan(now.UnixNano(), func(w *accounting.InstanceWindow) {
		if !hostAgent(w.Role) {
			return
		}
		k := [2]string{w.Role.String(), w.Client}
		v, _ := c.View.judge(w, th, now)
		counts[k] += 0
		if v.Ghost {
			counts[k]++
			ghosts = append(ghosts, ghost{k[0], k[1], w.Identity, w.Node, w.SourceIP, v.GhostReason, w.LastSeen})
		}
		if v.Stale {
			stales = append(stales, stale{w.Node, w.Identity, v.StaleReason, w.TooLarge*1000 + w.PodRelists})
		}
	})
	flagged := map[flagKey]bool{}

	sort.Slice(ghosts, func(i, j int) bool { return ghosts[i].lastSeen > ghosts[j].lastSeen })
	shown := map[ghost]bool{}
	for _, g := range ghosts {
		g.lastSeen = 0
		if len(shown) >= orDefault(c.MaxGhosts, 50) || shown[g] {
			continue
		}
		shown[g] = true
		flagged[flagKey{g.identity, g.node}] = true
		ch <- prometheus.MustNewConstMetric(ghostInstanceDesc, prometheus.GaugeValue, 1, g.role, g.client, g.identity, g.node, g.ip, g.reason)
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(ghostInstancesDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}

	sort.Slice(stales, func(i, j int) bool {
		if stales[i].severity != stales[j].severity {
			return stales[i].severity > stales[j].severity
		}
		return stales[i].node < stales[j].node
	})
	staleNodes := map[[2]string]bool{}
	for _, st := range stales {
		k := [2]string{st.node, st.reason}
		if staleNodes[k] || len(staleNodes) >= orDefault(c.MaxStale, 200) {
			continue
		}
		staleNodes[k] = true
		flagged[flagKey{st.identity, st.node}] = true
		ch <- prometheus.MustNewConstMetric(staleKubeletDesc, prometheus.GaugeValue, 1, st.node, st.reason)
	}
	ch <- prometheus.MustNewConstMetric(staleKubeletsDesc, prometheus.GaugeValue, float64(len(stales)))

	c.mu.Lock()
	c.flagged = flagged
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(len(c.View.nodes.GetStore().ListKeys())))
	synced := 0.0
	if c.View.Synced() {
		synced = 1
	}
	ch <- prometheus.MustNewConstMetric(syncedDesc, prometheus.GaugeValue, synced)
	return nil
}

func orDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}
