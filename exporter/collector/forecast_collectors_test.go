package collector

import (
	"testing"

	"github.com/herd-k8s/herd/exporter/accounting"
)

func TestStampedeCollector(t *testing.T) {
	kubeletPodsNode := accounting.ShapeLabels{StreamLabels: kubeletPods, Shape: "node"}
	ciliumPodsAll := accounting.ShapeLabels{StreamLabels: ciliumPods, Shape: "all"}
	runTable(t, []tableCase{
		{name: "nothing live", c: stampedeCollector{}, want: ``},
		{name: "kubelets and cilium agents, subjects", c: stampedeCollector{}, s: scrapeOf(accounting.Snapshot{
			Stampede: []accounting.StampedeCount{
				{ShapeLabels: kubeletPodsNode, Consistency: "cache", Mode: "list", PriorityLevel: "system", Value: 4800},
				{ShapeLabels: kubeletPodsNode, Consistency: "unknown", Mode: "unknown", PriorityLevel: "system", Value: 200},
				{ShapeLabels: ciliumPodsAll, Consistency: "consistent", Mode: "list", PriorityLevel: "workload-high", Value: 100},
				{ShapeLabels: ciliumPodsAll, Consistency: "consistent", Mode: "watchlist", PriorityLevel: "", Value: 3},
			},
			StampedeSubjects: []accounting.SubjectCount{
				{StreamLabels: kubeletPods, Subject: "group:system:nodes", Value: 5000},
				{StreamLabels: ciliumPods, Subject: "serviceaccount:kube-system:cilium", Value: 103},
			},
		}), want: `
			# TYPE herd_stampede_instances gauge
			herd_stampede_instances{client="cilium-agent",consistency="consistent",mode="list",priority_level="workload-high",resource="pods",role="cni",shape="all"} 100
			herd_stampede_instances{client="cilium-agent",consistency="consistent",mode="watchlist",priority_level="",resource="pods",role="cni",shape="all"} 3
			herd_stampede_instances{client="kubelet",consistency="cache",mode="list",priority_level="system",resource="pods",role="kubelet",shape="node"} 4800
			herd_stampede_instances{client="kubelet",consistency="unknown",mode="unknown",priority_level="system",resource="pods",role="kubelet",shape="node"} 200
			# TYPE herd_stampede_subjects gauge
			herd_stampede_subjects{client="cilium-agent",resource="pods",role="cni",subject="serviceaccount:kube-system:cilium"} 103
			herd_stampede_subjects{client="kubelet",resource="pods",role="kubelet",subject="group:system:nodes"} 5000
		`},
	})
}

func TestWaveCollector(t *testing.T) {
	runTable(t, []tableCase{
		{name: "no wave", c: waveCollector{}, want: ``},
		{name: "a wave of LISTs and WatchLists", c: waveCollector{}, s: scrapeOf(accounting.Snapshot{
			Wave: []accounting.WaveCount{
				{ShapeLabels: accounting.ShapeLabels{StreamLabels: ciliumPods, Shape: "all"}, Mode: "list", Value: 90},
				{ShapeLabels: accounting.ShapeLabels{StreamLabels: ciliumPods, Shape: "all"}, Mode: "watchlist", Value: 10},
				{ShapeLabels: accounting.ShapeLabels{StreamLabels: kubeletPods, Shape: "node"}, Mode: "list", Value: 5000},
			},
		}), want: `
			# TYPE herd_relist_wave_instances gauge
			herd_relist_wave_instances{client="cilium-agent",mode="list",resource="pods",role="cni",shape="all"} 90
			herd_relist_wave_instances{client="cilium-agent",mode="watchlist",resource="pods",role="cni",shape="all"} 10
			herd_relist_wave_instances{client="kubelet",mode="list",resource="pods",role="kubelet",shape="node"} 5000
		`},
	})
}
