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
// A consistent read of one Node every few seconds proves the cluster's
// current revision, against which requests' resourceVersions are judged
// and an etcd rewind is seen; then, and only then, the informers start
// over (revision.go).
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
	// RevisionProbeInterval is how often the view reads the cluster's
	// revision with a consistent read (revision.go); 0 means
	// DefaultRevisionProbeInterval.
	RevisionProbeInterval time.Duration
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
	opts   Options
	client kubernetes.Interface

	mu sync.RWMutex
	// gen is the informers whose state every reader reads; next, while
	// non-nil, is a set started after an etcd rewind that replaces gen once
	// it has synced (revision.go).
	gen, next *generation
	syncedAt  time.Time
	now       func() time.Time
	ctx       context.Context // Start's

	rev revision // the cluster's revision, proven by consistent reads
}

// generation is one set of Node and Lease informers and what their
// handlers built. The view replaces it whole when the cluster's revision
// goes back (an etcd restore): informers that watch from a revision the
// cluster no longer has see nothing until it is reached again.
type generation struct {
	nodes     cache.SharedIndexInformer
	leases    cache.SharedIndexInformer
	factories []informers.SharedInformerFactory
	cancel    context.CancelFunc // set by start
	done      <-chan struct{}    // closed when cancelled

	// Guarded by View.mu.
	byIP    map[string]string    // address → node name
	addrs   map[string][]string  // node name → its addresses (to undo byIP on update)
	renewed map[string]time.Time // node name → its Lease's renewTime
}

// New prepares informers; Start runs them.
func New(client kubernetes.Interface, opts Options) *View {
	if opts.Grace <= 0 {
		opts.Grace = 5 * time.Minute
	}
	if opts.LeaseFresh <= 0 {
		opts.LeaseFresh = DefaultLeaseFresh
	}
	if opts.RevisionProbeInterval <= 0 {
		opts.RevisionProbeInterval = DefaultRevisionProbeInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	v := &View{opts: opts, client: client, now: time.Now}
	v.gen = v.newGeneration()
	return v
}

// newGeneration builds informers whose handlers fill a generation of
// their own; nothing runs until start.
func (v *View) newGeneration() *generation {
	g := &generation{byIP: map[string]string{}, addrs: map[string][]string{}, renewed: map[string]time.Time{}}
	nf := informers.NewSharedInformerFactoryWithOptions(v.client, 0, informers.WithTransform(SlimNode))
	g.nodes = nf.Core().V1().Nodes().Informer()
	lf := informers.NewSharedInformerFactoryWithOptions(v.client, 0, informers.WithNamespace(NodeLeaseNamespace), informers.WithTransform(slimLease))
	g.leases = lf.Coordination().V1().Leases().Informer()
	g.factories = []informers.SharedInformerFactory{nf, lf}
	_, _ = g.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { v.setNode(g, o) },
		UpdateFunc: func(_, o any) { v.setNode(g, o) },
		DeleteFunc: func(o any) { v.deleteNode(g, o) },
	})
	_, _ = g.leases.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { v.setLease(g, o) },
		UpdateFunc: func(_, o any) { v.setLease(g, o) },
		DeleteFunc: func(o any) { v.deleteLease(g, o) },
	})
	return g
}

func (g *generation) start(ctx context.Context) {
	ctx, g.cancel = context.WithCancel(ctx)
	g.done = ctx.Done()
	for _, f := range g.factories {
		f.Start(ctx.Done())
	}
}

func (g *generation) synced(stop <-chan struct{}) bool {
	return cache.WaitForCacheSync(stop, g.nodes.HasSynced, g.leases.HasSynced)
}

// current is the generation readers read.
func (v *View) current() *generation {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.gen
}

// Start runs the informers, and the revision probe, until ctx ends.
func (v *View) Start(ctx context.Context) {
	v.mu.Lock()
	v.ctx = ctx
	g := v.gen
	v.mu.Unlock()
	g.start(ctx)
	go func() {
		if g.synced(g.done) {
			v.mu.Lock()
			v.syncedAt = v.now()
			v.mu.Unlock()
			// The initial stream decoded every full Node (tens of KiB each)
			// before the transform slimmed it; give that garbage back to the
			// OS now rather than carry it as RSS.
			debug.FreeOSMemory()
			v.opts.Logger.Info("cluster view synced", "nodes", len(g.nodes.GetStore().ListKeys()), "leases", len(g.leases.GetStore().ListKeys()))
		}
	}()
	go v.probeRevisions(ctx)
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

func (v *View) setNode(g *generation, obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	g.dropAddrs(n.Name)
	var addrs []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				s := ip.String()
				g.byIP[s] = n.Name
				addrs = append(addrs, s)
			}
		}
	}
	g.addrs[n.Name] = addrs
}

func (v *View) deleteNode(g *generation, obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	v.mu.Lock()
	g.dropAddrs(n.Name)
	delete(g.addrs, n.Name)
	v.mu.Unlock()
}

func (g *generation) dropAddrs(node string) {
	for _, a := range g.addrs[node] {
		if g.byIP[a] == node {
			delete(g.byIP, a)
		}
	}
}

// setLease records when a node's kubelet last renewed its Lease (a Lease in
// kube-node-lease is named after its node), so that Judge reads a map rather
// than building a store key per instance per scrape.
func (v *View) setLease(g *generation, obj any) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	v.mu.Lock()
	if l.Spec.RenewTime != nil {
		g.renewed[l.Name] = l.Spec.RenewTime.Time
	} else {
		delete(g.renewed, l.Name)
	}
	v.mu.Unlock()
}

func (v *View) deleteLease(g *generation, obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if l, ok := obj.(*coordinationv1.Lease); ok {
		v.mu.Lock()
		delete(g.renewed, l.Name)
		v.mu.Unlock()
	}
}

// Nodes is how many Nodes the view holds (herd_cluster_nodes).
func (v *View) Nodes() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.gen.addrs)
}

// NodeForIP implements accounting.NodeResolver: the Node with address ip.
// It does not allocate.
func (v *View) NodeForIP(ip []byte) (string, bool) {
	v.mu.RLock()
	n, ok := v.gen.byIP[string(ip)]
	v.mu.RUnlock()
	return n, ok
}

// Node returns the slim Node named name.
func (v *View) Node(name string) (*corev1.Node, bool) {
	obj, ok, err := v.current().nodes.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil, false
	}
	return obj.(*corev1.Node), true
}

// LeaseAge is how long ago node's kubelet last renewed its Lease.
func (v *View) LeaseAge(node string) (time.Duration, bool) {
	v.mu.RLock()
	renewed, ok := v.gen.renewed[node]
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
