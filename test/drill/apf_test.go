package drill

import "testing"

// The table as kube-apiserver 1.36's apf_controller_debug.go writes it:
// comma-separated cells padded by a tabwriter.
func TestParseAPFDump(t *testing.T) {
	raw := []byte(`PriorityLevelName, ActiveQueues, IsIdle, IsQuiescing, WaitingRequests, ExecutingRequests, DispatchedRequests, RejectedRequests, TimedoutRequests, CancelledRequests
catch-all,         0,            true,   false,       0,               0,                 12,                 0,                0,                0
herd-protect,      1,            false,  false,       97,              3,                 415,                0,                0,                0
workload-high,     2,            false,  false,       0,               9,                 1840,               4,                0,                0
`)
	s, ok := parseAPFDump(raw)
	if !ok || s.Executing["herd-protect"] != 3 || s.Waiting["herd-protect"] != 97 || s.Executing["workload-high"] != 9 || s.Executing["catch-all"] != 0 {
		t.Fatalf("parsed %+v, %v", s, ok)
	}
	if _, ok := parseAPFDump([]byte("404 page not found\n")); ok {
		t.Error("a page without the table parsed")
	}
}

// A decision about another client (the hollow kubelets' start-up relist,
// say) is not the storm's; one whose alert lacks a label is not ruled out.
func TestLabelsAgree(t *testing.T) {
	match := map[string]string{"client": "cilium-agent", "resource": "pods"}
	for _, c := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"alertname": "HerdSynchronizedRelist", "client": "cilium-agent", "resource": "pods", "cost": "expensive"}, true},
		{map[string]string{"client": "kubelet", "resource": "pods"}, false},
		{map[string]string{"client": "cilium-agent", "resource": "nodes"}, false},
		{map[string]string{"alertname": "HerdRelistStorm"}, true},
		{nil, true},
	} {
		if got := labelsAgree(c.labels, match); got != c.want {
			t.Errorf("labelsAgree(%v) = %v, want %v", c.labels, got, c.want)
		}
	}
}
