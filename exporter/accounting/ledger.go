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
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
)

// NodeResolver maps a source IP to the Node that has that address. The cluster
// view (informers) implements it; without one, source IPs attribute nothing.
// It is called for every event, concurrently: it must not allocate.
type NodeResolver interface {
	NodeForIP(ip []byte) (string, bool)
}

// Ledger accounts audit events. It is safe for concurrent use.
//
// Its books are split into shards by instance (a hash of role, client,
// identity and node), each with its own lock, its instances and its share
// of every counter: concurrent POSTs account in parallel, taking one
// shard's lock per event, and a snapshot or /debug/clients reads one shard
// at a time, so it holds up an event for at most one shard's pass, never
// for a pass over the whole table (issue 16 point 3). Counters are summed
// over the shards when read. Label values live in interners that are read
// without a lock (see interner).
type Ledger struct {
	cfg        Config
	width      int64 // window bucket width, ns
	proxies    []netip.Prefix
	classifier *classify.Classifier
	nodes      NodeResolver
	judge      Judge // nodes, when it also judges (the cluster view)
	leveler    Leveler
	now        func() time.Time
	seed       maphash.Seed // instance and watch keys
	scratch    scratch      // SnapshotAt's working sets

	lastClock atomic.Int64 // the clock's last reading, Unix ns (timestamp)
	resources *interner
	verbs     *interner
	clients   *interner
	// count is the number of instances in all shards; a shard reserves one
	// before it adds an instance, so it never exceeds MaxInstances.
	count   atomic.Int64
	evicted atomic.Uint64
	evictMu sync.Mutex // one eviction at a time
	// sawWatchStart is set once any watch's ResponseStarted arrives: from then
	// on watches count at that stage, else (a policy that omits it) at
	// ResponseComplete.
	sawWatchStart atomic.Bool
	// revSrc proves the cluster's revision (RevisionSource); nil without
	// one. revDropped counts the checks dropped at MaxPendingRevisionChecks.
	revSrc     RevisionSource
	revPending atomic.Int64 // checks queued in all shards
	revDropped atomic.Uint64

	shards [numShards]shard
}

// numShards is how many shards the books are split into: enough that
// concurrent batches (at most ingest.maxInFlight) rarely meet on one lock
// and that a snapshot holds each lock for a sixteenth of its pass over the
// instances; few enough that summing counters over them stays cheap.
const (
	shardBits = 4
	numShards = 1 << shardBits
)

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
// Judge, as the cluster view does, snapshots carry the verdicts, and when it
// implements RevisionSource, requests above the cluster's revision count as
// too large whatever their status code.
func New(cfg Config, c *classify.Classifier, nodes NodeResolver) (*Ledger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	proxies, err := cfg.trustedProxies()
	if err != nil {
		return nil, err
	}
	l := &Ledger{
		cfg:        cfg,
		width:      int64(cfg.Window) / buckets,
		proxies:    proxies,
		classifier: c,
		nodes:      nodes,
		now:        time.Now,
		seed:       maphash.MakeSeed(),
		resources:  newInterner(cfg.MaxResources),
		verbs:      newInterner(len(knownVerbs) + 1),
		clients:    newInterner(len(c.Clients()) + 1),
	}
	for i := range l.shards {
		l.shards[i] = newShard()
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
	if r, ok := nodes.(RevisionSource); ok {
		l.revSrc = r
	}
	return l, nil
}

// SetClock replaces the ledger's clock (time.Now), which ends the windows of
// Snapshot and Clients, stamps events without a usable timestamp and bounds
// future ones. Tests and fixtures read the ledger at a fixed time with it.
// Call it before use.
func (l *Ledger) SetClock(now func() time.Time) {
	l.now = now
	l.lastClock.Store(0)
}

// clock is the ledger's current time, Unix ns.
func (l *Ledger) clock() int64 { return l.now().UnixNano() }

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
//
// Everything that needs no books — the stage, the classification, the node
// attribution, the instance key's hash — is worked out before the event's
// shard is locked; the lock covers the counters and the instance.
func (l *Ledger) Account(e *audit.Event) int64 {
	isWatch := bytes.Equal(e.Verb, verbWatch)
	t := l.timestamp(e.StageTimestampNanos)
	switch {
	case isWatch && (e.Stage == audit.StageResponseStarted || e.Stage == audit.StageResponseComplete):
	case !isWatch && e.Stage == audit.StageResponseComplete:
	case e.Stage == audit.StageRequestReceived && bytes.Equal(e.Verb, verbList):
		l.listStarted(e, t)
		return t
	default:
		return t
	}

	cls := classify.Unauthenticated
	if !e.Unauthenticated {
		cls = l.classifier.Classify(e.User, e.UserAgent)
	}
	ck := clientKey{role: cls.Role, client: l.clients.id(cls.Client)}
	refused := refused(e.Code)
	var a attribution
	if !refused {
		a = l.attribute(e)
	}
	h := l.instanceHash(ck, e.User, a.key())
	s := &l.shards[h>>(64-shardBits)]

	s.mu.Lock()
	l.settleRevisions(s)
	if isWatch && !l.countWatch(s, e) {
		s.mu.Unlock()
		return t
	}
	s.requests[requestKey{clientKey: ck, verb: l.verbs.lookup(e.Verb), code: codeKey(e.Code)}.pack()]++
	if refused {
		s.mu.Unlock()
		return t
	}
	inst := l.instance(s, h, cls, ck, e, &a, t)
	if inst == nil { // the table was full: evict (without the shard's lock), then find or add it again
		s.mu.Unlock()
		l.evict()
		s.mu.Lock()
		for inst == nil {
			inst = l.instance(s, h, cls, ck, e, &a, t)
			if inst == nil {
				s.mu.Unlock()
				l.evict()
				s.mu.Lock()
			}
		}
	}
	l.charge(s, inst, ck, isWatch, e, t)
	s.mu.Unlock()
	return t
}

// countWatch decides at which stage a watch counts, once whichever of its
// ResponseStarted and ResponseComplete comes first: at ResponseStarted once
// any has been seen, else (a policy that omits that stage) at
// ResponseComplete. A watch counted at ResponseComplete before herd had seen
// any ResponseStarted is remembered, so that its own ResponseStarted, if it
// comes after all, does not count it again; a ResponseComplete that
// overtakes its ResponseStarted once starts are known is left to the
// ResponseStarted, which counts it. Both stages of a request have the same
// identity and addresses, so they are in the same shard: call with s locked.
func (l *Ledger) countWatch(s *shard, e *audit.Event) bool {
	if e.Stage == audit.StageResponseStarted {
		if !l.sawWatchStart.Load() {
			// Written once: a store on every watch would pull the line to
			// this core each time, away from the other cores' batches.
			l.sawWatchStart.Store(true)
		}
		return !s.atComplete.has(l.watchKey(e))
	}
	if l.sawWatchStart.Load() {
		return false // counted at its ResponseStarted, before or after this
	}
	s.atComplete.add(l.watchKey(e))
	return true
}

// watchKey tells one request from another: its auditID and its own
// timestamp (a client may reuse an Audit-ID, audit.Event.RequestKey).
func (l *Ledger) watchKey(e *audit.Event) uint64 {
	return maphash.Bytes(l.seed, e.AuditID) ^ audit.Mix64(e.RequestKey())
}

// charge adds an accounted (not refused) event to its instance and its
// shard's counters; call with s locked.
func (l *Ledger) charge(s *shard, inst *Instance, ck clientKey, isWatch bool, e *audit.Event, t int64) {
	inst.Requests++
	res := l.resourceID(s, e)
	sk := streamKey{clientKey: ck, resource: res}
	shk := shapeKey{streamKey: sk, shape: ShapeOf(e)}
	switch {
	case bytes.Equal(e.Verb, verbList) && e.Query.Continue:
		s.pages[sk.pack()]++
		st, _ := s.stream(inst, shk)
		st.Pages++
	case bytes.Equal(e.Verb, verbList) || (isWatch && e.Query.SendInitialEvents):
		cons := ConsistencyOf(&e.Query)
		s.relists[relistKey{shapeKey: shk, consistency: cons}.pack()]++
		st, ls := s.stream(inst, shk)
		if ls.lastRelistNanos > 0 && t > ls.lastRelistNanos {
			h := s.intervals[shk.pack()]
			if h == nil {
				h = &histogram{}
				s.intervals[shk.pack()] = h
			}
			h.observe(t - ls.lastRelistNanos)
		}
		if t >= ls.lastRelistNanos {
			ls.lastRelistNanos = t
			ls.lastMode, ls.lastCons = ModeList, cons
			if isWatch {
				ls.lastMode = ModeWatchList
			}
		}
		st.Relists++
		st.ByConsistency[cons]++
		ls.win.add(t, l.width)
	case isWatch:
		if _, ls := s.stream(inst, shk); t > ls.lastWatchNanos {
			ls.lastWatchNanos = t
		}
	}
	if e.TooLargeResourceVersion {
		l.countTooLarge(s, inst, shk, DetectedByStatus, t)
	} else {
		l.checkRevision(s, e, inst, shk, t)
	}
	if e.Code >= 400 {
		inst.Errors++
		inst.LastErrorCode = e.Code
	}
	if bytes.Equal(e.Verb, verbCreate) && bytes.Equal(e.Resource, resTokenReviews) && bytes.Equal(e.APIGroup, grpAuthn) {
		s.tokenReviews[ck]++
		inst.TokenReviews++
		s.live[inst.live].tokenReviewWin.add(t, l.width)
	}
	if e.Latency[audit.LatencyTotal] > 0 && !isWatch {
		s.addLatency(sk, &e.Latency)
	}
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
func (s *shard) addLatency(sk streamKey, lat *[audit.NumLatencyPhases]int64) {
	sums := s.latency[sk]
	if sums == nil {
		sums = &latencySums{}
		s.latency[sk] = sums
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
// (provesResource); until then it is "other". Call with s locked (its
// scratch buffer).
func (l *Ledger) resourceID(s *shard, e *audit.Event) uint16 {
	name := s.resourceBytes(e)
	if len(name) == 0 {
		return l.resources.id("")
	}
	if provesResource(e) {
		return l.resources.idBytes(name)
	}
	return l.resources.lookup(name)
}

// resourceBytes is an event's resource label value (in s.keyBuf for a
// group's); call with s locked.
func (s *shard) resourceBytes(e *audit.Event) []byte {
	if len(e.Resource) > 0 && len(e.APIGroup) > 0 {
		s.keyBuf = append(append(append(s.keyBuf[:0], e.Resource...), '.'), e.APIGroup...)
		return s.keyBuf
	}
	return e.Resource
}

// attribution is the node an event's instance is on, and how that was
// found: worked out before the event's shard is locked (the resolver is the
// cluster view's, safe for concurrent use).
type attribution struct {
	node     []byte // from the username, the token, or a field selector
	resolved string // the Node of the trusted source address
	attr     Attribution
	trusted  []byte // the trusted source address
}

// key is the node name that is part of the instance's key.
func (a *attribution) key() []byte {
	if a.resolved != "" {
		return unsafe.Slice(unsafe.StringData(a.resolved), len(a.resolved))
	}
	return a.node
}

// attribute finds an event's node, in order (SPEC §3.2): NAME of
// system:node:NAME; the node its pod-bound token was issued for; the Node
// whose address is the trusted source address; a field selector's node. The
// first two are the apiserver's word, the third the connection's; only the
// last is the client's.
func (l *Ledger) attribute(e *audit.Event) (a attribution) {
	a.node, a.attr = classify.NodeFromUsername(e.User), AttrUsername
	a.trusted = l.TrustedSourceIP(e)
	if a.node != nil {
		return a
	}
	if len(e.NodeNameExtra) > 0 && labelSafe(e.NodeNameExtra) {
		a.node, a.attr = e.NodeNameExtra, AttrToken
		return a
	}
	a.attr = AttrUnknown
	if l.nodes != nil && len(a.trusted) > 0 {
		if n, ok := l.nodes.NodeForIP(a.trusted); ok {
			a.resolved, a.attr = n, AttrSourceIP
			return a
		}
	}
	if len(e.Query.FieldSelectorNode) > 0 {
		a.node, a.attr = e.Query.FieldSelectorNode, AttrFieldSelector
	}
	return a
}

// instanceHash is the hash of an instance's key (role, client, identity,
// node): it picks the shard and keys the shard's table, so that the key is
// hashed once per event and never built. The seed is the ledger's own, so
// identities chosen to collide cannot be prepared in advance; a collision
// costs a comparison, never a mix-up (Instance.next).
func (l *Ledger) instanceHash(ck clientKey, user, node []byte) uint64 {
	h := maphash.Bytes(l.seed, user)
	h ^= audit.Mix64(maphash.Bytes(l.seed, node) ^ uint64(ck.role)<<48 ^ uint64(ck.client)<<32)
	return audit.Mix64(h)
}

// is reports whether in is the instance (ck, user, node).
func (in *Instance) is(ck clientKey, user, node []byte) bool {
	return in.ck == ck && in.Identity == string(user) && in.Node == string(node)
}

// instance finds or creates, in s, the instance an event belongs to (h is
// its key's hash, a its attribution). It returns nil, having added nothing,
// when the table is full: the caller evicts and asks again. Call with s
// locked.
func (l *Ledger) instance(s *shard, h uint64, cls classify.Result, ck clientKey, e *audit.Event, a *attribution, t int64) *Instance {
	node := a.key()
	first := s.instances[h]
	inst := first
	for inst != nil && !inst.is(ck, e.User, node) {
		inst = inst.next
	}
	if inst == nil {
		if l.count.Add(1) > int64(l.cfg.MaxInstances) {
			l.count.Add(-1)
			return nil
		}
		inst = &Instance{
			Role:        cls.Role,
			Client:      cls.Client,
			Identity:    string(e.User),
			Node:        string(node),
			Attribution: a.attr,
			ByUserAgent: cls.ByUserAgent,
			FirstSeen:   t,
			ck:          ck,
			hash:        h,
			subject:     maySubject(cls, e.User),
			next:        first,
		}
		s.instances[h] = inst
		s.add(inst)
	}
	lv := &s.live[inst.live]
	if t > lv.lastSeen {
		lv.lastSeen = t
	}
	inst.source.set(e.SourceIP, &inst.SourceIPChanges)
	var trustedChanges uint64
	lv.trusted.set(a.trusted, &trustedChanges)
	if len(e.UserAgent) > 0 && string(e.UserAgent) != inst.UserAgent {
		inst.UserAgent = string(e.UserAgent)
	}
	return inst
}

// listStarted notes, at a LIST's RequestReceived stage, that an instance's
// relist has begun (herd_relist_wave_instances): audit writes that stage
// after authentication but before APF queues the request and before
// authorization (k8s.io/apiserver@v0.36.3 pkg/server/config.go
// DefaultBuildHandlerChain: WithAuthentication wraps WithAudit, which wraps
// WithPriorityAndFairness and WithAuthorization), so a storm's LISTs show
// at once, not when APF lets each finish. Because the request is not yet
// authorized, a start creates nothing: it only marks a stream that already
// has a relist on record, of a known instance, and counts nowhere else
// (the LIST is counted at ResponseComplete as ever). Pages and
// unauthenticated requests are left out. The classification, attribution
// and hash are worked out before the shard is locked, as in Account.
func (l *Ledger) listStarted(e *audit.Event, t int64) {
	if e.Unauthenticated || e.Query.Continue {
		return
	}
	cls := l.classifier.Classify(e.User, e.UserAgent)
	client, ok := l.clients.known(cls.Client)
	if !ok {
		return
	}
	ck := clientKey{role: cls.Role, client: client}
	a := l.attribute(e)
	h := l.instanceHash(ck, e.User, a.key())
	shape := ShapeOf(e)
	s := &l.shards[h>>(64-shardBits)]
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.instances[h]
	for inst != nil && !inst.is(ck, e.User, a.key()) {
		inst = inst.next
	}
	if inst == nil {
		return
	}
	res, ok := l.resources.knownBytes(s.resourceBytes(e))
	if !ok {
		return
	}
	for _, st := range inst.streams {
		if ls := &s.streams[st.live]; st.resource == res && st.shape == shape && ls.lastMode != ModeUnknown && t > ls.lastStartNanos {
			ls.lastStartNanos = t
		}
	}
}

// Instance is one node-side client process as herd sees it. Its identity
// (role, client, identity, node, attribution, first seen) is set when it is
// made and never changes, so reads use it without its shard's lock; the
// rest changes under the lock. What a snapshot needs of the changing part —
// last seen, windows, trusted address — is in its shard's packed arrays
// (liveInstance, liveStream), which a read copies in one go.
type Instance struct {
	Role        classify.Role
	Client      string
	Identity    string
	Node        string
	Attribution Attribution
	ByUserAgent bool
	FirstSeen   int64

	SourceIPChanges uint64
	UserAgent       string
	Requests        uint64
	Errors          uint64
	LastErrorCode   int32
	TokenReviews    uint64

	ck   clientKey
	hash uint64    // of its key (instanceHash)
	next *Instance // another instance whose key has the same hash
	// source is sourceIPs[0], for display (the client may have chosen it);
	// the trusted source address (TrustedSourceIP), which attribution and
	// ghost verdicts use, is in liveInstance.
	source  address
	streams []*Stream
	live    int32 // index in its shard's live; -1 once evicted
	// subject: the forecast may name its identity as a FlowSchema subject
	// (maySubject), decided once, when it is made.
	subject bool
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

// String is the address; call it with the instance's shard locked.
func (a *address) String() string {
	a.refresh()
	return a.text
}

// refresh makes text the address, once per change.
func (a *address) refresh() {
	if a.dirty {
		a.text, a.dirty = string(a.ip[:a.n]), false
	}
}

// Stream is an instance's traffic on one resource, in one shape: its
// counters; its windows are in its shard's streams (liveStream).
type Stream struct {
	resource      uint16
	shape         Shape
	live          int32 // index in its shard's streams
	Relists       uint64
	ByConsistency [numConsistency]uint64
	Pages         uint64
	TooLarge      uint64
}
