// Package cluster is the exporter's view of the cluster's Nodes and their
// Leases: which node names exist, which addresses belong to which Node, and
// how fresh each kubelet's heartbeat is. With it, audit events from
// host-network agents are attributed to a Node by source IP, and instances
// whose node or address belongs to nothing are ghosts (incident 000).
//
// It costs the apiserver almost nothing: informers start from the watch
// cache (client-go streams the initial state with WatchList), never LIST
// after start, and keep a slimmed copy of each Node (a transform drops
// images, managedFields and every status field but addresses and Ready).
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// NodeLeaseNamespace holds the kubelets' heartbeat Leases.
const NodeLeaseNamespace = "kube-node-lease"

// Options configure the view.
type Options struct {
	// ControlPlaneCIDRs are source addresses that are never ghosts even though
	// no Node has them (apiservers, load balancers, a kubelet-less control plane).
	ControlPlaneCIDRs []netip.Prefix
	// Grace spares an instance from being called a ghost while its Node may
	// still be registering, and while informers have just synced.
	Grace time.Duration
	// LeaseFresh is how recently a node's Lease must have been renewed for
	// its vouched identity to prove the node live (Judge); 0 means
	// DefaultLeaseFresh.
	LeaseFresh time.Duration
	Logger     *slog.Logger
}

// DefaultLeaseFresh is kube-controller-manager's node-monitor grace period,
// after which it marks a node whose Lease was not renewed NotReady
// (k8s.io/kubernetes@v1.36.3 pkg/controller/nodelifecycle/config/v1alpha1/
// defaults.go: 50 s). A kubelet renews every 10 s (a quarter of its 40 s
// lease duration: pkg/kubelet/apis/config/v1beta1/defaults.go and
// pkg/kubelet/kubelet.go nodeLeaseRenewIntervalFraction).
const DefaultLeaseFresh = 50 * time.Second

// View tracks Nodes and node Leases.
type View struct {
	opts    Options
	client  kubernetes.Interface
	nodes   cache.SharedIndexInformer
	leases  cache.SharedIndexInformer
	factory []informers.SharedInformerFactory

	mu       sync.RWMutex
	byIP     map[string]string    // address → node name
	addrs    map[string][]string  // node name → its addresses (to undo byIP on update)
	renewed  map[string]time.Time // node name → its Lease's renewTime
	syncedAt time.Time
	now      func() time.Time
}

// New prepares informers; Start runs them.
func New(client kubernetes.Interface, opts Options) *View {
	if opts.Grace <= 0 {
		opts.Grace = 5 * time.Minute
	}
	if opts.LeaseFresh <= 0 {
		opts.LeaseFresh = DefaultLeaseFresh
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	v := &View{opts: opts, client: client, byIP: map[string]string{}, addrs: map[string][]string{}, renewed: map[string]time.Time{}, now: time.Now}
	nf := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(SlimNode))
	v.nodes = nf.Core().V1().Nodes().Informer()
	lf := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(NodeLeaseNamespace), informers.WithTransform(slimLease))
	v.leases = lf.Coordination().V1().Leases().Informer()
	v.factory = []informers.SharedInformerFactory{nf, lf}
	_, _ = v.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { v.setNode(o) },
		UpdateFunc: func(_, o any) { v.setNode(o) },
		DeleteFunc: v.deleteNode,
	})
	_, _ = v.leases.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { v.setLease(o) },
		UpdateFunc: func(_, o any) { v.setLease(o) },
		DeleteFunc: v.deleteLease,
	})
	return v
}

// Start runs the informers until ctx ends.
func (v *View) Start(ctx context.Context) {
	for _, f := range v.factory {
		f.Start(ctx.Done())
	}
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), v.nodes.HasSynced, v.leases.HasSynced) {
			v.mu.Lock()
			v.syncedAt = v.now()
			v.mu.Unlock()
			// The initial stream decoded every full Node (tens of KiB each)
			// before the transform slimmed it; give that garbage back to the
			// OS now rather than carry it as RSS.
			debug.FreeOSMemory()
			v.opts.Logger.Info("cluster view synced", "nodes", len(v.nodes.GetStore().ListKeys()), "leases", len(v.leases.GetStore().ListKeys()))
		}
	}()
}

// Synced reports whether Nodes and Leases have been read once.
func (v *View) Synced() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return !v.syncedAt.IsZero()
}

// SlimNode keeps what herd reads of a Node: name, labels, creation time,
// unschedulable, addresses and the Ready condition. A real Node with 50 images
// and managedFields is tens of KiB; the slim copy is a few hundred bytes.
func SlimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil // tombstones pass through
	}
	slim := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:              n.Name,
			UID:               n.UID,
			ResourceVersion:   n.ResourceVersion,
			Labels:            n.Labels,
			Annotations:       exclusionOnly(n.Annotations),
			CreationTimestamp: n.CreationTimestamp,
		},
		Spec: corev1.NodeSpec{Unschedulable: n.Spec.Unschedulable},
		Status: corev1.NodeStatus{
			Addresses: n.Status.Addresses,
		},
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			slim.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status, LastTransitionTime: c.LastTransitionTime}}
		}
	}
	return slim, nil
}

// ExcludeAnnotation opts a Node (or any object) out of herd's actions.
const ExcludeAnnotation = "herd.dev/exclude"

func exclusionOnly(a map[string]string) map[string]string {
	if v, ok := a[ExcludeAnnotation]; ok {
		return map[string]string{ExcludeAnnotation: v}
	}
	return nil
}

func slimLease(obj any) (any, error) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return obj, nil
	}
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: l.Name, Namespace: l.Namespace, ResourceVersion: l.ResourceVersion},
		Spec:       coordinationv1.LeaseSpec{RenewTime: l.Spec.RenewTime},
	}, nil
}

func (v *View) setNode(obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.dropAddrs(n.Name)
	var addrs []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				s := ip.String()
				v.byIP[s] = n.Name
				addrs = append(addrs, s)
			}
		}
	}
	v.addrs[n.Name] = addrs
}

func (v *View) deleteNode(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	v.mu.Lock()
	v.dropAddrs(n.Name)
	delete(v.addrs, n.Name)
	v.mu.Unlock()
}

func (v *View) dropAddrs(node string) {
	for _, a := range v.addrs[node] {
		if v.byIP[a] == node {
			delete(v.byIP, a)
		}
	}
}

// setLease records when a node's kubelet last renewed its Lease (a Lease in
// kube-node-lease is named after its node), so that Judge reads a map rather
// than building a store key per instance per scrape.
func (v *View) setLease(obj any) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	v.mu.Lock()
	if l.Spec.RenewTime != nil {
		v.renewed[l.Name] = l.Spec.RenewTime.Time
	} else {
		delete(v.renewed, l.Name)
	}
	v.mu.Unlock()
}

func (v *View) deleteLease(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if l, ok := obj.(*coordinationv1.Lease); ok {
		v.mu.Lock()
		delete(v.renewed, l.Name)
		v.mu.Unlock()
	}
}

// Nodes is how many Nodes the view holds (herd_cluster_nodes).
func (v *View) Nodes() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.addrs)
}

// NodeForIP implements accounting.NodeResolver: the Node with address ip.
// It does not allocate.
func (v *View) NodeForIP(ip []byte) (string, bool) {
	v.mu.RLock()
	n, ok := v.byIP[string(ip)]
	v.mu.RUnlock()
	return n, ok
}

// Node returns the slim Node named name.
func (v *View) Node(name string) (*corev1.Node, bool) {
	obj, ok, err := v.nodes.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil, false
	}
	return obj.(*corev1.Node), true
}

// LeaseAge is how long ago node's kubelet last renewed its Lease.
func (v *View) LeaseAge(node string) (time.Duration, bool) {
	v.mu.RLock()
	renewed, ok := v.renewed[node]
	v.mu.RUnlock()
	if !ok {
		return 0, false
	}
	return v.now().Sub(renewed), true
}

// inControlPlane reports whether ip is in a configured control-plane CIDR.
func (v *View) inControlPlane(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, p := range v.opts.ControlPlaneCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParseCIDRs parses --cluster.control-plane-cidrs values.
func ParseCIDRs(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("control-plane CIDR %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
