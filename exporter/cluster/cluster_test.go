package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/classify"
)

// realisticNode is what a kubelet writes: 50 images, managedFields, full status.
func realisticNode(i int) *corev1.Node {
	name := fmt.Sprintf("ip-10-0-%d-%d.ec2.internal", i/250, i%250)
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, UID: "7d3c9a4e-2f1b-4c6d-9e8a-0b1c2d3e4f50", ResourceVersion: "123456789",
			CreationTimestamp: metav1.NewTime(time.Unix(1700000000, 0)),
			Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"node.kubernetes.io/instance-type": "m6i.2xlarge", "topology.kubernetes.io/zone": "us-east-1a",
				"topology.kubernetes.io/region": "us-east-1", "eks.amazonaws.com/nodegroup": "general-purpose",
			},
			Annotations: map[string]string{
				"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true",
				"csi.volume.kubernetes.io/nodeid": `{"ebs.csi.aws.com":"i-0123456789abcdef0"}`,
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24", ProviderID: "aws:///us-east-1a/i-0123456789abcdef0"},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.0.%d.%d", i/250, i%250)},
				{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalDNS, Address: name},
			},
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("7910m"), corev1.ResourceMemory: resource.MustParse("31Gi"), corev1.ResourcePods: resource.MustParse("110")},
			NodeInfo: corev1.NodeSystemInfo{MachineID: "ec2a1b2c3d4e5f60718293a4b5c6d7e8", KernelVersion: "6.1.112-122.189.amzn2023.x86_64",
				OSImage: "Amazon Linux 2023", ContainerRuntimeVersion: "containerd://1.7.22", KubeletVersion: "v1.36.3"},
		},
	}
	for _, t := range []corev1.NodeConditionType{"MemoryPressure", "DiskPressure", "PIDPressure", corev1.NodeReady} {
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: t, Status: corev1.ConditionFalse,
			Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()})
	}
	for j := 0; j < 50; j++ {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{
			Names:     []string{fmt.Sprintf("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/service-%d@sha256:%064d", j, j), fmt.Sprintf("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/service-%d:v1.%d.0", j, j)},
			SizeBytes: int64(50_000_000 + j),
		})
	}
	for _, m := range []string{"kubelet", "kube-controller-manager", "aws-cloud-controller-manager"} {
		n.ManagedFields = append(n.ManagedFields, metav1.ManagedFieldsEntry{Manager: m, Operation: metav1.ManagedFieldsOperationUpdate,
			APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: make([]byte, 2048)}})
	}
	return n
}

// TestNodeCacheBytesPerNode measures the informer cache's cost per Node with
// the transform, and without it for comparison (figures in docs/performance.md).
func TestNodeCacheBytesPerNode(t *testing.T) {
	const nodes = 5000
	measure := func(transform bool) float64 {
		store := cache.NewStore(cache.MetaNamespaceKeyFunc)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := 0; i < nodes; i++ {
			var obj any = realisticNode(i)
			if transform {
				obj, _ = SlimNode(obj)
			}
			if err := store.Add(obj); err != nil {
				t.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(store)
		return float64(after.HeapAlloc-before.HeapAlloc) / nodes
	}
	slim, full := measure(true), measure(false)
	t.Logf("Node cache per node: %.0f bytes with the transform, %.0f bytes without (%d nodes)", slim, full, nodes)
	if slim > 5*1024 {
		t.Errorf("slim Node costs %.0f bytes, SPEC §7 bound is 5 KiB", slim)
	}
	if slim*4 > full {
		t.Errorf("transform saves too little: %.0f vs %.0f bytes", slim, full)
	}
}

func TestSlimNodeKeepsWhatHerdReads(t *testing.T) {
	n := realisticNode(7)
	n.Spec.Unschedulable = true
	n.Annotations[ExcludeAnnotation] = "true"
	obj, _ := SlimNode(n)
	s := obj.(*corev1.Node)
	if s.Name != n.Name || len(s.Labels) != len(n.Labels) || !s.Spec.Unschedulable || len(s.Status.Addresses) != 3 ||
		s.CreationTimestamp != n.CreationTimestamp || len(s.Status.Conditions) != 1 || s.Status.Conditions[0].Type != corev1.NodeReady {
		t.Errorf("slim node lost something: %+v", s)
	}
	if len(s.Status.Images) != 0 || len(s.ManagedFields) != 0 || len(s.Annotations) != 1 || s.Status.NodeInfo.KubeletVersion != "" {
		t.Errorf("slim node kept too much: %+v", s)
	}
	if same, _ := SlimNode("tombstone"); same != "tombstone" {
		t.Errorf("non-Node objects must pass through")
	}
}

func lease(node string, renewed time.Time) *coordinationv1.Lease {
	rt := metav1.NewMicroTime(renewed)
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: NodeLeaseNamespace}, Spec: coordinationv1.LeaseSpec{RenewTime: &rt}}
}

func TestJudge(t *testing.T) {
	now := time.Now().Add(2 * time.Minute).UnixNano()
	client := fake.NewSimpleClientset(realisticNode(1), realisticNode(2),
		lease(realisticNode(1).Name, time.Unix(0, now).Add(-5*time.Second)), // fresh
		lease(realisticNode(2).Name, time.Unix(0, now).Add(-5*time.Minute))) // stale: the node is down
	cidrs, _ := ParseCIDRs([]string{"192.168.0.0/24"})
	v := New(client, Options{ControlPlaneCIDRs: cidrs, Grace: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Start(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for !v.Synced() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	node := realisticNode(1).Name // address 10.0.0.1
	down := realisticNode(2).Name // address 10.0.0.2
	old := time.Now().Add(-time.Hour).UnixNano()

	w := func(role classify.Role, ident, node string, attr accounting.Attribution, ip string) *accounting.InstanceWindow {
		return &accounting.InstanceWindow{Role: role, Client: "c", Identity: ident, Node: node, Attribution: attr, SourceIP: ip, FirstSeen: old}
	}
	// Before the grace after sync has passed, nobody is a ghost.
	if got := v.Judge(w(classify.RoleKubelet, "system:node:gone", "gone", accounting.AttrUsername, "10.9.9.9"), time.Now().UnixNano()); got.GhostReason != "" || !got.Synced {
		t.Fatalf("ghost called during the grace period: %+v", got)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, ok := v.LeaseAge(down); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Leases not seen")
		}
	}

	if n, ok := v.NodeForIP([]byte("10.0.0.1")); !ok || n != node {
		t.Fatalf("NodeForIP(10.0.0.1) = %q %v", n, ok)
	}
	tests := []struct {
		name       string
		w          *accounting.InstanceWindow
		ghost      string
		nodeExists bool
	}{
		{"kubelet of an existing node", w(classify.RoleKubelet, "system:node:"+node, node, accounting.AttrUsername, "10.0.0.1"), "", true},
		{"kubelet of a deleted node", w(classify.RoleKubelet, "system:node:old-worker-7", "old-worker-7", accounting.AttrUsername, "10.0.0.1"), ReasonNoSuchNode, false},
		{"kube-proxy from an unknown address", w(classify.RoleKubeProxy, "sa", "", accounting.AttrUnknown, "10.99.0.7"), ReasonUnknownSourceIP, false},
		{"kube-proxy from a control-plane address", w(classify.RoleKubeProxy, "sa", "", accounting.AttrUnknown, "192.168.0.10"), "", false},
		{"cni from a node address", w(classify.RoleCNI, "sa", node, accounting.AttrSourceIP, "10.0.0.1"), "", true},
		{"metrics-server is never a ghost", w(classify.RoleMetricsServer, "sa", "", accounting.AttrUnknown, "10.99.0.7"), "", false},
		// Identity before address (SPEC §3.2): a kubelet whose Node exists and
		// whose Lease is fresh is not a ghost from an address no Node has
		// (NAT, multi-homed, IPv4/IPv6, loopback in tests)...
		{"live kubelet behind NAT", w(classify.RoleKubelet, "system:node:"+node, node, accounting.AttrUsername, "10.99.0.7"), "", true},
		{"kube-proxy whose token names a live node, behind NAT", w(classify.RoleKubeProxy, "sa", node, accounting.AttrToken, "10.99.0.7"), "", true},
		// ...but one whose Lease is stale is judged by its address...
		{"kubelet of a down node from elsewhere", w(classify.RoleKubelet, "system:node:"+down, down, accounting.AttrUsername, "10.99.0.7"), ReasonUnknownSourceIP, true},
		// ...and a token naming a deleted Node is a ghost (issue 13).
		{"token naming a deleted node", w(classify.RoleCNI, "sa", "old-worker-7", accounting.AttrToken, "10.0.0.1"), ReasonNoSuchNode, false},
		// A field selector is the client's word, not a vouched node.
		{"cni selecting a deleted node's pods", w(classify.RoleCNI, "sa", "old-worker-7", accounting.AttrFieldSelector, "10.0.0.1"), "", false},
	}
	for _, tc := range tests {
		got := v.Judge(tc.w, now)
		if !got.Synced || got.GhostReason != tc.ghost || got.NodeExists != tc.nodeExists {
			t.Errorf("%s: %+v, want ghost %q, node exists %v", tc.name, got, tc.ghost, tc.nodeExists)
		}
	}
	// A brand-new instance gets the grace period too.
	fresh := w(classify.RoleKubelet, "system:node:new", "new", accounting.AttrUsername, "10.0.0.1")
	fresh.FirstSeen = now
	if got := v.Judge(fresh, now); got.GhostReason != "" {
		t.Errorf("a kubelet seen for the first time just now is not a ghost yet: %+v", got)
	}
	// Deleting the Node removes its address.
	if err := client.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(deadline) {
		if _, ok := v.NodeForIP([]byte("10.0.0.1")); !ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Error("address of a deleted Node still resolves")
}

func TestParseCIDRs(t *testing.T) {
	p, err := ParseCIDRs([]string{"10.0.0.5/8", "fd00::/64"})
	if err != nil || p[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("ParseCIDRs = %v, %v", p, err)
	}
	if _, err := ParseCIDRs([]string{"10.0.0.0"}); err == nil || err.Error() != `control-plane CIDR "10.0.0.0": netip.ParsePrefix("10.0.0.0"): no '/'` {
		t.Errorf("error = %v", err)
	}
}
