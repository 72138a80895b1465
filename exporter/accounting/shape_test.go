package accounting

import (
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
)

func TestShapeOf(t *testing.T) {
	for _, tc := range []struct {
		name, resource, group string
		q                     audit.Query
		want                  Shape
	}{
		{"unfiltered pods", "pods", "", audit.Query{}, ShapeAll},
		{"kubelet's pods", "pods", "", audit.Query{FieldSelectorNode: []byte("node-1")}, ShapeNode},
		{"kubelet's pods, also by label", "pods", "", audit.Query{FieldSelectorNode: []byte("node-1"), LabelSelector: true}, ShapeNode},
		{"a node's ResourceSlices", "resourceslices", "resource.k8s.io", audit.Query{FieldSelectorNode: []byte("node-1")}, ShapeNode},
		{"spec.nodeName on an unindexed resource", "volumeattachments", "storage.k8s.io", audit.Query{FieldSelectorNode: []byte("node-1")}, ShapeSelected},
		{"a pods resource of another group", "pods", "metrics.k8s.io", audit.Query{FieldSelectorNode: []byte("node-1")}, ShapeSelected},
		{"per-object ConfigMap reflector", "configmaps", "", audit.Query{FieldSelectorName: []byte("kube-root-ca.crt")}, ShapeObject},
		{"one object, also by label", "secrets", "", audit.Query{FieldSelectorName: []byte("s"), LabelSelector: true}, ShapeObject},
		{"an agent's own Node", "nodes", "", audit.Query{FieldSelectorNode: []byte("node-1")}, ShapeObject},
		{"kube-proxy's services", "services", "", audit.Query{LabelSelector: true}, ShapeSelected},
		{"other field selector", "events", "", audit.Query{OtherFieldSelector: true}, ShapeSelected},
		{"query lost (GKE)", "configmaps", "", audit.Query{Unknown: true}, ShapeUnknown},
	} {
		e := &audit.Event{Resource: []byte(tc.resource), APIGroup: []byte(tc.group), Query: tc.q}
		if got := ShapeOf(e); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// Relists are counted by shape, and judged by it: the stale-kubelet verdict
// counts only whole-node pod relists (SPEC §3.3), and a shape is a top-K
// stream of its own.
func TestRelistShapes(t *testing.T) {
	l := ledgerWith(t, judgeGhosts{}, func(c *Config) { c.TopK = 1 })
	list := func(node, resource string, q audit.Query, n int) {
		for i := 0; i < n; i++ {
			e := request{user: "system:node:" + node, ua: "kubelet/v1.36.3", resource: resource, code: 200, at: time.Duration(i) * time.Second}.event()
			e.Query = q
			e.Query.ResourceVersion = []byte("0")
			l.Account(e)
		}
	}
	byName := audit.Query{FieldSelectorName: []byte("x")}
	list("node-1", "pods", byName, 20)                                          // per-object reads of pods: not a loop
	list("node-1", "pods", audit.Query{FieldSelectorNode: []byte("node-1")}, 5) // below the threshold
	list("node-2", "pods", audit.Query{FieldSelectorNode: []byte("node-2")}, 6) // a whole-node loop
	list("node-3", "pods", audit.Query{}, 6)                                    // unfiltered: whole-node too
	list("node-4", "pods", audit.Query{LabelSelector: true}, 6)                 // selected: not whole-node
	list("node-5", "configmaps", byName, 30)                                    // per-object reflectors
	list("node-6", "configmaps", audit.Query{}, 2)                              // an unfiltered LIST of every ConfigMap

	s := l.Snapshot()
	stale := map[string]bool{}
	for _, st := range s.Stale {
		stale[st.Node] = true
	}
	if len(stale) != 2 || !stale["node-2"] || !stale["node-3"] || s.StaleTotal != 2 {
		t.Errorf("stale kubelets %v (total %d), want node-2 and node-3", stale, s.StaleTotal)
	}
	relists := map[string]uint64{}
	for _, r := range s.Relists {
		relists[r.Resource+"/"+r.Shape] += r.Value
	}
	want := map[string]uint64{"pods/object": 20, "pods/node": 11, "pods/all": 6, "pods/selected": 6, "configmaps/object": 30, "configmaps/all": 2}
	for k, v := range want {
		if relists[k] != v {
			t.Errorf("relists %s = %d, want %d (all: %v)", k, relists[k], v, relists)
		}
	}
	top := map[string]string{}
	for _, ti := range s.TopInstances {
		if ti.Resource == "configmaps" {
			top[ti.Shape] = ti.Node
		}
	}
	if top["object"] != "node-5" || top["all"] != "node-6" {
		t.Errorf("configmaps top instances by shape %v: the unfiltered LIST has its own stream", top)
	}
}

// The apiserver's latency annotations of slow requests are summed per
// stream and phase; watches (whose total is their lifetime), refused
// requests and nonsense values add nothing; accounting them allocates
// nothing once the stream is known.
func TestLatencyAnnotations(t *testing.T) {
	l := ledgerWith(t, nil, nil)
	slow := func(verb string, code int32, total, etcd time.Duration) *audit.Event {
		e := request{user: "system:serviceaccount:kube-system:cilium", ua: "cilium-agent/1.18.0", resource: "pods", code: code}.event()
		e.Verb = []byte(verb)
		if verb == "watch" {
			e.Stage = audit.StageResponseStarted
		}
		e.Latency[audit.LatencyTotal], e.Latency[audit.LatencyEtcd] = int64(total), int64(etcd)
		return e
	}
	l.Account(slow("list", 200, 2*time.Second, 1500*time.Millisecond))
	e := slow("list", 504, 3*time.Second, -time.Second) // a negative phase adds nothing
	l.Account(e)
	l.Account(slow("watch", 200, 10*time.Minute, time.Second))
	l.Account(slow("list", 403, 9*time.Second, 9*time.Second))
	l.Account(slow("list", 200, 0, 0)) // not annotated: fast
	s := l.Snapshot()
	if len(s.Latency) != 1 || s.Latency[0].Requests != 2 || s.Latency[0].Seconds[audit.LatencyTotal] != 5 ||
		s.Latency[0].Seconds[audit.LatencyEtcd] != 1.5 || s.Latency[0].Resource != "pods" || s.Latency[0].Client != "cilium-agent" {
		t.Errorf("latency %+v: want 2 annotated requests of cilium-agent pods, 5 s total, 1.5 s etcd", s.Latency)
	}
	if allocs := testing.AllocsPerRun(1000, func() { l.Account(e) }); allocs != 0 {
		t.Errorf("Account of an annotated request allocates %.1f times, want 0", allocs)
	}
}
