package collector

import "github.com/prometheus/client_golang/prometheus"

var (
	ghostInstancesDesc = prometheus.NewDesc(namespace+"_ghost_instances",
		"Node-side client instances whose node is not a Node, or whose source address belongs to no Node and no control-plane CIDR.",
		[]string{"role", "client"}, nil)
	ghostInstanceDesc = prometheus.NewDesc(namespace+"_ghost_instance",
		"1 per ghost instance, most recently active first, at most accounting.maxGhostSeries.",
		[]string{"role", "client", "identity", "node", "source_ip", "reason"}, nil)
	staleKubeletDesc = prometheus.NewDesc(namespace+"_stale_kubelet",
		"1 per kubelet of an existing Node whose pod sync is failing in the window (too-large resourceVersion errors or a relist loop), worst first, at most accounting.maxStaleSeries.",
		[]string{"node", "reason"}, nil)
	staleKubeletsDesc = prometheus.NewDesc(namespace+"_stale_kubelets",
		"Kubelets of existing Nodes whose pod sync is failing in the window, all of them (herd_stale_kubelet lists at most accounting.maxStaleSeries).",
		nil, nil)
	nodesDesc = prometheus.NewDesc(namespace+"_cluster_nodes",
		"Nodes in herd's cluster view.", nil, nil)
	syncedDesc = prometheus.NewDesc(namespace+"_cluster_synced",
		"1 once the Node and Lease informers have synced.", nil, nil)
	revisionDesc = prometheus.NewDesc(namespace+"_cluster_revision",
		"The cluster's revision (etcd's, every resourceVersion's) as herd's last consistent read returned it; requests above it are too large.", nil, nil)
	revisionProbesDesc = prometheus.NewDesc(namespace+"_cluster_revision_probes_total",
		"Consistent reads of the cluster's revision (a WatchList of one Node name), by result (ok, error).", []string{"result"}, nil)
	revisionRewindsDesc = prometheus.NewDesc(namespace+"_cluster_revision_rewinds_total",
		"Times the cluster's revision went back (etcd restored from a snapshot without --bump-revision); herd's informers started over each time.", nil, nil)
	revisionRewindDesc = prometheus.NewDesc(namespace+"_cluster_revision_last_rewind_revisions",
		"How many revisions the cluster's revision went back by at the latest rewind (0 when none): the history every client holding a newer resourceVersion lost.", nil, nil)
	viewRestartsDesc = prometheus.NewDesc(namespace+"_cluster_view_restarts_total",
		"Times herd's Node and Lease informers synced again from the cluster's current revision after a rewind.", nil, nil)
)

// clusterCollector exports the verdicts of the scrape's snapshot (ghosts,
// stale kubelets) and the cluster view's own state: its Nodes, and the
// cluster's revision and its rewinds.
type clusterCollector struct{ view ClusterSource }

func (c clusterCollector) Update(s *Scrape, ch chan<- prometheus.Metric) error {
	snap := s.Snapshot()
	if snap.Judged {
		for _, g := range snap.Ghosts {
			ch <- prometheus.MustNewConstMetric(ghostInstanceDesc, prometheus.GaugeValue, 1, g.Role, g.Client, g.Identity, g.Node, g.SourceIP, g.Reason)
		}
		for _, n := range snap.GhostCounts {
			ch <- prometheus.MustNewConstMetric(ghostInstancesDesc, prometheus.GaugeValue, float64(n.Value), n.Role, n.Client)
		}
		for _, st := range snap.Stale {
			ch <- prometheus.MustNewConstMetric(staleKubeletDesc, prometheus.GaugeValue, 1, st.Node, st.Reason)
		}
		ch <- prometheus.MustNewConstMetric(staleKubeletsDesc, prometheus.GaugeValue, float64(snap.StaleTotal))
	}
	ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(c.view.Nodes()))
	synced := 0.0
	if c.view.Synced() {
		synced = 1
	}
	ch <- prometheus.MustNewConstMetric(syncedDesc, prometheus.GaugeValue, synced)
	rev := c.view.Revision()
	if rev.Revision > 0 {
		ch <- prometheus.MustNewConstMetric(revisionDesc, prometheus.GaugeValue, float64(rev.Revision))
	}
	ch <- prometheus.MustNewConstMetric(revisionProbesDesc, prometheus.CounterValue, float64(rev.Probes), "ok")
	ch <- prometheus.MustNewConstMetric(revisionProbesDesc, prometheus.CounterValue, float64(rev.ProbeFailures), "error")
	ch <- prometheus.MustNewConstMetric(revisionRewindsDesc, prometheus.CounterValue, float64(rev.Rewinds))
	ch <- prometheus.MustNewConstMetric(revisionRewindDesc, prometheus.GaugeValue, float64(rev.LastRewind.From-rev.LastRewind.To))
	ch <- prometheus.MustNewConstMetric(viewRestartsDesc, prometheus.CounterValue, float64(rev.Restarts))
	return nil
}
