// Package apf is the exporter's view of API Priority and Fairness: which
// priority level serves each node-side client's LISTs, for the stampede
// forecast (herd_stampede_instances{priority_level}). APF does not write
// its choice into audit events (k8s.io/apiserver@v0.36.3
// pkg/server/filters/priority-and-fairness.go only logs it), so the view
// keeps the FlowSchemas and PriorityLevelConfigurations in force, from two
// informers, and evaluates them as the apiserver does (internal/apfmatch).
//
// It is cheap: a cluster has a few dozen of each object; the informers keep
// them without managedFields or status and only ever watch after their
// first read. The configuration is digested once per change, and a level
// is worked out once per class of identity (all the kubelets of a fleet
// are one class) and resource, then cached until the configuration
// changes: never per audit event, at most once per scrape.
package apf

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/herd-k8s/herd/internal/apfmatch"
)

// maxCached bounds the level cache: classes are few (service accounts,
// users and one class for all kubelets), resources at most
// accounting.maxResources; past the bound the cache starts over.
const maxCached = 8192

// View answers which priority level serves a class of identity's LISTs
// (accounting.Leveler).
type View struct {
	factory informers.SharedInformerFactory
	fs, pl  cache.SharedIndexInformer
	logger  *slog.Logger

	// cfg is the digested configuration; stale is set by the informers'
	// handlers and makes the next reader rebuild it.
	cfg   atomic.Pointer[apfmatch.Config]
	stale atomic.Bool

	mu     sync.Mutex // rebuilds and the cache
	levels map[levelKey]string
}

type levelKey struct{ class, resource string }

// New prepares the informers; Start runs them.
func New(client kubernetes.Interface, logger *slog.Logger) *View {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(Slim))
	v := &View{factory: f, fs: f.Flowcontrol().V1().FlowSchemas().Informer(), pl: f.Flowcontrol().V1().PriorityLevelConfigurations().Informer(),
		logger: logger, levels: map[levelKey]string{}}
	changed := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { v.stale.Store(true) },
		UpdateFunc: func(any, any) { v.stale.Store(true) },
		DeleteFunc: func(any) { v.stale.Store(true) },
	}
	_, _ = v.fs.AddEventHandler(changed)
	_, _ = v.pl.AddEventHandler(changed)
	return v
}

// Slim keeps what matching reads: names, labels (herd's guards are told
// by theirs) and specs; managedFields, annotations and status go.
func Slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *flowcontrolv1.FlowSchema:
		return &flowcontrolv1.FlowSchema{ObjectMeta: slimMeta(o.ObjectMeta), Spec: o.Spec}, nil
	case *flowcontrolv1.PriorityLevelConfiguration:
		return &flowcontrolv1.PriorityLevelConfiguration{ObjectMeta: slimMeta(o.ObjectMeta), Spec: o.Spec}, nil
	}
	return obj, nil // tombstones pass through
}

func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion, Labels: m.Labels}
}

// Start runs the informers until ctx ends.
func (v *View) Start(ctx context.Context) {
	v.factory.Start(ctx.Done())
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), v.fs.HasSynced, v.pl.HasSynced) {
			v.stale.Store(true)
			v.logger.Info("APF view synced", "flowSchemas", len(v.fs.GetStore().ListKeys()), "priorityLevels", len(v.pl.GetStore().ListKeys()))
		}
	}()
}

// Synced reports whether both informers have read their objects once.
func (v *View) Synced() bool { return v.fs.HasSynced() && v.pl.HasSynced() }

// config is the digested configuration, rebuilt when the informers saw a
// change; nil until they synced.
func (v *View) config() *apfmatch.Config {
	if !v.stale.Load() {
		return v.cfg.Load()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stale.Swap(false) && v.Synced() {
		v.cfg.Store(Digest(v.fs.GetStore().List(), v.pl.GetStore().List()))
		clear(v.levels)
	} else if !v.Synced() {
		v.stale.Store(true)
	}
	return v.cfg.Load()
}

// Digest is the configuration the objects make, as the exporter reads it:
// herd's own guards are left out, so that the forecast says what a
// stampede would meet without them and a guard in place does not make the
// risk it guards against look gone (internal/apfmatch.HerdGuard).
func Digest(schemas, levels []any) *apfmatch.Config {
	var fss []*flowcontrolv1.FlowSchema
	var pls []*flowcontrolv1.PriorityLevelConfiguration
	for _, o := range schemas {
		if fs, ok := o.(*flowcontrolv1.FlowSchema); ok {
			fss = append(fss, fs)
		}
	}
	for _, o := range levels {
		if pl, ok := o.(*flowcontrolv1.PriorityLevelConfiguration); ok {
			pls = append(pls, pl)
		}
	}
	return apfmatch.NewConfig(fss, pls, apfmatch.HerdGuard)
}

// Class implements accounting.Leveler: identities APF serves alike share a
// class (apfmatch.Config.ClassOf). It does not allocate.
func (v *View) Class(identity string) string {
	if c := v.config(); c != nil {
		return c.ClassOf(identity)
	}
	return identity
}

// PriorityLevel implements accounting.Leveler: the level that serves a
// cluster-wide LIST of resource by the class's identities; "" until the
// informers synced.
func (v *View) PriorityLevel(class, resource string) string {
	c := v.config()
	if c == nil {
		return ""
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c != v.cfg.Load() {
		return Level(c, class, resource) // rebuilt meanwhile: answer, do not cache
	}
	k := levelKey{class, resource}
	if level, ok := v.levels[k]; ok {
		return level
	}
	if len(v.levels) >= maxCached {
		clear(v.levels)
	}
	level := Level(c, class, resource)
	v.levels[k] = level
	return level
}

// Level is the priority level that serves a cluster-wide LIST of resource
// (herd's label: pods, endpointslices.discovery.k8s.io) by identity.
func Level(c *apfmatch.Config, identity, resource string) string {
	_, level := c.Serve(apfmatch.UserOf(identity), apfmatch.List(resource))
	return level
}
