package action

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// NodeCounter tells the cordon guard how many nodes there are and which are
// unschedulable, every one of them and not only herd's (SPEC §4.3), and
// quarantine whether a node exists.
type NodeCounter interface {
	// Count returns the number of nodes and the names of the unschedulable
	// ones.
	Count() (total int, unschedulable map[string]bool, err error)
	// Exists reports whether node name exists.
	Exists(name string) (bool, error)
}

// NodeCache counts nodes from an informer: a cordon decision must not LIST
// every Node of a 5,000-node cluster, and a watch keeps the count current.
// The cache keeps only names, labels and spec.unschedulable.
type NodeCache struct {
	informer cache.SharedIndexInformer
}

// NewNodeCache returns a NodeCache; Start runs it.
func NewNodeCache(client kubernetes.Interface) *NodeCache {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(slimNode))
	return &NodeCache{informer: f.Core().V1().Nodes().Informer()}
}

// slimNode keeps what the guard reads.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels, ResourceVersion: n.ResourceVersion},
		Spec:       corev1.NodeSpec{Unschedulable: n.Spec.Unschedulable},
	}, nil
}

// Start runs the informer until ctx ends.
func (c *NodeCache) Start(ctx context.Context) { go c.informer.RunWithContext(ctx) }

// Synced reports whether the first list arrived.
func (c *NodeCache) Synced() bool { return c.informer.HasSynced() }

// WaitForSync waits for the first list or ctx.
func (c *NodeCache) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced)
}

var errNodesNotSynced = errors.New("the Node cache has not synced yet: herd cannot count nodes or tell whether one exists")

// Count implements NodeCounter.
func (c *NodeCache) Count() (int, map[string]bool, error) {
	if !c.informer.HasSynced() {
		return 0, nil, errNodesNotSynced
	}
	items := c.informer.GetStore().List()
	un := map[string]bool{}
	for _, o := range items {
		n, ok := o.(*corev1.Node)
		if !ok {
			return 0, nil, fmt.Errorf("node cache holds %T", o)
		}
		if n.Spec.Unschedulable {
			un[n.Name] = true
		}
	}
	return len(items), un, nil
}

// Exists implements NodeCounter.
func (c *NodeCache) Exists(name string) (bool, error) {
	if !c.informer.HasSynced() {
		return false, errNodesNotSynced
	}
	_, ok, err := c.informer.GetStore().GetByKey(name)
	return ok, err
}
