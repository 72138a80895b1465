// Package accounting keeps herd's books on node-side clients: every audited
// request is charged to an instance (role, client, identity, node) and to a
// resource, and relists are told apart from pages and plain re-watches
// (SPEC §3.3).
//
// Memory is bounded by configuration, never by cluster size or by what a
// client sends: instances, resources, verbs and codes are capped (and what
// a client chooses cannot take a slot for good), and counters are keyed by
// small interned ids, so accounting an event that belongs to a known
// instance does not allocate.
package accounting

import (
	"bytes"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
)

// NodeResolver maps a source IP to the Node that has that address. The cluster
// view (informers) implements it; without one, source IPs attribute nothing.
// It is called for every event: it must not allocate.
type NodeResolver interface {
	NodeForIP(ip []byte) (string, bool)
}

// Ledger accounts audit events. It is safe for concurrent use.
type Ledger struct {
	cfg        Config
	width      int64 // window bucket width, ns
	proxies    []netip.Prefix
	classifier *classify.Classifier
	nodes      NodeResolver
	judge      Judge // nodes, when it also judges (the cluster view)
	now        func() time.Time
	scratch    scratch // SnapshotAt's working sets

	mu        sync.Mutex
	lastClock int64 // the clock's last reading, Unix ns (timestamp)
	resources interner
	verbs     interner
	clients   interner
	instances map[string]*Instance
	evicted   uint64
	keyBuf    []byte

	relists      map[relistKey]uint64
	pages        map[streamKey]uint64
	tooLarge     map[streamKey]uint64
	intervals    map[shapeKey]*histogram
	requests     map[requestKey]uint64
	tokenReviews map[clientKey]uint64
	latency      map[streamKey]*latencySums
	stageSeen    func(e *audit.Event, s audit.Stage) bool
	// sawWatchStart is set once any watch's ResponseStarted arrives: from then
	// on watches count at that stage, else (a policy that omits it) at
	// ResponseComplete.
	sawWatchStart bool
}

type clientKey struct {
	role   classify.Role
	client uint16
}

type streamKey struct {
	clientKey
	resource uint16
}

// shapeKey is a stream and the shape of its relists: what relisting
// instances, intervals and top-K are kept by.
type shapeKey struct {
	streamKey
	shape Shape
}

type relistKey struct {
	shapeKey
	consistency Consistency
}

type requestKey struct {
	clientKey
	verb uint16
	code int32 // codeOther for a code outside codeLabels
}

// New returns an empty Ledger for a valid cfg. nodes may be nil (no
// attribution by address, no verdicts: `--no-kube`); when it also implements
// Judge, as the cluster view does, snapshots carry the verdicts.
func New(cfg Config, c *classify.Classifier, nodes NodeResolver) (*Ledger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	proxies, err := cfg.trustedProxies()
	if err != nil {
		return nil, err
	}
	l := &Ledger{
		cfg:          cfg,
		width:        int64(cfg.Window) / buckets,
		proxies:      proxies,
		classifier:   c,
		nodes:        nodes,
		now:          time.Now,
		resources:    newInterner(cfg.MaxResources),
		verbs:        newInterner(len(knownVerbs) + 1),
		clients:      newInterner(len(c.Clients()) + 1),
		instances:    map[string]*Instance{},
		relists:      map[relistKey]uint64{},
		pages:        map[streamKey]uint64{},
		tooLarge:     map[streamKey]uint64{},
		intervals:    map[shapeKey]*histogram{},
		requests:     map[requestKey]uint64{},
		tokenReviews: map[clientKey]uint64{},
		latency:      map[streamKey]*latencySums{},
	}
	for _, name := range c.Clients() {
		l.clients.id(name)
	}
	for _, v := range knownVerbs {
		l.verbs.id(v)
	}
	l.verbs.id(Other)
	if j, ok := nodes.(Judge); ok {
		l.judge = j
	}
	return l, nil
}

// SetClock replaces the ledger's clock (time.Now), which ends the windows of
// Snapshot and Clients, stamps events without a usable timestamp and bounds
// future ones. Tests and fixtures read the ledger at a fixed time with it.
// Call it before use.
func (l *Ledger) SetClock(now func() time.Time) {
	l.mu.Lock()
	l.now = now
	l.lastClock = 0
	l.mu.Unlock()
}

// clock is the ledger's current time, Unix ns.
func (l *Ledger) clock() int64 { return l.now().UnixNano() }

// SetStageLookup lets the ledger ask whether another stage of the same
// request was already seen (the dedup set knows), so that a watch counts once
// whichever of its ResponseStarted and ResponseComplete arrives first. f gets
// the event, not only its auditID, because a client can reuse an Audit-ID:
// the request's own timestamp tells its stages from another request's
// (ingest.Dedup.HasStage).
func (l *Ledger) SetStageLookup(f func(e *audit.Event, s audit.Stage) bool) {
	l.mu.Lock()
	l.stageSeen = f
	l.mu.Unlock()
}

func (l *Ledger) seen(e *audit.Event, s audit.Stage) bool {
	return l.stageSeen != nil && l.stageSeen(e, s)
}

// Config is the ledger's effective configuration.
func (l *Ledger) Config() Config { return l.cfg }

var (
	verbList        = []byte("list")
	verbWatch       = []byte("watch")
	verbCreate      = []byte("create")
	resTokenReviews = []byte("tokenreviews")
	grpAuthn        = []byte("authentication.k8s.io")
)

// Account charges one event and returns the time it was accounted at
// (Unix ns): its stageTimestamp, bounded by the receive time plus
// MaxClockSkew (see timestamp). Events at stages herd does not count change
// nothing; the caller has already dropped duplicates.
func (l *Ledger) Account(e *audit.Event) int64 {
	isWatch := bytes.Equal(e.Verb, verbWatch)
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.timestamp(e.StageTimestampNanos)
	switch {
	case isWatch && e.Stage == audit.StageResponseStarted:
		l.sawWatchStart = true
		if l.seen(e, audit.StageResponseComplete) {
			return t // its ResponseComplete came first and was counted
		}
	case isWatch && e.Stage == audit.StageResponseComplete:
		if l.sawWatchStart || l.seen(e, audit.StageResponseStarted) {
			return t // counted at ResponseStarted
		}
	case !isWatch && e.Stage == audit.StageResponseComplete:
	default:
		return t
	}

	cls := classify.Unauthenticated
	if !e.Unauthenticated {
		cls = l.classifier.Classify(e.User, e.UserAgent)
	}
	ck := clientKey{role: cls.Role, client: l.clients.id(cls.Client)}
	l.requests[requestKey{clientKey: ck, verb: l.verbs.lookup(e.Verb), code: codeKey(e.Code)}]++
	if refused(e.Code) {
		return t
	}

	inst := l.instance(cls, ck, e, t)
	inst.Requests++
	res := l.resourceID(e)
	sk := streamKey{clientKey: ck, resource: res}
	shk := shapeKey{streamKey: sk, shape: ShapeOf(e)}
	switch {
	case bytes.Equal(e.Verb, verbList) && e.Query.Continue:
		l.pages[sk]++
		inst.stream(shk).Pages++
	case bytes.Equal(e.Verb, verbList) || (isWatch && e.Query.SendInitialEvents):
		cons := ConsistencyOf(&e.Query)
		l.relists[relistKey{shapeKey: shk, consistency: cons}]++
		s := inst.stream(shk)
		if s.LastRelistNanos > 0 && t > s.LastRelistNanos {
			h := l.intervals[shk]
			if h == nil {
				h = &histogram{}
				l.intervals[shk] = h
			}
			h.observe(float64(t-s.LastRelistNanos) / 1e9)
		}
		if t > s.LastRelistNanos {
			s.LastRelistNanos = t
		}
		s.Relists++
		s.ByConsistency[cons]++
		s.win.add(t, l.width)
	}
	if e.TooLargeResourceVersion {
		l.tooLarge[sk]++
		s := inst.stream(shk)
		s.TooLarge++
		s.tooLargeWin.add(t, l.width)
	}
	if e.Code >= 400 {
		inst.Errors++
		inst.LastErrorCode = e.Code
	}
	if bytes.Equal(e.Verb, verbCreate) && bytes.Equal(e.Resource, resTokenReviews) && bytes.Equal(e.APIGroup, grpAuthn) {
		l.tokenReviews[ck]++
		inst.TokenReviews++
		inst.tokenReviewWin.add(t, l.width)
	}
	if e.Latency[audit.LatencyTotal] > 0 && !isWatch {
		l.addLatency(sk, &e.Latency)
	}
	return t
}

// latencySums are the apiserver's own latency annotations of one stream's
// slow requests, summed by phase.
type latencySums struct {
	requests uint64
	nanos    [audit.NumLatencyPhases]int64
}

// addLatency adds a request's apiserver.latency.k8s.io/* annotations. The
// apiserver writes them only for a request slower than 500 ms
// (k8s.io/apiserver@v0.36.3 pkg/endpoints/filters/audit.go
// writeLatencyToAnnotation; phases from pkg/endpoints/request/
// webhook_duration.go AuditAnnotationsFromLatencyTrackers): so they say
// which client makes the apiserver spend etcd or serialization time.
// Watches are left out: their total is the watch's lifetime. A negative
// or absurd value (a broken or hostile event) adds nothing.
func (l *Ledger) addLatency(sk streamKey, lat *[audit.NumLatencyPhases]int64) {
	sums := l.latency[sk]
	if sums == nil {
		sums = &latencySums{}
		l.latency[sk] = sums
	}
	sums.requests++
	for i, ns := range lat {
		if ns > 0 && ns <= maxLatency {
			sums.nanos[i] += ns
		}
	}
}

// maxLatency bounds one annotation: no apiserver request runs for a day.
const maxLatency = int64(24 * time.Hour)

// resourceID names objectRef as <resource> for the core group and
// <resource>.<group> otherwise (endpointslices.discovery.k8s.io). A name
// takes a slot of the bounded table only once an answer proved it real
// (provesResource); until then it is "other".
func (l *Ledger) resourceID(e *audit.Event) uint16 {
	name := e.Resource
	if len(name) > 0 && len(e.APIGroup) > 0 {
		l.keyBuf = append(append(append(l.keyBuf[:0], e.Resource...), '.'), e.APIGroup...)
		name = l.keyBuf
	}
	if len(name) == 0 {
		return l.resources.id("")
	}
	if provesResource(e) {
		return l.resources.idBytes(name)
	}
	return l.resources.lookup(name)
}

// instance finds or creates the instance an event belongs to. Its node is,
// in order (SPEC §3.2): NAME of system:node:NAME; the node its pod-bound
// token was issued for; the Node whose address is the trusted source
// address; a field selector's node. The first two are the apiserver's word,
// the third the connection's; only the last is the client's.
func (l *Ledger) instance(cls classify.Result, ck clientKey, e *audit.Event, t int64) *Instance {
	node, attr := classify.NodeFromUsername(e.User), AttrUsername
	var resolved string
	trusted := l.TrustedSourceIP(e)
	if node == nil {
		switch {
		case len(e.NodeNameExtra) > 0 && labelSafe(e.NodeNameExtra):
			node, attr = e.NodeNameExtra, AttrToken
		default:
			attr = AttrUnknown
			if l.nodes != nil && len(trusted) > 0 {
				if n, ok := l.nodes.NodeForIP(trusted); ok {
					resolved, attr = n, AttrSourceIP
				}
			}
			if attr == AttrUnknown && len(e.Query.FieldSelectorNode) > 0 {
				node, attr = e.Query.FieldSelectorNode, AttrFieldSelector
			}
		}
	}
	k := append(l.keyBuf[:0], byte(ck.role))
	k = append(k, cls.Client...)
	k = append(append(k, 0), e.User...)
	k = append(k, 0)
	if resolved != "" {
		k = append(k, resolved...)
	} else {
		k = append(k, node...)
	}
	l.keyBuf = k
	inst := l.instances[string(k)]
	if inst == nil {
		if len(l.instances) >= l.cfg.MaxInstances {
			l.evictOldest()
		}
		nodeName := resolved
		if nodeName == "" {
			nodeName = string(node)
		}
		inst = &Instance{
			Role:        cls.Role,
			Client:      cls.Client,
			Identity:    string(e.User),
			Node:        nodeName,
			Attribution: attr,
			ByUserAgent: cls.ByUserAgent,
			FirstSeen:   t,
			ck:          ck,
		}
		l.instances[string(k)] = inst
	}
	if t > inst.LastSeen {
		inst.LastSeen = t
	}
	inst.source.set(e.SourceIP, &inst.SourceIPChanges)
	var trustedChanges uint64
	inst.trusted.set(trusted, &trustedChanges)
	if len(e.UserAgent) > 0 && string(e.UserAgent) != inst.UserAgent {
		inst.UserAgent = string(e.UserAgent)
	}
	return inst
}

// evictOldest drops the least recently seen tenth of the table in one pass,
// so a full table costs one sort per MaxInstances/10 new instances.
func (l *Ledger) evictOldest() {
	type aged struct {
		key  string
		seen int64
	}
	all := make([]aged, 0, len(l.instances))
	for k, in := range l.instances {
		all = append(all, aged{k, in.LastSeen})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].seen < all[j].seen })
	n := max(1, len(all)/10)
	for _, a := range all[:n] {
		delete(l.instances, a.key)
	}
	l.evicted += uint64(n)
}

// Instance is one node-side client process as herd sees it. Exported fields
// are what /debug/clients shows.
type Instance struct {
	Role            classify.Role `json:"-"`
	Client          string        `json:"client"`
	Identity        string        `json:"identity"`
	Node            string        `json:"node"`
	Attribution     Attribution   `json:"-"`
	ByUserAgent     bool          `json:"-"`
	SourceIPChanges uint64        `json:"sourceIPChanges"`
	UserAgent       string        `json:"userAgent"`
	FirstSeen       int64         `json:"-"`
	LastSeen        int64         `json:"-"`
	Requests        uint64        `json:"requests"`
	Errors          uint64        `json:"errors"`
	LastErrorCode   int32         `json:"lastErrorCode,omitempty"`
	TokenReviews    uint64        `json:"tokenReviews"`

	ck clientKey
	// source is sourceIPs[0], for display (the client may have chosen it);
	// trusted is the trusted source address (TrustedSourceIP), which
	// attribution and ghost verdicts use.
	source, trusted address
	streams         []*Stream
	tokenReviewWin  window
}

// address is the last source address an instance was seen from, kept
// without allocating: agents that share one identity across nodes change
// address on almost every event.
type address struct {
	ip    [45]byte // the longest textual IPv6 address
	n     uint8
	text  string // ip[:n] as a string, refreshed when read (String)
	dirty bool
}

// set records b, counting a change in *changes; it keeps the last valid
// address when b is empty or not UTF-8.
func (a *address) set(b []byte, changes *uint64) {
	b = b[:min(len(b), len(a.ip))]
	if len(b) == 0 || bytes.Equal(b, a.ip[:a.n]) || !labelSafe(b) {
		return
	}
	if a.n > 0 {
		*changes++
	}
	a.n = uint8(copy(a.ip[:], b))
	a.dirty = true
}

// String is the address; call it with the ledger's lock held.
func (a *address) String() string {
	if a.dirty {
		a.text, a.dirty = string(a.ip[:a.n]), false
	}
	return a.text
}

// Stream is an instance's traffic on one resource, in one shape.
type Stream struct {
	resource        uint16
	shape           Shape
	Relists         uint64                 `json:"relists"`
	ByConsistency   [numConsistency]uint64 `json:"-"`
	Pages           uint64                 `json:"pages"`
	TooLarge        uint64                 `json:"tooLargeResourceVersion"`
	LastRelistNanos int64                  `json:"-"`
	win             window
	tooLargeWin     window
}

func (in *Instance) stream(k shapeKey) *Stream {
	for _, s := range in.streams {
		if s.resource == k.resource && s.shape == k.shape {
			return s
		}
	}
	s := &Stream{resource: k.resource, shape: k.shape}
	in.streams = append(in.streams, s)
	return s
}
