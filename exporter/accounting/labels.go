package accounting

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/herd-k8s/herd/exporter/audit"
)

// Consistency is how a relist is served (SPEC §3.3).
type Consistency uint8

const (
	// Cache: resourceVersion=0, or NotOlderThan with a resourceVersion — the watch cache serves it.
	Cache Consistency = iota
	// Exact: resourceVersionMatch=Exact.
	Exact
	// Consistent: no resourceVersion. Since 1.31 (ConsistentListFromCache,
	// GA 1.34) the watch cache serves it once it is fresh; before, and when
	// the cache cannot, it is a quorum read from etcd.
	Consistent
	numConsistency
)

var consistencyNames = [numConsistency]string{"cache", "exact", "consistent"}

func (c Consistency) String() string { return consistencyNames[c] }

// ConsistencyOf classifies a read by its parameters.
func ConsistencyOf(q *audit.Query) Consistency {
	switch {
	case string(q.ResourceVersionMatch) == "Exact":
		return Exact
	case len(q.ResourceVersion) == 0:
		return Consistent
	default:
		// "0", or any resourceVersion with NotOlderThan or no match (which
		// the apiserver treats as NotOlderThan).
		return Cache
	}
}

// Shape is what a relist selects (SPEC §3.3): with its consistency and the
// size of the resource, what one relist costs the apiserver. It is part of
// how a relist is counted (herd_relists_total and the windowed series carry
// it) and judged (a stale kubelet's pod relists are whole-node ones; the
// mixin's storm alerts leave per-object reflectors out).
type Shape uint8

const (
	// ShapeAll: no selector, the whole resource (in the namespace, if any).
	ShapeAll Shape = iota
	// ShapeNode: an indexed spec.nodeName= selector, one node's objects —
	// served from the watch cache's index (k8s.io/kubernetes@v1.36.3
	// pkg/registry/core/pod/strategy.go Indexers and MatchPod's IndexFields;
	// k8s.io/apiserver@v0.36.3 pkg/storage/cacher/watch_cache.go
	// listLatestRV, which lists by index when the predicate's MatcherIndex
	// names one, pkg/storage/selection_predicate.go). Pods and
	// ResourceSlices have that index.
	ShapeNode
	// ShapeSelected: any other field or label selector. The watch cache
	// has no index for it: it walks the whole resource and filters.
	ShapeSelected
	// ShapeObject: fieldSelector=metadata.name=, at most one object — the
	// kubelet's per-object ConfigMap and Secret reflectors, and every
	// agent's informer on its own Node. The apiserver reads only that
	// object's key (k8s.io/apiserver@v0.36.3 pkg/registry/generic/registry/
	// store.go: a list whose predicate MatchesSingle is a non-recursive
	// GetList of one key; pkg/storage/cacher/watch_cache.go
	// getAllEventsSinceLocked does the same for a WatchList). The cheapest
	// relist there is: the kubelet's normal way of working, never a storm.
	ShapeObject
	// ShapeUnknown: the event does not keep the request's query (a GKE
	// LogEntry without a logged request: audit.Query.Unknown). Counted, and
	// never taken for a cheap shape.
	ShapeUnknown
	numShapes
)

var shapeNames = [numShapes]string{"all", "node", "selected", "object", "unknown"}

func (s Shape) String() string { return shapeNames[s] }

// ShapeOf is the shape of a read (the event's objectRef and query). A
// metadata.name= term makes it one object whatever else is selected; on
// nodes the decoder reports metadata.name= as FieldSelectorNode, which is one
// Node too. spec.nodeName= is indexed for pods and ResourceSlices only (see
// ShapeNode); elsewhere it is one more selector.
func ShapeOf(e *audit.Event) Shape {
	q := &e.Query
	core := len(e.APIGroup) == 0
	switch {
	case q.Unknown:
		return ShapeUnknown
	case len(q.FieldSelectorName) > 0, len(q.FieldSelectorNode) > 0 && core && string(e.Resource) == "nodes":
		return ShapeObject
	case len(q.FieldSelectorNode) > 0 && (core && string(e.Resource) == "pods" ||
		string(e.Resource) == "resourceslices" && string(e.APIGroup) == "resource.k8s.io"):
		return ShapeNode
	case len(q.FieldSelectorNode) > 0, q.OtherFieldSelector, q.LabelSelector:
		return ShapeSelected
	}
	return ShapeAll
}

// Attribution says how an instance's node was found (SPEC §3.2), in the
// order herd tries them.
type Attribution uint8

const (
	AttrUnknown Attribution = iota
	// AttrUsername: system:node:NAME.
	AttrUsername
	// AttrToken: the pod-bound service-account token's node name
	// (user.extra authentication.kubernetes.io/node-name), which the
	// apiserver vouches for.
	AttrToken
	// AttrSourceIP: the trusted source address is a Node's.
	AttrSourceIP
	// AttrFieldSelector: a spec.nodeName= (or, on nodes, metadata.name=)
	// field selector: what the client asked for, not who it is.
	AttrFieldSelector
)

func (a Attribution) String() string {
	return [...]string{"unknown", "username", "token", "source_ip", "field_selector"}[a]
}

// Other is the label value of everything past a bound: resources, verbs
// and codes outside their sets.
const Other = "other"

// knownVerbs are the verbs kube-apiserver can write, pre-interned so that no
// request can take their place: the resource verbs, and for non-resource
// URLs the lowercased HTTP method (k8s.io/apiserver@v0.36.3
// pkg/endpoints/request/requestinfo.go: `Verb: strings.ToLower(req.Method)`,
// any method token a client sends). Anything else is "other".
var knownVerbs = []string{
	"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "proxy",
	"post", "put", "head", "options",
}

// codeLabels are the label values of the HTTP status codes net/http knows,
// by code; any other code (or none) is "other": a response code is a label
// value, so it must come from a fixed set (200,000 distinct codes once made
// 201,831 series). An array, so that the hot path looks a code up without
// hashing.
var codeLabels = func() (t [600]string) {
	for c := range t {
		if http.StatusText(c) != "" {
			t[c] = strconv.Itoa(c)
		}
	}
	return t
}()

// codeOther is how requestKey records a code outside codeLabels.
const codeOther int32 = 0

// codeKey maps a response code to its requestKey value.
func codeKey(code int32) int32 {
	if code > 0 && int(code) < len(codeLabels) && codeLabels[code] != "" {
		return code
	}
	return codeOther
}

// CodeLabel is the `code` label value of a RequestCount's Code.
func CodeLabel(code int32) string {
	if code > 0 && int(code) < len(codeLabels) && codeLabels[code] != "" {
		return codeLabels[code]
	}
	return Other
}

// refused reports a request the apiserver refused to authenticate (401) or
// authorize (403): it cost the apiserver almost nothing and asked for
// nothing it got, so it is counted in herd_requests_total under its code and
// nowhere else — not a relist, page, TokenReview, instance or load.
func refused(code int32) bool { return code == http.StatusUnauthorized || code == http.StatusForbidden }

// provesResource reports whether an answer proves the request's resource
// is one the apiserver serves, so that it may take a slot of the bounded
// resource table: a 2xx, or "Too large resource version", which only the
// storage layer of a served resource answers. A 404 for a made-up resource,
// a 401/403, a 5xx do not: otherwise anyone able to send requests could
// fill the table for good with names of their choosing, and every resource
// seen afterwards would be "other".
func provesResource(e *audit.Event) bool {
	return e.Code >= 200 && e.Code < 300 || e.TooLargeResourceVersion
}

// interner maps label values to small ids, up to a bound; past it every new
// value is "other". Lookups of known values do not allocate and take no
// lock: readers load an immutable table, and the rare writer (a value seen
// for the first time, at most max of them in the ledger's life) copies it
// under its own lock. So concurrent Accounts on different shards, and
// snapshots naming what they read, never wait on one another for a name.
type interner struct {
	mu  sync.Mutex // writers
	tab atomic.Pointer[internTable]
	max int
}

// internTable is one version of an interner's contents; never modified once
// published.
type internTable struct {
	ids   map[string]uint16
	names []string
}

func newInterner(max int) *interner {
	in := &interner{max: max}
	in.tab.Store(&internTable{ids: map[string]uint16{}})
	return in
}

func (in *interner) id(s string) uint16 {
	if id, ok := in.tab.Load().ids[s]; ok {
		return id
	}
	return in.add(s)
}

func (in *interner) add(s string) uint16 {
	in.mu.Lock()
	defer in.mu.Unlock()
	t := in.tab.Load()
	if id, ok := t.ids[s]; ok {
		return id // added meanwhile
	}
	if len(t.names) >= in.max-1 && s != Other {
		if id, ok := t.ids[Other]; ok {
			return id
		}
		s = Other
	}
	nt := &internTable{ids: make(map[string]uint16, len(t.ids)+1), names: make([]string, len(t.names), len(t.names)+1)}
	for k, v := range t.ids {
		nt.ids[k] = v
	}
	copy(nt.names, t.names)
	id := uint16(len(nt.names))
	nt.ids[s] = id
	nt.names = append(nt.names, s)
	in.tab.Store(nt)
	return id
}

func (in *interner) idBytes(b []byte) uint16 {
	if id, ok := in.tab.Load().ids[string(b)]; ok {
		return id
	}
	return in.add(string(b))
}

// lookup is the id of a known value, or of "other"; it never adds one but
// "other".
func (in *interner) lookup(b []byte) uint16 {
	if id, ok := in.tab.Load().ids[string(b)]; ok {
		return id
	}
	return in.id(Other)
}

// known is the id of a known value, without adding anything.
func (in *interner) known(s string) (uint16, bool) {
	id, ok := in.tab.Load().ids[s]
	return id, ok
}

// knownBytes is known for a value in bytes, without allocating.
func (in *interner) knownBytes(b []byte) (uint16, bool) {
	id, ok := in.tab.Load().ids[string(b)]
	return id, ok
}

func (in *interner) name(id uint16) string { return in.tab.Load().names[id] }
