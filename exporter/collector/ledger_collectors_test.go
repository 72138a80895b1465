package collector

import (
	"testing"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/audit"
)

var (
	kubeletPods = accounting.StreamLabels{ClientLabels: accounting.ClientLabels{Role: "kubelet", Client: "kubelet"}, Resource: "pods"}
	ciliumPods  = accounting.StreamLabels{ClientLabels: accounting.ClientLabels{Role: "cni", Client: "cilium-agent"}, Resource: "pods"}

	kubeletConfigMaps = accounting.StreamLabels{ClientLabels: accounting.ClientLabels{Role: "kubelet", Client: "kubelet"}, Resource: "configmaps"}
)

func TestRelistCollector(t *testing.T) {
	runTable(t, []tableCase{
		{name: "nothing accounted", c: relistCollector{}, want: ``},
		{name: "relists, pages, intervals, relisting and top instances", c: relistCollector{}, s: scrapeOf(accounting.Snapshot{
			Relists: []accounting.RelistCount{
				{StreamLabels: kubeletPods, Shape: "node", Consistency: "cache", Value: 7},
				{StreamLabels: kubeletConfigMaps, Shape: "object", Consistency: "cache", Value: 40},
				{StreamLabels: ciliumPods, Shape: "all", Consistency: "consistent", Value: 2},
			},
			Pages: []accounting.StreamCount{{StreamLabels: ciliumPods, Value: 3}},
			Intervals: []accounting.IntervalHistogram{{ShapeLabels: accounting.ShapeLabels{StreamLabels: kubeletPods, Shape: "node"}, Count: 2, Sum: 10,
				Buckets: map[float64]uint64{1: 0, 5: 1, 15: 2}}},
			RelistingInstances: []accounting.ShapeCount{
				{ShapeLabels: accounting.ShapeLabels{StreamLabels: kubeletPods, Shape: "node"}, Value: 1},
				{ShapeLabels: accounting.ShapeLabels{StreamLabels: kubeletConfigMaps, Shape: "object"}, Value: 30},
				{ShapeLabels: accounting.ShapeLabels{StreamLabels: ciliumPods, Shape: "all"}, Value: 0},
			},
			TopInstances: []accounting.InstanceRelists{
				{ShapeLabels: accounting.ShapeLabels{StreamLabels: kubeletPods, Shape: "node"}, Node: "node-1", Identity: "system:node:node-1", ClassifiedBy: "identity", Relists: 5},
				{ShapeLabels: accounting.ShapeLabels{StreamLabels: ciliumPods, Shape: "all"}, Node: "", Identity: "system:serviceaccount:default:app", ClassifiedBy: "user_agent", Relists: 2},
			},
		}), want: `
			# TYPE herd_instance_relists gauge
			herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:node-1",node="node-1",resource="pods",role="kubelet",shape="node"} 5
			herd_instance_relists{classified_by="user_agent",client="cilium-agent",identity="system:serviceaccount:default:app",node="",resource="pods",role="cni",shape="all"} 2
			# TYPE herd_list_pages_total counter
			herd_list_pages_total{client="cilium-agent",resource="pods",role="cni"} 3
			# TYPE herd_relist_interval_seconds histogram
			herd_relist_interval_seconds_bucket{client="kubelet",resource="pods",role="kubelet",shape="node",le="1"} 0
			herd_relist_interval_seconds_bucket{client="kubelet",resource="pods",role="kubelet",shape="node",le="5"} 1
			herd_relist_interval_seconds_bucket{client="kubelet",resource="pods",role="kubelet",shape="node",le="15"} 2
			herd_relist_interval_seconds_bucket{client="kubelet",resource="pods",role="kubelet",shape="node",le="+Inf"} 2
			herd_relist_interval_seconds_sum{client="kubelet",resource="pods",role="kubelet",shape="node"} 10
			herd_relist_interval_seconds_count{client="kubelet",resource="pods",role="kubelet",shape="node"} 2
			# TYPE herd_relisting_instances gauge
			herd_relisting_instances{client="cilium-agent",resource="pods",role="cni",shape="all"} 0
			herd_relisting_instances{client="kubelet",resource="configmaps",role="kubelet",shape="object"} 30
			herd_relisting_instances{client="kubelet",resource="pods",role="kubelet",shape="node"} 1
			# TYPE herd_relists_total counter
			herd_relists_total{client="cilium-agent",consistency="consistent",resource="pods",role="cni",shape="all"} 2
			herd_relists_total{client="kubelet",consistency="cache",resource="configmaps",role="kubelet",shape="object"} 40
			herd_relists_total{client="kubelet",consistency="cache",resource="pods",role="kubelet",shape="node"} 7
		`},
	})
}

func TestRequestCollector(t *testing.T) {
	runTable(t, []tableCase{
		{name: "requests by verb and code, too-large answers", c: requestCollector{}, s: scrapeOf(accounting.Snapshot{
			Requests: []accounting.RequestCount{
				{ClientLabels: kubeletPods.ClientLabels, Verb: "list", Code: 200, Value: 9},
				{ClientLabels: kubeletPods.ClientLabels, Verb: "list", Code: 504, Value: 3},
				{ClientLabels: kubeletPods.ClientLabels, Verb: "other", Code: 0, Value: 2}, // a code outside the HTTP set
			},
			TooLarge: []accounting.TooLargeCount{{StreamLabels: kubeletPods, DetectedBy: "status", Value: 3}, {StreamLabels: kubeletPods, DetectedBy: "revision", Value: 5}},
		}), want: `
			# TYPE herd_requests_total counter
			herd_requests_total{client="kubelet",code="200",role="kubelet",verb="list"} 9
			herd_requests_total{client="kubelet",code="504",role="kubelet",verb="list"} 3
			herd_requests_total{client="kubelet",code="other",role="kubelet",verb="other"} 2
			# TYPE herd_too_large_resource_version_total counter
			herd_too_large_resource_version_total{client="kubelet",detected_by="revision",resource="pods",role="kubelet"} 5
			herd_too_large_resource_version_total{client="kubelet",detected_by="status",resource="pods",role="kubelet"} 3
		`},
	})
}

func TestLatencyCollector(t *testing.T) {
	runTable(t, []tableCase{
		{name: "no slow request", c: latencyCollector{}, want: ``},
		{name: "slow pod LISTs, every phase exported", c: latencyCollector{}, s: scrapeOf(accounting.Snapshot{
			Latency: []accounting.LatencySums{{StreamLabels: ciliumPods, Requests: 4, Seconds: [audit.NumLatencyPhases]float64{6.5, 4, 0, 1.5, 0.25, 0.5}}},
		}), want: `
			# TYPE herd_latency_annotated_requests_total counter
			herd_latency_annotated_requests_total{client="cilium-agent",resource="pods",role="cni"} 4
			# TYPE herd_request_latency_seconds_total counter
			herd_request_latency_seconds_total{client="cilium-agent",phase="apf-queue-wait",resource="pods",role="cni"} 0
			herd_request_latency_seconds_total{client="cilium-agent",phase="authentication",resource="pods",role="cni"} 0
			herd_request_latency_seconds_total{client="cilium-agent",phase="authorization",resource="pods",role="cni"} 0
			herd_request_latency_seconds_total{client="cilium-agent",phase="decode-response-object",resource="pods",role="cni"} 0
			herd_request_latency_seconds_total{client="cilium-agent",phase="etcd",resource="pods",role="cni"} 4
			herd_request_latency_seconds_total{client="cilium-agent",phase="impersonation",resource="pods",role="cni"} 0
			herd_request_latency_seconds_total{client="cilium-agent",phase="mutating-webhook",resource="pods",role="cni"} 0
			herd_request_latency_seconds_total{client="cilium-agent",phase="response-write",resource="pods",role="cni"} 0.5
			herd_request_latency_seconds_total{client="cilium-agent",phase="serialize-response-object",resource="pods",role="cni"} 1.5
			herd_request_latency_seconds_total{client="cilium-agent",phase="total",resource="pods",role="cni"} 6.5
			herd_request_latency_seconds_total{client="cilium-agent",phase="transform-response-object",resource="pods",role="cni"} 0.25
			herd_request_latency_seconds_total{client="cilium-agent",phase="validating-webhook",resource="pods",role="cni"} 0
		`},
	})
}

func TestTokenReviewCollector(t *testing.T) {
	runTable(t, []tableCase{
		{name: "none: the node gauge is still there", c: tokenReviewCollector{}, want: `
			# TYPE herd_tokenreview_nodes gauge
			herd_tokenreview_nodes 0
		`},
		{name: "kubelets reviewing tokens", c: tokenReviewCollector{}, s: scrapeOf(accounting.Snapshot{
			TokenReviews:     []accounting.ClientCount{{ClientLabels: kubeletPods.ClientLabels, Value: 40}},
			TokenReviewNodes: 4,
		}), want: `
			# TYPE herd_tokenreview_nodes gauge
			herd_tokenreview_nodes 4
			# TYPE herd_tokenreviews_total counter
			herd_tokenreviews_total{client="kubelet",role="kubelet"} 40
		`},
	})
}

func TestLedgerCollector(t *testing.T) {
	runTable(t, []tableCase{
		{name: "table size and evictions", c: ledgerCollector{}, s: scrapeOf(accounting.Snapshot{Instances: 15000, Evicted: 12, RevisionChecksDropped: 3}), want: `
			# TYPE herd_instances gauge
			herd_instances 15000
			# TYPE herd_instances_evicted_total counter
			herd_instances_evicted_total 12
			# TYPE herd_revision_checks_dropped_total counter
			herd_revision_checks_dropped_total 3
		`},
	})
}

// staticCluster is a cluster view's state: so many Nodes, synced or not,
// and its revision.
type staticCluster struct {
	nodes  int
	synced bool
	rev    accounting.RevisionStatus
}

func (c staticCluster) Nodes() int                          { return c.nodes }
func (c staticCluster) Synced() bool                        { return c.synced }
func (c staticCluster) Revision() accounting.RevisionStatus { return c.rev }

func TestClusterCollector(t *testing.T) {
	runTable(t, []tableCase{
		{name: "not synced, nothing judged, no revision read yet", c: clusterCollector{staticCluster{rev: accounting.RevisionStatus{ProbeFailures: 2}}}, want: `
			# TYPE herd_cluster_nodes gauge
			herd_cluster_nodes 0
			# TYPE herd_cluster_revision_last_rewind_revisions gauge
			herd_cluster_revision_last_rewind_revisions 0
			# TYPE herd_cluster_revision_probes_total counter
			herd_cluster_revision_probes_total{result="error"} 2
			herd_cluster_revision_probes_total{result="ok"} 0
			# TYPE herd_cluster_revision_rewinds_total counter
			herd_cluster_revision_rewinds_total 0
			# TYPE herd_cluster_synced gauge
			herd_cluster_synced 0
			# TYPE herd_cluster_view_restarts_total counter
			herd_cluster_view_restarts_total 0
		`},
		{name: "the revision went back once and the view relisted", c: clusterCollector{staticCluster{nodes: 20, synced: true, rev: accounting.RevisionStatus{
			Revision: 812, Probes: 40, Rewinds: 1, Restarts: 1, LastRewind: accounting.Rewind{From: 2750, To: 640},
		}}}, want: `
			# TYPE herd_cluster_nodes gauge
			herd_cluster_nodes 20
			# TYPE herd_cluster_revision gauge
			herd_cluster_revision 812
			# TYPE herd_cluster_revision_last_rewind_revisions gauge
			herd_cluster_revision_last_rewind_revisions 2110
			# TYPE herd_cluster_revision_probes_total counter
			herd_cluster_revision_probes_total{result="error"} 0
			herd_cluster_revision_probes_total{result="ok"} 40
			# TYPE herd_cluster_revision_rewinds_total counter
			herd_cluster_revision_rewinds_total 1
			# TYPE herd_cluster_synced gauge
			herd_cluster_synced 1
			# TYPE herd_cluster_view_restarts_total counter
			herd_cluster_view_restarts_total 1
		`},
		{name: "ghosts and stale kubelets", c: clusterCollector{staticCluster{nodes: 3, synced: true}}, s: scrapeOf(accounting.Snapshot{
			Judged: true,
			GhostCounts: []accounting.ClientCount{
				{ClientLabels: kubeletPods.ClientLabels, Value: 2},
				{ClientLabels: ciliumPods.ClientLabels, Value: 0},
			},
			Ghosts: []accounting.GhostInstance{{ClientLabels: kubeletPods.ClientLabels, Identity: "system:node:gone", Node: "gone",
				SourceIP: "10.99.0.1", Reason: "no_such_node"}},
			Stale:      []accounting.StaleKubelet{{Node: "node-2", Reason: accounting.ReasonTooLargeRV}},
			StaleTotal: 3,
		}), want: `
			# TYPE herd_cluster_nodes gauge
			herd_cluster_nodes 3
			# TYPE herd_cluster_revision_last_rewind_revisions gauge
			herd_cluster_revision_last_rewind_revisions 0
			# TYPE herd_cluster_revision_probes_total counter
			herd_cluster_revision_probes_total{result="error"} 0
			herd_cluster_revision_probes_total{result="ok"} 0
			# TYPE herd_cluster_revision_rewinds_total counter
			herd_cluster_revision_rewinds_total 0
			# TYPE herd_cluster_synced gauge
			herd_cluster_synced 1
			# TYPE herd_cluster_view_restarts_total counter
			herd_cluster_view_restarts_total 0
			# TYPE herd_ghost_instance gauge
			herd_ghost_instance{client="kubelet",identity="system:node:gone",node="gone",reason="no_such_node",role="kubelet",source_ip="10.99.0.1"} 1
			# TYPE herd_ghost_instances gauge
			herd_ghost_instances{client="cilium-agent",role="cni"} 0
			herd_ghost_instances{client="kubelet",role="kubelet"} 2
			# TYPE herd_stale_kubelet gauge
			herd_stale_kubelet{node="node-2",reason="too_large_resource_version"} 1
			# TYPE herd_stale_kubelets gauge
			herd_stale_kubelets 3
		`},
	})
}
