// Package accounting keeps herd's books on node-side clients: every audited
// request is charged to an instance (role, client, identity, node) and to a
// resource, and relists are told apart from pages and plain re-watches
// (SPEC §3.3).
//
// Memory is bounded by configuration, never by cluster size: instances,
// resources and verbs are capped, and counters are keyed by small interned
// ids, so accounting an event that belongs to a known instance does not
// allocate.
package accounting

import (
	"bytes"
	"sort"
	"sync"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
)

// Consistency is how a relist is served (SPEC §3.3).
type Consistency uint8

const (
	// Cache: resourceVersion=0, or NotOlderThan with a resourceVersion — the watch cache serves it.
	Cache Consistency = iota
	// Exact: resourceVersionMatch=Exact.
	Exact
	// Consistent: no resourceVersion — a quorum read, the expensive one.
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

// Attribution says how an instance's node was found (SPEC §3.2).
type Attribution uint8

const (
	AttrUnknown Attribution = iota
	AttrUsername
	AttrSourceIP
	AttrFieldSelector
)

func (a Attribution) String() string {
	return [...]string{"unknown", "username", "source_ip", "field_selector"}[a]
}

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
	classifier *classify.Classifier
	nodes      NodeResolver
	judge      Judge // nodes, when it also judges (the cluster view)
	now        func() time.Time

	mu        sync.Mutex
	resources interner
	verbs     interner
	clients   interner
	instances map[string]*Instance
	evicted   uint64
	keyBuf    []byte

	relists      map[relistKey]uint64
	pages        map[streamKey]uint64
	tooLarge     map[streamKey]uint64
	intervals    map[streamKey]*histogram
	requests     map[requestKey]uint64
	tokenReviews map[clientKey]uint64
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

type relistKey struct {
	streamKey
	consistency Consistency
}

type requestKey struct {
	clientKey
	verb uint16
	code int32
}

// New returns an empty Ledger for a valid cfg. nodes may be nil (no
// attribution by address, no verdicts: `--no-kube`); when it also implements
// Judge, as the cluster view does, snapshots carry the verdicts.
func New(cfg Config, c *classify.Classifier, nodes NodeResolver) (*Ledger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Ledger{
		cfg:          cfg,
		width:        int64(cfg.Window) / buckets,
		classifier:   c,
		nodes:        nodes,
		now:          time.Now,
		resources:    newInterner(cfg.MaxResources),
		verbs:        newInterner(32),
		clients:      newInterner(len(c.Clients()) + 1),
		instances:    map[string]*Instance{},
		relists:      map[relistKey]uint64{},
		pages:        map[streamKey]uint64{},
		tooLarge:     map[streamKey]uint64{},
		intervals:    map[streamKey]*histogram{},
		requests:     map[requestKey]uint64{},
		tokenReviews: map[clientKey]uint64{},
	}
	for _, name := range c.Clients() {
		l.clients.id(name)
	}
	if j, ok := nodes.(Judge); ok {
		l.judge = j
	}
	return l, nil
}

// SetClock replaces the ledger's clock (time.Now), which ends the windows of
// Snapshot and Clients and stamps events without a usable timestamp. Tests
// and fixtures read the ledger at a fixed time with it. Call it before use.
func (l *Ledger) SetClock(now func() time.Time) {
	l.mu.Lock()
	l.now = now
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

// Account charges one event. Events at stages herd does not count are
// ignored; the caller has already dropped duplicates.
func (l *Ledger) Account(e *audit.Event) {
	isWatch := bytes.Equal(e.Verb, verbWatch)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case isWatch && e.Stage == audit.StageResponseStarted:
		l.sawWatchStart = true
		if l.seen(e, audit.StageResponseComplete) {
			return // its ResponseComplete came first and was counted
		}
	case isWatch && e.Stage == audit.StageResponseComplete:
		if l.sawWatchStart || l.seen(e, audit.StageResponseStarted) {
			return // counted at ResponseStarted
		}
	case !isWatch && e.Stage == audit.StageResponseComplete:
	default:
		return
	}
	t := e.StageTimestampNanos
	if t <= 0 {
		// Absent, or before 1970: a broken or hostile event is accounted now.
		t = l.now().UnixNano()
	}

	cls := l.classifier.Classify(e.User, e.UserAgent)
	ck := clientKey{role: cls.Role, client: l.clients.id(cls.Client)}
	inst := l.instance(cls, ck, e, t)

	l.requests[requestKey{clientKey: ck, verb: l.verbs.idBytes(e.Verb), code: e.Code}]++
	inst.Requests++

	res := l.resourceID(e)
	sk := streamKey{clientKey: ck, resource: res}
	switch {
	case bytes.Equal(e.Verb, verbList) && e.Query.Continue:
		l.pages[sk]++
		inst.stream(res).Pages++
	case bytes.Equal(e.Verb, verbList) || (isWatch && e.Query.SendInitialEvents):
		cons := ConsistencyOf(&e.Query)
		l.relists[relistKey{streamKey: sk, consistency: cons}]++
		s := inst.stream(res)
		if s.LastRelistNanos > 0 && t > s.LastRelistNanos {
			h := l.intervals[sk]
			if h == nil {
				h = &histogram{}
				l.intervals[sk] = h
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
		s := inst.stream(res)
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
}

// resourceID interns objectRef as <resource> for the core group and
// <resource>.<group> otherwise (endpointslices.discovery.k8s.io).
func (l *Ledger) resourceID(e *audit.Event) uint16 {
	if len(e.Resource) == 0 {
		return l.resources.id("")
	}
	if len(e.APIGroup) == 0 {
		return l.resources.idBytes(e.Resource)
	}
	l.keyBuf = append(append(append(l.keyBuf[:0], e.Resource...), '.'), e.APIGroup...)
	return l.resources.idBytes(l.keyBuf)
}

// instance finds or creates the instance an event belongs to.
func (l *Ledger) instance(cls classify.Result, ck clientKey, e *audit.Event, t int64) *Instance {
	node, attr := classify.NodeFromUsername(e.User), AttrUsername
	var resolved string
	if node == nil {
		attr = AttrUnknown
		if l.nodes != nil && len(e.SourceIP) > 0 {
			if n, ok := l.nodes.NodeForIP(e.SourceIP); ok {
				resolved, attr = n, AttrSourceIP
			}
		}
		if attr == AttrUnknown && len(e.Query.FieldSelectorNode) > 0 {
			node, attr = e.Query.FieldSelectorNode, AttrFieldSelector
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
			FirstSeen:   t,
			ck:          ck,
		}
		l.instances[string(k)] = inst
	}
	if t > inst.LastSeen {
		inst.LastSeen = t
	}
	if len(e.SourceIP) > 0 {
		inst.setSourceIP(e.SourceIP)
	}
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
	Role classify.Role `json:"-"`
	// SourceIP is the last source address as a string, refreshed from ip
	// when read (sourceIP): agents that share one identity across nodes
	// change address on almost every event, and must not allocate each time.
	Client          string      `json:"client"`
	Identity        string      `json:"identity"`
	Node            string      `json:"node"`
	Attribution     Attribution `json:"-"`
	SourceIP        string      `json:"sourceIP"`
	SourceIPChanges uint64      `json:"sourceIPChanges"`
	UserAgent       string      `json:"userAgent"`
	FirstSeen       int64       `json:"-"`
	LastSeen        int64       `json:"-"`
	Requests        uint64      `json:"requests"`
	Errors          uint64      `json:"errors"`
	LastErrorCode   int32       `json:"lastErrorCode,omitempty"`
	TokenReviews    uint64      `json:"tokenReviews"`

	ck             clientKey
	ip             [45]byte // the longest textual IPv6 address
	ipLen          uint8
	ipDirty        bool
	streams        []*Stream
	tokenReviewWin window
}

// Stream is an instance's traffic on one resource.
type Stream struct {
	resource        uint16
	Relists         uint64                 `json:"relists"`
	ByConsistency   [numConsistency]uint64 `json:"-"`
	Pages           uint64                 `json:"pages"`
	TooLarge        uint64                 `json:"tooLargeResourceVersion"`
	LastRelistNanos int64                  `json:"-"`
	win             window
	tooLargeWin     window
}

// setSourceIP records the event's source address without allocating.
func (in *Instance) setSourceIP(b []byte) {
	b = b[:min(len(b), len(in.ip))]
	if bytes.Equal(b, in.ip[:in.ipLen]) {
		return
	}
	if in.ipLen > 0 {
		in.SourceIPChanges++
	}
	in.ipLen = uint8(copy(in.ip[:], b))
	in.ipDirty = true
}

// sourceIP is the last source address; call it with the ledger's lock held.
func (in *Instance) sourceIP() string {
	if in.ipDirty {
		in.SourceIP, in.ipDirty = string(in.ip[:in.ipLen]), false
	}
	return in.SourceIP
}

func (in *Instance) stream(res uint16) *Stream {
	for _, s := range in.streams {
		if s.resource == res {
			return s
		}
	}
	s := &Stream{resource: res}
	in.streams = append(in.streams, s)
	return s
}

// interner maps label values to small ids, up to a bound; past it every new
// value is "other". Lookups of known values do not allocate.
type interner struct {
	ids   map[string]uint16
	names []string
	max   int
}

func newInterner(max int) interner {
	return interner{ids: map[string]uint16{}, max: max}
}

func (in *interner) id(s string) uint16 {
	if id, ok := in.ids[s]; ok {
		return id
	}
	if len(in.names) >= in.max-1 && s != "other" {
		return in.id("other")
	}
	id := uint16(len(in.names))
	in.ids[s] = id
	in.names = append(in.names, s)
	return id
}

func (in *interner) idBytes(b []byte) uint16 {
	if id, ok := in.ids[string(b)]; ok {
		return id
	}
	return in.id(string(b))
}

func (in *interner) name(id uint16) string { return in.names[id] }
