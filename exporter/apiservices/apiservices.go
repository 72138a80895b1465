// Package apiservices is herd's view of the aggregated APIServices: what the
// apiserver's availability controller says about each (the Available
// condition), which backends its Service has (EndpointSlices), and what a user
// actually gets from it (a probe of GET /apis/<group>/<version> through the
// apiserver every ProbeInterval, with herd's own credentials).
//
// An unreachable aggregated APIService (incident 001: calico-apiserver behind
// a broken overlay) burns the apiserver's error budget without any sign in
// the apiserver's own resources: every discovery client that touches the
// group gets a 503 or hangs for 5 s. The View names the APIService, the
// failure mode (timeout, connection, tls, http_5xx, http_4xx) and the pods
// and nodes behind it.
//
// Cost to the apiserver: one watch on APIServices, and one watch per
// distinct Service behind a non-local APIService, scoped to its namespace and
// to the label kubernetes.io/service-name=<name>. Both start with a WatchList
// stream from the watch cache (client-go's default in 1.36), so herd never
// LISTs; they follow with plain watches. A cluster-wide EndpointSlice
// informer would instead stream every endpoint change of every Service (pod
// churn on 5,000 nodes) to herd only to drop nearly all of it; per-service
// watches are dispatched by the watch cache's namespace index and filtered
// by label on the server, and there are only a handful of them.
package apiservices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
)

// Defaults for Options.
const (
	DefaultProbeInterval = 30 * time.Second
	DefaultProbeTimeout  = 5 * time.Second
	DefaultProbeWorkers  = 4
	DefaultMaxBackends   = 20
)

// PolicyRules are the RBAC rules a View needs: to watch APIServices and
// EndpointSlices ("list" too, for the fallback should WatchList be off). The
// probes need none: GET /apis/<group>/<version> is a non-resource URL that the
// bootstrap system:discovery ClusterRole grants every authenticated user, and
// the aggregated server allows discovery to everyone in turn.
var PolicyRules = []rbacv1.PolicyRule{
	{APIGroups: []string{apiregistrationv1.GroupName}, Resources: []string{"apiservices"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{discoveryv1.GroupName}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
}

// Options configure a View. The zero value is the SPEC's behaviour.
type Options struct {
	// ProbeInterval is how often every non-local APIService is probed
	// (default 30s). Each round starts ±10% of it after the previous one's
	// start, so replicas of herd do not probe in step.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe (default 5s, the aggregator's own limit
	// for discovery requests).
	ProbeTimeout time.Duration
	// ProbeWorkers is how many probes run at once (default 4).
	ProbeWorkers int
	// MaxBackends caps herd_apiservice_backend series per APIService
	// (default 20): an APIService pointed at a DaemonSet's Service must not
	// add a series per node. /debug/apiservices lists them all.
	MaxBackends int
	// Logger receives watch errors and probe state changes; default: discarded.
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.ProbeInterval == 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	if o.ProbeWorkers == 0 {
		o.ProbeWorkers = DefaultProbeWorkers
	}
	if o.MaxBackends == 0 {
		o.MaxBackends = DefaultMaxBackends
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.ProbeInterval < 0:
		return fmt.Errorf("probe interval %v must be positive", o.ProbeInterval)
	case o.ProbeTimeout < 0:
		return fmt.Errorf("probe timeout %v must be positive", o.ProbeTimeout)
	case o.ProbeWorkers < 0:
		return fmt.Errorf("probe workers %d must be positive", o.ProbeWorkers)
	case o.MaxBackends < 0:
		return fmt.Errorf("max backends %d must be positive", o.MaxBackends)
	}
	return nil
}

// View watches APIServices and their backends, probes them, and serves the
// result as Status (exporter/collector makes the metrics of it) and as /debug/apiservices.
type View struct {
	opts   Options
	logger *slog.Logger
	kube   kubernetes.Interface
	// probeClient sends the probes; probeURL(group, version) is their target.
	probeClient *http.Client
	base        *url.URL

	apiServices cache.SharedIndexInformer
	changed     chan struct{}
	synced      atomic.Bool
	started     atomic.Bool

	mu sync.Mutex
	// slices are the running EndpointSlice informers, one per Service behind
	// a non-local APIService; sliceWG counts their goroutines.
	slices  map[types.NamespacedName]*sliceWatch
	sliceWG sync.WaitGroup
	// probes are the probe results, per APIService name.
	probes map[string]*probeStats
}

type sliceWatch struct {
	informer cache.SharedIndexInformer
	cancel   context.CancelFunc
}

// New builds a View over the cluster cfg points at. It does not contact the
// apiserver until Run.
func New(cfg *rest.Config, opts Options) (*View, error) {
	if cfg == nil {
		return nil, errors.New("apiservices: no Kubernetes client configuration")
	}
	if err := opts.defaults(); err != nil {
		return nil, fmt.Errorf("apiservices: %w", err)
	}
	// Watches are long-running: a client-wide timeout would cut them (and
	// a re-watch is cheap, but pointless churn).
	watchCfg := rest.CopyConfig(cfg)
	watchCfg.Timeout = 0
	watchCfg.ContentType = runtime.ContentTypeProtobuf
	watchCfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	kube, err := kubernetes.NewForConfig(watchCfg)
	if err != nil {
		return nil, fmt.Errorf("apiservices: kubernetes client: %w", err)
	}
	agg, err := aggregator.NewForConfig(watchCfg)
	if err != nil {
		return nil, fmt.Errorf("apiservices: apiregistration client: %w", err)
	}
	probeCfg := rest.CopyConfig(cfg)
	probeCfg.Timeout = 0 // each probe has its own deadline
	probeClient, err := rest.HTTPClientFor(probeCfg)
	if err != nil {
		return nil, fmt.Errorf("apiservices: probe client: %w", err)
	}
	base, _, err := rest.DefaultServerUrlFor(probeCfg)
	if err != nil {
		return nil, fmt.Errorf("apiservices: apiserver URL: %w", err)
	}

	v := &View{
		opts:        opts,
		logger:      opts.Logger,
		kube:        kube,
		probeClient: probeClient,
		base:        base,
		changed:     make(chan struct{}, 1),
		slices:      map[types.NamespacedName]*sliceWatch{},
		probes:      map[string]*probeStats{},
	}
	apis := agg.ApiregistrationV1().APIServices()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return apis.List(ctx, fromCache(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return apis.Watch(ctx, o)
		},
	}
	v.apiServices = cache.NewSharedIndexInformerWithOptions(
		cache.ToListWatcherWithWatchListSemantics(lw, apis),
		&apiregistrationv1.APIService{},
		cache.SharedIndexInformerOptions{ObjectDescription: "apiservices"},
	)
	if err := v.apiServices.SetTransform(stripAPIService); err != nil {
		return nil, fmt.Errorf("apiservices: %w", err)
	}
	if err := v.apiServices.SetWatchErrorHandlerWithContext(v.watchError("apiservices")); err != nil {
		return nil, fmt.Errorf("apiservices: %w", err)
	}
	notify := func() {
		select {
		case v.changed <- struct{}{}:
		default:
		}
	}
	if _, err := v.apiServices.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(old, cur any) { notify() },
		DeleteFunc: func(any) { notify() },
	}); err != nil {
		return nil, fmt.Errorf("apiservices: %w", err)
	}
	return v, nil
}

// fromCache makes a LIST, should the reflector ever fall back to one (an
// apiserver without WatchList, or a failed WatchList stream), one the watch
// cache serves: resourceVersion=0, never a quorum read from etcd.
func fromCache(o metav1.ListOptions) metav1.ListOptions {
	if o.ResourceVersion == "" && o.Continue == "" {
		o.ResourceVersion = "0"
		o.ResourceVersionMatch = ""
	}
	return o
}

func (v *View) watchError(what string) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, r *cache.Reflector, err error) {
		if ctx.Err() != nil {
			return
		}
		v.logger.Warn("watch failed; retrying", "resource", what, "err", err)
	}
}

// stripAPIService drops what herd never reads (managedFields, annotations
// such as last-applied-configuration) before the object is cached.
func stripAPIService(obj any) (any, error) {
	if a, ok := obj.(*apiregistrationv1.APIService); ok {
		a.ManagedFields = nil
		a.Annotations = nil
	}
	return obj, nil
}

// stripEndpointSlice keeps only what the metrics and debug page show.
func stripEndpointSlice(obj any) (any, error) {
	if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
		s.ManagedFields = nil
		s.Annotations = nil
		for i := range s.Endpoints {
			s.Endpoints[i].Hints = nil
			s.Endpoints[i].DeprecatedTopology = nil
		}
	}
	return obj, nil
}

// Run starts the informers and, once they have synced, the prober. It blocks
// until ctx is done, then stops everything it started and returns nil. A View
// runs once.
func (v *View) Run(ctx context.Context) error {
	if !v.started.CompareAndSwap(false, true) {
		return errors.New("apiservices: View.Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		v.stopSlices()
		wg.Wait()
	}()

	wg.Go(func() { v.apiServices.RunWithContext(ctx) })
	if !cache.WaitForCacheSync(ctx.Done(), v.apiServices.HasSynced) {
		return nil
	}
	v.reconcile(ctx)
	v.mu.Lock()
	synced := make([]cache.InformerSynced, 0, len(v.slices))
	for _, s := range v.slices {
		synced = append(synced, s.informer.HasSynced)
	}
	v.mu.Unlock()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	v.synced.Store(true)
	v.logger.Info("apiservice informers synced", "apiservices", len(v.apiServices.GetStore().ListKeys()), "services", len(synced))

	wg.Go(func() { v.probeLoop(ctx) })
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-v.changed:
			v.reconcile(ctx)
		}
	}
}

// Synced reports whether the APIService informer and the EndpointSlice
// informers of the Services known at start have synced (for /readyz). It
// stays true afterwards: a Service that appears later gets its informer
// within milliseconds, and readiness must not flap with it.
func (v *View) Synced() bool { return v.synced.Load() }

// reconcile starts an EndpointSlice informer for every Service behind a
// non-local APIService and stops those no APIService refers to any more, and
// forgets the probe results of APIServices that are gone.
func (v *View) reconcile(ctx context.Context) {
	want := map[types.NamespacedName]bool{}
	names := map[string]bool{}
	for _, a := range v.list() {
		names[a.Name] = true
		if a.Spec.Service != nil {
			want[serviceKey(a)] = true
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for key, s := range v.slices {
		if !want[key] {
			s.cancel()
			delete(v.slices, key)
		}
	}
	for key := range want {
		if _, ok := v.slices[key]; !ok {
			v.slices[key] = v.startSlices(ctx, key)
		}
	}
	for name := range v.probes {
		if !names[name] {
			delete(v.probes, name)
		}
	}
}

// startSlices runs the EndpointSlice informer of one Service: a watch in its
// namespace, filtered by the kubernetes.io/service-name label.
func (v *View) startSlices(ctx context.Context, key types.NamespacedName) *sliceWatch {
	selector := discoveryv1.LabelServiceName + "=" + key.Name
	slices := v.kube.DiscoveryV1().EndpointSlices(key.Namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return slices.List(ctx, fromCache(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return slices.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(
		cache.ToListWatcherWithWatchListSemantics(lw, slices),
		&discoveryv1.EndpointSlice{},
		cache.SharedIndexInformerOptions{ObjectDescription: "endpointslices of service " + key.String()},
	)
	_ = inf.SetTransform(stripEndpointSlice)                                                // not started yet: cannot fail
	_ = inf.SetWatchErrorHandlerWithContext(v.watchError("endpointslices " + key.String())) // idem
	sctx, cancel := context.WithCancel(ctx)
	s := &sliceWatch{informer: inf, cancel: cancel}
	v.sliceWG.Go(func() { inf.RunWithContext(sctx) })
	return s
}

// stopSlices stops every EndpointSlice informer, including those reconcile
// already cancelled, and waits for them.
func (v *View) stopSlices() {
	v.mu.Lock()
	for key, s := range v.slices {
		s.cancel()
		delete(v.slices, key)
	}
	v.mu.Unlock()
	v.sliceWG.Wait()
}

// list returns the cached APIServices sorted by name.
func (v *View) list() []*apiregistrationv1.APIService {
	objs := v.apiServices.GetStore().List()
	out := make([]*apiregistrationv1.APIService, 0, len(objs))
	for _, o := range objs {
		if a, ok := o.(*apiregistrationv1.APIService); ok {
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (v *View) get(name string) *apiregistrationv1.APIService {
	o, ok, err := v.apiServices.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil
	}
	a, _ := o.(*apiregistrationv1.APIService)
	return a
}

func serviceKey(a *apiregistrationv1.APIService) types.NamespacedName {
	return types.NamespacedName{Namespace: a.Spec.Service.Namespace, Name: a.Spec.Service.Name}
}

func availableCondition(a *apiregistrationv1.APIService) *apiregistrationv1.APIServiceCondition {
	for i := range a.Status.Conditions {
		if a.Status.Conditions[i].Type == apiregistrationv1.Available {
			return &a.Status.Conditions[i]
		}
	}
	return nil
}

// Backend is one endpoint of an APIService's Service.
type Backend struct {
	Pod       string `json:"pod,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Node      string `json:"node,omitempty"`
	IP        string `json:"ip,omitempty"`
	Ready     bool   `json:"ready"`
}

// backends returns the endpoints of a Service, one per pod (a dual-stack
// Service lists each pod in two slices) or, without a targetRef, per address,
// sorted by pod then address. A nil Ready condition means ready, as the API
// defines it.
func (v *View) backends(key types.NamespacedName) (out []Backend, known bool) {
	v.mu.Lock()
	s, ok := v.slices[key]
	v.mu.Unlock()
	if !ok || !s.informer.HasSynced() {
		return nil, false
	}
	index := map[string]int{}
	for _, o := range s.informer.GetStore().List() {
		slice, ok := o.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		for _, ep := range slice.Endpoints {
			b := Backend{Ready: ep.Conditions.Ready == nil || *ep.Conditions.Ready}
			if len(ep.Addresses) > 0 {
				b.IP = ep.Addresses[0]
			}
			if ep.NodeName != nil {
				b.Node = *ep.NodeName
			}
			id := "addr/" + b.IP
			if ref := ep.TargetRef; ref != nil && (ref.Kind == "Pod" || ref.Kind == "") {
				b.Pod, b.Namespace = ref.Name, ref.Namespace
				id = "pod/" + ref.Namespace + "/" + ref.Name
			}
			if i, dup := index[id]; dup {
				out[i].Ready = out[i].Ready || b.Ready
				continue
			}
			index[id] = len(out)
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pod != out[j].Pod {
			return out[i].Pod < out[j].Pod
		}
		return out[i].IP < out[j].IP
	})
	return out, true
}

// probeURL is GET /apis/<group>/<version> on the apiserver, under any path
// prefix the client configuration carries (a proxy in front of it).
func (v *View) probeURL(group, version string) string {
	u := *v.base
	u.Path = strings.TrimRight(u.Path, "/") + "/apis/" + group + "/" + version
	u.RawQuery = ""
	return u.String()
}
