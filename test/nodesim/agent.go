package nodesim

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herd-k8s/herd/test/herdtest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
)

// AgentOptions tune an Agent's reflectors.
type AgentOptions struct {
	// Options are used when the Agent creates its own Client (StartKubelet,
	// StartKubeProxy, ...); StartAgent ignores them.
	Options
	// DisableWatchList makes the reflectors LIST then WATCH, as client-go did
	// before 1.35 (and does when the WatchListClient feature is off). By
	// default they relist with WatchList streams, as client-go 1.36 does.
	DisableWatchList bool
	// Backoff replaces client-go's reflector backoff (800 ms doubling to
	// 30 s, full jitter) between failed attempts. Leave nil for realism.
	Backoff *wait.Backoff
}

// Stats count what one resource's reflector asked the apiserver for. Lists
// and WatchLists are relists (SPEC §3.3); Pages and Watches are not.
type Stats struct {
	// Lists are LIST requests without a continue token.
	Lists int64
	// Pages are LIST requests with a continue token.
	Pages int64
	// WatchLists are watches with sendInitialEvents=true.
	WatchLists int64
	// Watches are plain watches (from a resourceVersion, no initial events).
	Watches int64
	// Syncs are completed relists: the reflector replaced its store.
	Syncs int64
	// Restarts are reflector restarts forced by RelistNow.
	Restarts int64
}

// Agent is a simulated node-side agent in steady state: one client-go
// reflector per resource, feeding a store, exactly as a kubelet's pod source
// or an informer does. It keeps its watches open, relists after errors and
// recovers on its own after an apiserver restart; RelistNow and RelistEvery
// force relists on top.
type Agent struct {
	// Client is the connection the reflectors use.
	Client *Client

	ctx       context.Context
	cancel    context.CancelFunc
	ownClient bool
	dyn       *dynamic.DynamicClient
	opts      AgentOptions

	runners map[string]*runner
	names   []string
	loops   sync.WaitGroup
}

// StartAgent starts one reflector per resource over c. Resources are later
// named by Resource.String() ("pods", "runtimeclasses.node.k8s.io"). The
// Agent runs until ctx ends or Stop is called; it does not close c.
func StartAgent(ctx context.Context, c *Client, resources []Resource, opts AgentOptions) (*Agent, error) {
	dyn, err := c.dynamicClient()
	if err != nil {
		return nil, fmt.Errorf("start %s agent: %w", c.Agent, err)
	}
	a := &Agent{Client: c, dyn: dyn, opts: opts, runners: map[string]*runner{}}
	a.ctx, a.cancel = context.WithCancel(ctx)
	for _, r := range resources {
		name := r.String()
		if _, dup := a.runners[name]; dup {
			a.cancel()
			return nil, fmt.Errorf("start %s agent: resource %s given twice", c.Agent, name)
		}
		a.runners[name] = a.newRunner(r)
		a.names = append(a.names, name)
	}
	for _, name := range a.names {
		a.runners[name].start(a.ctx)
	}
	return a, nil
}

// StartKubelet runs node's kubelet in steady state: reflectors on its pods
// (spec.nodeName=<node>), its Node, Services, RuntimeClasses and CSIDrivers.
func StartKubelet(ctx context.Context, src ConfigSource, node string, opts AgentOptions) (*Agent, error) {
	c, err := NewKubelet(src, node, opts.Options)
	if err != nil {
		return nil, err
	}
	return startOwned(ctx, c, KubeletResources(node), opts)
}

// StartKubeProxy runs kube-proxy in steady state (Services, EndpointSlices).
func StartKubeProxy(ctx context.Context, src ConfigSource, opts AgentOptions) (*Agent, error) {
	c, err := NewKubeProxy(src, opts.Options)
	if err != nil {
		return nil, err
	}
	return startOwned(ctx, c, KubeProxyResources(), opts)
}

// StartCalicoNode runs calico-node in steady state.
func StartCalicoNode(ctx context.Context, src ConfigSource, opts AgentOptions) (*Agent, error) {
	c, err := NewCalicoNode(src, opts.Options)
	if err != nil {
		return nil, err
	}
	return startOwned(ctx, c, CalicoNodeResources(), opts)
}

// StartCiliumAgent runs cilium-agent in steady state.
func StartCiliumAgent(ctx context.Context, src ConfigSource, opts AgentOptions) (*Agent, error) {
	c, err := NewCiliumAgent(src, opts.Options)
	if err != nil {
		return nil, err
	}
	return startOwned(ctx, c, CiliumAgentResources(), opts)
}

func startOwned(ctx context.Context, c *Client, resources []Resource, opts AgentOptions) (*Agent, error) {
	a, err := StartAgent(ctx, c, resources, opts)
	if err != nil {
		c.Close()
		return nil, err
	}
	a.ownClient = true
	return a, nil
}

// Resources names the agent's resources in the order given.
func (a *Agent) Resources() []string { return append([]string(nil), a.names...) }

// Stop ends every reflector and relist loop and waits for them; an Agent that
// created its own Client closes it. Stop is safe to call more than once.
func (a *Agent) Stop() {
	a.cancel()
	a.loops.Wait()
	for _, name := range a.names {
		a.runners[name].stop()
	}
	if a.ownClient {
		a.Client.Close()
	}
}

// WaitForSync waits until every reflector has filled its store once.
func (a *Agent) WaitForSync(ctx context.Context) error {
	for _, name := range a.names {
		if err := a.runners[name].waitSyncs(ctx, 1); err != nil {
			return fmt.Errorf("%s %s: wait for %s to sync: %w", a.Client.Agent, a.Client.User, name, err)
		}
	}
	return nil
}

// Keys lists the store keys ("namespace/name", or "name") of resource.
func (a *Agent) Keys(resource string) []string {
	r, ok := a.runners[resource]
	if !ok {
		return nil
	}
	keys := r.store.ListKeys()
	sort.Strings(keys)
	return keys
}

// Get returns the stored object of resource with key ("namespace/name").
func (a *Agent) Get(resource, key string) (*unstructured.Unstructured, bool) {
	r, ok := a.runners[resource]
	if !ok {
		return nil, false
	}
	obj, exists, err := r.store.GetByKey(key)
	if err != nil || !exists {
		return nil, false
	}
	u, ok := obj.(*unstructured.Unstructured)
	return u, ok
}

// WaitForObject waits until resource's store holds key: the agent has seen
// the object through its watch or a relist.
func (a *Agent) WaitForObject(ctx context.Context, resource, key string) error {
	if _, ok := a.runners[resource]; !ok {
		return fmt.Errorf("wait for %s %s: agent has no such resource (have %v)", resource, key, a.names)
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if _, ok := a.Get(resource, key); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s did not see %s %s: %w", a.Client.Agent, a.Client.User, resource, key, ctx.Err())
		case <-t.C:
		}
	}
}

// Stats returns the counters of resource's reflector.
func (a *Agent) Stats(resource string) Stats {
	r, ok := a.runners[resource]
	if !ok {
		return Stats{}
	}
	return r.snapshot()
}

// RelistNow forces resource to relist at once, the way a restarted agent
// does: its reflector is replaced by a fresh one, which relists from scratch
// (a WatchList with no resourceVersion — consistent — or, with
// DisableWatchList, a LIST at resourceVersion=0) and keeps the same store.
// It returns when the new reflector has filled the store.
func (a *Agent) RelistNow(ctx context.Context, resource string) error {
	r, ok := a.runners[resource]
	if !ok {
		return fmt.Errorf("relist %s: agent has no such resource (have %v)", resource, a.names)
	}
	syncs, err := r.restart(a.ctx)
	if err != nil {
		return fmt.Errorf("relist %s: %w", resource, err)
	}
	if err := r.waitSyncs(ctx, syncs+1); err != nil {
		return fmt.Errorf("relist %s as %s: %w", resource, a.Client.User, err)
	}
	return nil
}

// RelistEvery relists resource every interval (as RelistNow) until the Agent
// stops: a client stuck in a relist loop, the pattern herd's relist
// frequency metrics exist to catch.
func (a *Agent) RelistEvery(resource string, interval time.Duration) error {
	if _, ok := a.runners[resource]; !ok {
		return fmt.Errorf("relist %s every %v: agent has no such resource (have %v)", resource, interval, a.names)
	}
	if interval <= 0 {
		return fmt.Errorf("relist %s: interval must be positive, got %v", resource, interval)
	}
	if a.ctx.Err() != nil {
		return fmt.Errorf("relist %s every %v: agent stopped", resource, interval)
	}
	a.loops.Add(1)
	go func() {
		defer a.loops.Done()
		herdtest.Every(a.ctx, interval, func() {
			// A failed relist (apiserver down) is retried by the
			// reflector itself; the loop just keeps its pace.
			_ = a.RelistNow(a.ctx, resource)
		})
	}()
	return nil
}

// runner owns one resource's reflector and store.
type runner struct {
	agent *Agent
	res   Resource
	lw    *listWatch
	store *syncStore

	mu       sync.Mutex // serialises start, restart and stop
	cancel   context.CancelFunc
	done     chan struct{}
	restarts atomic.Int64
}

func (a *Agent) newRunner(r Resource) *runner {
	ri := a.dyn.Resource(r.GVR())
	var rif dynamic.ResourceInterface = ri
	if r.Namespace != "" {
		rif = ri.Namespace(r.Namespace)
	}
	return &runner{
		agent: a,
		res:   r,
		lw:    &listWatch{res: r, ri: rif, noWatchList: a.opts.DisableWatchList},
		store: newSyncStore(),
	}
}

// start runs a new reflector under ctx; the caller holds r.mu or is the
// only user (StartAgent).
func (r *runner) start(ctx context.Context) {
	rctx, cancel := context.WithCancel(ctx)
	refl := cache.NewReflectorWithOptions(r.lw, &unstructured.Unstructured{}, r.store, cache.ReflectorOptions{
		Name:            r.agent.Client.Agent + "/" + r.agent.Client.User + "/" + r.res.String(),
		TypeDescription: r.res.String(),
		Backoff:         r.agent.opts.Backoff,
	})
	done := make(chan struct{})
	r.cancel, r.done = cancel, done
	go func() {
		defer close(done)
		refl.RunWithContext(rctx)
	}()
}

// restart replaces the reflector and returns the sync count before the new
// one started, so the caller can wait for the next sync.
func (r *runner) restart(ctx context.Context) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ctx.Err() != nil {
		return 0, errors.New("agent stopped")
	}
	r.cancel()
	<-r.done
	syncs := r.store.syncs.Load()
	r.restarts.Add(1)
	r.start(ctx)
	return syncs, nil
}

func (r *runner) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancel()
	<-r.done
}

func (r *runner) waitSyncs(ctx context.Context, n int64) error {
	for {
		ch := r.store.changed()
		if r.store.syncs.Load() >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (r *runner) snapshot() Stats {
	return Stats{
		Lists:      r.lw.lists.Load(),
		Pages:      r.lw.pages.Load(),
		WatchLists: r.lw.watchLists.Load(),
		Watches:    r.lw.watches.Load(),
		Syncs:      r.store.syncs.Load(),
		Restarts:   r.restarts.Load(),
	}
}

// listWatch is the reflector's ListerWatcher: the dynamic client with the
// resource's field selector, counting every request.
type listWatch struct {
	res         Resource
	ri          dynamic.ResourceInterface
	noWatchList bool

	lists, pages, watchLists, watches atomic.Int64
}

func (l *listWatch) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	opts.FieldSelector = l.res.FieldSelector
	if opts.Continue == "" {
		l.lists.Add(1)
	} else {
		l.pages.Add(1)
	}
	return l.ri.List(ctx, opts)
}

func (l *listWatch) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.FieldSelector = l.res.FieldSelector
	if opts.SendInitialEvents != nil && *opts.SendInitialEvents {
		l.watchLists.Add(1)
	} else {
		l.watches.Add(1)
	}
	return l.ri.Watch(ctx, opts)
}

// List and Watch satisfy cache.ListerWatcher; the reflector calls the
// context variants.
func (l *listWatch) List(opts metav1.ListOptions) (runtime.Object, error) {
	return l.ListWithContext(context.Background(), opts)
}

func (l *listWatch) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return l.WatchWithContext(context.Background(), opts)
}

// IsWatchListSemanticsUnSupported tells the reflector (through
// client-go's watchlist.DoesClientNotSupportWatchListSemantics) to fall back
// to LIST+WATCH when WatchList is disabled for this agent.
func (l *listWatch) IsWatchListSemanticsUnSupported() bool { return l.noWatchList }

// syncStore is a thread-safe store that counts Replace calls (one per
// completed relist) and wakes waiters on each.
type syncStore struct {
	cache.Store
	syncs atomic.Int64

	mu   sync.Mutex
	wake chan struct{}
}

func newSyncStore() *syncStore {
	return &syncStore{Store: cache.NewStore(cache.MetaNamespaceKeyFunc), wake: make(chan struct{})}
}

func (s *syncStore) Replace(items []any, rv string) error {
	if err := s.Store.Replace(items, rv); err != nil {
		return err
	}
	s.syncs.Add(1)
	s.mu.Lock()
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
	return nil
}

// changed is closed at the next Replace.
func (s *syncStore) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wake
}
