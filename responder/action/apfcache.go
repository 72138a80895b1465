package action

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/herd-k8s/herd/responder/alert"
)

// APFCache holds every FlowSchema and PriorityLevelConfiguration, from
// informers: an APF action reads what serves a client and which of herd's
// slots are free from memory, so that during a storm its only request is
// its write (docs/performance.md, "Storm drill": an isolate that made six
// requests in a row could not finish within its deadline mid-storm). A
// cluster has a few dozen of each; the informers keep them without
// managedFields.
//
// What herd itself just wrote is shown before the watch brings it back
// (Wrote, Deleted): a second alert a millisecond after the first must see
// the slot the first took, and a delete must not leave a slot looking
// taken. Those overlays last until the informer shows the write or a newer
// version, or a minute at most.
type APFCache struct {
	fs, pl cache.SharedIndexInformer
	now    func() time.Time

	mu     sync.Mutex
	recent map[string]recentWrite // FlowSchema name → herd's last write
}

type recentWrite struct {
	obj     *flowcontrolv1.FlowSchema // nil: deleted
	rv      uint64                    // the written version, or the deleted one's
	written time.Time
}

// recentFor bounds an overlay's life: far longer than a watch event takes,
// short enough that a broken watch does not hide the truth for long.
const recentFor = time.Minute

// NewAPFCache returns an APFCache; Start runs it.
func NewAPFCache(client kubernetes.Interface) *APFCache {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(stripManagedFields))
	c := &APFCache{
		fs:     f.Flowcontrol().V1().FlowSchemas().Informer(),
		pl:     f.Flowcontrol().V1().PriorityLevelConfigurations().Informer(),
		now:    time.Now,
		recent: map[string]recentWrite{},
	}
	// A write the watch has shown needs no overlay any more, even if the
	// object is gone again by the time someone reads (deleted by another,
	// or by the garbage collector, right after herd wrote it).
	_, _ = c.fs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.caughtUp(o) },
		UpdateFunc: func(_, o any) { c.caughtUp(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			c.caughtUp(o)
		},
	})
	return c
}

// caughtUp drops the overlay of the FlowSchema the watch just showed when
// it shows herd's write or a later version.
func (c *APFCache) caughtUp(o any) {
	fs, ok := o.(*flowcontrolv1.FlowSchema)
	if !ok {
		return
	}
	rv, err := strconv.ParseUint(fs.ResourceVersion, 10, 64)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.recent[fs.Name]; ok && w.obj != nil && rv >= w.rv {
		delete(c.recent, fs.Name)
	}
}

func stripManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}

// OnChange calls f (without arguments, from the informers' goroutines)
// whenever a FlowSchema or priority level is added, changed or deleted:
// the measurement controller follows the schemas in force this way. f
// must not block.
func (c *APFCache) OnChange(f func()) {
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { f() },
		UpdateFunc: func(any, any) { f() },
		DeleteFunc: func(any) { f() },
	}
	_, _ = c.fs.AddEventHandler(h) // an error means the informer stopped: nothing left to follow
	_, _ = c.pl.AddEventHandler(h)
}

// PriorityLevels returns every priority level, by name. The objects are
// shared: never change them.
func (c *APFCache) PriorityLevels() (map[string]*flowcontrolv1.PriorityLevelConfiguration, error) {
	if !c.Synced() {
		return nil, errAPFNotSynced
	}
	out := map[string]*flowcontrolv1.PriorityLevelConfiguration{}
	for _, o := range c.pl.GetStore().List() {
		if pl, ok := o.(*flowcontrolv1.PriorityLevelConfiguration); ok {
			out[pl.Name] = pl
		}
	}
	return out, nil
}

// Start runs the informers until ctx ends.
func (c *APFCache) Start(ctx context.Context) {
	go c.fs.RunWithContext(ctx)
	go c.pl.RunWithContext(ctx)
}

// Synced reports whether both first lists arrived.
func (c *APFCache) Synced() bool { return c.fs.HasSynced() && c.pl.HasSynced() }

// WaitForSync waits for both first lists, or ctx.
func (c *APFCache) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), c.fs.HasSynced, c.pl.HasSynced)
}

// errAPFNotSynced is transient: the next delivery finds the cache synced.
var errAPFNotSynced = alert.Transient(errors.New("the FlowSchema and priority level cache has not synced yet"))

// FlowSchemas returns every FlowSchema, herd's latest writes included.
// The objects are shared: never change them.
func (c *APFCache) FlowSchemas() ([]*flowcontrolv1.FlowSchema, error) {
	if !c.Synced() {
		return nil, errAPFNotSynced
	}
	items := c.fs.GetStore().List()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*flowcontrolv1.FlowSchema, 0, len(items)+len(c.recent))
	seen := map[string]bool{}
	for _, o := range items {
		fs, ok := o.(*flowcontrolv1.FlowSchema)
		if !ok {
			continue
		}
		seen[fs.Name] = true
		if fs = c.overlayLocked(fs.Name, fs); fs != nil {
			out = append(out, fs)
		}
	}
	for name := range c.recent {
		if !seen[name] {
			if fs := c.overlayLocked(name, nil); fs != nil {
				out = append(out, fs)
			}
		}
	}
	return out, nil
}

// FlowSchema returns one FlowSchema, nil when there is none.
func (c *APFCache) FlowSchema(name string) (*flowcontrolv1.FlowSchema, error) {
	if !c.Synced() {
		return nil, errAPFNotSynced
	}
	var fs *flowcontrolv1.FlowSchema
	if o, ok, _ := c.fs.GetStore().GetByKey(name); ok {
		fs, _ = o.(*flowcontrolv1.FlowSchema)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.overlayLocked(name, fs), nil
}

// PriorityLevel returns one priority level, nil when there is none.
func (c *APFCache) PriorityLevel(name string) (*flowcontrolv1.PriorityLevelConfiguration, error) {
	if !c.Synced() {
		return nil, errAPFNotSynced
	}
	o, ok, _ := c.pl.GetStore().GetByKey(name)
	if !ok {
		return nil, nil
	}
	pl, _ := o.(*flowcontrolv1.PriorityLevelConfiguration)
	return pl, nil
}

// overlayLocked is what to show for name given the informer's object (nil
// when it has none). Callers hold c.mu.
func (c *APFCache) overlayLocked(name string, cached *flowcontrolv1.FlowSchema) *flowcontrolv1.FlowSchema {
	w, ok := c.recent[name]
	if !ok {
		return cached
	}
	if c.now().Sub(w.written) > recentFor {
		delete(c.recent, name)
		return cached
	}
	var cachedRV uint64
	if cached != nil {
		rv, err := strconv.ParseUint(cached.ResourceVersion, 10, 64)
		if err != nil {
			delete(c.recent, name) // not an etcd revision: trust the informer
			return cached
		}
		cachedRV = rv
	}
	switch {
	case w.obj == nil && cached == nil: // the watch showed the delete
		delete(c.recent, name)
		return nil
	case w.obj == nil && cachedRV <= w.rv: // the deleted version, still cached
		return nil
	case w.obj != nil && cached != nil && cachedRV >= w.rv: // the watch caught up
		delete(c.recent, name)
		return cached
	case w.obj == nil: // deleted, then created again by someone
		delete(c.recent, name)
		return cached
	}
	return w.obj
}

// Wrote shows fs, as the apiserver returned it after herd's write, until
// the informer catches up.
func (c *APFCache) Wrote(fs *flowcontrolv1.FlowSchema) {
	// An apiserver's resourceVersion is an etcd revision; without one,
	// any version the informer shows replaces the write.
	rv, _ := strconv.ParseUint(fs.ResourceVersion, 10, 64)
	fs = fs.DeepCopy()
	fs.ManagedFields = nil
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recent[fs.Name] = recentWrite{obj: fs, rv: rv, written: c.now()}
}

// Deleted hides FlowSchema name at resourceVersion rv (the version herd
// deleted) until the informer catches up.
func (c *APFCache) Deleted(name, rv string) {
	v, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recent[name] = recentWrite{rv: v, written: c.now()}
}
